// ReadyFifos (server/ready_fifos.h): serving order, out-of-order pushes,
// erase anywhere, the oldest live seq, and a randomized comparison with a
// sorted reference.
#include "server/ready_fifos.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include "absl/container/flat_hash_set.h"

namespace conveyor::server {
namespace {

std::vector<uint64_t> DrainIds(ReadyFifos& f) {
  std::vector<uint64_t> ids;
  while (!f.empty()) {
    ids.push_back(f.front().id);
    f.PopFront();
  }
  return ids;
}

TEST(ReadyFifosTest, ServesHigherPriorityFirstThenSeqOrder) {
  ReadyFifos f;
  f.Push({ReadyKey(0, 10), 1});
  f.Push({ReadyKey(5, 11), 2});
  f.Push({ReadyKey(0, 12), 3});
  f.Push({ReadyKey(9, 13), 4});
  f.Push({ReadyKey(5, 14), 5});
  EXPECT_EQ(f.size(), 5u);
  EXPECT_EQ(f.ring_count(), 3u);
  EXPECT_EQ(DrainIds(f), (std::vector<uint64_t>{4, 2, 5, 1, 3}));
  EXPECT_TRUE(f.empty());
}

TEST(ReadyFifosTest, APushOutOfSeqOrderTakesItsPlace) {
  ReadyFifos f;
  for (uint64_t seq : {10, 20, 30, 40}) f.Push({ReadyKey(1, seq), seq});
  f.Push({ReadyKey(1, 25), 25});
  f.Push({ReadyKey(1, 5), 5});
  f.Push({ReadyKey(1, 45), 45});
  EXPECT_EQ(DrainIds(f), (std::vector<uint64_t>{5, 10, 20, 25, 30, 40, 45}));
}

TEST(ReadyFifosTest, EraseRemovesAnEntryAnywhere) {
  ReadyFifos f;
  for (uint64_t i = 1; i <= 10; ++i) f.Push({ReadyKey(i % 2, 100 + i), i});
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
  EXPECT_EQ(f.OldestLiveSeq([](uint64_t) { return true; }), 0u);
  f.Push({ReadyKey(0, 100), 1});
  f.Push({ReadyKey(7, 101), 2});
  f.Push({ReadyKey(0, 102), 3});
  f.Push({ReadyKey(7, 103), 4});
  // The oldest is the low-priority one, though it is served last.
  EXPECT_EQ(f.OldestLiveSeq([](uint64_t) { return true; }), 100u);
  absl::flat_hash_set<uint64_t> dead = {1};
  auto live = [&](uint64_t id) { return !dead.contains(id); };
  EXPECT_EQ(f.OldestLiveSeq(live), 101u);
  dead.insert(2);
  EXPECT_EQ(f.OldestLiveSeq(live), 102u);
  dead = {1, 2, 3, 4};
  EXPECT_EQ(f.OldestLiveSeq(live), 0u);
}

TEST(ReadyFifosTest, GrowsAndShrinksThroughManyEntries) {
  ReadyFifos f;
  constexpr uint64_t kN = 100'000;
  for (uint64_t i = 0; i < kN; ++i) f.Push({ReadyKey(3, i + 1), i});
  for (uint64_t i = 0; i < kN - 3; ++i) {
    ASSERT_EQ(f.front().id, i);
    f.PopFront();
  }
  EXPECT_EQ(DrainIds(f), (std::vector<uint64_t>{kN - 3, kN - 2, kN - 1}));
  // Reusable after draining.
  f.Push({ReadyKey(3, kN + 5), 7});
  EXPECT_EQ(f.front().id, 7u);
}

// Random pushes (mostly in seq order, some not), pops and erases, checked
// against a sorted vector of the same entries.
TEST(ReadyFifosTest, MatchesASortedReferenceUnderRandomOperations) {
  std::mt19937_64 rng(12345);
  ReadyFifos f;
  std::vector<ReadyEntry> ref;
  uint64_t seq = 1000;
  uint64_t next_id = 1;
  auto by_key = [](const ReadyEntry& a, const ReadyEntry& b) { return a.key < b.key; };
  for (int step = 0; step < 200'000; ++step) {
    const uint64_t op = rng() % 10;
    if (op < 5 || ref.empty()) {
      const uint32_t priority = static_cast<uint32_t>(rng() % 4);
      // 1 in 8 pushes goes back in time (distinct seqs keep the order total).
      const uint64_t s = rng() % 8 == 0 ? seq - 1 - rng() % 500 : seq;
      seq += 2;
      const ReadyEntry e{ReadyKey(priority, s * 2 + 1), next_id++};
      f.Push(e);
      ref.insert(std::upper_bound(ref.begin(), ref.end(), e, by_key), e);
    } else if (op < 8) {
      ASSERT_EQ(f.front().id, ref.front().id) << "step " << step;
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
  for (const ReadyEntry& e : ref) want.push_back(e.id);
  EXPECT_EQ(DrainIds(f), want);
}

}  // namespace
}  // namespace conveyor::server
