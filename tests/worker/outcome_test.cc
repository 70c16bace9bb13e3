// The result convention (worker/handler.h): handler answer + what the worker
// knows -> the report.
#include "worker/outcome.h"

#include "gtest/gtest.h"
#include "worker/handler.h"

namespace conveyor::worker {
namespace {

TEST(DecideOutcomeTest, OkCompletesWithTheResult) {
  AttemptOutcome o = DecideOutcome(std::string("42"), {});
  EXPECT_EQ(o.kind, ReportKind::kComplete);
  EXPECT_EQ(o.result, "42");
  EXPECT_STREQ(o.label, "succeeded");
}

TEST(DecideOutcomeTest, InvalidArgumentAndFailedPreconditionAreNotRetried) {
  for (absl::Status s : {absl::InvalidArgumentError("bad"), absl::FailedPreconditionError("no")}) {
    AttemptOutcome o = DecideOutcome(s, {});
    EXPECT_EQ(o.kind, ReportKind::kFail);
    EXPECT_FALSE(o.retryable) << s;
    EXPECT_EQ(o.reason, "permanent");
    EXPECT_EQ(o.error, s.message());
    EXPECT_STREQ(o.label, "failed_permanent");
  }
}

TEST(DecideOutcomeTest, ResourceExhaustedIsThrottled) {
  AttemptOutcome o = DecideOutcome(absl::ResourceExhaustedError("slow down"), {});
  EXPECT_EQ(o.kind, ReportKind::kFail);
  EXPECT_TRUE(o.retryable);
  EXPECT_EQ(o.reason, "throttled");
  EXPECT_STREQ(o.label, "throttled");
}

TEST(DecideOutcomeTest, OtherCodesAreRetryable) {
  for (absl::Status s : {absl::UnknownError("x"), absl::InternalError("x"),
                         absl::UnavailableError("x"), absl::NotFoundError("x"),
                         absl::DeadlineExceededError("x")}) {
    AttemptOutcome o = DecideOutcome(s, {});
    EXPECT_EQ(o.kind, ReportKind::kFail) << s;
    EXPECT_TRUE(o.retryable) << s;
    EXPECT_EQ(o.reason, "error") << s;
  }
}

TEST(DecideOutcomeTest, AHandlerMayNameItsReason) {
  AttemptOutcome o = DecideOutcome(WithReason(absl::UnknownError("exit 3"), "exit_code"), {});
  EXPECT_EQ(o.reason, "exit_code");
  EXPECT_TRUE(o.retryable);
  o = DecideOutcome(WithReason(absl::FailedPreconditionError("exit 65"), "exit_code"), {});
  EXPECT_EQ(o.reason, "exit_code");
  EXPECT_FALSE(o.retryable);
  EXPECT_EQ(ReasonOf(absl::OkStatus()), "");
}

TEST(DecideOutcomeTest, ATimedOutAttemptIsARetryableTimeout) {
  AttemptFacts facts;
  facts.cancel = CancelReason::kTimeout;
  facts.timeout = absl::Seconds(2);
  AttemptOutcome o = DecideOutcome(absl::CancelledError("sleep: cancelled"), facts);
  EXPECT_EQ(o.kind, ReportKind::kFail);
  EXPECT_TRUE(o.retryable);
  EXPECT_EQ(o.reason, "timeout");
  EXPECT_NE(o.error.find("timeout of 2s"), std::string::npos) << o.error;
  EXPECT_STREQ(o.label, "timeout");
  // A handler's own DEADLINE_EXCEEDED past the deadline is a timeout too
  // (an external command killed by RunCommand at the deadline).
  AttemptFacts late;
  late.past_deadline = true;
  o = DecideOutcome(absl::DeadlineExceededError("killed"), late);
  EXPECT_EQ(o.reason, "timeout");
  // A result that made it, even late, completes.
  EXPECT_EQ(DecideOutcome(std::string("done"), facts).kind, ReportKind::kComplete);
}

TEST(DecideOutcomeTest, ACanceledTaskIsReportedCanceled) {
  AttemptFacts facts;
  facts.cancel = CancelReason::kCanceled;
  AttemptOutcome o = DecideOutcome(absl::CancelledError("stopped"), facts);
  EXPECT_EQ(o.kind, ReportKind::kFail);
  EXPECT_EQ(o.reason, "canceled");
  EXPECT_STREQ(o.label, "canceled");
}

TEST(DecideOutcomeTest, ADrainHandsTheTaskBack) {
  AttemptFacts facts;
  facts.cancel = CancelReason::kShutdown;
  AttemptOutcome o = DecideOutcome(absl::CancelledError("stopped"), facts);
  EXPECT_EQ(o.kind, ReportKind::kRelease);
  EXPECT_STREQ(o.label, "released");
  // A task that finished during the drain still completes.
  EXPECT_EQ(DecideOutcome(std::string("r"), facts).kind, ReportKind::kComplete);
}

TEST(DecideOutcomeTest, ALostLeaseReportsNothing) {
  AttemptFacts facts;
  facts.lease_lost = true;
  facts.cancel = CancelReason::kCanceled;
  EXPECT_EQ(DecideOutcome(std::string("r"), facts).kind, ReportKind::kNone);
  EXPECT_EQ(DecideOutcome(absl::UnknownError("x"), facts).kind, ReportKind::kNone);
  EXPECT_STREQ(DecideOutcome(absl::UnknownError("x"), facts).label, "lease_lost");
}

}  // namespace
}  // namespace conveyor::worker
