// DeadlineTimer: runs callbacks at given times on one thread; the worker
// cancels each attempt (reason kTimeout) at its deadline with it.
//
// Callbacks run outside the timer's lock and must be quick. A callback may
// still run after Remove() if it was already due: callers make that
// harmless (cancelling a finished attempt does nothing).
//
// Thread-safe. Uses real time (absl::Now).
#ifndef CONVEYOR_WORKER_DEADLINE_TIMER_H_
#define CONVEYOR_WORKER_DEADLINE_TIMER_H_

#include <cstdint>
#include <functional>
#include <map>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace conveyor::worker {

class DeadlineTimer {
 public:
  using Key = std::pair<absl::Time, uint64_t>;

  DeadlineTimer() = default;
  ~DeadlineTimer();
  DeadlineTimer(const DeadlineTimer&) = delete;
  DeadlineTimer& operator=(const DeadlineTimer&) = delete;

  void Start();
  // Drops every pending callback and joins the thread.
  void Stop();

  // Runs `fn` at `when` (at once if it has passed; never if it is
  // InfiniteFuture). The key removes it.
  Key Add(absl::Time when, std::function<void()> fn);
  void Remove(const Key& key);

 private:
  void ThreadMain();

  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  std::map<Key, std::function<void()>> timers_ ABSL_GUARDED_BY(mu_);
  // Bumped by Add so that the thread looks again at the earliest time.
  uint64_t changes_ ABSL_GUARDED_BY(mu_) = 0;
  std::thread thread_;
};

}  // namespace conveyor::worker

#endif  // CONVEYOR_WORKER_DEADLINE_TIMER_H_
