// The result convention (worker/handler.h): handler answer + what the worker
// knows -> the report.
#include "worker/outcome.h"

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
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

TEST(DecideOutcomeTest, ResourceExhaustedWithoutADelayIsThrottledWithTheBrokerDefault) {
  AttemptOutcome o = DecideOutcome(absl::ResourceExhaustedError("slow down"), {});
  EXPECT_EQ(o.kind, ReportKind::kFail);
  EXPECT_TRUE(o.throttled);
  EXPECT_EQ(o.retry_after, absl::ZeroDuration());
  EXPECT_TRUE(o.retryable);  // what a broker that predates throttling acts on
  EXPECT_EQ(o.reason, "throttled");
  EXPECT_EQ(o.error, "slow down");
  EXPECT_STREQ(o.label, "throttled");
}

TEST(DecideOutcomeTest, ThrottledCarriesItsDelay) {
  AttemptOutcome o = DecideOutcome(Throttled(absl::Seconds(2), "upstream said 429"), {});
  EXPECT_EQ(o.kind, ReportKind::kFail);
  EXPECT_TRUE(o.throttled);
  EXPECT_EQ(o.retry_after, absl::Seconds(2));
  EXPECT_EQ(o.reason, "throttled");
  EXPECT_EQ(o.error, "upstream said 429");
  EXPECT_STREQ(o.label, "throttled");
}

TEST(DecideOutcomeTest, AThrottleKeepsItsReasonWhateverTheHandlerNamed) {
  AttemptOutcome o =
      DecideOutcome(WithReason(Throttled(absl::Milliseconds(1500)), "http_429"), {});
  EXPECT_TRUE(o.throttled);
  EXPECT_EQ(o.retry_after, absl::Milliseconds(1500));
  EXPECT_EQ(o.reason, "throttled");
}

TEST(DecideOutcomeTest, AnOverlongDelayIsClampedToAnHour) {
  // A payload set by hand, past what Throttled() would write.
  absl::Status s = absl::ResourceExhaustedError("wait a day");
  s.SetPayload(kRetryAfterPayloadUrl,
               absl::Cord(absl::StrCat(absl::ToInt64Microseconds(absl::Hours(24)))));
  AttemptOutcome o = DecideOutcome(s, {});
  EXPECT_TRUE(o.throttled);
  EXPECT_EQ(o.retry_after, absl::Hours(1));
}

TEST(DecideOutcomeTest, OnlyResourceExhaustedIsThrottled) {
  // The delay payload on another code does not make a throttle.
  absl::Status s = absl::UnavailableError("down");
  s.SetPayload(kRetryAfterPayloadUrl, absl::Cord("2000000"));
  for (const absl::StatusOr<std::string>& answer :
       {absl::StatusOr<std::string>(s), absl::StatusOr<std::string>(absl::UnknownError("x")),
        absl::StatusOr<std::string>(absl::InvalidArgumentError("x")),
        absl::StatusOr<std::string>(std::string("ok"))}) {
    AttemptOutcome o = DecideOutcome(answer, {});
    EXPECT_FALSE(o.throttled) << answer.status();
    EXPECT_EQ(o.retry_after, absl::ZeroDuration()) << answer.status();
    EXPECT_STRNE(o.label, "throttled") << answer.status();
  }
}

TEST(DecideOutcomeTest, AThrottleLosesToALostLease) {
  AttemptFacts facts;
  facts.lease_lost = true;
  AttemptOutcome o = DecideOutcome(Throttled(absl::Seconds(5)), facts);
  EXPECT_EQ(o.kind, ReportKind::kNone);
  EXPECT_FALSE(o.throttled);
  EXPECT_STREQ(o.label, "lease_lost");
}

TEST(DecideOutcomeTest, AThrottleLosesToADrain) {
  AttemptFacts facts;
  facts.cancel = CancelReason::kShutdown;
  AttemptOutcome o = DecideOutcome(Throttled(absl::Seconds(5)), facts);
  EXPECT_EQ(o.kind, ReportKind::kRelease);
  EXPECT_FALSE(o.throttled);
  EXPECT_STREQ(o.label, "released");
}

TEST(DecideOutcomeTest, AThrottleLosesToACancel) {
  AttemptFacts facts;
  facts.cancel = CancelReason::kCanceled;
  AttemptOutcome o = DecideOutcome(Throttled(absl::Seconds(5), "429"), facts);
  EXPECT_EQ(o.kind, ReportKind::kFail);
  EXPECT_FALSE(o.throttled);
  EXPECT_EQ(o.retry_after, absl::ZeroDuration());
  EXPECT_EQ(o.reason, "canceled");
  EXPECT_STREQ(o.label, "canceled");
  EXPECT_NE(o.error.find("429"), std::string::npos) << o.error;
}

TEST(DecideOutcomeTest, AThrottleAfterATimeoutIsATimeout) {
  AttemptFacts facts;
  facts.cancel = CancelReason::kTimeout;
  facts.timeout = absl::Seconds(1);
  AttemptOutcome o = DecideOutcome(Throttled(absl::Seconds(5)), facts);
  EXPECT_EQ(o.kind, ReportKind::kFail);
  EXPECT_FALSE(o.throttled);
  EXPECT_EQ(o.reason, "timeout");
  EXPECT_STREQ(o.label, "timeout");
  // Past the deadline without the cancel having fired, a throttle stays a
  // throttle: only DEADLINE_EXCEEDED is read as the timeout then.
  AttemptFacts late;
  late.past_deadline = true;
  o = DecideOutcome(Throttled(absl::Seconds(5)), late);
  EXPECT_TRUE(o.throttled);
  EXPECT_EQ(o.retry_after, absl::Seconds(5));
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
