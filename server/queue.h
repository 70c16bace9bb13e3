// Queue: one named, bounded queue's settings, counters and ready order.
//
// A Queue holds no task records (the Broker owns them); it keeps
//  - its settings (the defaults its tasks hold by reference),
//  - counts of its tasks per state (capacity counts non-terminal ones),
//  - the ready order: per task type, a heap by (priority desc, sequence asc),
//    with lazy deletion (an entry whose task left READY is skipped on pop),
//  - the ended tasks in the order they ended, for the retained-count bound,
//  - the Lease and Submit calls parked on it.
//
// Not thread-safe: guarded by the Broker's mutex.
#ifndef CONVEYOR_SERVER_QUEUE_H_
#define CONVEYOR_SERVER_QUEUE_H_

#include <array>
#include <cstdint>
#include <deque>
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
  // SCHEDULED and READY tasks by why they wait, indexed like kBlockedReasons.
  std::array<uint64_t, 5> blocked{};
  uint64_t count(TaskState s) const { return by_state[static_cast<int>(s)]; }
};

class Queue {
 public:
  explicit Queue(QueueConfig config) : config_(std::move(config)) {}

  const std::string& name() const { return config_.name; }
  const QueueConfig& config() const { return config_; }
  QueueConfig& mutable_config() { return config_; }
  bool paused = false;

  // Counts.
  void CountIn(TaskState s) { ++counts_[static_cast<int>(s)]; }
  void CountOut(TaskState s) { --counts_[static_cast<int>(s)]; }
  uint64_t count(TaskState s) const { return counts_[static_cast<int>(s)]; }
  // Non-terminal tasks: what capacity bounds.
  uint64_t active() const;
  bool full() const { return active() >= config_.capacity; }

  // Ready order. `seq` increases with the time the task became ready (the
  // broker derives it from that time, so it also gives the ready-since age).
  void PushReady(const Task& task, uint64_t seq);
  // The best ready task among `types` (all types when empty), or null.
  // `resolve` maps an id to its task if that task is still READY (else null);
  // entries that do not resolve are stale and discarded.
  // `key` (if not null) receives its order key: smaller is served first.
  Task* PeekReady(const std::vector<uint32_t>& types,
                  absl::FunctionRef<Task*(uint64_t)> resolve,
                  uint64_t* key = nullptr);
  // Removes `task`, which PeekReady just returned.
  void PopReady(const Task& task);
  // Smallest seq among ready entries that still resolve (0 if none).
  uint64_t OldestReadySeq(absl::FunctionRef<Task*(uint64_t)> resolve) const;
  // Removes `task`'s entry wherever it is in the heap (a linear scan).
  void RemoveReady(const Task& task);
  // Drops every ready entry (after a purge).
  void ClearReady() { ready_.clear(); }

  // Ended tasks in end order: (id, ended stamp).
  std::deque<std::pair<uint64_t, int64_t>>& ended() { return ended_; }
  uint64_t ended_live = 0;  // entries whose task is still retained

  // Submit calls parked on this full queue, in arrival order.
  std::deque<uint64_t>& submit_waiters() { return submit_waiters_; }

 private:
  struct ReadyEntry {
    uint64_t key;  // (9 - priority) << 56 | seq: smaller is better
    uint64_t id;
    bool operator>(const ReadyEntry& o) const { return key > o.key; }
  };
  using Heap = std::vector<ReadyEntry>;  // min-heap on key

  QueueConfig config_;
  std::array<uint64_t, 8> counts_{};
  absl::flat_hash_map<uint32_t, Heap> ready_;  // by type id
  std::deque<std::pair<uint64_t, int64_t>> ended_;
  std::deque<uint64_t> submit_waiters_;
};

}  // namespace conveyor::server

#endif  // CONVEYOR_SERVER_QUEUE_H_
