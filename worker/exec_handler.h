// External-command handlers (`conveyor-worker --exec TYPE=COMMAND`): each
// attempt runs `/bin/sh -c COMMAND` through RunCommand (worker/exec.h) with
// the payload on stdin; stdout is the result. Exit codes, as DESIGN.md pins
// them: 0 success; 65 a failure that must not be retried; 76 throttled: the
// delay the command printed on stdout ("2s", "500ms" or bare seconds; none:
// the broker's default, 1 s; at most 1 h) goes to the broker, which puts the
// task back to READY without spending an attempt and pauses its rate key (or
// its queue) for that long; any other code or a signal a retryable failure.
// The deadline and cancellations (SIGTERM to the process group, SIGKILL after
// `kill_grace`) are RunCommand's. Lines "PROGRESS <percent> [message]" on
// stderr become progress.
//
// The command's environment is the worker's plus:
//   CONVEYOR_TASK_ID, CONVEYOR_TASK_TYPE, CONVEYOR_QUEUE, CONVEYOR_ATTEMPT,
//   CONVEYOR_FENCING_TOKEN, CONVEYOR_DEADLINE (RFC 3339, UTC; unset when the
//   attempt has no deadline), and TRACEPARENT (the task's `traceparent`
//   header, when it has one).
//
// Thread-safe: the handler may run on many threads at once.
#ifndef CONVEYOR_WORKER_EXEC_HANDLER_H_
#define CONVEYOR_WORKER_EXEC_HANDLER_H_

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "worker/exec.h"
#include "worker/handler.h"

namespace conveyor::worker {

struct ExecHandlerOptions {
  // After SIGTERM, SIGKILL to the group once this has passed.
  absl::Duration kill_grace = absl::Seconds(5);
  // More stdout than this fails the attempt (retryable).
  size_t max_output_bytes = 1 << 20;
};

struct ExecSpec {
  std::string type;
  std::string command;
};

// Parses "TYPE=COMMAND" (the command may hold '='). INVALID_ARGUMENT names
// the problem and the flag (`flag`: "--exec" or "--exec-batch").
absl::StatusOr<ExecSpec> ParseExecSpec(absl::string_view text, absl::string_view flag = "--exec");

// The environment RunCommand adds for `task`.
std::vector<std::pair<std::string, std::string>> ExecEnvironment(const TaskInfo& task);

// The SDK answer for what the command did (see worker/handler.h): success ->
// OK(stdout); exit 65 -> FAILED_PRECONDITION; throttled -> Throttled(the
// parsed delay), i.e. RESOURCE_EXHAUSTED whose RetryAfterOf is that delay
// (clamped to 1 h); timed out -> DEADLINE_EXCEEDED; cancelled -> CANCELLED;
// other failures -> UNKNOWN with reason "exit_code" or "signal".
absl::StatusOr<std::string> ExecAnswer(ExecResult result);

Handler MakeExecHandler(std::string command, ExecHandlerOptions options);

}  // namespace conveyor::worker

#endif  // CONVEYOR_WORKER_EXEC_HANDLER_H_
