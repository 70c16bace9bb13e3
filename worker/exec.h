// The external-command runner behind `conveyor-worker --exec TYPE=COMMAND`.
//
// RunCommand runs one attempt of a task as `/bin/sh -c COMMAND` and maps what
// the command did to an attempt outcome, following the pinned-down rules in
// DESIGN.md ("External commands"):
//
//   payload ──▶ stdin            stdout ──▶ result (or the throttle delay)
//   exit 0  ──▶ succeeded        exit 65 ──▶ failed, not retried
//   exit 76 ──▶ throttled        other code or a signal ──▶ failed, retryable
//   stderr lines "PROGRESS <percent> [message]" ──▶ the progress callback
//
// A throttled attempt is not a failure: the worker reports the delay from
// stdout (`retry_after`) to the broker, which puts the task back to READY
// without spending an attempt and pauses its rate key (or its queue) for that
// long (worker/exec_handler.h).
//
// The command runs in its own process group. A deadline, a cancellation, an
// oversized stdout, or the command's main process exiting while others of its
// group live on, all end the attempt the same way: SIGTERM to the whole group,
// then SIGKILL once `kill_grace` has passed. RunCommand returns only after the
// main process is reaped and the group is gone.
//
// The child is started with posix_spawn (never fork: the worker is a threaded
// gRPC process), with every signal it could have inherited from the worker
// unblocked and SIGTERM/SIGINT/SIGPIPE/SIGCHLD/SIGHUP/SIGQUIT reset to their
// defaults, and with no descriptor of the worker other than its stdin, stdout
// and stderr pipes.
//
// Thread-safety: RunCommand is thread-safe; any number of threads may run
// commands at once. Process-wide requirements (see RunCommand): nothing else in
// the process may reap children it did not start (no waitpid(-1)), SIGCHLD
// must not be set to SIG_IGN, and no thread may call setenv/putenv once
// commands run (the child's environment is read from `environ`). Linux only
// (pidfd, /proc).
#ifndef CONVEYOR_WORKER_EXEC_H_
#define CONVEYOR_WORKER_EXEC_H_

#include <cstddef>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "worker/cancellation.h"

namespace conveyor::worker {

struct ExecRequest {
  // Run as `/bin/sh -c COMMAND`. Must not contain NUL bytes.
  std::string command;
  // Written to the child's stdin, which is then closed. A child that exits
  // without reading it all is not an error.
  std::string payload;
  // Added to the worker's environment; a name already there is overridden,
  // and a name given twice takes its last value. Names must be non-empty and
  // contain no '='; names and values no NUL bytes.
  std::vector<std::pair<std::string, std::string>> env;
  // The attempt deadline: SIGTERM to the process group when it passes.
  absl::Time deadline = absl::InfiniteFuture();
  // After a SIGTERM, SIGKILL to the group if it has not gone within this.
  absl::Duration kill_grace = absl::Seconds(5);
  // More stdout than this fails the attempt (retryable) and kills the group.
  // Exactly this many bytes is fine.
  size_t max_output_bytes = 1 << 20;
};

struct ExecResult {
  enum class Outcome {
    kSucceeded,        // exit 0; `output` is the result
    kFailed,           // retryable: another exit code, a signal, stdout too big
    kFailedPermanent,  // exit 65: must not be retried
    kThrottled,        // exit 76: try again after `retry_after`
    kTimedOut,         // the deadline passed, or cancelled with kTimeout
    kCancelled,        // cancelled for any other reason
  };
  Outcome outcome = Outcome::kFailed;
  int exit_code = -1;   // -1 if killed by a signal (or never started)
  int term_signal = 0;  // the signal that ended it, 0 if it exited
  // The child's stdout, at most max_output_bytes of it: the result on
  // success, the delay text when throttled.
  std::string output;
  // Human-readable, empty on success: "exit code 3: <last stderr lines>",
  // "killed by signal 9 (SIGKILL)", "timeout: attempt deadline reached after
  // 2s", ... Other stderr (at most the last 4 KiB) follows the summary.
  std::string error;
  // kThrottled only: the delay parsed from the trimmed stdout ("2s", "500ms",
  // or a bare number of seconds); zero if absent or unparseable (the broker's
  // default pause, 1 s). Not clamped here; the worker clamps it to 1 h.
  absl::Duration retry_after = absl::ZeroDuration();
  // The child's pid, which is also its process-group id; 0 if never started.
  // Already reaped when RunCommand returns: for diagnostics only.
  int pid = 0;
};

// "succeeded", "failed", "failed_permanent", "throttled", "timed_out",
// "cancelled": stable names for logs and metric labels.
const char* OutcomeName(ExecResult::Outcome outcome);

// Called on the thread running RunCommand, in between reads of the child's
// output: it should return quickly. `percent` is within [0, 100].
using ProgressFn = std::function<void(double percent, std::string message)>;

// Runs one attempt of `request.command` and blocks the calling thread until
// the child is reaped and no process of its group is alive. Group members
// orphaned to this process (when it is PID 1 or a child subreaper) are reaped
// too; those orphaned to another init are left for it to reap. A member stuck
// in uninterruptible sleep, where even SIGKILL waits, is waited for 5 s at most.
//
// `cancel` (may be null): when it fires, SIGTERM to the group, then SIGKILL
// after kill_grace; the outcome is kCancelled, or kTimedOut if its reason is
// CancelReason::kTimeout. If `cancel` has already fired, or the deadline has
// already passed, nothing is started and that outcome is returned at once.
// `progress` (may be empty) receives the PROGRESS lines of stderr, which are
// not part of `error`.
//
// When the command's main process exits, the attempt's outcome is decided by
// its exit status; any process it left behind in its group is then killed
// (SIGTERM and SIGKILL after kill_grace if it still holds the output pipes,
// SIGKILL otherwise). A process that left the group (setsid) is out of reach:
// if it holds the output pipes, they are abandoned 2 s after the SIGKILL.
//
// SIGPIPE raised by writing the payload to a child that stopped reading is
// swallowed, whatever the process's disposition of SIGPIPE.
//
// Returns a non-OK status only when the command could not be started at all:
// INVALID_ARGUMENT for a malformed request (NUL in the command, a bad env
// name), FAILED_PRECONDITION when /bin/sh cannot be executed, INTERNAL when
// pipes or the process cannot be created (e.g. out of descriptors or
// processes); the message carries the system's reason.
absl::StatusOr<ExecResult> RunCommand(const ExecRequest& request, const Cancellation* cancel,
                                      const ProgressFn& progress);

}  // namespace conveyor::worker

#endif  // CONVEYOR_WORKER_EXEC_H_
