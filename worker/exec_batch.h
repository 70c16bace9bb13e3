// Batch external commands (`conveyor-worker --exec-batch TYPE=COMMAND`): one
// run of `/bin/sh -c COMMAND` (through RunCommand, worker/exec.h) for a whole
// batch of tasks (worker/batch.h), speaking JSON lines.
//
// stdin: one line per task, in batch order, then EOF:
//   {"id":"<task id>","queue":"<queue>","payload":"<base64>","attempt":1,
//    "max_attempts":3,"headers":{"traceparent":"00-..."}}
// stdout: one line per task, in any order, matched by "id":
//   {"id":"<task id>","ok":true,"result":"<base64>"}           Complete
//   {"id":"<task id>","ok":false,"error":"why"}                Fail, retried
//   {"id":"<task id>","ok":false,"error":"why","retryable":false}
//                                                              Fail, not retried
//   {"id":"<task id>","ok":false,"throttled":true,"retry_after":"2s"}
//                                                              throttled
// Input lines always hold exactly these fields ("headers" may be {}), in
// this order. An answer is one JSON object per line (json_line.h): "id" (a
// string) and "ok" (true or false) are required; "result", "error" and
// "retry_after" are strings, "retryable" and "throttled" true or false, and
// null counts as absent; any other field, a duplicate field or a value of
// the wrong type makes the line invalid. Base64 is standard (RFC 4648,
// padded; URL-safe and unpadded are read too); "result" absent means an
// empty result; "retryable" absent means true; "retry_after" is "2s",
// "500ms" or a number of seconds (absent: the broker's default, 1 s; at most
// 1 h). stdout holds answers only (blank lines are skipped): write logs to
// stderr, where lines "PROGRESS <percent> [message]" set the progress of
// every task.
//
// Each task's outcome:
//   answered                      as answered, whatever the exit code (also
//                                 when the command is later killed)
//   not answered, exit 0          retryable failure, reason "missing_answer"
//   not answered, exit 65         failure, not retried
//   not answered, exit 76         throttled; a stdout line holding only a
//                                 delay ("2s") sets the pause
//   not answered, other exit or   retryable failure (reason "exit_code" or
//   a signal                      "signal")
//   not answered, timeout/cancel  as for a single command (timeout, canceled,
//                                 released on drain)
//   answered twice, or a broken   retryable failure naming the line
//   answer line for its id
// A line that is not a JSON object, lacks an "id", or names a task not in
// the batch is named (line number, a snippet and what is wrong) in the error
// of every task left without an answer.
//
// The whole batch shares the command's deadline (the earliest of its tasks')
// and its cancellation: a timeout, a drain, or the broker canceling every
// task of the batch signals the process group (SIGTERM, then SIGKILL after
// kill_grace), like a single command. A broker cancel of some tasks only does
// not stop the command; those tasks end CANCELED unless answered ok.
//
// Environment: the worker's plus CONVEYOR_TASK_TYPE, CONVEYOR_BATCH_SIZE,
// CONVEYOR_QUEUE (when every task of the batch is of one queue) and
// CONVEYOR_DEADLINE (the batch's, RFC 3339, UTC; unset without one).
//
// Limits: a result over `max_output_bytes` (decoded) fails its task,
// retryably; stdout as a whole may hold that per task (base64) plus 64 KiB.
//
// Thread-safe: the handler may run on many threads at once.
#ifndef CONVEYOR_WORKER_EXEC_BATCH_H_
#define CONVEYOR_WORKER_EXEC_BATCH_H_

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"
#include "worker/batch.h"
#include "worker/exec.h"
#include "worker/exec_handler.h"
#include "worker/handler.h"

namespace conveyor::worker {

// The command's stdin for `tasks`: one JSON line each, as above.
std::string EncodeBatchInput(const std::vector<TaskInfo>& tasks);

// One answer per task (in the order of `tasks`) from what the command did,
// by the rules above. `max_result_bytes`: the largest decoded result.
BatchAnswers DecodeBatchOutput(const std::vector<TaskInfo>& tasks, const ExecResult& result,
                               size_t max_result_bytes);

// The environment RunCommand adds for a batch.
std::vector<std::pair<std::string, std::string>> ExecBatchEnvironment(const BatchContext& batch);

BatchHandler MakeExecBatchHandler(std::string command, ExecHandlerOptions options);

}  // namespace conveyor::worker

#endif  // CONVEYOR_WORKER_EXEC_BATCH_H_
