// RunBatch: one batch of a batch type (worker/batch.h) from its first leased
// tasks to one report per task. Runs on the executor thread of the batch's
// one slot:
//   1. fill: while the batch has fewer than max_size tasks, lease more of
//      its type from the same broker (`lease_more`), waiting in all at most
//      `linger` and never past the earliest deadline of its tasks; each task
//      gets its own Attempt, tracked by the heartbeater from its arrival, so
//      its lease is kept alive like any other;
//   2. the batch's deadline (the earliest of its tasks') is armed on the
//      deadline timer; a local rate limit (--rate) takes one token per task;
//   3. the handler runs with a BatchContext;
//   4. each task's answer is decided and reported as for a single task
//      (worker/finish.h), per task: its own cancel reason, lost lease, and
//      whether a draining worker already gave up on it (Attempt::TryFinish).
// A wrong number of answers fails every task (WrongAnswerCount).
//
// Tasks a fill brings while the worker stops leasing (`stopping`), or of
// another type (which a broker should never send), are handed back at once.
//
// Thread-safe: any number of batches may run at once.
#ifndef CONVEYOR_WORKER_BATCH_RUNNER_H_
#define CONVEYOR_WORKER_BATCH_RUNNER_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "conveyor/v1/conveyor.pb.h"
#include "worker/batch.h"
#include "worker/deadline_timer.h"
#include "worker/heartbeater.h"
#include "worker/metrics.h"
#include "worker/rate_limiter.h"
#include "worker/reporter.h"

namespace conveyor::worker {

// What one fill call brought.
struct LeaseMoreResult {
  // Not OK: the call failed as a whole (the batch runs with what it has).
  absl::Status status;
  std::vector<v1::LeasedTask> tasks;
  // The worker has stopped leasing: `tasks` must be handed back, and the
  // fill ends.
  bool stopping = false;
};
// Leases up to `max` tasks of `type` only, waiting up to `wait` (0: answer at
// once) for at least one (LeaseLoop::LeaseMore in a running worker).
using LeaseMoreFn =
    std::function<LeaseMoreResult(const std::string& type, int max, absl::Duration wait)>;

struct BatchRunnerDeps {
  std::string worker_id;
  // Required.
  Heartbeater* heartbeater = nullptr;
  Reporter* reporter = nullptr;
  DeadlineTimer* timer = nullptr;
  const Clock* clock = nullptr;
  // Optional (null / empty: no local rate limits, no metrics, no fill).
  RateLimiter* limiter = nullptr;
  WorkerMetrics* metrics = nullptr;
  LeaseMoreFn lease_more;
};

// Runs one batch of `type` starting with `leased` (1 to options.max_size
// tasks of that type) and returns once every task is settled (reported,
// handed back, or abandoned by a drain).
void RunBatch(const BatchRunnerDeps& deps, const std::string& type, const BatchHandler& handler,
              const BatchOptions& options, std::vector<v1::LeasedTask> leased);

}  // namespace conveyor::worker

#endif  // CONVEYOR_WORKER_BATCH_RUNNER_H_
