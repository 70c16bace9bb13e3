// Queue: one named, bounded queue's settings, counters and ready order.
//
// A Queue holds no task records (the Broker owns them); it keeps
//  - its settings (the defaults its tasks hold by reference),
//  - counts of its tasks per state (capacity counts non-terminal ones),
//  - the ready order: lanes per (type, rate key, concurrency key), each in
//    (priority desc, sequence asc) order with one FIFO per priority, with
//    lazy deletion (an entry whose task left READY is skipped on pop),
//  - the ended tasks in the order they ended, for the retained-count bound,
//  - the Lease and Submit calls parked on it.
//
// Not thread-safe: guarded by the Broker's mutex.
#ifndef CONVEYOR_SERVER_QUEUE_H_
#define CONVEYOR_SERVER_QUEUE_H_

#include <array>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "server/limits.h"
#include "server/task.h"

namespace conveyor::server {

enum class FullPolicy : uint8_t { kReject, kWait };

struct QueueConfig {
  std::string name;
  uint64_t capacity = 100'000;
  FullPolicy full_policy = FullPolicy::kReject;
  RetryPolicy retry;
  absl::Duration default_timeout = absl::Minutes(5);
  absl::Duration lease_duration = absl::Seconds(30);
  uint32_t max_crashes = 3;
  absl::Duration result_ttl = absl::Hours(24);
  uint64_t retained = 100'000;
  QueueLimits limits;
};

// INVALID_ARGUMENT naming the field and value, for a name or setting out of
// range.
absl::Status ValidateQueueName(absl::string_view name);
absl::Status ValidateQueueConfig(const QueueConfig& config);
absl::Status ValidateRetryPolicy(const RetryPolicy& retry, absl::string_view field);

// Why a SCHEDULED or READY task is not running (the metric's reasons; kNone
// and kNotWaiting are not counted there).
enum class WaitReason : uint8_t {
  kNotWaiting,  // not SCHEDULED or READY
  kNone,        // nothing holds it back
  kPaused,
  kRateLimited,
  kConcurrencyFull,
  kNotDue,
  kNoWorker,
};
// "paused", "rate_limited", "concurrency_full", "not_due", "no_worker" (and
// "none", "not_waiting").
const char* WaitReasonName(WaitReason reason);
// The reasons counted in QueueStats::blocked, in its order.
inline constexpr std::array<WaitReason, 5> kBlockedReasons = {
    WaitReason::kPaused, WaitReason::kRateLimited, WaitReason::kConcurrencyFull,
    WaitReason::kNotDue, WaitReason::kNoWorker};

struct QueueStats {
  // Indexed by TaskState.
  std::array<uint64_t, 8> by_state{};
  absl::Duration oldest_ready_age = absl::ZeroDuration();
  uint32_t waiting_workers = 0;
  // Submits parked until this full WAIT queue has room.
  uint32_t waiting_submits = 0;
  // SCHEDULED and READY tasks by why they wait, indexed like kBlockedReasons.
  std::array<uint64_t, 5> blocked{};
  uint64_t count(TaskState s) const { return by_state[static_cast<int>(s)]; }
};

// Maps a task id to its task while that task is READY, else null: how a
// queue reads the order of the ids in its lanes (the broker's id index).
using ReadyResolver = std::function<Task*(uint64_t id)>;

class Queue {
 public:
  Queue(QueueConfig config, ReadyResolver resolve);
  ~Queue();
  Queue(const Queue&) = delete;
  Queue& operator=(const Queue&) = delete;

  const std::string& name() const { return config_.name; }
  const QueueConfig& config() const { return config_; }
  // Replaces the settings; new limits apply at once (every lane set aside by
  // a key limit is looked at again).
  void SetConfig(QueueConfig config, absl::Time now);
  bool paused = false;

  // Counts.
  void CountIn(TaskState s) { ++counts_[static_cast<int>(s)]; }
  void CountOut(TaskState s) { --counts_[static_cast<int>(s)]; }
  uint64_t count(TaskState s) const { return counts_[static_cast<int>(s)]; }
  // Non-terminal tasks: what capacity bounds.
  uint64_t active() const;
  bool full() const { return active() >= config_.capacity; }

  // ── Ready order ──
  // READY tasks sit in lanes: one per (type, rate key, concurrency key).
  // Each lane orders its entries by (priority desc, seq asc) in one FIFO per
  // priority (server/ready_fifos.h), with lazy deletion (an entry whose task
  // left READY is skipped). Lanes a key limit holds back
  // are set aside (a rate key's until its next token, a concurrency key's
  // until a slot frees); the others are ordered by (priority of their head,
  // turn), where a lane without keys takes its head's seq as its turn (FIFO)
  // and a keyed lane the later of that and the moment it was last served
  // (round-robin among keys). Finding the next task costs O(log lanes).
  //
  // An entry is the task's id; its order is the task's priority and
  // ready_seq, read through the queue's resolver. The seq increases with the
  // time the task became ready (the broker derives it from that time, so it
  // also gives the ready-since age): pushes come in seq order.
  void PushReady(const Task& task);
  // The best ready task among `types` (all types when empty) that no key
  // limit holds back at `now`, or null. `key` (if not null) receives its
  // order key: smaller is served first, comparable across queues. Ignores
  // the queue-wide limits (see Gate).
  Task* PeekReady(const std::vector<uint32_t>& types, absl::Time now, uint64_t* key = nullptr);
  // Removes `task`, which PeekReady just returned, spends a token of the
  // queue's and its rate key's buckets, and sends its key to the back of
  // the round (at `turn`, a seq).
  void TakeReady(const Task& task, absl::Time now, uint64_t turn);
  // Removes `task`'s entry wherever it is in its lane (a scan of the lane),
  // for a task that leaves READY and may come back later.
  void RemoveReady(const Task& task);
  // Keeps the counts exact: the broker calls it whenever a task leaves
  // READY (after TakeReady or RemoveReady, or alone for a task that ends).
  void LeftReady(const Task& task);
  // Smallest seq among ready entries that still resolve (0 if none). One
  // lookup per priority of each lane (each FIFO's front is its oldest), plus
  // one per stale entry in front of it.
  uint64_t OldestReadySeq() const;

  // ── Limits ──
  // Whether the queue-wide limits let a task start at `now`: paused, a
  // throttle, the queue's rate, max_running. When not, `why` (if not null)
  // says which, with the time it ends where known.
  bool Open(absl::Time now, WaitReason* why = nullptr, absl::Time* until = nullptr,
            std::string* detail = nullptr);
  // A task entered or left RUNNING: takes or frees its concurrency key's
  // slot. Freeing wakes a lane set aside on that key.
  void SlotTaken(const Task& task);
  void SlotFreed(const Task& task);
  // Pauses `rate_key`'s leasing (empty: the whole queue's) until `until`.
  void Throttle(absl::string_view rate_key, absl::Time until);
  // What holds back `task` (READY) by its keys at `now`: kNone, or
  // kRateLimited / kConcurrencyFull with the key, time and detail.
  WaitReason KeyWait(const Task& task, absl::Time now, absl::Time* until,
                     std::string* detail);
  // Lanes set aside on a rate key whose wait has ended go back in line.
  // Returns true if any did.
  bool Wake(absl::Time now);
  // The earliest moment something set aside here may go again (a rate
  // key's next token, the queue's throttle or bucket); InfiniteFuture if
  // none.
  absl::Time NextWake(absl::Time now);
  // The wake timer the broker armed (InfinitePast: none).
  absl::Time armed_wake = absl::InfinitePast();
  // READY tasks by why they wait (indexed like kBlockedReasons; paused and
  // not_due are the broker's to fill); `no_worker` counts unblocked ones
  // there.
  void CountBlocked(absl::Time now, bool no_worker, std::array<uint64_t, 5>& out);
  // Last Lease call that named this queue (for no_worker).
  absl::Time last_poll = absl::InfinitePast();
  // Number of lanes (for tests and benchmarks).
  size_t lane_count() const;

  // Ended tasks in end order: (id, ended stamp). The result TTL is enforced
  // at the front alone (one timer per queue, armed for the front task's end
  // + TTL), so ended tasks cost no timer each.
  std::deque<std::pair<uint64_t, int64_t>>& ended() { return ended_; }
  uint64_t ended_live = 0;  // entries whose task is still retained
  // Due time (µs) of the retention timer the broker armed; 0: none.
  int64_t armed_retention_us = 0;

  // Submit calls parked on this full queue, in arrival order.
  std::deque<uint64_t>& submit_waiters() { return submit_waiters_; }
  size_t submit_waiter_count() const { return submit_waiters_.size(); }

 private:
  struct Lane;
  struct RateKey;
  struct Pool;
  struct Impl;

  // When `key`'s rate lets the next task start (its bucket, its throttle).
  absl::Time RateReadyAt(absl::string_view key, absl::Time now);
  bool PoolFull(absl::string_view key) const;
  void WakeOnePoolWaiter(absl::string_view key);
  void SetAsideOnRate(Lane* lane, absl::Time at);
  void ForgetPoolIfIdle(absl::string_view key);
  // Forgets idle keys (full buckets, no lanes, nothing running).
  void Sweep(absl::Time now);

  QueueConfig config_;
  std::array<uint64_t, 8> counts_{};
  std::unique_ptr<Impl> impl_;
  std::deque<std::pair<uint64_t, int64_t>> ended_;
  std::deque<uint64_t> submit_waiters_;
};

}  // namespace conveyor::server

#endif  // CONVEYOR_SERVER_QUEUE_H_
