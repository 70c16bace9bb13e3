// HandlerContext, the Throttled/RetryAfterOf status helpers, and the text
// helpers behind what a context sends.
#include "worker/handler.h"

#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/cord.h"
#include "gtest/gtest.h"
#include "worker/text.h"

namespace conveyor::worker {
namespace {

TEST(HandlerContextTest, ExposesTheTask) {
  TaskInfo t;
  t.id = "00000000000000ab";
  t.payload = "p";
  t.headers["traceparent"] = "tp";
  t.attempt = 3;
  t.token = 9;
  Cancellation cancel;
  HandlerContext ctx(t, &cancel, {});
  EXPECT_EQ(ctx.task_id(), "00000000000000ab");
  EXPECT_EQ(ctx.payload(), "p");
  EXPECT_EQ(ctx.header("traceparent"), "tp");
  EXPECT_EQ(ctx.header("missing"), "");
  EXPECT_EQ(ctx.attempt(), 3u);
  EXPECT_EQ(ctx.fencing_token(), 9u);
  EXPECT_FALSE(ctx.cancelled());
  cancel.Cancel(CancelReason::kTimeout);
  EXPECT_TRUE(ctx.cancelled());
  EXPECT_EQ(ctx.cancel_reason(), CancelReason::kTimeout);
  ctx.ReportProgress(10, "no sink: dropped");  // must not crash
}

TEST(HandlerContextTest, ProgressIsClampedAndItsMessageBounded) {
  std::vector<std::pair<double, std::string>> seen;
  Cancellation cancel;
  const TaskInfo task;
  HandlerContext ctx(task, &cancel,
                     [&](double p, std::string m) { seen.emplace_back(p, std::move(m)); });
  ctx.ReportProgress(150, "over");
  ctx.ReportProgress(-5, "under");
  ctx.ReportProgress(42.5, std::string(5000, 'x'));
  ctx.ReportProgress(1, "bad \xc3 utf-8");
  ASSERT_EQ(seen.size(), 4u);
  EXPECT_EQ(seen[0].first, 100);
  EXPECT_EQ(seen[1].first, 0);
  EXPECT_EQ(seen[2].first, 42.5);
  EXPECT_EQ(seen[2].second.size(), 1024u);
  EXPECT_EQ(seen[3].second, "bad ? utf-8");
}

TEST(HandlerThrottledTest, CarriesTheDelayAsDecimalMicroseconds) {
  absl::Status s = Throttled(absl::Seconds(2), "upstream said 429");
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(s.message(), "upstream said 429");
  auto payload = s.GetPayload("type.conveyor.dev/retry_after");
  ASSERT_TRUE(payload.has_value());
  EXPECT_EQ(std::string(*payload), "2000000");
  EXPECT_EQ(RetryAfterOf(s), absl::Seconds(2));
}

TEST(HandlerThrottledTest, RoundTripsSubsecondDelaysAndZero) {
  EXPECT_EQ(RetryAfterOf(Throttled(absl::Milliseconds(1500))), absl::Milliseconds(1500));
  EXPECT_EQ(RetryAfterOf(Throttled(absl::Microseconds(7))), absl::Microseconds(7));
  // Zero: the broker's default; still a delay that is present, not nullopt.
  EXPECT_EQ(RetryAfterOf(Throttled(absl::ZeroDuration())), absl::ZeroDuration());
}

TEST(HandlerThrottledTest, ClampsTheDelayToZeroThroughAnHour) {
  EXPECT_EQ(RetryAfterOf(Throttled(absl::Hours(2))), absl::Hours(1));
  EXPECT_EQ(RetryAfterOf(Throttled(absl::InfiniteDuration())), absl::Hours(1));
  EXPECT_EQ(RetryAfterOf(Throttled(absl::Hours(1))), absl::Hours(1));
  EXPECT_EQ(RetryAfterOf(Throttled(absl::Seconds(-3))), absl::ZeroDuration());
  EXPECT_EQ(RetryAfterOf(Throttled(-absl::InfiniteDuration())), absl::ZeroDuration());
  EXPECT_EQ(kMaxRetryAfter, absl::Hours(1));
}

TEST(HandlerThrottledTest, AnEmptyMessageNamesTheDelay) {
  EXPECT_EQ(Throttled(absl::Seconds(2)).message(), "retry after 2s");
  EXPECT_EQ(Throttled(absl::ZeroDuration()).message(), "retry after the broker's default delay");
}

TEST(HandlerRetryAfterOfTest, IsAbsentWithoutAUsablePayload) {
  EXPECT_EQ(RetryAfterOf(absl::OkStatus()), std::nullopt);
  EXPECT_EQ(RetryAfterOf(absl::ResourceExhaustedError("plain")), std::nullopt);
  absl::Status garbled = absl::ResourceExhaustedError("x");
  garbled.SetPayload(kRetryAfterPayloadUrl, absl::Cord("2s"));
  EXPECT_EQ(RetryAfterOf(garbled), std::nullopt);
  // A payload written by hand is clamped like Throttled's argument.
  absl::Status by_hand = absl::ResourceExhaustedError("x");
  by_hand.SetPayload(kRetryAfterPayloadUrl, absl::Cord("-5"));
  EXPECT_EQ(RetryAfterOf(by_hand), absl::ZeroDuration());
  by_hand.SetPayload(kRetryAfterPayloadUrl, absl::Cord("86400000000"));
  EXPECT_EQ(RetryAfterOf(by_hand), absl::Hours(1));
}

TEST(HandlerRetryAfterOfTest, SurvivesWithReason) {
  absl::Status s = WithReason(Throttled(absl::Seconds(4)), "http_429");
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(RetryAfterOf(s), absl::Seconds(4));
  EXPECT_EQ(ReasonOf(s), "http_429");
}

TEST(ValidUtf8Test, KeepsValidTextAndReplacesBadBytes) {
  EXPECT_EQ(ValidUtf8("plain", 100), "plain");
  EXPECT_EQ(ValidUtf8("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 100),
            "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
  EXPECT_EQ(ValidUtf8("a\xff" "b\xc0\xaf" "c", 100), "a?b??c");     // stray, overlong
  EXPECT_EQ(ValidUtf8("\xed\xa0\x80", 100), "???");                  // surrogate
  EXPECT_EQ(ValidUtf8("\xe2\x82", 100), "??");                       // truncated
}

TEST(ValidUtf8Test, CutsAtACharacterBoundary) {
  EXPECT_EQ(ValidUtf8("abc", 2), "ab");
  EXPECT_EQ(ValidUtf8("a\xe2\x82\xac", 3), "a");  // the euro sign does not fit
  EXPECT_EQ(ValidUtf8("a\xe2\x82\xac", 4), "a\xe2\x82\xac");
}

}  // namespace
}  // namespace conveyor::worker
