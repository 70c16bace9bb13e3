#include "worker/deadline_timer.h"

#include <vector>

#include "absl/time/clock.h"

namespace conveyor::worker {

DeadlineTimer::~DeadlineTimer() { Stop(); }

void DeadlineTimer::Start() { thread_ = std::thread([this] { ThreadMain(); }); }

void DeadlineTimer::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    timers_.clear();
  }
  if (thread_.joinable()) thread_.join();
}

DeadlineTimer::Key DeadlineTimer::Add(absl::Time when, std::function<void()> fn) {
  absl::MutexLock lock(&mu_);
  Key key{when, next_id_++};
  if (when == absl::InfiniteFuture()) return key;
  // The thread sleeps until the earliest deadline: wake it only when this
  // one comes first.
  const auto it = timers_.emplace(key, std::move(fn)).first;
  if (it == timers_.begin()) ++changes_;
  return key;
}

void DeadlineTimer::Remove(const Key& key) {
  absl::MutexLock lock(&mu_);
  timers_.erase(key);
}

void DeadlineTimer::ThreadMain() {
  while (true) {
    std::vector<std::function<void()>> due;
    {
      absl::MutexLock lock(&mu_);
      const uint64_t seen = changes_;
      auto woken = [this, seen]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || changes_ != seen;
      };
      const absl::Duration wait = timers_.empty()
                                      ? absl::InfiniteDuration()
                                      : timers_.begin()->first.first - absl::Now();
      if (wait > absl::ZeroDuration()) {
        if (wait == absl::InfiniteDuration()) {
          mu_.Await(absl::Condition(&woken));
        } else {
          mu_.AwaitWithTimeout(absl::Condition(&woken), wait);
        }
      }
      if (stopping_) return;
      const absl::Time now = absl::Now();
      while (!timers_.empty() && timers_.begin()->first.first <= now) {
        due.push_back(std::move(timers_.begin()->second));
        timers_.erase(timers_.begin());
      }
    }
    for (auto& fn : due) fn();
  }
}

}  // namespace conveyor::worker
