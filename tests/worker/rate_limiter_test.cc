// TokenBucket and --rate parsing, on a fake clock: no real time passes.
#include "worker/rate_limiter.h"

#include "common/clock.h"
#include "gtest/gtest.h"
#include "worker/cancellation.h"

namespace conveyor::worker {
namespace {

TEST(TokenBucketTest, StartsFullAndAllowsABurst) {
  FakeClock clock;
  TokenBucket bucket(/*rate=*/5, /*burst=*/5, &clock);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(bucket.TryTake(), absl::ZeroDuration()) << i;
  EXPECT_GT(bucket.TryTake(), absl::ZeroDuration());
}

TEST(TokenBucketTest, SaysHowLongUntilTheNextToken) {
  FakeClock clock;
  TokenBucket bucket(/*rate=*/4, /*burst=*/1, &clock);
  EXPECT_EQ(bucket.TryTake(), absl::ZeroDuration());
  EXPECT_EQ(bucket.TryTake(), absl::Milliseconds(250));
  clock.Advance(absl::Milliseconds(100));
  EXPECT_EQ(bucket.TryTake(), absl::Milliseconds(150));
  clock.Advance(absl::Milliseconds(150));
  EXPECT_EQ(bucket.TryTake(), absl::ZeroDuration());
}

TEST(TokenBucketTest, RefillsAtTheRateAndNeverPastTheBurst) {
  FakeClock clock;
  TokenBucket bucket(/*rate=*/2, /*burst=*/3, &clock);
  for (int i = 0; i < 3; ++i) ASSERT_EQ(bucket.TryTake(), absl::ZeroDuration());
  clock.Advance(absl::Hours(1));  // far more than enough to refill
  int taken = 0;
  while (bucket.TryTake() == absl::ZeroDuration()) ++taken;
  EXPECT_EQ(taken, 3);
  // Over 10 s at 2/s: 20 tokens, one by one.
  taken = 0;
  for (int step = 0; step < 100; ++step) {
    clock.Advance(absl::Milliseconds(100));
    while (bucket.TryTake() == absl::ZeroDuration()) ++taken;
  }
  EXPECT_EQ(taken, 20);
}

TEST(TokenBucketTest, SlowRatesWaitWholeSeconds) {
  FakeClock clock;
  TokenBucket bucket(/*rate=*/0.5, /*burst=*/1, &clock);
  EXPECT_EQ(bucket.TryTake(), absl::ZeroDuration());
  EXPECT_EQ(bucket.TryTake(), absl::Seconds(2));
  clock.Advance(absl::Seconds(2));
  EXPECT_EQ(bucket.TryTake(), absl::ZeroDuration());
}

TEST(TokenBucketTest, ATimeGoingBackwardsAddsNoTokens) {
  FakeClock clock;
  TokenBucket bucket(/*rate=*/1, /*burst=*/1, &clock);
  EXPECT_EQ(bucket.TryTake(), absl::ZeroDuration());
  clock.Advance(-absl::Seconds(10));
  EXPECT_GT(bucket.TryTake(), absl::ZeroDuration());
}

TEST(ParseRateLimitTest, ReadsPerSecondMinuteAndHour) {
  absl::StatusOr<RateLimit> r = ParseRateLimit("thumbs=5/s");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->type, "thumbs");
  EXPECT_DOUBLE_EQ(r->rate, 5);
  EXPECT_DOUBLE_EQ(r->burst, 5);
  r = ParseRateLimit("mail=120/m");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_DOUBLE_EQ(r->rate, 2);
  r = ParseRateLimit("slow=0.5/s");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_DOUBLE_EQ(r->rate, 0.5);
  EXPECT_DOUBLE_EQ(r->burst, 1);
  r = ParseRateLimit("report=36/h");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_DOUBLE_EQ(r->rate, 0.01);
}

TEST(ParseRateLimitTest, RejectsMalformedLimitsNamingThem) {
  for (const char* bad : {"thumbs", "=5/s", "thumbs=5", "thumbs=x/s", "thumbs=0/s",
                          "thumbs=-1/s", "thumbs=5/d", "thumbs=inf/s"}) {
    absl::StatusOr<RateLimit> r = ParseRateLimit(bad);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(r.status().message().find(bad), std::string::npos) << r.status();
  }
}

TEST(RateLimiterTest, UnlimitedTypesNeverWait) {
  FakeClock clock;
  RateLimiter limiter(&clock);
  Cancellation cancel;
  for (int i = 0; i < 100; ++i) EXPECT_TRUE(limiter.Acquire("any", cancel));
  EXPECT_FALSE(limiter.limited("any"));
}

TEST(RateLimiterTest, AcquireGivesUpWhenCancelled) {
  FakeClock clock;  // never advances: no token ever comes back
  RateLimiter limiter(&clock);
  limiter.SetLimit({"t", 1, 1});
  EXPECT_TRUE(limiter.limited("t"));
  Cancellation cancel;
  EXPECT_TRUE(limiter.Acquire("t", cancel));
  cancel.Cancel(CancelReason::kShutdown);
  EXPECT_FALSE(limiter.Acquire("t", cancel));
}

}  // namespace
}  // namespace conveyor::worker
