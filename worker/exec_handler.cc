#include "worker/exec_handler.h"

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace conveyor::worker {

absl::StatusOr<ExecSpec> ParseExecSpec(absl::string_view text, absl::string_view flag) {
  const size_t eq = text.find('=');
  if (eq == absl::string_view::npos || eq == 0 || eq + 1 == text.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        flag, " \"", text, "\": expected TYPE=COMMAND, e.g. upper='tr a-z A-Z'"));
  }
  ExecSpec spec;
  spec.type = std::string(text.substr(0, eq));
  spec.command = std::string(text.substr(eq + 1));
  if (spec.type.find_first_of(" \t\n") != std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, " \"", text, "\": the type \"", spec.type, "\" holds a space"));
  }
  return spec;
}

std::vector<std::pair<std::string, std::string>> ExecEnvironment(const TaskInfo& task) {
  std::vector<std::pair<std::string, std::string>> env = {
      {"CONVEYOR_TASK_ID", task.id},
      {"CONVEYOR_TASK_TYPE", task.type},
      {"CONVEYOR_QUEUE", task.queue},
      {"CONVEYOR_ATTEMPT", absl::StrCat(task.attempt)},
      {"CONVEYOR_FENCING_TOKEN", absl::StrCat(task.token)},
  };
  if (task.deadline != absl::InfiniteFuture() && task.deadline != absl::InfinitePast()) {
    env.emplace_back("CONVEYOR_DEADLINE",
                     absl::FormatTime(absl::RFC3339_full, task.deadline, absl::UTCTimeZone()));
  }
  auto tp = task.headers.find("traceparent");
  if (tp != task.headers.end() && !tp->second.empty()) env.emplace_back("TRACEPARENT", tp->second);
  return env;
}

absl::StatusOr<std::string> ExecAnswer(ExecResult result) {
  using Outcome = ExecResult::Outcome;
  switch (result.outcome) {
    case Outcome::kSucceeded:
      return std::move(result.output);
    case Outcome::kFailedPermanent:
      return WithReason(absl::FailedPreconditionError(result.error), "exit_code");
    case Outcome::kThrottled:
      // The delay goes to the broker as the pause (Throttled clamps it to
      // 1 h); the message keeps it readable in the task's error.
      return Throttled(result.retry_after,
                       absl::StrCat("the command asked to be throttled (exit 76); retry after ",
                                    result.retry_after > absl::ZeroDuration()
                                        ? absl::FormatDuration(
                                              std::min(result.retry_after, kMaxRetryAfter))
                                        : std::string("the broker's default delay")));
    case Outcome::kTimedOut:
      return absl::DeadlineExceededError(result.error);
    case Outcome::kCancelled:
      return absl::CancelledError(result.error);
    case Outcome::kFailed:
      break;
  }
  return WithReason(absl::UnknownError(result.error),
                    result.term_signal != 0 ? "signal" : "exit_code");
}

Handler MakeExecHandler(std::string command, ExecHandlerOptions options) {
  return [command = std::move(command), options](HandlerContext& ctx)
             -> absl::StatusOr<std::string> {
    ExecRequest request;
    request.command = command;
    request.payload = ctx.payload();
    request.env = ExecEnvironment(ctx.task());
    request.deadline = ctx.deadline();
    request.kill_grace = options.kill_grace;
    request.max_output_bytes = options.max_output_bytes;
    absl::StatusOr<ExecResult> result =
        RunCommand(request, &ctx.cancellation(), [&ctx](double percent, std::string message) {
          ctx.ReportProgress(percent, message);
        });
    if (!result.ok()) {
      if (result.status().code() == absl::StatusCode::kInvalidArgument) {
        // A request RunCommand cannot express (a NUL byte in the traceparent
        // header): no attempt will do better.
        return WithReason(result.status(), "spawn");
      }
      // Could not start at all (no /bin/sh, out of processes): retryable,
      // another worker or a later attempt may manage.
      return WithReason(absl::UnavailableError(absl::StrCat("cannot run the command: ",
                                                             result.status().message())),
                        "spawn");
    }
    return ExecAnswer(*std::move(result));
  };
}

}  // namespace conveyor::worker
