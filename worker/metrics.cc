#include "worker/metrics.h"

#include <algorithm>

namespace conveyor::worker {
namespace {

// Milliseconds to an hour.
prometheus::Histogram::BucketBoundaries TaskBuckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
          5,     10,     30,    60,   120,   300,  600, 1800, 3600};
}

// Powers of two up to the largest batch (1000).
prometheus::Histogram::BucketBoundaries BatchBuckets() {
  return {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000};
}

prometheus::Family<prometheus::Gauge>& GaugeFamily(prometheus::Registry& r, const char* name,
                                                   const char* help) {
  return prometheus::BuildGauge().Name(name).Help(help).Register(r);
}

}  // namespace

WorkerMetrics::WorkerMetrics(int brokers)
    : registry_(std::make_shared<prometheus::Registry>()),
      tasks_(prometheus::BuildCounter()
                 .Name("conveyor_worker_tasks_total")
                 .Help("Task attempts finished by this worker, by queue and outcome.")
                 .Register(*registry_)),
      duration_(prometheus::BuildHistogram()
                    .Name("conveyor_worker_task_duration_seconds")
                    .Help("Time from lease to the end of the attempt, by queue.")
                    .Register(*registry_)),
      slots_(GaugeFamily(*registry_, "conveyor_worker_slots", "Executor slots by state.")),
      busy_(slots_.Add({{"state", "busy"}})),
      free_(slots_.Add({{"state", "free"}})),
      prefetched_(GaugeFamily(*registry_, "conveyor_worker_prefetched",
                              "Leased tasks waiting in the worker for a free slot (--prefetch).")
                      .Add({})),
      polls_(prometheus::BuildCounter()
                 .Name("conveyor_worker_polls_total")
                 .Help("Lease calls by result.")
                 .Register(*registry_)),
      polls_tasks_(polls_.Add({{"result", "tasks"}})),
      polls_empty_(polls_.Add({{"result", "empty"}})),
      polls_error_(polls_.Add({{"result", "error"}})),
      connected_(GaugeFamily(*registry_, "conveyor_worker_connected",
                             "1 if the last call to every broker succeeded.")
                     .Add({})),
      draining_(GaugeFamily(*registry_, "conveyor_worker_draining", "1 while the worker drains.")
                    .Add({})),
      batch_size_(prometheus::BuildHistogram()
                      .Name("conveyor_worker_batch_size")
                      .Help("Tasks per batch handed to a batch handler.")
                      .Register(*registry_)
                      .Add({}, BatchBuckets())) {
  GaugeFamily(*registry_, "conveyor_build_info", "Build information; the value is always 1.")
      .Add({{"version", "0.1.0"}, {"component", "worker"}})
      .Set(1);
  absl::MutexLock lock(&mu_);
  broker_ok_.assign(static_cast<size_t>(std::max(brokers, 0)), true);
  connected_.Set(1);
}

void WorkerMetrics::TaskFinished(const std::string& queue, const char* outcome,
                                 absl::Duration duration) {
  prometheus::Counter* counter;
  prometheus::Histogram* histogram;
  {
    absl::MutexLock lock(&mu_);
    auto key = std::make_pair(queue, std::string(outcome));
    auto it = task_counters_.find(key);
    if (it == task_counters_.end()) {
      it = task_counters_.emplace(key, &tasks_.Add({{"queue", queue}, {"outcome", outcome}}))
               .first;
    }
    counter = it->second;
    auto h = histograms_.find(queue);
    if (h == histograms_.end()) {
      h = histograms_.emplace(queue, &duration_.Add({{"queue", queue}}, TaskBuckets())).first;
    }
    histogram = h->second;
  }
  counter->Increment();
  histogram->Observe(absl::ToDoubleSeconds(duration));
}

void WorkerMetrics::Slots(int busy, int free, int waiting) {
  busy_.Set(busy);
  free_.Set(free);
  prefetched_.Set(waiting);
}

void WorkerMetrics::Poll(PollResult result) {
  switch (result) {
    case PollResult::kTasks: polls_tasks_.Increment(); break;
    case PollResult::kEmpty: polls_empty_.Increment(); break;
    case PollResult::kError: polls_error_.Increment(); break;
  }
}

void WorkerMetrics::Connected(int index, bool ok) {
  absl::MutexLock lock(&mu_);
  if (index < 0 || static_cast<size_t>(index) >= broker_ok_.size()) return;
  broker_ok_[index] = ok;
  const bool all = std::all_of(broker_ok_.begin(), broker_ok_.end(), [](bool b) { return b; });
  connected_.Set(all ? 1 : 0);
}

void WorkerMetrics::Draining(bool draining) { draining_.Set(draining ? 1 : 0); }

void WorkerMetrics::BatchSize(size_t size) { batch_size_.Observe(static_cast<double>(size)); }

}  // namespace conveyor::worker
