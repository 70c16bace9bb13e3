// The built-in handlers, called directly with a HandlerContext.
#include "worker/builtin_handlers.h"

#include <thread>

#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "worker/cancellation.h"
#include "worker/outcome.h"

namespace conveyor::worker {
namespace {

TaskInfo Task(std::string type, std::string payload) {
  TaskInfo t;
  t.id = "0000000000000001";
  t.queue = "q";
  t.type = std::move(type);
  t.payload = std::move(payload);
  return t;
}

absl::StatusOr<std::string> Call(absl::StatusOr<std::string> (*fn)(HandlerContext&),
                                 std::string payload, Cancellation* cancel = nullptr) {
  Cancellation own;
  const TaskInfo task = Task("t", std::move(payload));
  HandlerContext ctx(task, cancel != nullptr ? cancel : &own, {});
  return fn(ctx);
}

TEST(BuiltinHandlersTest, NoopReturnsNothing) {
  absl::StatusOr<std::string> r = Call(NoopHandler, "ignored");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, "");
}

TEST(BuiltinHandlersTest, EchoReturnsThePayloadByteForByte) {
  const std::string payload("a\0b\xff", 4);
  absl::StatusOr<std::string> r = Call(EchoHandler, payload);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, payload);
}

TEST(BuiltinHandlersTest, SleepSleepsForTheDurationGiven) {
  const absl::Time start = absl::Now();
  absl::StatusOr<std::string> r = Call(SleepHandler, "20ms");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(20));
}

TEST(BuiltinHandlersTest, SleepStopsWhenCancelled) {
  Cancellation cancel;
  cancel.Cancel(CancelReason::kTimeout);
  const absl::Time start = absl::Now();
  absl::StatusOr<std::string> r = Call(SleepHandler, "1h", &cancel);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled);
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
}

TEST(BuiltinHandlersTest, SleepWithABadDurationFailsForGood) {
  for (const char* bad : {"", "soon", "-1s", "5"}) {
    absl::StatusOr<std::string> r = Call(SleepHandler, bad);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST(BuiltinHandlersTest, FailIsRetryableWithThePayloadAsTheMessage) {
  absl::StatusOr<std::string> r = Call(FailHandler, "disk on fire");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnknown);
  EXPECT_EQ(r.status().message(), "disk on fire");
  AttemptOutcome o = DecideOutcome(r, {});
  EXPECT_TRUE(o.retryable);
}

TEST(BuiltinHandlersTest, FailWithPermanentPrefixIsNotRetryable) {
  absl::StatusOr<std::string> r = Call(FailHandler, "permanent: bad input");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(r.status().message(), "bad input");
  AttemptOutcome o = DecideOutcome(r, {});
  EXPECT_EQ(o.kind, ReportKind::kFail);
  EXPECT_FALSE(o.retryable);
}

TEST(BuiltinHandlersTest, SumSquaresAddsTheSquaresBelowN) {
  EXPECT_EQ(*SumSquares("0"), "0");
  EXPECT_EQ(*SumSquares("1"), "0");
  EXPECT_EQ(*SumSquares("2"), "1");
  EXPECT_EQ(*SumSquares("4"), "14");  // 0 + 1 + 4 + 9
  EXPECT_EQ(*SumSquares(" 10\n"), "285");
  // Brute force for a range of n.
  for (uint64_t n = 0; n < 2000; ++n) {
    unsigned __int128 sum = 0;
    for (uint64_t i = 0; i < n; ++i) sum += static_cast<unsigned __int128>(i) * i;
    ASSERT_EQ(*SumSquares(std::to_string(n)), std::to_string(static_cast<uint64_t>(sum))) << n;
  }
  // Past 64 bits: (10^9 - 1) 10^9 (2 10^9 - 1) / 6.
  EXPECT_EQ(*SumSquares("1000000000"), "333333332833333333500000000");
}

TEST(BuiltinHandlersTest, SumSquaresReportsOverflowAsAPermanentFailure) {
  absl::StatusOr<std::string> r = SumSquares("18446744073709551615");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("does not fit in 128 bits"), std::string::npos);
  // The largest n whose sum fits: 10069012961345 (checked with bignums).
  EXPECT_TRUE(SumSquares("10069012961345").ok());
  EXPECT_FALSE(SumSquares("10069012961346").ok());
}

TEST(BuiltinHandlersTest, SumSquaresRejectsWhatIsNotANumber) {
  for (const char* bad : {"", "-3", "+3", "3.5", "abc", "18446744073709551616"}) {
    EXPECT_EQ(SumSquares(bad).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST(BuiltinHandlersTest, RegistersCrashOnlyWhenTestHandlersAreEnabled) {
  WorkerOptions options;
  options.queues = {"q"};
  Worker plain(options);
  ASSERT_TRUE(RegisterBuiltinHandlers(plain, false).ok());
  EXPECT_EQ(plain.types(), (std::vector<std::string>{"batch_echo", "echo", "fail", "noop", "sleep",
                                                     "sum_squares"}));
  EXPECT_EQ(plain.batch_types(), (std::vector<std::string>{"batch_echo"}));
  Worker testing(options);
  ASSERT_TRUE(RegisterBuiltinHandlers(testing, true).ok());
  EXPECT_EQ(testing.types(), (std::vector<std::string>{"batch_echo", "crash", "echo", "fail",
                                                       "noop", "sleep", "sum_squares"}));
}

TEST(BuiltinHandlersTest, BatchEchoTakesItsBatchOptionsAndRefusesBadOnes) {
  WorkerOptions options;
  options.queues = {"q"};
  Worker worker(options);
  absl::Status s = RegisterBuiltinHandlers(worker, false, {.max_size = 0});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("max_size 0"), std::string::npos) << s;
  Worker ok(options);
  EXPECT_TRUE(RegisterBuiltinHandlers(ok, false, {.max_size = 1000, .linger = absl::Seconds(10)})
                  .ok());
}

TEST(WorkerRegisterBatchTest, ATypeHasOneHandlerSingleOrBatch) {
  WorkerOptions options;
  options.queues = {"q"};
  Worker worker(options);
  BatchHandler batch = [](BatchContext& b) { return BatchAnswers(b.size(), std::string()); };
  ASSERT_TRUE(worker.Register("single", EchoHandler).ok());
  EXPECT_EQ(worker.RegisterBatch("single", batch).code(), absl::StatusCode::kAlreadyExists);
  ASSERT_TRUE(worker.RegisterBatch("many", batch, {.max_size = 5}).ok());
  EXPECT_EQ(worker.Register("many", EchoHandler).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(worker.RegisterBatch("", batch).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(worker.RegisterBatch("x", BatchHandler()).code(), absl::StatusCode::kInvalidArgument);
  absl::Status slow = worker.RegisterBatch("slow", batch, {.linger = absl::Minutes(1)});
  EXPECT_EQ(slow.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(slow.message().find("linger 1m"), std::string::npos) << slow;
  EXPECT_EQ(worker.types(), (std::vector<std::string>{"many", "single"}));
  EXPECT_EQ(worker.batch_types(), (std::vector<std::string>{"many"}));
}

}  // namespace
}  // namespace conveyor::worker
