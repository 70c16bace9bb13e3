// Handlers: the code a worker runs for one task type, what it sees of its task
// (HandlerContext), and how its answer becomes a report to the broker.
//
//   absl::StatusOr<std::string> WordCount(HandlerContext& ctx) {
//     if (ctx.cancelled()) return absl::CancelledError("stopped");
//     ctx.ReportProgress(50, "counting");
//     return std::to_string(CountWords(ctx.payload()));
//   }
//
// Result convention (a handler's answer -> the report):
//   OK(result)                               Complete with `result`
//   INVALID_ARGUMENT or FAILED_PRECONDITION  Fail, not retryable: the task ends
//                                            DEAD (or FALLBACK) at once
//   RESOURCE_EXHAUSTED (e.g. Throttled(d))   Fail, throttled, reason
//                                            "throttled": the task goes back
//                                            to READY without spending an
//                                            attempt, and the broker pauses
//                                            its rate key (or, without one,
//                                            its queue) for `d` (RetryAfterOf;
//                                            none or 0: the broker's default,
//                                            1 s; at most 1 h)
//   any other code                           Fail, retryable (reason "error")
// and what the worker knows by itself, whatever the handler returned (unless
// OK, which always reports Complete), each of which also beats a throttle:
//   the attempt ran past its deadline         Fail, retryable, reason "timeout"
//   the broker canceled the task              Fail, reason "canceled" (the
//                                             broker ends it CANCELED)
//   the worker drains and gave up waiting     Release (no attempt spent)
//   the lease was lost (stale fencing token)  nothing is reported
// The broker stores a failure's error as "<reason>: <message>".
// WithReason() lets a handler name a more precise reason ("exit_code"); a
// throttled report's reason is always "throttled".
//
//   if (response.http_status == 429)
//     return Throttled(response.retry_after, "upstream says 429");
//
// Thread-safety: a HandlerContext belongs to one attempt; its methods are
// thread-safe, so a handler may hand it to helper threads for the attempt's
// lifetime (never beyond the handler's return).
#ifndef CONVEYOR_WORKER_HANDLER_H_
#define CONVEYOR_WORKER_HANDLER_H_

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "worker/cancellation.h"

namespace conveyor::worker {

// What the worker knows of a leased task (copied from the broker's
// LeasedTask).
struct TaskInfo {
  std::string id;
  std::string queue;
  std::string type;
  std::string payload;
  std::map<std::string, std::string> headers;
  // 1 for the first attempt.
  uint32_t attempt = 1;
  uint32_t max_attempts = 1;
  // The lease's fencing token.
  uint64_t token = 0;
  // The attempt must end by then (InfiniteFuture: no bound).
  absl::Time deadline = absl::InfiniteFuture();
  absl::Duration timeout = absl::ZeroDuration();
  // The worker running it.
  std::string worker_id;
};

// Where ReportProgress goes (the heartbeater, in a running worker).
using ProgressSink = std::function<void(double percent, std::string message)>;

class HandlerContext {
 public:
  // `task` and `cancel` must outlive the context (the payload is not
  // copied); `progress` may be empty (progress is then dropped). Workers
  // build contexts; tests may too.
  HandlerContext(const TaskInfo& task, const Cancellation* cancel, ProgressSink progress);
  HandlerContext(const HandlerContext&) = delete;
  HandlerContext& operator=(const HandlerContext&) = delete;

  const TaskInfo& task() const { return task_; }
  const std::string& task_id() const { return task_.id; }
  const std::string& queue() const { return task_.queue; }
  const std::string& type() const { return task_.type; }
  const std::string& payload() const { return task_.payload; }
  const std::map<std::string, std::string>& headers() const { return task_.headers; }
  // The header's value, or "" when the task has no such header.
  std::string header(absl::string_view key) const;
  uint32_t attempt() const { return task_.attempt; }
  uint32_t max_attempts() const { return task_.max_attempts; }
  uint64_t fencing_token() const { return task_.token; }
  absl::Time deadline() const { return task_.deadline; }

  // Records progress; the latest value goes out with the next heartbeat.
  // `percent` is clamped to [0, 100]; `message` is cut to 1 KiB.
  void ReportProgress(double percent, absl::string_view message = "");

  // True once the attempt should stop: its deadline passed, the broker
  // canceled the task, the worker is shutting down, or the lease was lost.
  // A handler should then return promptly; what it returns after that is
  // reported as described above.
  bool cancelled() const { return cancel_->cancelled(); }
  CancelReason cancel_reason() const { return cancel_->reason(); }
  // For blocking waits (`cancellation().WaitFor(d)`) and for passing on.
  const Cancellation& cancellation() const { return *cancel_; }

 private:
  const TaskInfo& task_;
  const Cancellation* const cancel_;
  const ProgressSink progress_;
};

using Handler = std::function<absl::StatusOr<std::string>(HandlerContext& ctx)>;

// `status` with a failure reason attached (a short machine-readable word sent
// as FailRequest.Item.reason). An OK status is returned unchanged.
absl::Status WithReason(absl::Status status, absl::string_view reason);
// The reason attached by WithReason, or "" if none.
std::string ReasonOf(const absl::Status& status);

// The longest pause a throttled report may ask for (the broker refuses more).
inline constexpr absl::Duration kMaxRetryAfter = absl::Hours(1);

// The status payload (absl::Status::SetPayload) under which Throttled stores
// its delay: the delay in whole microseconds, as ASCII decimal ("2000000" for
// 2 s). Other code may set it on a RESOURCE_EXHAUSTED status to the same
// effect.
inline constexpr absl::string_view kRetryAfterPayloadUrl = "type.conveyor.dev/retry_after";

// A RESOURCE_EXHAUSTED status asking the broker to pause this task's rate key
// (or its queue) for `retry_after` and to put the task back to READY without
// spending an attempt. `retry_after` is clamped to [0, kMaxRetryAfter]; 0
// means the broker's default (1 s). An empty `message` becomes "retry after
// <retry_after>" (the broker stores "throttled: retry after 2s").
absl::Status Throttled(absl::Duration retry_after, absl::string_view message = "");
// The delay attached by Throttled (or under kRetryAfterPayloadUrl), clamped to
// [0, kMaxRetryAfter]; nullopt if `status` carries none or it is not a
// decimal number. Looks only at the payload, not at the code: the worker
// reports a throttle for RESOURCE_EXHAUSTED alone, and a RESOURCE_EXHAUSTED
// without the payload is a throttle with the broker's default delay.
std::optional<absl::Duration> RetryAfterOf(const absl::Status& status);

}  // namespace conveyor::worker

#endif  // CONVEYOR_WORKER_HANDLER_H_
