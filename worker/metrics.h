// Worker metrics for Prometheus (prometheus-cpp), named as DESIGN.md lists:
//   conveyor_worker_tasks_total{queue,outcome}         attempts by outcome
//   conveyor_worker_task_duration_seconds{queue}       histogram, 1 ms to 1 h
//   conveyor_worker_slots{state="busy"|"free"}          executor slots
//   conveyor_worker_prefetched                          leased tasks waiting
//                                                       for a slot (--prefetch)
//   conveyor_worker_polls_total{result="tasks"|"empty"|"error"}
//   conveyor_worker_connected                           1 if the last call to
//                                                       every broker succeeded
//   conveyor_worker_draining                            1 while draining
//   conveyor_worker_batch_size                          histogram: tasks per
//                                                       batch handed to a batch
//                                                       handler (no labels)
//   conveyor_build_info{version,component="worker"}     always 1
// Outcomes are those of AttemptOutcome::label (worker/outcome.h). Metric
// handles are cached per queue and outcome.
//
// Thread-safe.
#ifndef CONVEYOR_WORKER_METRICS_H_
#define CONVEYOR_WORKER_METRICS_H_

#include <cstddef>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace conveyor::worker {

class WorkerMetrics {
 public:
  // `brokers`: how many brokers the worker serves (for `connected`).
  explicit WorkerMetrics(int brokers);
  WorkerMetrics(const WorkerMetrics&) = delete;
  WorkerMetrics& operator=(const WorkerMetrics&) = delete;

  // Register with a prometheus::Exposer.
  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }

  void TaskFinished(const std::string& queue, const char* outcome, absl::Duration duration);
  void Slots(int busy, int free, int waiting);
  enum class PollResult { kTasks, kEmpty, kError };
  void Poll(PollResult result);
  // The last call to broker `index` succeeded (or not).
  void Connected(int index, bool ok);
  void Draining(bool draining);
  // A batch of `size` tasks is about to run.
  void BatchSize(size_t size);

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>& tasks_;
  prometheus::Family<prometheus::Histogram>& duration_;
  prometheus::Family<prometheus::Gauge>& slots_;
  prometheus::Gauge& busy_;
  prometheus::Gauge& free_;
  prometheus::Gauge& prefetched_;
  prometheus::Family<prometheus::Counter>& polls_;
  prometheus::Counter& polls_tasks_;
  prometheus::Counter& polls_empty_;
  prometheus::Counter& polls_error_;
  prometheus::Gauge& connected_;
  prometheus::Gauge& draining_;
  prometheus::Histogram& batch_size_;

  absl::Mutex mu_;
  absl::flat_hash_map<std::pair<std::string, std::string>, prometheus::Counter*> task_counters_
      ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, prometheus::Histogram*> histograms_ ABSL_GUARDED_BY(mu_);
  std::vector<bool> broker_ok_ ABSL_GUARDED_BY(mu_);
};

}  // namespace conveyor::worker

#endif  // CONVEYOR_WORKER_METRICS_H_
