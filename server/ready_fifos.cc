#include "server/ready_fifos.h"

#include <algorithm>
#include <utility>

namespace conveyor::server {

// ───────────────────────────── Ring ─────────────────────────────

void ReadyFifos::Ring::Resize(size_t cap) {
  std::unique_ptr<ReadyEntry[]> buf(new ReadyEntry[cap]);
  for (size_t i = 0; i < size_; ++i) buf[i] = at(i);
  buf_ = std::move(buf);
  cap_ = cap;
  head_ = 0;
}

void ReadyFifos::Ring::Insert(ReadyEntry entry) {
  if (size_ == cap_) Resize(cap_ == 0 ? 1 : cap_ * 2);
  // Usually the new entry goes last; otherwise find its place and shift
  // the entries after it.
  size_t pos = size_;
  if (size_ > 0 && entry.key < at(size_ - 1).key) {
    size_t lo = 0;
    size_t hi = size_ - 1;  // at(hi).key > entry.key
    while (lo < hi) {
      const size_t mid = lo + (hi - lo) / 2;
      if (at(mid).key > entry.key) {
        hi = mid;
      } else {
        lo = mid + 1;
      }
    }
    pos = lo;
    for (size_t i = size_; i > pos; --i) at(i) = at(i - 1);
  }
  at(pos) = entry;
  ++size_;
}

void ReadyFifos::Ring::PopFront() {
  head_ = (head_ + 1) & (cap_ - 1);
  --size_;
  if (cap_ >= 8 && size_ <= cap_ / 4) Resize(cap_ / 2);
}

void ReadyFifos::Ring::EraseAt(size_t i) {
  if (i < size_ / 2) {
    // Shift the entries before it one place back, then drop the front.
    for (size_t j = i; j > 0; --j) at(j) = at(j - 1);
    PopFront();
    return;
  }
  for (size_t j = i; j + 1 < size_; ++j) at(j) = at(j + 1);
  --size_;
  if (cap_ >= 8 && size_ <= cap_ / 4) Resize(cap_ / 2);
}

// ─────────────────────────── ReadyFifos ───────────────────────────

ReadyFifos::Ring* ReadyFifos::RingOf(uint64_t key) {
  const uint64_t prefix = key & ~kReadySeqMask;
  auto it = rings_.begin();
  while (it != rings_.end() && it->prefix < prefix) ++it;
  if (it == rings_.end() || it->prefix != prefix) it = rings_.insert(it, PriorityRing{prefix, {}});
  return &it->ring;
}

size_t ReadyFifos::FrontRing() const {
  size_t i = 0;
  while (rings_[i].ring.empty()) ++i;
  return i;
}

const ReadyEntry& ReadyFifos::front() const { return rings_[FrontRing()].ring.at(0); }

void ReadyFifos::Push(ReadyEntry entry) {
  RingOf(entry.key)->Insert(entry);
  ++size_;
}

void ReadyFifos::PopFront() {
  rings_[FrontRing()].ring.PopFront();
  --size_;
}

bool ReadyFifos::Erase(uint64_t id) {
  for (PriorityRing& r : rings_) {
    for (size_t i = 0; i < r.ring.size(); ++i) {
      if (r.ring.at(i).id == id) {
        r.ring.EraseAt(i);
        --size_;
        return true;
      }
    }
  }
  return false;
}

uint64_t ReadyFifos::OldestLiveSeq(absl::FunctionRef<bool(uint64_t)> live) const {
  uint64_t oldest = 0;
  for (const PriorityRing& r : rings_) {
    for (size_t i = 0; i < r.ring.size(); ++i) {
      const ReadyEntry& e = r.ring.at(i);
      if (!live(e.id)) continue;
      const uint64_t seq = e.key & kReadySeqMask;
      if (oldest == 0 || seq < oldest) oldest = seq;
      break;
    }
  }
  return oldest;
}

}  // namespace conveyor::server
