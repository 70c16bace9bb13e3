#include "server/ready_fifos.h"

#include <algorithm>
#include <utility>

namespace conveyor::server {

// ───────────────────────────── Ring ─────────────────────────────

void ReadyFifos::Ring::Resize(size_t cap) {
  std::unique_ptr<uint64_t[]> buf(new uint64_t[cap]);
  for (size_t i = 0; i < size_; ++i) buf[i] = at(i);
  buf_ = std::move(buf);
  cap_ = cap;
  head_ = 0;
}

void ReadyFifos::Ring::PushBack(uint64_t id) {
  if (size_ == cap_) Resize(cap_ == 0 ? 1 : cap_ * 2);
  at(size_) = id;
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

size_t ReadyFifos::FrontRing() const {
  size_t i = 0;
  while (rings_[i].ring.empty()) ++i;
  return i;
}

uint64_t ReadyFifos::front() const { return rings_[FrontRing()].ring.at(0); }

void ReadyFifos::Push(uint32_t priority, uint64_t id) {
  auto it = rings_.begin();
  while (it != rings_.end() && it->priority > priority) ++it;
  if (it == rings_.end() || it->priority != priority) {
    it = rings_.insert(it, PriorityRing{priority, {}});
  }
  it->ring.PushBack(id);
  ++size_;
}

void ReadyFifos::PopFront() {
  rings_[FrontRing()].ring.PopFront();
  --size_;
}

bool ReadyFifos::Erase(uint64_t id) {
  for (PriorityRing& r : rings_) {
    for (size_t i = 0; i < r.ring.size(); ++i) {
      if (r.ring.at(i) == id) {
        r.ring.EraseAt(i);
        --size_;
        return true;
      }
    }
  }
  return false;
}

uint64_t ReadyFifos::OldestLiveSeq(absl::FunctionRef<uint64_t(uint64_t)> live_seq) const {
  uint64_t oldest = 0;
  for (const PriorityRing& r : rings_) {
    for (size_t i = 0; i < r.ring.size(); ++i) {
      const uint64_t seq = live_seq(r.ring.at(i));
      if (seq == 0) continue;
      if (oldest == 0 || seq < oldest) oldest = seq;
      break;
    }
  }
  return oldest;
}

}  // namespace conveyor::server
