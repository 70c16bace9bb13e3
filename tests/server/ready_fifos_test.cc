// ReadyFifos (server/ready_fifos.h): serving order, erase anywhere, the
// oldest live seq, and a randomized comparison with a sorted reference.
#include "server/ready_fifos.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include "absl/container/flat_hash_map.h"

namespace conveyor::server {
namespace {

std::vector<uint64_t> DrainIds(ReadyFifos& f) {
  std::vector<uint64_t> ids;
  while (!f.empty()) {
    ids.push_back(f.front());
    f.PopFront();
  }
  return ids;
}

TEST(ReadyFifosTest, ServesHigherPriorityFirstThenPushOrder) {
  ReadyFifos f;
  f.Push(0, 1);
  f.Push(5, 2);
  f.Push(0, 3);
  f.Push(9, 4);
  f.Push(5, 5);
  EXPECT_EQ(f.size(), 5u);
  EXPECT_EQ(f.ring_count(), 3u);
  EXPECT_EQ(DrainIds(f), (std::vector<uint64_t>{4, 2, 5, 1, 3}));
  EXPECT_TRUE(f.empty());
}

TEST(ReadyFifosTest, EraseRemovesAnEntryAnywhere) {
  ReadyFifos f;
  for (uint64_t i = 1; i <= 10; ++i) f.Push(static_cast<uint32_t>(i % 2), i);
  EXPECT_TRUE(f.Erase(1));   // a front
  EXPECT_TRUE(f.Erase(6));   // a middle
  EXPECT_TRUE(f.Erase(10));  // a back
  EXPECT_FALSE(f.Erase(6));  // gone already
  EXPECT_FALSE(f.Erase(99));
  EXPECT_EQ(f.size(), 7u);
  // Priority 1 (odd ids) first, then priority 0.
  EXPECT_EQ(DrainIds(f), (std::vector<uint64_t>{3, 5, 7, 9, 2, 4, 8}));
}

TEST(ReadyFifosTest, OldestLiveSeqSkipsStaleEntriesInEveryPriority) {
  ReadyFifos f;
  absl::flat_hash_map<uint64_t, uint64_t> seq_of = {{1, 100}, {2, 101}, {3, 102}, {4, 103}};
  auto live_seq = [&](uint64_t id) -> uint64_t {
    auto it = seq_of.find(id);
    return it == seq_of.end() ? 0 : it->second;
  };
  EXPECT_EQ(f.OldestLiveSeq(live_seq), 0u);
  f.Push(0, 1);
  f.Push(7, 2);
  f.Push(0, 3);
  f.Push(7, 4);
  // The oldest is the low-priority one, though it is served last.
  EXPECT_EQ(f.OldestLiveSeq(live_seq), 100u);
  seq_of.erase(1);
  EXPECT_EQ(f.OldestLiveSeq(live_seq), 101u);
  seq_of.erase(2);
  EXPECT_EQ(f.OldestLiveSeq(live_seq), 102u);
  seq_of.clear();
  EXPECT_EQ(f.OldestLiveSeq(live_seq), 0u);
}

TEST(ReadyFifosTest, GrowsAndShrinksThroughManyEntries) {
  ReadyFifos f;
  constexpr uint64_t kN = 100'000;
  for (uint64_t i = 0; i < kN; ++i) f.Push(3, i);
  for (uint64_t i = 0; i < kN - 3; ++i) {
    ASSERT_EQ(f.front(), i);
    f.PopFront();
  }
  EXPECT_EQ(DrainIds(f), (std::vector<uint64_t>{kN - 3, kN - 2, kN - 1}));
  // Reusable after draining.
  f.Push(3, 7);
  EXPECT_EQ(f.front(), 7u);
}

// Random pushes (random priorities, ids in push order), pops and erases,
// checked against a vector of the same entries sorted by (priority
// descending, push order).
TEST(ReadyFifosTest, MatchesASortedReferenceUnderRandomOperations) {
  struct Entry {
    uint32_t priority;
    uint64_t id;
  };
  auto before = [](const Entry& a, const Entry& b) {
    return a.priority != b.priority ? a.priority > b.priority : a.id < b.id;
  };
  std::mt19937_64 rng(12345);
  ReadyFifos f;
  std::vector<Entry> ref;
  uint64_t next_id = 1;
  for (int step = 0; step < 200'000; ++step) {
    const uint64_t op = rng() % 10;
    if (op < 5 || ref.empty()) {
      const Entry e{static_cast<uint32_t>(rng() % 4), next_id++};
      f.Push(e.priority, e.id);
      ref.insert(std::upper_bound(ref.begin(), ref.end(), e, before), e);
    } else if (op < 8) {
      ASSERT_EQ(f.front(), ref.front().id) << "step " << step;
      f.PopFront();
      ref.erase(ref.begin());
    } else {
      const size_t i = rng() % ref.size();
      ASSERT_TRUE(f.Erase(ref[i].id));
      ref.erase(ref.begin() + static_cast<std::ptrdiff_t>(i));
    }
    ASSERT_EQ(f.size(), ref.size());
  }
  std::vector<uint64_t> want;
  for (const Entry& e : ref) want.push_back(e.id);
  EXPECT_EQ(DrainIds(f), want);
}

}  // namespace
}  // namespace conveyor::server
