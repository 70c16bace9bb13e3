#include "worker/outcome.h"

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "worker/handler.h"

namespace conveyor::worker {
namespace {

std::string MessageOf(const absl::Status& status) {
  if (!status.message().empty()) return std::string(status.message());
  return absl::StatusCodeToString(status.code());
}

AttemptOutcome Fail(std::string error, std::string reason, bool retryable, const char* label) {
  AttemptOutcome o;
  o.kind = ReportKind::kFail;
  o.error = std::move(error);
  o.reason = std::move(reason);
  o.retryable = retryable;
  o.label = label;
  return o;
}

// RESOURCE_EXHAUSTED: the delay from Throttled()'s payload; without one, 0
// lets the broker pick its default.
AttemptOutcome Throttle(const absl::Status& status) {
  AttemptOutcome o = Fail(MessageOf(status), "throttled", /*retryable=*/true, "throttled");
  o.throttled = true;
  o.retry_after = RetryAfterOf(status).value_or(absl::ZeroDuration());
  return o;
}

}  // namespace

AttemptOutcome DecideOutcome(absl::StatusOr<std::string> answer, const AttemptFacts& facts) {
  AttemptOutcome o;
  if (facts.lease_lost) {
    // Another lease (or nobody) owns the task now: any report would be
    // rejected by the fencing token and must not be tried.
    o.kind = ReportKind::kNone;
    o.label = "lease_lost";
    return o;
  }
  if (answer.ok()) {
    // A result always wins: the broker takes a complete with the current
    // token even after a cancel request or just past the deadline.
    o.kind = ReportKind::kComplete;
    o.result = std::move(*answer);
    o.label = "succeeded";
    return o;
  }
  const absl::Status& status = answer.status();
  switch (facts.cancel) {
    case CancelReason::kShutdown:
      o.kind = ReportKind::kRelease;
      o.label = "released";
      return o;
    case CancelReason::kCanceled:
      // Retryable on purpose: the broker ends a task whose cancel was
      // requested CANCELED whatever the flag, and a retryable failure can
      // never kill a task that was not meant to be canceled.
      return Fail(absl::StrCat("canceled while running: ", MessageOf(status)), "canceled",
                  /*retryable=*/true, "canceled");
    case CancelReason::kTimeout:
      break;
    case CancelReason::kNone:
      if (!(status.code() == absl::StatusCode::kDeadlineExceeded && facts.past_deadline)) {
        const std::string own = ReasonOf(status);
        switch (status.code()) {
          case absl::StatusCode::kInvalidArgument:
          case absl::StatusCode::kFailedPrecondition:
            return Fail(MessageOf(status), own.empty() ? "permanent" : own,
                        /*retryable=*/false, "failed_permanent");
          case absl::StatusCode::kResourceExhausted:
            return Throttle(status);
          default:
            return Fail(MessageOf(status), own.empty() ? "error" : own, /*retryable=*/true,
                        "failed");
        }
      }
      break;
  }
  if (facts.batch_size > 1) {
    return Fail(absl::StrCat("the batch of ", facts.batch_size,
                             " tasks ran past its deadline, the earliest of its tasks' (this "
                             "task's timeout is ",
                             absl::FormatDuration(facts.timeout), ") (", MessageOf(status), ")"),
                "timeout", /*retryable=*/true, "timeout");
  }
  return Fail(absl::StrCat("the attempt ran past its timeout of ",
                           absl::FormatDuration(facts.timeout), " (", MessageOf(status), ")"),
              "timeout", /*retryable=*/true, "timeout");
}

}  // namespace conveyor::worker
