// Built-in task handlers of conveyor-worker:
//   noop         result ""
//   echo         result = payload
//   sleep        payload: a duration ("2s", "150ms", "1m30s"); sleeps that
//                long, or until the attempt is cancelled (then CANCELLED)
//   fail         payload: a message. Fails with it, retryably; a payload
//                starting with "permanent:" fails for good (INVALID_ARGUMENT,
//                never retried) with the rest of the payload as the message
//   sum_squares  payload: n in decimal (0 <= n < 2^64). Result: the sum of
//                i*i for 0 <= i < n, in decimal, computed exactly in 128
//                bits; an n whose sum does not fit fails for good
//                (INVALID_ARGUMENT) saying so
//   crash        test only: ends the worker process at once (_exit(70)), as
//                a crash would; registered only with --enable-test-handlers
//   batch_echo   a batch handler (worker/batch.h), for demos and tests of
//                batching: each task's result is "<batch size>:<payload>"
//                ("3:hello" for a task that ran in a batch of 3); a payload
//                "fail:<message>" fails that task alone, retryably,
//                "permanent:<message>" fails it for good, and
//                "flaky:<text>" fails it (retryably) on its first attempt
//                only, then echoes like any other
//
// A payload a handler cannot read (a bad duration, a bad number) is a
// permanent failure (INVALID_ARGUMENT): retrying cannot fix it.
//
// Thread-safe (stateless functions).
#ifndef CONVEYOR_WORKER_BUILTIN_HANDLERS_H_
#define CONVEYOR_WORKER_BUILTIN_HANDLERS_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "worker/batch.h"
#include "worker/handler.h"
#include "worker/worker.h"

namespace conveyor::worker {

absl::StatusOr<std::string> NoopHandler(HandlerContext& ctx);
absl::StatusOr<std::string> EchoHandler(HandlerContext& ctx);
absl::StatusOr<std::string> SleepHandler(HandlerContext& ctx);
absl::StatusOr<std::string> FailHandler(HandlerContext& ctx);
absl::StatusOr<std::string> SumSquaresHandler(HandlerContext& ctx);
// Never returns.
absl::StatusOr<std::string> CrashHandler(HandlerContext& ctx);

// sum_squares' arithmetic: sum of i*i for 0 <= i < n, in decimal.
absl::StatusOr<std::string> SumSquares(absl::string_view n_text);

BatchAnswers BatchEchoHandler(BatchContext& batch);

// Registers noop, echo, sleep, fail, sum_squares, batch_echo (with
// `batch_options`), and crash when `enable_test_handlers`. Errors are
// Register's (ALREADY_EXISTS, ...).
absl::Status RegisterBuiltinHandlers(Worker& worker, bool enable_test_handlers,
                                     BatchOptions batch_echo_options = {});

}  // namespace conveyor::worker

#endif  // CONVEYOR_WORKER_BUILTIN_HANDLERS_H_
