#include "worker/rate_limiter.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace conveyor::worker {

TokenBucket::TokenBucket(double rate, double burst, const Clock* clock)
    : rate_(rate), burst_(std::max(1.0, burst)), clock_(clock) {
  absl::MutexLock lock(&mu_);
  tokens_ = burst_;
  last_ = clock_->Now();
}

void TokenBucket::RefillLocked(absl::Time now) {
  if (now > last_) {
    tokens_ = std::min(burst_, tokens_ + absl::ToDoubleSeconds(now - last_) * rate_);
    last_ = now;
  }
}

absl::Duration TokenBucket::TryTake() {
  absl::MutexLock lock(&mu_);
  RefillLocked(clock_->Now());
  if (tokens_ >= 1.0) {
    tokens_ -= 1.0;
    return absl::ZeroDuration();
  }
  // Round up to a whole microsecond so the wait is never a hair too short.
  const double seconds = (1.0 - tokens_) / rate_;
  return std::max(absl::Microseconds(1), absl::Microseconds(std::ceil(seconds * 1e6)));
}

absl::StatusOr<RateLimit> ParseRateLimit(absl::string_view text) {
  const size_t eq = text.find('=');
  if (eq == absl::string_view::npos || eq == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--rate \"", text, "\": expected TYPE=N/s, e.g. thumbnail=5/s"));
  }
  RateLimit limit;
  limit.type = std::string(text.substr(0, eq));
  absl::string_view rate = text.substr(eq + 1);
  double per = 1;
  if (absl::ConsumeSuffix(&rate, "/s")) {
    per = 1;
  } else if (absl::ConsumeSuffix(&rate, "/m")) {
    per = 60;
  } else if (absl::ConsumeSuffix(&rate, "/h")) {
    per = 3600;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "--rate \"", text, "\": the rate must end in /s, /m or /h, e.g. ", limit.type, "=5/s"));
  }
  double n = 0;
  if (!absl::SimpleAtod(rate, &n) || !std::isfinite(n) || n <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--rate \"", text, "\": \"", rate, "\" is not a positive number of tasks"));
  }
  limit.rate = n / per;
  limit.burst = std::max(1.0, std::floor(limit.rate));
  return limit;
}

RateLimiter::RateLimiter(const Clock* clock) : clock_(clock) {}

void RateLimiter::SetLimit(const RateLimit& limit) {
  absl::MutexLock lock(&mu_);
  buckets_[limit.type] = std::make_unique<TokenBucket>(limit.rate, limit.burst, clock_);
}

bool RateLimiter::limited(absl::string_view type) const {
  absl::MutexLock lock(&mu_);
  return buckets_.contains(type);
}

bool RateLimiter::Acquire(absl::string_view type, const Cancellation& cancel) {
  TokenBucket* bucket;
  {
    absl::MutexLock lock(&mu_);
    auto it = buckets_.find(type);
    if (it == buckets_.end()) return true;
    bucket = it->second.get();  // buckets live as long as the limiter
  }
  while (true) {
    if (cancel.cancelled()) return false;
    const absl::Duration wait = bucket->TryTake();
    if (wait == absl::ZeroDuration()) return true;
    if (cancel.WaitFor(wait)) return false;
  }
}

}  // namespace conveyor::worker
