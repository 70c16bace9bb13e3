// Broker metrics for Prometheus (prometheus-cpp), named as DESIGN.md lists.
//
// BrokerMetrics is a BrokerListener: counters move on each transition (the
// broker calls it under its lock, so per-queue handles are cached in a map
// touched only there). Gauges (tasks per state, capacity, oldest ready age,
// paused, blocked tasks by reason) are read from the broker at scrape time by a Collectable, so
// nothing on the hot path computes them. RPC outcomes are counted under the
// standard names grpc_server_handled_total and grpc_server_handling_seconds;
// long-polls and watches stay out of the latency histogram.
//
// Thread-safe.
#ifndef CONVEYOR_SERVER_METRICS_H_
#define CONVEYOR_SERVER_METRICS_H_

#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/support/status.h"
#include "prometheus/collectable.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "server/broker.h"
#include "server/journal/journal.h"

namespace conveyor::server {

// What the service layer reports per RPC.
class RpcMetrics {
 public:
  virtual ~RpcMetrics() = default;
  // `method` is "conveyor.v1.TaskService/Submit"-style: service and method
  // names are static strings. Latency is observed unless `long_lived`.
  virtual void Handled(const char* service, const char* method, grpc::StatusCode code,
                       absl::Duration latency, bool long_lived) = 0;
};

class BrokerMetrics final : public BrokerListener,
                            public RpcMetrics,
                            public journal::JournalListener {
 public:
  BrokerMetrics();
  ~BrokerMetrics() override;

  // Gauges read the broker at scrape time; call once the broker exists.
  void AttachBroker(const Broker* broker);
  // Register both with the prometheus::Exposer.
  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }
  std::shared_ptr<prometheus::Collectable> gauges() const { return gauges_; }

  // BrokerListener (called under the broker's lock).
  void OnSubmitted(const Queue& queue, const Task& task) override;
  void OnDispatched(const Queue& queue, const Task& task) override;
  void OnRetried(const Queue& queue, const Task& task) override;
  void OnLeaseExpired(const Queue& queue, const Task& task) override;
  void OnEnded(const Queue& queue, const Task& task) override;
  void OnDropped(const Queue& queue, const Task& task, absl::string_view reason) override;
  void OnRejected(absl::string_view queue, absl::string_view reason, uint64_t count) override;
  // The data directory whose size conveyor_journal_bytes reports at scrape
  // time (unset: the gauge is absent).
  void AttachDataDir(std::string dir);

  // journal::JournalListener (on the journal's writer thread).
  void OnSync(absl::Duration latency) override;
  void OnWrite(uint64_t bytes) override;

  // RpcMetrics.
  void Handled(const char* service, const char* method, grpc::StatusCode code,
               absl::Duration latency, bool long_lived) override;

 private:
  struct QueueCounters;
  QueueCounters& For(const Queue& queue);

  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>& submitted_;
  prometheus::Family<prometheus::Counter>& dispatched_;
  prometheus::Family<prometheus::Counter>& finished_;
  prometheus::Family<prometheus::Counter>& retried_;
  prometheus::Family<prometheus::Counter>& expired_;
  prometheus::Family<prometheus::Counter>& dropped_;
  prometheus::Family<prometheus::Histogram>& wait_seconds_;
  prometheus::Family<prometheus::Histogram>& run_seconds_;
  prometheus::Family<prometheus::Counter>& rpc_handled_;
  prometheus::Family<prometheus::Histogram>& rpc_seconds_;
  // Keyed by queue name; touched only by listener calls, which the broker's
  // lock serializes.
  absl::flat_hash_map<std::string, std::unique_ptr<QueueCounters>> queues_;

  absl::Mutex rpc_mu_;
  absl::flat_hash_map<std::string, prometheus::Counter*> rpc_counters_
      ABSL_GUARDED_BY(rpc_mu_);
  absl::flat_hash_map<std::string, prometheus::Histogram*> rpc_histograms_
      ABSL_GUARDED_BY(rpc_mu_);
  std::shared_ptr<prometheus::Collectable> gauges_;
  prometheus::Histogram& fsync_seconds_;
  prometheus::Family<prometheus::Counter>& rejected_;
  prometheus::Counter& journal_bytes_;
  absl::Mutex rejected_mu_;
  absl::flat_hash_map<std::string, prometheus::Counter*> rejected_counters_
      ABSL_GUARDED_BY(rejected_mu_);
  std::string data_dir_;
};

}  // namespace conveyor::server

#endif  // CONVEYOR_SERVER_METRICS_H_
