#include "worker/builtin_handlers.h"

#include <unistd.h>

#include <cstdint>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "common/log.h"

namespace conveyor::worker {
namespace {

using uint128 = unsigned __int128;

constexpr absl::string_view kPermanentPrefix = "permanent:";

std::string ToDecimal(uint128 v) {
  if (v == 0) return "0";
  std::string digits;
  while (v != 0) {
    digits.push_back(static_cast<char>('0' + static_cast<int>(v % 10)));
    v /= 10;
  }
  return std::string(digits.rbegin(), digits.rend());
}

}  // namespace

absl::StatusOr<std::string> NoopHandler(HandlerContext&) { return std::string(); }

absl::StatusOr<std::string> EchoHandler(HandlerContext& ctx) { return ctx.payload(); }

absl::StatusOr<std::string> SleepHandler(HandlerContext& ctx) {
  const absl::string_view text = absl::StripAsciiWhitespace(ctx.payload());
  absl::Duration d;
  if (!absl::ParseDuration(text, &d) || d < absl::ZeroDuration() ||
      d == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "sleep: payload \"", text, "\" is not a duration such as \"2s\" or \"150ms\""));
  }
  if (ctx.cancellation().WaitFor(d)) {
    return absl::CancelledError(absl::StrCat("sleep: cancelled (",
                                             CancelReasonName(ctx.cancel_reason()), ")"));
  }
  return std::string();
}

absl::StatusOr<std::string> FailHandler(HandlerContext& ctx) {
  absl::string_view message = ctx.payload();
  if (absl::ConsumePrefix(&message, kPermanentPrefix)) {
    message = absl::StripLeadingAsciiWhitespace(message);
    return absl::InvalidArgumentError(message.empty() ? "fail: permanent failure" : message);
  }
  return absl::UnknownError(message.empty() ? "fail: failure as requested" : message);
}

absl::StatusOr<std::string> SumSquares(absl::string_view n_text) {
  n_text = absl::StripAsciiWhitespace(n_text);
  uint64_t n = 0;
  if (n_text.empty() || !absl::ascii_isdigit(static_cast<unsigned char>(n_text[0])) ||
      !absl::SimpleAtoi(n_text, &n)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "sum_squares: payload \"", n_text, "\" is not a whole number from 0 to 2^64-1"));
  }
  if (n < 2) return std::string("0");
  // sum_{i<n} i^2 = (n-1) n (2n-1) / 6. Divide the factors first (one of
  // n-1, n is even; one of the three is a multiple of 3) so that the only
  // overflow to check is the product of what is left.
  uint128 f[3] = {n - 1, n, 2 * static_cast<uint128>(n) - 1};
  if (f[0] % 2 == 0) {
    f[0] /= 2;
  } else {
    f[1] /= 2;
  }
  for (uint128& x : f) {
    if (x % 3 == 0) {
      x /= 3;
      break;
    }
  }
  uint128 product = 0;
  if (__builtin_mul_overflow(f[0], f[1], &product) ||
      __builtin_mul_overflow(product, f[2], &product)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "sum_squares: n = ", n, " is too large: the sum of squares does not fit in 128 bits"));
  }
  return ToDecimal(product);
}

absl::StatusOr<std::string> SumSquaresHandler(HandlerContext& ctx) {
  return SumSquares(ctx.payload());
}

absl::StatusOr<std::string> CrashHandler(HandlerContext& ctx) {
  LogError("crash handler: ending the worker process now (test handler)",
           {{"task_id", ctx.task_id()}, {"queue", ctx.queue()}, {"type", ctx.type()},
            {"worker_id", ctx.task().worker_id}});
  _exit(70);
}

BatchAnswers BatchEchoHandler(BatchContext& batch) {
  BatchAnswers answers;
  answers.reserve(batch.size());
  const std::string prefix = absl::StrCat(batch.size(), ":");
  for (const TaskInfo& t : batch.tasks()) {
    absl::string_view payload = t.payload;
    if (absl::ConsumePrefix(&payload, "fail:")) {
      answers.push_back(absl::UnknownError(payload.empty() ? "batch_echo: failure as requested"
                                                           : payload));
    } else if (absl::ConsumePrefix(&payload, kPermanentPrefix)) {
      answers.push_back(absl::InvalidArgumentError(
          payload.empty() ? "batch_echo: permanent failure as requested" : payload));
    } else if (absl::StartsWith(payload, "flaky:") && t.attempt <= 1) {
      answers.push_back(absl::UnknownError("batch_echo: flaky task, failing its first attempt"));
    } else {
      answers.push_back(absl::StrCat(prefix, t.payload));
    }
  }
  return answers;
}

absl::Status RegisterBuiltinHandlers(Worker& worker, bool enable_test_handlers,
                                     BatchOptions batch_echo_options) {
  struct Entry {
    const char* type;
    absl::StatusOr<std::string> (*fn)(HandlerContext&);
  };
  const Entry kEntries[] = {{"noop", NoopHandler},   {"echo", EchoHandler},
                            {"sleep", SleepHandler}, {"fail", FailHandler},
                            {"sum_squares", SumSquaresHandler}};
  for (const Entry& e : kEntries) {
    if (absl::Status s = worker.Register(e.type, e.fn); !s.ok()) return s;
  }
  if (absl::Status s = worker.RegisterBatch("batch_echo", BatchEchoHandler, batch_echo_options);
      !s.ok()) {
    return s;
  }
  if (enable_test_handlers) return worker.Register("crash", CrashHandler);
  return absl::OkStatus();
}

}  // namespace conveyor::worker
