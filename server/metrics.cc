#include "server/metrics.h"

#include <sys/stat.h>

#include <cstdio>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "prometheus/client_metric.h"
#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"

namespace conveyor::server {
namespace {

// Milliseconds to an hour.
prometheus::Histogram::BucketBoundaries TaskBuckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
          5,     10,     30,    60,   120,   300,  600, 1800, 3600};
}
prometheus::Histogram::BucketBoundaries RpcBuckets() {
  return {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
          0.05,   0.1,     0.25,   0.5,   1,      2.5,   5,     10};
}

const char* GrpcCodeName(grpc::StatusCode code) {
  static const char* const kNames[] = {
      "OK",       "CANCELLED",          "UNKNOWN",           "INVALID_ARGUMENT",
      "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",    "PERMISSION_DENIED",
      "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
      "UNIMPLEMENTED", "INTERNAL",      "UNAVAILABLE",       "DATA_LOSS",
      "UNAUTHENTICATED"};
  int i = static_cast<int>(code);
  return i >= 0 && i <= 16 ? kNames[i] : "UNKNOWN";
}

const char* OutcomeName(TaskState s) {
  switch (s) {
    case TaskState::kSucceeded: return "succeeded";
    case TaskState::kDead: return "dead";
    case TaskState::kCanceled: return "canceled";
    case TaskState::kExpired: return "expired";
    case TaskState::kFallback: return "fallback";
    default: return "other";
  }
}

const char* StateLabel(TaskState s) {
  switch (s) {
    case TaskState::kScheduled: return "scheduled";
    case TaskState::kReady: return "ready";
    case TaskState::kRunning: return "running";
    case TaskState::kSucceeded: return "succeeded";
    case TaskState::kDead: return "dead";
    case TaskState::kCanceled: return "canceled";
    case TaskState::kExpired: return "expired";
    case TaskState::kFallback: return "fallback";
  }
  return "other";
}

prometheus::ClientMetric GaugeValue(std::vector<prometheus::ClientMetric::Label> labels,
                                    double value) {
  prometheus::ClientMetric m;
  m.label = std::move(labels);
  m.gauge.value = value;
  return m;
}

// Reads queue gauges from the broker at scrape time.
class QueueGauges final : public prometheus::Collectable {
 public:
  QueueGauges(const Broker* broker, std::string data_dir)
      : broker_(broker), data_dir_(std::move(data_dir)) {}

  std::vector<prometheus::MetricFamily> Collect() const override {
    prometheus::MetricFamily tasks{"conveyor_queue_tasks",
                                   "Tasks in the queue by state (ended ones while retained).",
                                   prometheus::MetricType::Gauge, {}};
    prometheus::MetricFamily capacity{"conveyor_queue_capacity",
                                      "Unfinished tasks the queue may hold.",
                                      prometheus::MetricType::Gauge, {}};
    prometheus::MetricFamily oldest{"conveyor_queue_oldest_ready_age_seconds",
                                    "Age of the oldest ready task (0 when none).",
                                    prometheus::MetricType::Gauge, {}};
    prometheus::MetricFamily paused{"conveyor_queue_paused", "1 if the queue is paused.",
                                    prometheus::MetricType::Gauge, {}};
    prometheus::MetricFamily blocked{
        "conveyor_tasks_blocked",
        "SCHEDULED and READY tasks held back, by reason: paused, rate_limited, "
        "concurrency_full, not_due, no_worker.",
        prometheus::MetricType::Gauge, {}};
    prometheus::MetricFamily workers{"conveyor_workers_connected",
                                     "Workers with a Lease call parked on the queue.",
                                     prometheus::MetricType::Gauge, {}};
    prometheus::MetricFamily submits{
        "conveyor_queue_waiting_submits",
        "Submits parked until the full queue (full policy WAIT) has room.",
        prometheus::MetricType::Gauge, {}};
    for (const QueueInfo& q : broker_->ListQueues()) {
      const std::string& name = q.config.name;
      for (int s = 0; s < 8; ++s) {
        tasks.metric.push_back(GaugeValue(
            {{"queue", name}, {"state", StateLabel(static_cast<TaskState>(s))}},
            static_cast<double>(q.stats.by_state[s])));
      }
      capacity.metric.push_back(
          GaugeValue({{"queue", name}}, static_cast<double>(q.config.capacity)));
      oldest.metric.push_back(
          GaugeValue({{"queue", name}}, absl::ToDoubleSeconds(q.stats.oldest_ready_age)));
      paused.metric.push_back(GaugeValue({{"queue", name}}, q.paused ? 1 : 0));
      workers.metric.push_back(
          GaugeValue({{"queue", name}}, static_cast<double>(q.stats.waiting_workers)));
      submits.metric.push_back(
          GaugeValue({{"queue", name}}, static_cast<double>(q.stats.waiting_submits)));
      // Every reason, zeros included, so that a series never disappears.
      for (size_t i = 0; i < kBlockedReasons.size(); ++i) {
        blocked.metric.push_back(
            GaugeValue({{"queue", name}, {"reason", WaitReasonName(kBlockedReasons[i])}},
                       static_cast<double>(q.stats.blocked[i])));
      }
    }
    prometheus::MetricFamily build{"conveyor_build_info",
                                   "Build information; the value is always 1.",
                                   prometheus::MetricType::Gauge, {}};
    build.metric.push_back(GaugeValue({{"version", "0.1.0"}, {"component", "broker"}}, 1));
    std::vector<prometheus::MetricFamily> out = {tasks,   capacity, oldest,  paused,
                                                 blocked, workers,  submits, build};
    if (!data_dir_.empty()) {
      prometheus::MetricFamily disk{
          "conveyor_journal_bytes",
          "Bytes the data directory holds on disk (journal segments, preallocated, and "
          "snapshots).",
          prometheus::MetricType::Gauge, {}};
      disk.metric.push_back(GaugeValue({}, static_cast<double>(DirBytes(data_dir_))));
      out.push_back(std::move(disk));
    }
    return out;
  }

 private:
  // Allocated bytes of the files in `dir` (a few files: cheap at scrape).
  static uint64_t DirBytes(const std::string& dir) {
    uint64_t total = 0;
    std::error_code ec;
    for (const std::filesystem::directory_entry& e :
         std::filesystem::directory_iterator(dir, ec)) {
      struct stat st;
      if (::stat(e.path().c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
        total += static_cast<uint64_t>(st.st_blocks) * 512;
      }
    }
    return total;
  }

  const Broker* broker_;
  const std::string data_dir_;
};

}  // namespace

struct BrokerMetrics::QueueCounters {
  prometheus::Counter* submitted;
  prometheus::Counter* dispatched;
  prometheus::Counter* retried;
  prometheus::Counter* expired;
  prometheus::Histogram* wait;
  prometheus::Histogram* run;
  absl::flat_hash_map<int, prometheus::Counter*> finished;
  absl::flat_hash_map<std::string, prometheus::Counter*> dropped;
};

BrokerMetrics::BrokerMetrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      submitted_(prometheus::BuildCounter()
                     .Name("conveyor_tasks_submitted_total")
                     .Help("Tasks accepted by Submit and SubmitBatch.")
                     .Register(*registry_)),
      dispatched_(prometheus::BuildCounter()
                      .Name("conveyor_tasks_dispatched_total")
                      .Help("Leases granted to workers.")
                      .Register(*registry_)),
      finished_(prometheus::BuildCounter()
                    .Name("conveyor_tasks_finished_total")
                    .Help("Tasks that ended, by outcome.")
                    .Register(*registry_)),
      retried_(prometheus::BuildCounter()
                   .Name("conveyor_tasks_retried_total")
                   .Help("Failed attempts scheduled for a retry.")
                   .Register(*registry_)),
      expired_(prometheus::BuildCounter()
                   .Name("conveyor_leases_expired_total")
                   .Help("Leases that expired without a report (worker lost).")
                   .Register(*registry_)),
      dropped_(prometheus::BuildCounter()
                   .Name("conveyor_tasks_dropped_total")
                   .Help("Task records dropped: result TTL, retained bound, purge.")
                   .Register(*registry_)),
      wait_seconds_(prometheus::BuildHistogram()
                        .Name("conveyor_task_wait_seconds")
                        .Help("Time from submit to the first lease.")
                        .Register(*registry_)),
      run_seconds_(prometheus::BuildHistogram()
                       .Name("conveyor_task_run_seconds")
                       .Help("Time from the last lease to the end, for tasks that ran.")
                       .Register(*registry_)),
      rpc_handled_(prometheus::BuildCounter()
                       .Name("grpc_server_handled_total")
                       .Help("RPCs completed on the server, by method and status code.")
                       .Register(*registry_)),
      rpc_seconds_(prometheus::BuildHistogram()
                       .Name("grpc_server_handling_seconds")
                       .Help("Latency of unary RPCs (long-polls and watches excluded).")
                       .Register(*registry_)),
      fsync_seconds_(prometheus::BuildHistogram()
                         .Name("conveyor_journal_fsync_seconds")
                         .Help("Time of each journal fdatasync.")
                         .Register(*registry_)
                         .Add({}, RpcBuckets())),
      rejected_(prometheus::BuildCounter()
                    .Name("conveyor_tasks_rejected_total")
                    .Help("Submitted tasks refused, by reason: invalid, unknown_queue, "
                          "too_many_queues, full, draining, journal (not stored). queue is "
                          "empty for a queue that does not exist and for invalid requests.")
                    .Register(*registry_)),
      journal_bytes_(prometheus::BuildCounter()
                         .Name("conveyor_journal_written_bytes_total")
                         .Help("Bytes written to the journal (records and headers).")
                         .Register(*registry_)
                         .Add({})) {}

void BrokerMetrics::OnSync(absl::Duration latency) {
  fsync_seconds_.Observe(absl::ToDoubleSeconds(latency));
}

void BrokerMetrics::OnWrite(uint64_t bytes) {
  journal_bytes_.Increment(static_cast<double>(bytes));
}

BrokerMetrics::~BrokerMetrics() = default;

void BrokerMetrics::AttachDataDir(std::string dir) { data_dir_ = std::move(dir); }

void BrokerMetrics::AttachBroker(const Broker* broker) {
  gauges_ = std::make_shared<QueueGauges>(broker, data_dir_);
}

void BrokerMetrics::OnRejected(absl::string_view queue, absl::string_view reason,
                               uint64_t count) {
  const std::string key = absl::StrCat(queue, std::string(1, '\0'), reason);
  absl::MutexLock lock(&rejected_mu_);
  prometheus::Counter*& c = rejected_counters_[key];
  if (c == nullptr) {
    c = &rejected_.Add({{"queue", std::string(queue)}, {"reason", std::string(reason)}});
  }
  c->Increment(static_cast<double>(count));
}

BrokerMetrics::QueueCounters& BrokerMetrics::For(const Queue& queue) {
  auto it = queues_.find(queue.name());
  if (it != queues_.end()) return *it->second;
  auto c = std::make_unique<QueueCounters>();
  prometheus::Labels l{{"queue", queue.name()}};
  c->submitted = &submitted_.Add(l);
  c->dispatched = &dispatched_.Add(l);
  c->retried = &retried_.Add(l);
  c->expired = &expired_.Add(l);
  c->wait = &wait_seconds_.Add(l, TaskBuckets());
  c->run = &run_seconds_.Add(l, TaskBuckets());
  // Every outcome from the start, at 0: rate() and increase() then see the
  // first failure of a queue (a series born at its final value shows none).
  for (TaskState s : {TaskState::kSucceeded, TaskState::kDead, TaskState::kCanceled,
                      TaskState::kExpired, TaskState::kFallback}) {
    c->finished.emplace(static_cast<int>(s),
                        &finished_.Add({{"queue", queue.name()}, {"outcome", OutcomeName(s)}}));
  }
  QueueCounters& ref = *c;
  queues_.emplace(queue.name(), std::move(c));
  return ref;
}

void BrokerMetrics::OnSubmitted(const Queue& queue, const Task&) {
  For(queue).submitted->Increment();
}

void BrokerMetrics::OnDispatched(const Queue& queue, const Task& task) {
  QueueCounters& c = For(queue);
  c.dispatched->Increment();
  // The first lease: lease count 1 within the epoch (tokens carry the
  // broker's epoch in their high half), no attempt or crash spent yet. A task
  // leased before a restart and leased again after it counts twice (rare).
  if ((task.token() & 0xffffffffu) == 1 && task.failures == 0 && task.crashes == 0 &&
      task.extra() != nullptr) {
    c.wait->Observe(absl::ToDoubleSeconds(task.extra()->started_at - task.created_at()));
  }
}

void BrokerMetrics::OnRetried(const Queue& queue, const Task&) {
  For(queue).retried->Increment();
}

void BrokerMetrics::OnLeaseExpired(const Queue& queue, const Task&) {
  For(queue).expired->Increment();
}

void BrokerMetrics::OnEnded(const Queue& queue, const Task& task) {
  QueueCounters& c = For(queue);
  int outcome = static_cast<int>(task.state);
  auto it = c.finished.find(outcome);
  if (it == c.finished.end()) {
    it = c.finished
             .emplace(outcome, &finished_.Add({{"queue", queue.name()},
                                               {"outcome", OutcomeName(task.state)}}))
             .first;
  }
  it->second->Increment();
  if (task.token() > 0 && task.extra() != nullptr &&
      task.extra()->started_at != absl::InfinitePast()) {
    c.run->Observe(absl::ToDoubleSeconds(task.extra()->finished_at - task.extra()->started_at));
  }
}

void BrokerMetrics::OnDropped(const Queue& queue, const Task&, absl::string_view reason) {
  QueueCounters& c = For(queue);
  auto it = c.dropped.find(reason);
  if (it == c.dropped.end()) {
    it = c.dropped
             .emplace(std::string(reason),
                      &dropped_.Add({{"queue", queue.name()}, {"reason", std::string(reason)}}))
             .first;
  }
  it->second->Increment();
}

void BrokerMetrics::Handled(const char* service, const char* method, grpc::StatusCode code,
                            absl::Duration latency, bool long_lived) {
  std::string key = absl::StrCat(service, "/", method, "/", static_cast<int>(code));
  prometheus::Counter* counter;
  prometheus::Histogram* histogram = nullptr;
  {
    absl::MutexLock lock(&rpc_mu_);
    auto it = rpc_counters_.find(key);
    if (it == rpc_counters_.end()) {
      it = rpc_counters_
               .emplace(key, &rpc_handled_.Add({{"grpc_service", service},
                                                {"grpc_method", method},
                                                {"grpc_code", GrpcCodeName(code)}}))
               .first;
    }
    counter = it->second;
    if (!long_lived) {
      std::string hkey = absl::StrCat(service, "/", method);
      auto h = rpc_histograms_.find(hkey);
      if (h == rpc_histograms_.end()) {
        h = rpc_histograms_
                .emplace(hkey, &rpc_seconds_.Add({{"grpc_service", service},
                                                  {"grpc_method", method}},
                                                 RpcBuckets()))
                .first;
      }
      histogram = h->second;
    }
  }
  counter->Increment();
  if (histogram != nullptr) histogram->Observe(absl::ToDoubleSeconds(latency));
}

}  // namespace conveyor::server
