// Executor: the worker's bounded pool ("processor"). `concurrency` threads
// run attempts; a slot is one thread's worth of capacity.
//
// Lease loops ask only for as many tasks as there are free slots: they
// Reserve() slots first, lease at most that many tasks, Run() one job per
// task received (each consumes a reserved slot) and Unreserve() the rest. So
// the pool never holds more than `concurrency + prefetch` jobs, and at most
// `prefetch` of them wait for a thread.
//
// Prefetch (0 by default) keeps work queued ahead, so a thread that frees up
// starts the next task at once instead of waiting for a lease round trip;
// and it makes leases bigger: with prefetch, Reserve() waits until half the
// prefetch room is free before it answers, unless the queue of waiting jobs
// ran dry (then a thread is about to idle, and any free slot will do).
//
// Lifecycle: Start() once, then Stop() (after which Reserve returns 0). Stop
// joins the threads, so it waits for running jobs: call WaitIdle with a
// deadline first when jobs may run long.
//
// Thread-safe.
#ifndef CONVEYOR_WORKER_EXECUTOR_H_
#define CONVEYOR_WORKER_EXECUTOR_H_

#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace conveyor::worker {

class Executor {
 public:
  // Told the number of busy (running a job) and free slots whenever they
  // change. Called under the executor's lock (so the values arrive in
  // order): it must be fast and must not call back into the executor.
  // `busy` counts jobs running on a thread, so busy + free = concurrency;
  // `waiting` the jobs queued for a thread (prefetched tasks).
  using SlotObserver = std::function<void(int busy, int free, int waiting)>;

  explicit Executor(int concurrency, SlotObserver observer = {}, int prefetch = 0);
  ~Executor();
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  void Start();
  // Stops taking work and joins the threads once the queued jobs ran.
  void Stop();

  int concurrency() const { return concurrency_; }
  int prefetch() const { return capacity_ - concurrency_; }

  // Reserves up to `max` free slots, waiting up to `timeout` for enough of
  // them (one; with prefetch, see above). Returns how many were reserved: 0
  // when none freed up in time or the executor is stopping.
  int Reserve(int max, absl::Duration timeout);
  // Gives back reserved slots that no job will use.
  void Unreserve(int n);
  // Runs `job` on a pool thread (queued until one is free); consumes one
  // reserved slot (the caller must hold one), which becomes free again when
  // the job returns.
  void Run(std::function<void()> job);

  // Blocks until no job is queued or running, or until `timeout` passes.
  // True if idle.
  bool WaitIdle(absl::Duration timeout);
  // Jobs queued or running.
  int busy() const;

 private:
  void ThreadMain();
  void Notify() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const int concurrency_;
  // concurrency_ + prefetch: the most jobs held, queued or running.
  const int capacity_;
  // With prefetch, the free room Reserve() waits for while jobs are queued.
  const int refill_;
  const SlotObserver observer_;
  mutable absl::Mutex mu_;
  // Slots taken by jobs (queued or running) and by reservations.
  int busy_ ABSL_GUARDED_BY(mu_) = 0;
  int reserved_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<std::function<void()>> jobs_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> threads_;
};

}  // namespace conveyor::worker

#endif  // CONVEYOR_WORKER_EXECUTOR_H_
