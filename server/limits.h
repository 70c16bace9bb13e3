// Limits: the settings of a queue's rate and concurrency limits, and the
// token bucket that enforces a rate.
//
// The broker applies limits when it grants leases, so they hold across every
// worker on every machine (see Queue for the ready order that keeps a held
// back key from blocking the others).
//
// Not thread-safe: guarded by the Broker's mutex.
#ifndef CONVEYOR_SERVER_LIMITS_H_
#define CONVEYOR_SERVER_LIMITS_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace conveyor::server {

// Tasks started per second, with a burst (0: a tenth of a second's worth,
// at least 1).
struct RateLimit {
  double per_second = 0;
  uint32_t burst = 0;
  // The burst in effect.
  double EffectiveBurst() const;
  friend bool operator==(const RateLimit&, const RateLimit&) = default;
};

struct QueueLimits {
  std::optional<RateLimit> rate;        // whole queue
  uint32_t max_running = 0;             // whole queue; 0: none
  std::optional<RateLimit> key_rate;    // each rate key without an override
  std::map<std::string, RateLimit, std::less<>> key_rates;  // overrides
  uint32_t key_max_running = 0;         // each concurrency key without a pool
  std::map<std::string, uint32_t, std::less<>> pools;       // named pools

  // The rate of `key` (an override, else key_rate), or none.
  std::optional<RateLimit> RateOf(absl::string_view key) const;
  // The pool size of `key` (a named pool, else key_max_running); 0: none.
  uint32_t PoolOf(absl::string_view key) const;
  bool empty() const {
    return !rate && max_running == 0 && !key_rate && key_rates.empty() &&
           key_max_running == 0 && pools.empty();
  }
  friend bool operator==(const QueueLimits&, const QueueLimits&) = default;
};

// A partial change; unset fields keep their value. A rate with per_second 0
// removes that rate; a max_running, key_max_running or pool of 0 removes it.
struct LimitsUpdate {
  std::optional<RateLimit> rate;
  std::optional<uint32_t> max_running;
  std::optional<RateLimit> key_rate;
  std::map<std::string, RateLimit, std::less<>> key_rates;
  std::optional<uint32_t> key_max_running;
  std::map<std::string, uint32_t, std::less<>> pools;
  bool empty() const {
    return !rate && !max_running && !key_rate && key_rates.empty() &&
           !key_max_running && pools.empty();
  }
};

inline constexpr size_t kMaxLimitEntries = 10'000;
inline constexpr double kMaxRatePerSecond = 1'000'000;
inline constexpr uint32_t kMaxBurst = 1'000'000;
inline constexpr uint32_t kMaxPoolSize = 1'000'000;

// INVALID_ARGUMENT naming the field ("limits.key_rates[\"acme\"].per_second")
// and value.
absl::Status ValidateLimits(const QueueLimits& limits);
// Applies `update` to `limits` (then validate the result).
void ApplyLimitsUpdate(const LimitsUpdate& update, QueueLimits& limits);
// "50/s burst 5", for messages.
std::string FormatRate(const RateLimit& rate);
// "2026-11-30T18:06:03.859Z": a time in messages, to the millisecond.
std::string FormatMillis(absl::Time t);

// A token bucket: starts full; tokens accrue continuously at per_second up to
// the burst; Take() spends one.
class TokenBucket {
 public:
  TokenBucket(const RateLimit& rate, absl::Time now);
  // When a token will be available (`now` or earlier if one is).
  absl::Time ReadyAt(absl::Time now) const;
  // Spends a token; call only when ReadyAt(now) <= now.
  void Take(absl::Time now);
  // Keeps the tokens (capped to the new burst) under a new rate.
  void SetRate(const RateLimit& rate, absl::Time now);
  // Whether it is full at `now` (an idle bucket can be forgotten).
  bool Full(absl::Time now) const;

 private:
  void Refill(absl::Time now) const;
  RateLimit rate_;
  double burst_ = 1;
  mutable double tokens_ = 0;
  mutable absl::Time last_ = absl::InfinitePast();
};

}  // namespace conveyor::server

#endif  // CONVEYOR_SERVER_LIMITS_H_
