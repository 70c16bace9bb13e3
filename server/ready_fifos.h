// ReadyFifos: the READY entries of one lane of a queue (server/queue.h),
// in serving order: higher priority first, then smaller seq (the order the
// tasks became ready).
//
// The broker's ready seq is strictly increasing, so the entries of one
// priority arrive in seq order. Keeping one FIFO ring per priority makes
// push, front and pop O(1) at any depth, where a heap of 10 million entries
// costs about 23 scattered memory reads per pop. Finding the oldest entry
// looks at one front per priority. A push out of seq order (the broker
// makes none; recovery and tests could) is placed in order by a shift.
//
// Entries are not checked against their tasks here: a task that ended
// leaves a stale entry, which the caller skips at the front (lazy deletion)
// or removes with Erase.
//
// Not thread-safe; the broker's lock guards it.
#ifndef CONVEYOR_SERVER_READY_FIFOS_H_
#define CONVEYOR_SERVER_READY_FIFOS_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/functional/function_ref.h"

namespace conveyor::server {

// Seq bits of a ready key; the 8 bits above them hold 9 - priority.
inline constexpr uint64_t kReadySeqMask = (uint64_t{1} << 56) - 1;

// The order key of a READY task: smaller is served first.
inline uint64_t ReadyKey(uint32_t priority, uint64_t seq) {
  return (uint64_t{9} - priority) << 56 | (seq & kReadySeqMask);
}

struct ReadyEntry {
  uint64_t key;  // ReadyKey(priority, seq)
  uint64_t id;   // the task's id
};

class ReadyFifos {
 public:
  ReadyFifos() = default;
  ReadyFifos(const ReadyFifos&) = delete;
  ReadyFifos& operator=(const ReadyFifos&) = delete;

  bool empty() const { return size_ == 0; }
  size_t size() const { return size_; }

  // The entry with the smallest key. Requires !empty().
  const ReadyEntry& front() const;
  void Push(ReadyEntry entry);
  // Removes front(). Requires !empty().
  void PopFront();
  // Removes the entry of task `id`, wherever it is (a scan). Returns false
  // if there is none.
  bool Erase(uint64_t id);
  // The smallest seq among entries for which `live(id)` holds, or 0 if
  // none. Looks at each priority's entries from the front up to its first
  // live one.
  uint64_t OldestLiveSeq(absl::FunctionRef<bool(uint64_t)> live) const;
  // Number of priorities with a ring (for tests).
  size_t ring_count() const { return rings_.size(); }

 private:
  // A growable ring buffer of entries sorted by key. Its capacity is a
  // power of two; it halves when a quarter full, so a drained backlog gives
  // its memory back.
  class Ring {
   public:
    size_t size() const { return size_; }
    bool empty() const { return size_ == 0; }
    const ReadyEntry& at(size_t i) const { return buf_[(head_ + i) & (cap_ - 1)]; }
    ReadyEntry& at(size_t i) { return buf_[(head_ + i) & (cap_ - 1)]; }
    // Appends, or inserts at its place if `entry` sorts before the back.
    void Insert(ReadyEntry entry);
    void PopFront();
    void EraseAt(size_t i);

   private:
    void Resize(size_t cap);
    std::unique_ptr<ReadyEntry[]> buf_;
    size_t cap_ = 0;
    size_t head_ = 0;
    size_t size_ = 0;
  };
  struct PriorityRing {
    uint64_t prefix;  // the key bits above kReadySeqMask
    Ring ring;
  };

  Ring* RingOf(uint64_t key);
  // The index of the first non-empty ring (smallest prefix). Requires
  // !empty().
  size_t FrontRing() const;

  std::vector<PriorityRing> rings_;  // by prefix, ascending (best first)
  size_t size_ = 0;
};

}  // namespace conveyor::server

#endif  // CONVEYOR_SERVER_READY_FIFOS_H_
