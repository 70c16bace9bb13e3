// Local rate limits (`--rate TYPE=N/s`): keeps one worker under a rate for a
// task type on its own, whatever other workers do.
//
// TokenBucket holds at most `burst` tokens and gains `rate` per second; a
// task takes one token before its handler runs. A task waiting for a token
// keeps its executor slot, and its lease keeps being heartbeated meanwhile;
// the wait counts against the attempt's timeout and ends early if the
// attempt is cancelled.
//
// Thread-safe. Time comes from an injected Clock (tests use FakeClock).
#ifndef CONVEYOR_WORKER_RATE_LIMITER_H_
#define CONVEYOR_WORKER_RATE_LIMITER_H_

#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "worker/cancellation.h"

namespace conveyor::worker {

class TokenBucket {
 public:
  // `rate` > 0 tokens per second, at most `burst` >= 1 held; starts full.
  TokenBucket(double rate, double burst, const Clock* clock);

  // Takes a token and returns zero if one is there; otherwise takes nothing
  // and returns how long until one will be.
  absl::Duration TryTake();

 private:
  void RefillLocked(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const double rate_;
  const double burst_;
  const Clock* const clock_;
  absl::Mutex mu_;
  double tokens_ ABSL_GUARDED_BY(mu_);
  absl::Time last_ ABSL_GUARDED_BY(mu_);
};

struct RateLimit {
  std::string type;
  // Tokens per second.
  double rate = 0;
  // The bucket's size: max(1, tasks per second).
  double burst = 1;
};

// Parses "TYPE=N/s" (also "N/m", "N/h"; N may be a decimal, e.g.
// "thumbs=0.5/s"). INVALID_ARGUMENT names the problem.
absl::StatusOr<RateLimit> ParseRateLimit(absl::string_view text);

class RateLimiter {
 public:
  explicit RateLimiter(const Clock* clock);

  // Replaces any limit for `limit.type`. Call before tasks run.
  void SetLimit(const RateLimit& limit);
  bool limited(absl::string_view type) const;

  // Waits until a token for `type` is taken (at once if `type` has no
  // limit). False if `cancel` fired first (no token is taken then).
  bool Acquire(absl::string_view type, const Cancellation& cancel);

 private:
  const Clock* const clock_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::unique_ptr<TokenBucket>> buckets_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace conveyor::worker

#endif  // CONVEYOR_WORKER_RATE_LIMITER_H_
