#include "server/limits.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace conveyor::server {
namespace {

absl::Status Bad(absl::string_view field, absl::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat(field, " ", problem));
}

absl::Status ValidateRate(const RateLimit& r, absl::string_view field) {
  if (!(r.per_second > 0 && r.per_second <= kMaxRatePerSecond)) {
    return Bad(absl::StrCat(field, ".per_second"),
               absl::StrCat("is ", r.per_second, "; must be above 0 and at most 1000000"));
  }
  if (r.burst > kMaxBurst) {
    return Bad(absl::StrCat(field, ".burst"),
               absl::StrCat("is ", r.burst, "; must be at most 1000000 (0: the default)"));
  }
  return absl::OkStatus();
}

absl::Status ValidateKey(absl::string_view key, absl::string_view field) {
  if (key.empty() || key.size() > 128) {
    return Bad(field, absl::StrCat("has a key of ", key.size(), " bytes; keys are 1 to 128 bytes"));
  }
  return absl::OkStatus();
}

}  // namespace

double RateLimit::EffectiveBurst() const {
  if (burst > 0) return burst;
  return std::max(1.0, std::floor(per_second / 10));
}

std::optional<RateLimit> QueueLimits::RateOf(absl::string_view key) const {
  if (auto it = key_rates.find(key); it != key_rates.end()) return it->second;
  return key_rate;
}

uint32_t QueueLimits::PoolOf(absl::string_view key) const {
  if (auto it = pools.find(key); it != pools.end()) return it->second;
  return key_max_running;
}

absl::Status ValidateLimits(const QueueLimits& l) {
  if (l.rate) {
    if (absl::Status s = ValidateRate(*l.rate, "limits.rate"); !s.ok()) return s;
  }
  if (l.max_running > kMaxPoolSize) {
    return Bad("limits.max_running", absl::StrCat("is ", l.max_running, "; must be at most 1000000"));
  }
  if (l.key_rate) {
    if (absl::Status s = ValidateRate(*l.key_rate, "limits.key_rate"); !s.ok()) return s;
  }
  if (l.key_rates.size() > kMaxLimitEntries) {
    return Bad("limits.key_rates", absl::StrCat("has ", l.key_rates.size(),
                                                " entries; at most 10000"));
  }
  for (const auto& [key, rate] : l.key_rates) {
    if (absl::Status s = ValidateKey(key, "limits.key_rates"); !s.ok()) return s;
    if (absl::Status s = ValidateRate(rate, absl::StrCat("limits.key_rates[\"", key, "\"]"));
        !s.ok()) {
      return s;
    }
  }
  if (l.key_max_running > kMaxPoolSize) {
    return Bad("limits.key_max_running",
               absl::StrCat("is ", l.key_max_running, "; must be at most 1000000"));
  }
  if (l.pools.size() > kMaxLimitEntries) {
    return Bad("limits.pools", absl::StrCat("has ", l.pools.size(), " entries; at most 10000"));
  }
  for (const auto& [key, size] : l.pools) {
    if (absl::Status s = ValidateKey(key, "limits.pools"); !s.ok()) return s;
    if (size < 1 || size > kMaxPoolSize) {
      return Bad(absl::StrCat("limits.pools[\"", key, "\"]"),
                 absl::StrCat("is ", size, "; must be 1 to 1000000"));
    }
  }
  return absl::OkStatus();
}

void ApplyLimitsUpdate(const LimitsUpdate& u, QueueLimits& l) {
  if (u.rate) {
    if (u.rate->per_second == 0) {
      l.rate.reset();
    } else {
      l.rate = *u.rate;
    }
  }
  if (u.max_running) l.max_running = *u.max_running;
  if (u.key_rate) {
    if (u.key_rate->per_second == 0) {
      l.key_rate.reset();
    } else {
      l.key_rate = *u.key_rate;
    }
  }
  for (const auto& [key, rate] : u.key_rates) {
    if (rate.per_second == 0) {
      l.key_rates.erase(key);
    } else {
      l.key_rates[key] = rate;
    }
  }
  if (u.key_max_running) l.key_max_running = *u.key_max_running;
  for (const auto& [key, size] : u.pools) {
    if (size == 0) {
      l.pools.erase(key);
    } else {
      l.pools[key] = size;
    }
  }
}

std::string FormatRate(const RateLimit& r) {
  return absl::StrFormat("%g/s burst %g", r.per_second, r.EffectiveBurst());
}

std::string FormatMillis(absl::Time t) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", t, absl::UTCTimeZone());
}

TokenBucket::TokenBucket(const RateLimit& rate, absl::Time now)
    : rate_(rate), burst_(rate.EffectiveBurst()), tokens_(burst_), last_(now) {}

void TokenBucket::Refill(absl::Time now) const {
  if (now <= last_) return;
  tokens_ = std::min(burst_, tokens_ + absl::ToDoubleSeconds(now - last_) * rate_.per_second);
  last_ = now;
}

absl::Time TokenBucket::ReadyAt(absl::Time now) const {
  Refill(now);
  if (tokens_ >= 1.0 - 1e-9) return now;
  // Rounded up to the microsecond so that at the returned time the token is
  // really there.
  const double wait_s = (1.0 - tokens_) / rate_.per_second;
  // (less a tolerance, so floating-point noise never adds a microsecond).
  return last_ + absl::Microseconds(std::ceil(wait_s * 1e6 - 1e-3));
}

void TokenBucket::Take(absl::Time now) {
  Refill(now);
  tokens_ -= 1.0;
  // A tiny deficit from rounding is allowed; never a large one.
  tokens_ = std::max(tokens_, -1.0);
}

void TokenBucket::SetRate(const RateLimit& rate, absl::Time now) {
  Refill(now);
  rate_ = rate;
  burst_ = rate.EffectiveBurst();
  tokens_ = std::min(tokens_, burst_);
}

bool TokenBucket::Full(absl::Time now) const {
  Refill(now);
  return tokens_ >= burst_;
}

}  // namespace conveyor::server
