// Limits settings and the token bucket (server/limits.h): the bucket's
// arithmetic on exact times, ValidateLimits' bounds and messages,
// ApplyLimitsUpdate's merge rules, and the per-key lookups.
#include "server/limits.h"

#include <cmath>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace conveyor::server {
namespace {

using ::testing::HasSubstr;
using ::testing::Optional;

const absl::Time kT0 = absl::FromUnixSeconds(1'700'000'000);

RateLimit Rate(double per_second, uint32_t burst = 0) {
  RateLimit r;
  r.per_second = per_second;
  r.burst = burst;
  return r;
}

// Takes tokens at `now` while one is there; returns how many.
int Drain(TokenBucket& b, absl::Time now) {
  int n = 0;
  while (b.ReadyAt(now) <= now && n < 10'000'000) {
    b.Take(now);
    ++n;
  }
  return n;
}

// ── TokenBucket ──

TEST(LimitsTokenBucketTest, StartsFullWithItsBurst) {
  TokenBucket b(Rate(10, 5), kT0);
  EXPECT_TRUE(b.Full(kT0));
  EXPECT_EQ(Drain(b, kT0), 5);
  EXPECT_FALSE(b.Full(kT0));
  EXPECT_EQ(b.ReadyAt(kT0), kT0 + absl::Milliseconds(100));
}

TEST(LimitsTokenBucketTest, DefaultBurstIsATenthOfASecondsWorthAndAtLeastOne) {
  EXPECT_EQ(Rate(100).EffectiveBurst(), 10);
  EXPECT_EQ(Rate(25).EffectiveBurst(), 2);  // floor(2.5)
  EXPECT_EQ(Rate(10).EffectiveBurst(), 1);
  EXPECT_EQ(Rate(5).EffectiveBurst(), 1);
  EXPECT_EQ(Rate(0.5).EffectiveBurst(), 1);
  EXPECT_EQ(Rate(1'000'000).EffectiveBurst(), 100'000);
  EXPECT_EQ(Rate(100, 3).EffectiveBurst(), 3);  // an explicit burst wins

  TokenBucket b(Rate(100), kT0);
  EXPECT_EQ(Drain(b, kT0), 10);
  TokenBucket slow(Rate(5), kT0);
  EXPECT_EQ(Drain(slow, kT0), 1);
}

TEST(LimitsTokenBucketTest, ReadyAtAfterDrainingIsTheExactRefillTime) {
  TokenBucket b(Rate(10, 1), kT0);
  b.Take(kT0);
  const absl::Time at = b.ReadyAt(kT0);
  EXPECT_EQ(at, kT0 + absl::Milliseconds(100));
  EXPECT_EQ(b.ReadyAt(kT0), at) << "asking again does not move it";
  // One microsecond early: not there; at the time: there.
  EXPECT_GT(b.ReadyAt(at - absl::Microseconds(1)), at - absl::Microseconds(1));
  EXPECT_EQ(b.ReadyAt(at), at);
  b.Take(at);
  EXPECT_EQ(b.ReadyAt(at), at + absl::Milliseconds(100));
}

TEST(LimitsTokenBucketTest, ReadyAtRoundsUpToTheMicrosecondSoTheTokenIsThere) {
  // 1/3 s is 333333.33 us: the token is there at 333334 us, not before.
  TokenBucket b(Rate(3, 1), kT0);
  b.Take(kT0);
  const absl::Time at = b.ReadyAt(kT0);
  EXPECT_EQ(at, kT0 + absl::Microseconds(333'334));
  EXPECT_EQ(b.ReadyAt(at), at);
}

TEST(LimitsTokenBucketTest, ReadyAtAskedDuringTheRefillIsStillTheExactRefillTime) {
  // Tokens accrue continuously: 40 ms in, 0.4 of a token is there and the
  // rest takes exactly 60 ms more. Asking part-way must not move the answer
  // (the broker arms its wake timer from it).
  TokenBucket b(Rate(10, 1), kT0);
  b.Take(kT0);
  const absl::Time exact = kT0 + absl::Milliseconds(100);
  EXPECT_EQ(b.ReadyAt(kT0 + absl::Milliseconds(40)), exact);
  EXPECT_EQ(b.ReadyAt(kT0 + absl::Milliseconds(70)), exact);
  EXPECT_EQ(b.ReadyAt(kT0 + absl::Milliseconds(99)), exact);
  EXPECT_EQ(b.ReadyAt(exact), exact);
}

TEST(LimitsTokenBucketTest, FractionalRateGivesOneTokenEveryTwoSeconds) {
  TokenBucket b(Rate(0.5), kT0);
  EXPECT_EQ(Drain(b, kT0), 1);
  EXPECT_EQ(b.ReadyAt(kT0), kT0 + absl::Seconds(2));
  EXPECT_EQ(b.ReadyAt(kT0 + absl::Seconds(1)), kT0 + absl::Seconds(2));
  EXPECT_EQ(Drain(b, kT0 + absl::Milliseconds(1999)), 0);
  EXPECT_EQ(Drain(b, kT0 + absl::Seconds(2)), 1);
  // Ten seconds idle refill only up to the burst of one.
  EXPECT_EQ(Drain(b, kT0 + absl::Seconds(12)), 1);
}

TEST(LimitsTokenBucketTest, IdleBucketRefillsOnlyUpToItsBurst) {
  TokenBucket b(Rate(100, 4), kT0);
  EXPECT_EQ(Drain(b, kT0), 4);
  EXPECT_EQ(Drain(b, kT0 + absl::Hours(1)), 4);
}

TEST(LimitsTokenBucketTest, SetRateCapsTheTokensToTheNewBurst) {
  TokenBucket b(Rate(100, 50), kT0);
  b.SetRate(Rate(100, 2), kT0);
  EXPECT_EQ(Drain(b, kT0), 2);
  EXPECT_EQ(b.ReadyAt(kT0), kT0 + absl::Milliseconds(10));
}

TEST(LimitsTokenBucketTest, SetRateKeepsTheTokensAndRefillsAtTheNewRate) {
  TokenBucket b(Rate(10, 1), kT0);
  b.Take(kT0);
  // A larger burst adds no tokens; the deficit refills at the new rate.
  b.SetRate(Rate(1, 5), kT0);
  EXPECT_EQ(b.ReadyAt(kT0), kT0 + absl::Seconds(1));
  EXPECT_EQ(Drain(b, kT0 + absl::Seconds(3)), 3);
  // Tokens accrued under the old rate are kept at the switch.
  TokenBucket c(Rate(10, 10), kT0);
  EXPECT_EQ(Drain(c, kT0), 10);
  c.SetRate(Rate(1, 10), kT0 + absl::Milliseconds(500));  // 5 accrued at 10/s
  EXPECT_EQ(Drain(c, kT0 + absl::Milliseconds(500)), 5);
}

TEST(LimitsTokenBucketTest, FullAgainOnceRefilledToTheBurst) {
  TokenBucket b(Rate(10, 2), kT0);
  EXPECT_TRUE(b.Full(kT0));
  b.Take(kT0);
  EXPECT_FALSE(b.Full(kT0));
  EXPECT_FALSE(b.Full(kT0 + absl::Milliseconds(99)));
  EXPECT_TRUE(b.Full(kT0 + absl::Milliseconds(100)));
  EXPECT_TRUE(b.Full(kT0 + absl::Hours(1)));
}

TEST(LimitsTokenBucketTest, FormatRateShowsTheBurstInEffect) {
  EXPECT_EQ(FormatRate(Rate(50, 5)), "50/s burst 5");
  EXPECT_EQ(FormatRate(Rate(100)), "100/s burst 10");
  EXPECT_EQ(FormatRate(Rate(0.5)), "0.5/s burst 1");
}

// ── ValidateLimits ──

MATCHER_P(IsInvalidNaming, field, std::string("is INVALID_ARGUMENT naming ") + field) {
  *result_listener << "whose status is " << arg;
  return arg.code() == absl::StatusCode::kInvalidArgument &&
         std::string(arg.message()).find(field) != std::string::npos;
}

TEST(ValidateLimitsTest, EmptyAndBoundaryValuesAreValid) {
  QueueLimits l;
  EXPECT_TRUE(l.empty());
  EXPECT_TRUE(ValidateLimits(l).ok());

  l.rate = Rate(kMaxRatePerSecond, kMaxBurst);
  l.max_running = kMaxPoolSize;
  l.key_rate = Rate(0.001);
  l.key_rates["acme"] = Rate(1, 0);
  l.key_rates[std::string(128, 'k')] = Rate(kMaxRatePerSecond);
  l.key_max_running = kMaxPoolSize;
  l.pools["db"] = 1;
  l.pools[std::string(128, 'p')] = kMaxPoolSize;
  EXPECT_FALSE(l.empty());
  EXPECT_TRUE(ValidateLimits(l).ok()) << ValidateLimits(l);
}

TEST(ValidateLimitsTest, QueueRateOutOfBoundsNamesTheField) {
  for (double bad : {0.0, -1.0, kMaxRatePerSecond + 1, std::nan("")}) {
    QueueLimits l;
    l.rate = Rate(bad);
    EXPECT_THAT(ValidateLimits(l), IsInvalidNaming("limits.rate.per_second")) << bad;
  }
  QueueLimits l;
  l.rate = Rate(10, kMaxBurst + 1);
  EXPECT_THAT(ValidateLimits(l), IsInvalidNaming("limits.rate.burst"));
  EXPECT_THAT(ValidateLimits(l).message(), HasSubstr("1000001"));
}

TEST(ValidateLimitsTest, MaxRunningOverTheBoundNamesTheFieldAndValue) {
  QueueLimits l;
  l.max_running = kMaxPoolSize + 1;
  EXPECT_THAT(ValidateLimits(l), IsInvalidNaming("limits.max_running"));
  EXPECT_THAT(ValidateLimits(l).message(), HasSubstr("1000001"));
}

TEST(ValidateLimitsTest, KeyRateOutOfBoundsNamesTheField) {
  QueueLimits l;
  l.key_rate = Rate(0);
  EXPECT_THAT(ValidateLimits(l), IsInvalidNaming("limits.key_rate.per_second"));
  l.key_rate = Rate(1, kMaxBurst + 1);
  EXPECT_THAT(ValidateLimits(l), IsInvalidNaming("limits.key_rate.burst"));
}

TEST(ValidateLimitsTest, KeyRateOverrideNamesItsKey) {
  QueueLimits l;
  l.key_rates["acme"] = Rate(0);
  EXPECT_THAT(ValidateLimits(l), IsInvalidNaming("limits.key_rates[\"acme\"].per_second"));
  l.key_rates["acme"] = Rate(2'000'000);
  EXPECT_THAT(ValidateLimits(l), IsInvalidNaming("limits.key_rates[\"acme\"].per_second"));
  EXPECT_THAT(ValidateLimits(l).message(), HasSubstr("at most 1000000"));
  l.key_rates["acme"] = Rate(5, kMaxBurst + 1);
  EXPECT_THAT(ValidateLimits(l), IsInvalidNaming("limits.key_rates[\"acme\"].burst"));
}

TEST(ValidateLimitsTest, KeyRateOverrideKeysAreOneTo128Bytes) {
  QueueLimits l;
  l.key_rates[""] = Rate(1);
  EXPECT_THAT(ValidateLimits(l), IsInvalidNaming("limits.key_rates"));
  l.key_rates.clear();
  l.key_rates[std::string(129, 'k')] = Rate(1);
  EXPECT_THAT(ValidateLimits(l), IsInvalidNaming("limits.key_rates"));
  EXPECT_THAT(ValidateLimits(l).message(), HasSubstr("129"));
}

TEST(ValidateLimitsTest, AtMostTenThousandEntriesPerMap) {
  QueueLimits l;
  for (size_t i = 0; i < kMaxLimitEntries; ++i) {
    l.key_rates[absl::StrCat("k", i)] = Rate(1);
    l.pools[absl::StrCat("p", i)] = 1;
  }
  EXPECT_TRUE(ValidateLimits(l).ok());
  l.key_rates["one-more"] = Rate(1);
  EXPECT_THAT(ValidateLimits(l), IsInvalidNaming("limits.key_rates"));
  EXPECT_THAT(ValidateLimits(l).message(), HasSubstr("10001"));
  l.key_rates.erase("one-more");
  l.pools["one-more"] = 1;
  EXPECT_THAT(ValidateLimits(l), IsInvalidNaming("limits.pools"));
  EXPECT_THAT(ValidateLimits(l).message(), HasSubstr("10001"));
}

TEST(ValidateLimitsTest, KeyMaxRunningOverTheBoundNamesTheField) {
  QueueLimits l;
  l.key_max_running = kMaxPoolSize + 1;
  EXPECT_THAT(ValidateLimits(l), IsInvalidNaming("limits.key_max_running"));
}

TEST(ValidateLimitsTest, PoolSizeOutOfBoundsNamesThePool) {
  QueueLimits l;
  l.pools["db"] = 0;
  EXPECT_THAT(ValidateLimits(l), IsInvalidNaming("limits.pools[\"db\"]"));
  EXPECT_THAT(ValidateLimits(l).message(), HasSubstr("is 0"));
  l.pools["db"] = kMaxPoolSize + 1;
  EXPECT_THAT(ValidateLimits(l), IsInvalidNaming("limits.pools[\"db\"]"));
  EXPECT_THAT(ValidateLimits(l).message(), HasSubstr("1000001"));
}

TEST(ValidateLimitsTest, PoolKeysAreOneTo128Bytes) {
  QueueLimits l;
  l.pools[""] = 1;
  EXPECT_THAT(ValidateLimits(l), IsInvalidNaming("limits.pools"));
  l.pools.clear();
  l.pools[std::string(129, 'p')] = 1;
  EXPECT_THAT(ValidateLimits(l), IsInvalidNaming("limits.pools"));
}

// ── ApplyLimitsUpdate ──

TEST(ApplyLimitsUpdateTest, EmptyUpdateChangesNothing) {
  QueueLimits l;
  l.rate = Rate(5);
  l.max_running = 3;
  l.key_rate = Rate(1);
  l.key_rates["a"] = Rate(2);
  l.key_max_running = 4;
  l.pools["db"] = 2;
  const QueueLimits before = l;
  LimitsUpdate u;
  EXPECT_TRUE(u.empty());
  ApplyLimitsUpdate(u, l);
  EXPECT_EQ(l, before);
}

TEST(ApplyLimitsUpdateTest, SetsEachScalarField) {
  QueueLimits l;
  LimitsUpdate u;
  u.rate = Rate(50, 5);
  u.max_running = 7;
  u.key_rate = Rate(2, 1);
  u.key_max_running = 3;
  EXPECT_FALSE(u.empty());
  ApplyLimitsUpdate(u, l);
  EXPECT_THAT(l.rate, Optional(Rate(50, 5)));
  EXPECT_EQ(l.max_running, 7u);
  EXPECT_THAT(l.key_rate, Optional(Rate(2, 1)));
  EXPECT_EQ(l.key_max_running, 3u);
  EXPECT_TRUE(ValidateLimits(l).ok());
}

TEST(ApplyLimitsUpdateTest, ZeroRemovesRatesAndCounts) {
  QueueLimits l;
  l.rate = Rate(5);
  l.max_running = 3;
  l.key_rate = Rate(1);
  l.key_max_running = 4;
  LimitsUpdate u;
  u.rate = Rate(0);
  u.max_running = 0;
  u.key_rate = Rate(0, 9);  // per_second 0 removes, whatever the burst
  u.key_max_running = 0;
  ApplyLimitsUpdate(u, l);
  EXPECT_TRUE(l.empty());
  EXPECT_TRUE(ValidateLimits(l).ok());
}

TEST(ApplyLimitsUpdateTest, UnsetFieldsKeepTheirValue) {
  QueueLimits l;
  l.rate = Rate(5);
  l.max_running = 3;
  l.key_rate = Rate(1);
  l.key_max_running = 4;
  LimitsUpdate u;
  u.max_running = 9;
  ApplyLimitsUpdate(u, l);
  EXPECT_THAT(l.rate, Optional(Rate(5)));
  EXPECT_EQ(l.max_running, 9u);
  EXPECT_THAT(l.key_rate, Optional(Rate(1)));
  EXPECT_EQ(l.key_max_running, 4u);
}

TEST(ApplyLimitsUpdateTest, KeyRatesMergeAndPerSecondZeroRemovesAnEntry) {
  QueueLimits l;
  l.key_rates["a"] = Rate(1);
  l.key_rates["b"] = Rate(2);
  l.key_rates["keep"] = Rate(3);
  LimitsUpdate u;
  u.key_rates["a"] = Rate(0);
  u.key_rates["b"] = Rate(20, 4);
  u.key_rates["c"] = Rate(30);
  u.key_rates["never-there"] = Rate(0);
  ApplyLimitsUpdate(u, l);
  EXPECT_EQ(l.key_rates.size(), 3u);
  EXPECT_FALSE(l.key_rates.contains("a"));
  EXPECT_FALSE(l.key_rates.contains("never-there"));
  EXPECT_EQ(l.key_rates.at("b"), Rate(20, 4));
  EXPECT_EQ(l.key_rates.at("c"), Rate(30));
  EXPECT_EQ(l.key_rates.at("keep"), Rate(3));
}

TEST(ApplyLimitsUpdateTest, PoolsMergeAndSizeZeroRemovesAPool) {
  QueueLimits l;
  l.pools["db"] = 2;
  l.pools["api"] = 5;
  l.pools["keep"] = 1;
  LimitsUpdate u;
  u.pools["db"] = 0;
  u.pools["api"] = 8;
  u.pools["cache"] = 3;
  u.pools["never-there"] = 0;
  ApplyLimitsUpdate(u, l);
  EXPECT_EQ(l.pools.size(), 3u);
  EXPECT_FALSE(l.pools.contains("db"));
  EXPECT_FALSE(l.pools.contains("never-there"));
  EXPECT_EQ(l.pools.at("api"), 8u);
  EXPECT_EQ(l.pools.at("cache"), 3u);
  EXPECT_EQ(l.pools.at("keep"), 1u);
  EXPECT_TRUE(ValidateLimits(l).ok());
}

TEST(ApplyLimitsUpdateTest, ResultIsValidatedByTheCaller) {
  // Apply does not validate: an out-of-range value lands and Validate
  // rejects it (the broker validates after applying).
  QueueLimits l;
  LimitsUpdate u;
  u.pools["db"] = kMaxPoolSize + 1;
  ApplyLimitsUpdate(u, l);
  EXPECT_THAT(ValidateLimits(l), IsInvalidNaming("limits.pools[\"db\"]"));
}

// ── Lookups ──

TEST(QueueLimitsTest, RateOfPrefersAnOverrideOverTheDefault) {
  QueueLimits l;
  EXPECT_EQ(l.RateOf("a"), std::nullopt);
  l.key_rates["vip"] = Rate(100, 10);
  EXPECT_THAT(l.RateOf("vip"), Optional(Rate(100, 10)));
  EXPECT_EQ(l.RateOf("a"), std::nullopt);  // no default: none
  l.key_rate = Rate(1);
  EXPECT_THAT(l.RateOf("a"), Optional(Rate(1)));
  EXPECT_THAT(l.RateOf("vip"), Optional(Rate(100, 10)));
  // The queue-wide rate is not a key default.
  QueueLimits q;
  q.rate = Rate(5);
  EXPECT_EQ(q.RateOf("a"), std::nullopt);
}

TEST(QueueLimitsTest, PoolOfPrefersANamedPoolOverKeyMaxRunning) {
  QueueLimits l;
  EXPECT_EQ(l.PoolOf("db"), 0u);
  l.pools["db"] = 2;
  EXPECT_EQ(l.PoolOf("db"), 2u);
  EXPECT_EQ(l.PoolOf("other"), 0u);
  l.key_max_running = 1;
  EXPECT_EQ(l.PoolOf("other"), 1u);
  EXPECT_EQ(l.PoolOf("db"), 2u);
  // A named pool may be larger or smaller than the default.
  l.key_max_running = 5;
  EXPECT_EQ(l.PoolOf("db"), 2u);
  // The queue-wide max_running is not a key default.
  QueueLimits q;
  q.max_running = 3;
  EXPECT_EQ(q.PoolOf("db"), 0u);
}

}  // namespace
}  // namespace conveyor::server
