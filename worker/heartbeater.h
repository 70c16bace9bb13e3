// Heartbeater: keeps the leases of one broker's running attempts alive.
//
// It tracks every attempt the worker holds from that broker, from the lease
// until the attempt is settled, and sends one batched Heartbeat per interval
// for all of them: the answer extends each lease and carries each attempt's
// latest progress. Per item:
//   cancel = true                     the broker canceled the task: the
//                                     attempt is cancelled (kCanceled)
//   FAILED_PRECONDITION or NOT_FOUND  the lease is lost (stale token, the
//                                     task ended or is unknown): the attempt
//                                     is marked lease-lost and cancelled, and
//                                     its result will not be reported
// and `draining` in the answer tells the lease loop to stop leasing.
//
// Interval: `HeartbeaterOptions::interval`, or if zero a third of the
// shortest lease among the tracked attempts (as granted), within
// [100 ms, 10 s]. A failed call is logged and retried at the next interval.
//
// Thread-safe. BeatOnce() runs one round synchronously, for tests (which do
// not Start() the thread).
#ifndef CONVEYOR_WORKER_HEARTBEATER_H_
#define CONVEYOR_WORKER_HEARTBEATER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "worker/attempt.h"
#include "worker/broker_rpc.h"

namespace conveyor::worker {

struct HeartbeaterOptions {
  std::string worker_id;
  // For log lines.
  std::string broker;
  // Zero: derived from the leases (see above).
  absl::Duration interval = absl::ZeroDuration();
};

class Heartbeater {
 public:
  // Called (from the heartbeat thread) when an answer says the broker drains.
  using DrainObserver = std::function<void()>;
  // Told whether each call reached the broker.
  using ConnectionObserver = std::function<void(bool ok)>;

  // `rpc` and `clock` must outlive the heartbeater.
  Heartbeater(BrokerRpc* rpc, HeartbeaterOptions options, const Clock* clock,
              DrainObserver on_drain = {}, ConnectionObserver on_connection = {});
  ~Heartbeater();
  Heartbeater(const Heartbeater&) = delete;
  Heartbeater& operator=(const Heartbeater&) = delete;

  void Start();
  // Stops the thread; tracked attempts stay tracked (and un-heartbeated).
  void Stop();

  void Track(std::shared_ptr<Attempt> attempt);
  // By identity: the attempt Track was given.
  void Untrack(const Attempt& attempt);
  std::vector<std::shared_ptr<Attempt>> Tracked() const;
  // Cancels every tracked attempt with `reason`; returns how many.
  size_t CancelAll(CancelReason reason);

  // One heartbeat for every tracked attempt, now. False if the call failed
  // (true when nothing is tracked).
  bool BeatOnce();
  // The pace in force for the attempts tracked now.
  absl::Duration Interval() const;

 private:
  void ThreadMain();
  absl::Duration IntervalLocked() const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // The pace for attempts whose shortest lease is `lease`.
  absl::Duration IntervalFor(absl::Duration lease) const;

  BrokerRpc* const rpc_;
  const HeartbeaterOptions options_;
  const Clock* const clock_;
  const DrainObserver on_drain_;
  const ConnectionObserver on_connection_;

  mutable absl::Mutex mu_;
  // By the attempt itself: each lease is one Attempt, tracked once (a key
  // of id and token cost two string copies per task).
  absl::flat_hash_map<const Attempt*, std::shared_ptr<Attempt>> attempts_ ABSL_GUARDED_BY(mu_);
  absl::Time last_beat_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  // The pace the thread last waited with (while nothing is tracked: the
  // longest, so that the first Track wakes it).
  absl::Duration interval_ ABSL_GUARDED_BY(mu_) = absl::InfiniteDuration();
  bool wake_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // For logging connection changes once, not on every failed call.
  bool last_call_ok_ ABSL_GUARDED_BY(mu_) = true;
  bool told_draining_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace conveyor::worker

#endif  // CONVEYOR_WORKER_HEARTBEATER_H_
