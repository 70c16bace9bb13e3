// How a finished attempt is reported: the one place that applies the result
// convention of worker/handler.h to a handler's answer and to what the worker
// knows about the attempt (why it was cancelled, whether its lease was lost).
//
// Thread-safe (pure function).
#ifndef CONVEYOR_WORKER_OUTCOME_H_
#define CONVEYOR_WORKER_OUTCOME_H_

#include <cstddef>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "worker/cancellation.h"

namespace conveyor::worker {

enum class ReportKind {
  kComplete,  // Complete(result)
  kFail,      // Fail(error, retryable, reason[, throttled, retry_after])
  kRelease,   // Release: hand back without spending anything
  kNone,      // report nothing (the lease is lost)
};

struct AttemptOutcome {
  ReportKind kind = ReportKind::kNone;
  std::string result;
  std::string error;
  std::string reason;
  bool retryable = true;
  // kFail only: the handler was throttled (RESOURCE_EXHAUSTED). The broker
  // puts the task back to READY without spending an attempt and pauses its
  // rate key (or its queue) for `retry_after`, within [0, kMaxRetryAfter] (0:
  // the broker's default). `retryable` stays true, which is what a broker
  // that predates throttling acts on.
  bool throttled = false;
  absl::Duration retry_after = absl::ZeroDuration();
  // The `outcome` label of conveyor_worker_tasks_total: "succeeded",
  // "failed", "failed_permanent", "throttled", "timeout", "canceled",
  // "released" or "lease_lost".
  const char* label = "failed";
};

struct AttemptFacts {
  // Why the attempt's Cancellation fired (kNone: it did not).
  CancelReason cancel = CancelReason::kNone;
  // A heartbeat answer said the lease is gone (stale token, unknown task).
  bool lease_lost = false;
  // The attempt's deadline had passed when the handler returned.
  bool past_deadline = false;
  // The task's timeout, for the message of a timeout failure.
  absl::Duration timeout = absl::ZeroDuration();
  // The number of tasks in the attempt's batch (1: a single task); a batch's
  // deadline is the earliest of its tasks', which the timeout message says.
  size_t batch_size = 1;
};

// The report for an attempt, by precedence: a lost lease reports nothing; a
// result completes; a drain releases; a cancel by the broker fails with
// reason "canceled"; a timeout fails with reason "timeout"; only then does
// the handler's status decide (see worker/handler.h), so a throttle never
// beats any of these.
AttemptOutcome DecideOutcome(absl::StatusOr<std::string> answer, const AttemptFacts& facts);

}  // namespace conveyor::worker

#endif  // CONVEYOR_WORKER_OUTCOME_H_
