// Task identity, states, policies, and the compact in-memory task record.
//
// The broker keeps one `Task` per live or retained task. It is compact on
// purpose (a queued task with a 64-byte payload costs well under 200 bytes):
// the payload is stored inline after the record, defaults stay in the queue
// (held by reference), and everything optional or only needed while running
// or after the end lives in a lazily allocated `TaskExtra`.
//
// Not thread-safe: records are owned and guarded by the Broker's mutex.
#ifndef CONVEYOR_SERVER_TASK_H_
#define CONVEYOR_SERVER_TASK_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace conveyor::server {

// Broker-assigned id: unique and increasing with submit time. Written as 16
// lowercase hex digits, so the text form sorts like the number.
class TaskId {
 public:
  constexpr TaskId() = default;
  constexpr explicit TaskId(uint64_t value) : value_(value) {}
  uint64_t value() const { return value_; }
  std::string ToString() const;
  // INVALID_ARGUMENT unless `text` is 16 hex digits.
  static absl::StatusOr<TaskId> Parse(absl::string_view text);

  friend bool operator==(TaskId a, TaskId b) { return a.value_ == b.value_; }
  friend auto operator<=>(TaskId a, TaskId b) { return a.value_ <=> b.value_; }
  template <typename H>
  friend H AbslHashValue(H h, TaskId id) {
    return H::combine(std::move(h), id.value_);
  }

 private:
  uint64_t value_ = 0;
};

enum class TaskState : uint8_t {
  kScheduled,
  kReady,
  kRunning,
  kSucceeded,
  kDead,
  kCanceled,
  kExpired,
  kFallback,
};

const char* TaskStateName(TaskState state);
inline bool IsTerminal(TaskState s) {
  return s == TaskState::kSucceeded || s == TaskState::kDead ||
         s == TaskState::kCanceled || s == TaskState::kExpired ||
         s == TaskState::kFallback;
}

// A fully resolved retry policy.
struct RetryPolicy {
  uint32_t max_attempts = 3;
  absl::Duration initial_backoff = absl::Seconds(1);
  absl::Duration max_backoff = absl::Minutes(5);
  double multiplier = 2.0;
  double jitter = 0.1;  // fraction of the delay, 0..1
};

// A partial retry policy: unset fields come from the queue.
struct RetryOverride {
  std::optional<uint32_t> max_attempts;
  std::optional<absl::Duration> initial_backoff;
  std::optional<absl::Duration> max_backoff;
  std::optional<double> multiplier;
  std::optional<double> jitter;
  bool empty() const {
    return !max_attempts && !initial_backoff && !max_backoff && !multiplier &&
           !jitter;
  }
  RetryPolicy ApplyTo(const RetryPolicy& base) const;
};

using Headers = std::vector<std::pair<std::string, std::string>>;

// What ties a task to a workflow: the group it is a member of (or whose
// callback it is), the chain and stage, the schedule tick that submitted it.
// Kept outside the task record (only linked tasks pay for it).
struct TaskLinks {
  static constexpr uint32_t kCallbackIndex = 0xffffffff;
  uint64_t group = 0;
  uint32_t index = 0;  // kCallbackIndex: the group's callback
  uint64_t chain = 0;
  uint32_t stage = 0;
  std::string schedule;
  int64_t schedule_tick_us = 0;
};

// Everything a task may carry that most tasks do not: allocated only when a
// task sets one of these, is leased, or ends.
struct TaskExtra {
  Headers headers;
  std::string rate_key;
  std::string concurrency_key;
  std::optional<std::string> fallback_result;
  std::optional<RetryPolicy> retry;  // resolved; unset: the queue's
  std::optional<absl::Duration> timeout;
  absl::Time expires_at = absl::InfiniteFuture();
  absl::Time not_before = absl::InfinitePast();
  int64_t ended_stamp = 0;
  // Current or last attempt.
  // Fencing token of the latest lease (Task::token()).
  uint64_t token = 0;
  std::string worker_id;
  absl::Time started_at = absl::InfinitePast();
  absl::Time lease_expires_at = absl::InfinitePast();
  absl::Time attempt_deadline = absl::InfiniteFuture();
  // READY because its lease expired (not released, failed or requeued): a
  // heartbeat with the current token may take the lease back.
  bool lease_lapsed = false;
  double progress_percent = 0;
  std::string progress_message;
  // End.
  absl::Time finished_at = absl::InfinitePast();
  std::string result;
  std::string error;
};

class Queue;

// An idempotency key as text. A key of 32 lowercase hex digits (the client
// library's 128-bit keys) is kept in the task record as its 16 bytes; its
// text is rebuilt here, in a buffer of this object's own. Any other key is a
// view of the record's bytes. view() lives as long as this object (and, for
// a view, the task).
class KeyText {
 public:
  KeyText() = default;
  explicit KeyText(absl::string_view raw) : raw_(raw) {}
  // From a packed key's 16 bytes.
  static KeyText FromPacked(const unsigned char* bytes);
  absl::string_view view() const { return packed_ ? absl::string_view(hex_, 32) : raw_; }
  bool empty() const { return !packed_ && raw_.empty(); }

 private:
  bool packed_ = false;
  char hex_[32] = {};
  absl::string_view raw_;
};

// An idempotency key in the form task records keep it, to hash and compare
// without rebuilding text: the 16 bytes of a packed key, or the bytes of any
// other. A key is packed exactly when it is 32 lowercase hex digits, so two
// keys are equal exactly when their stored forms are. A raw key's bytes are a
// view (of the text given to Of, or of the task record).
class StoredKey {
 public:
  StoredKey() = default;
  // Packs `text` when it can.
  static StoredKey Of(absl::string_view text);
  bool packed() const { return packed_; }
  absl::string_view bytes() const {
    return packed_ ? absl::string_view(packed_bytes_, sizeof(packed_bytes_)) : raw_;
  }
  friend bool operator==(const StoredKey& a, const StoredKey& b) {
    return a.packed_ == b.packed_ && a.bytes() == b.bytes();
  }
  template <typename H>
  friend H AbslHashValue(H h, const StoredKey& k) {
    return H::combine(std::move(h), k.packed_, k.bytes());
  }

 private:
  friend class Task;
  bool packed_ = false;
  char packed_bytes_[16] = {};
  absl::string_view raw_;
};

// The in-memory record. Created only through Task::Create (the payload is
// stored inline after the fields; the memory comes from RecordPool) and
// freed with Task::Destroy.
class Task {
 public:
  // `idempotency_key` (at most 65,535 bytes) is kept inline after the
  // payload: the library puts one on every task, and a TaskExtra for it
  // alone would cost hundreds of bytes per queued task. The library's keys
  // (32 lowercase hex digits) take 16 bytes there, any other key 2 + its
  // size.
  static Task* Create(TaskId id, Queue* queue, uint32_t type_id,
                      absl::string_view payload, absl::Time created,
                      absl::string_view idempotency_key = {});
  static void Destroy(Task* task);

  TaskId id() const { return TaskId(id_); }
  Queue* queue() const { return queue_; }
  uint32_t type_id() const { return type_id_; }
  absl::string_view payload() const {
    return absl::string_view(reinterpret_cast<const char*>(this + 1),
                             payload_size_);
  }
  KeyText idempotency_key() const;
  bool has_idempotency_key() const { return has_idempotency_key_; }
  // The key as stored, for the broker's key index (no text rebuilt).
  StoredKey stored_key() const;
  absl::Time created_at() const { return absl::FromUnixMicros(created_us_); }
  // When a SCHEDULED task becomes READY (kept in the extra: READY tasks
  // submitted without a delay never need it).
  absl::Time not_before() const {
    return extra_ && extra_->not_before != absl::InfinitePast() ? extra_->not_before
                                                                 : created_at();
  }
  void set_not_before(absl::Time t) { mutable_extra().not_before = t; }
  // Stamp of the end that retention entries must match (0 while live).
  int64_t ended_stamp() const { return extra_ ? extra_->ended_stamp : 0; }
  void set_ended_stamp(int64_t stamp) { mutable_extra().ended_stamp = stamp; }

  // Fencing token of the latest lease: the broker's lease epoch in the high
  // 32 bits (raised at every restart with a journal), the lease count within
  // the epoch in the low 32, so no token is ever issued twice. 0 until the
  // first lease; kept in the extra, which every leased task has.
  uint64_t token() const { return extra_ ? extra_->token : 0; }
  void set_token(uint64_t token) { mutable_extra().token = token; }

  TaskExtra* extra() const { return extra_.get(); }
  TaskExtra& mutable_extra() {
    if (!extra_) extra_ = std::make_unique<TaskExtra>();
    return *extra_;
  }

 private:
  Task() = default;
  ~Task() = default;

  // Ordered largest first so the record packs into 56 bytes.
  uint64_t id_ = 0;
  Queue* queue_ = nullptr;
  int64_t created_us_ = 0;
  std::unique_ptr<TaskExtra> extra_;
  uint32_t type_id_ = 0;
  uint32_t payload_size_ = 0;

 public:
  // While READY: the seq its ready entry is ordered by (server/queue.h),
  // which also dates when it became ready. Stale otherwise.
  uint64_t ready_seq = 0;
  uint16_t failures = 0;  // attempts spent by failures and timeouts
  TaskState state = TaskState::kReady;
  uint8_t priority = 0;
  uint8_t crashes = 0;
  bool cancel_requested : 1 = false;
  bool watched : 1 = false;  // some WatchTask follows it
  // Submitted, but its record is not durable yet: not leaseable, not timed.
  bool pending_durable : 1 = false;

 private:
  // What Create allocated for this record: the record, the payload, the key.
  size_t RecordBytes() const;

  // The payload is followed by the key: 16 bytes if packed, else a 2-byte
  // length and the key's bytes.
  bool has_idempotency_key_ : 1 = false;
  bool key_packed_ : 1 = false;
};

}  // namespace conveyor::server

#endif  // CONVEYOR_SERVER_TASK_H_
