// ReadyFifos: the READY entries of one lane of a queue (server/queue.h),
// in serving order: higher priority first, then smaller seq (the order the
// tasks became ready).
//
// An entry is the task's id alone, 8 bytes: 10 million READY tasks of one
// priority fill a ring of 2^24 slots, 134 MB, where (order key, id) pairs
// took 268 MB. The seq is the task's own (Task::ready_seq), and the
// priority is the FIFO's. The broker's ready seq is strictly increasing, so the entries
// of one priority arrive in seq order and each FIFO is a plain ring: push,
// front and pop are O(1) at any depth, where a heap of 10 million entries
// costs about 23 scattered memory reads per pop. Finding the best entry
// looks at one front per priority.
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

class ReadyFifos {
 public:
  ReadyFifos() = default;
  ReadyFifos(const ReadyFifos&) = delete;
  ReadyFifos& operator=(const ReadyFifos&) = delete;

  bool empty() const { return size_ == 0; }
  size_t size() const { return size_; }

  // The id at the front of the highest priority's FIFO. Requires !empty().
  uint64_t front() const;
  // Appends task `id` to the FIFO of `priority`. Within one priority, ids
  // must be pushed in the order of their seqs (the broker's seq only grows).
  void Push(uint32_t priority, uint64_t id);
  // Removes front(). Requires !empty().
  void PopFront();
  // Removes the entry of task `id`, wherever it is (a scan). Returns false
  // if there is none.
  bool Erase(uint64_t id);
  // The smallest seq among each priority's first live entry: `live_seq(id)`
  // gives an entry's seq, or 0 if its task is no longer READY (stale). Looks
  // at each priority's entries from the front up to its first live one.
  // 0 if there is no live entry.
  uint64_t OldestLiveSeq(absl::FunctionRef<uint64_t(uint64_t)> live_seq) const;
  // Number of priorities with a ring (for tests).
  size_t ring_count() const { return rings_.size(); }

 private:
  // A growable ring buffer of ids. Its capacity is a power of two; it
  // halves when a quarter full, so a drained backlog gives its memory back.
  class Ring {
   public:
    size_t size() const { return size_; }
    bool empty() const { return size_ == 0; }
    uint64_t at(size_t i) const { return buf_[(head_ + i) & (cap_ - 1)]; }
    uint64_t& at(size_t i) { return buf_[(head_ + i) & (cap_ - 1)]; }
    void PushBack(uint64_t id);
    void PopFront();
    void EraseAt(size_t i);

   private:
    void Resize(size_t cap);
    std::unique_ptr<uint64_t[]> buf_;
    size_t cap_ = 0;
    size_t head_ = 0;
    size_t size_ = 0;
  };
  struct PriorityRing {
    uint32_t priority;
    Ring ring;
  };

  // The index of the first non-empty ring (highest priority). Requires
  // !empty().
  size_t FrontRing() const;

  std::vector<PriorityRing> rings_;  // by priority, descending (best first)
  size_t size_ = 0;
};

}  // namespace conveyor::server

#endif  // CONVEYOR_SERVER_READY_FIFOS_H_
