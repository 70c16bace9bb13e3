// How a finished attempt is reported: the one place that applies the result
// convention of worker/handler.h to a handler's answer and to what the worker
// knows about the attempt (why it was cancelled, whether its lease was lost).
//
// Thread-safe (pure function).
#ifndef CONVEYOR_WORKER_OUTCOME_H_
#define CONVEYOR_WORKER_OUTCOME_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "worker/cancellation.h"

namespace conveyor::worker {

enum class ReportKind {
  kComplete,  // Complete(result)
  kFail,      // Fail(error, retryable, reason)
  kRelease,   // Release: hand back without spending anything
  kNone,      // report nothing (the lease is lost)
};

struct AttemptOutcome {
  ReportKind kind = ReportKind::kNone;
  std::string result;
  std::string error;
  std::string reason;
  bool retryable = true;
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
};

AttemptOutcome DecideOutcome(absl::StatusOr<std::string> answer, const AttemptFacts& facts);

}  // namespace conveyor::worker

#endif  // CONVEYOR_WORKER_OUTCOME_H_
