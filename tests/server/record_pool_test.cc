// RecordPool (server/record_pool.h): records of every size come back aligned
// and whole, freed slots are reused, slabs whose records are all gone are
// returned (one empty slab per size is kept), records over the pooled size
// come from operator new, threads may allocate and free at once, and task
// records of every key kind give back exactly what they took.
#include "server/record_pool.h"

#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "server/task.h"

namespace conveyor::server {
namespace {

constexpr size_t kSlab = size_t{2} << 20;

TEST(RecordPoolTest, EverySizeIsAlignedAndWhollyUsable) {
  std::vector<std::pair<void*, size_t>> held;
  for (size_t bytes = 1; bytes <= RecordPool::kMaxPooledBytes + 64; ++bytes) {
    if (bytes > 496 && bytes <= 504) continue;  // EmptySlabsGoBackToTheSystemButOne's own
    for (int i = 0; i < 3; ++i) {
      void* p = RecordPool::Allocate(bytes);
      ASSERT_NE(p, nullptr);
      EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 8, 0u) << bytes;
      std::memset(p, static_cast<int>(bytes & 0xff), bytes);
      held.emplace_back(p, bytes);
    }
  }
  // Nothing written to one record reached another.
  for (const auto& [p, bytes] : held) {
    const auto* c = static_cast<const unsigned char*>(p);
    for (size_t j = 0; j < bytes; ++j) {
      ASSERT_EQ(c[j], bytes & 0xff) << "record of " << bytes << " bytes, byte " << j;
    }
  }
  for (const auto& [p, bytes] : held) RecordPool::Free(p, bytes);
}

TEST(RecordPoolTest, AFreedSlotIsTheNextOneHandedOut) {
  if (!RecordPool::Enabled()) {
    // AddressSanitizer build: operator new throughout, which reuses nothing.
    void* p = RecordPool::Allocate(200);
    RecordPool::Free(p, 200);
    EXPECT_FALSE(RecordPool::Enabled());
    return;
  }
  void* a = RecordPool::Allocate(200);
  void* b = RecordPool::Allocate(200);
  RecordPool::Free(a, 200);
  void* c = RecordPool::Allocate(200);
  EXPECT_EQ(c, a);
  RecordPool::Free(b, 200);
  RecordPool::Free(c, 200);
}

TEST(RecordPoolTest, EmptySlabsGoBackToTheSystemButOne) {
  if (!RecordPool::Enabled()) {  // AddressSanitizer build: no slabs at all
    EXPECT_EQ(RecordPool::Slabs(), 0u);
    return;
  }
  // A size nothing else in this binary uses (497 to 504 bytes), about 4,160
  // records a slab.
  constexpr size_t kBytes = 504;
  // One record made and freed: the class now holds exactly its kept slab,
  // whatever ran before.
  RecordPool::Free(RecordPool::Allocate(kBytes), kBytes);
  const size_t before = RecordPool::Slabs();
  const size_t n = 5 * kSlab / kBytes;  // five slabs and a bit
  std::vector<void*> held;
  for (size_t i = 0; i < n; ++i) held.push_back(RecordPool::Allocate(kBytes));
  const size_t full = RecordPool::Slabs();
  EXPECT_EQ(full, before + 5);
  // Every record lies inside a 2 MiB slab after that slab's header.
  for (void* p : held) EXPECT_GE(reinterpret_cast<uintptr_t>(p) % kSlab, 64u);
  // Free the older half (a FIFO queue draining): their slabs go, bar one.
  for (size_t i = 0; i < n / 2; ++i) RecordPool::Free(held[i], kBytes);
  EXPECT_LT(RecordPool::Slabs(), full);
  for (size_t i = n / 2; i < n; ++i) RecordPool::Free(held[i], kBytes);
  EXPECT_EQ(RecordPool::Slabs(), before);
  // The kept slab serves the next records without a new mapping.
  void* again = RecordPool::Allocate(kBytes);
  EXPECT_EQ(RecordPool::Slabs(), before);
  RecordPool::Free(again, kBytes);
}

TEST(RecordPoolTest, LargeRecordsComeFromOperatorNew) {
  const size_t before = RecordPool::Slabs();
  const size_t bytes = RecordPool::kMaxPooledBytes + 1;
  void* p = RecordPool::Allocate(bytes);
  std::memset(p, 0x5a, bytes);
  EXPECT_EQ(RecordPool::Slabs(), before);
  RecordPool::Free(p, bytes);
  void* big = RecordPool::Allocate(1 << 20);
  std::memset(big, 0x5a, 1 << 20);
  RecordPool::Free(big, 1 << 20);
  EXPECT_EQ(RecordPool::Slabs(), before);
}

TEST(RecordPoolTest, ThreadsAllocateAndFreeAtOnce) {
  constexpr int kThreads = 4;
  constexpr int kRounds = 20'000;
  std::vector<std::thread> threads;
  std::vector<int> bad(kThreads, 0);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([t, &bad] {
      std::vector<std::pair<uint64_t*, size_t>> held;
      for (int i = 0; i < kRounds; ++i) {
        const size_t words = 1 + static_cast<size_t>((i * 7 + t) % 40);
        auto* p = static_cast<uint64_t*>(RecordPool::Allocate(words * 8));
        for (size_t w = 0; w < words; ++w) p[w] = (uint64_t{static_cast<uint32_t>(t)} << 32) | i;
        held.emplace_back(p, words);
        if (held.size() > 64) {
          auto [q, n] = held[held.size() % 64];
          for (size_t w = 0; w < n; ++w) {
            if ((q[w] >> 32) != static_cast<uint64_t>(t)) ++bad[t];
          }
          RecordPool::Free(q, n * 8);
          held.erase(held.begin() + static_cast<long>(held.size() % 64));
        }
      }
      for (auto [q, n] : held) RecordPool::Free(q, n * 8);
    });
  }
  for (std::thread& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(bad[t], 0) << "thread " << t;
}

TEST(RecordPoolTest, TaskRecordsOfEveryKeyKindGiveBackWhatTheyTook) {
  const size_t before = RecordPool::Slabs();
  const std::string packed(32, 'a');          // 32 lowercase hex digits: 16 bytes stored
  const std::string raw = "order-42/retry";  // any other key: 2 + its size
  std::vector<Task*> tasks;
  uint64_t id = 1;
  for (size_t payload : {size_t{0}, size_t{1}, size_t{64}, size_t{400}, size_t{456},
                         size_t{4096}}) {
    for (const std::string* key : {static_cast<const std::string*>(nullptr), &packed, &raw}) {
      const std::string body(payload, 'p');
      Task* t = Task::Create(TaskId(id++), nullptr, 0, body, absl::UnixEpoch(),
                             key == nullptr ? absl::string_view() : absl::string_view(*key));
      EXPECT_EQ(t->payload(), body);
      EXPECT_EQ(std::string(t->idempotency_key().view()), key == nullptr ? "" : *key);
      tasks.push_back(t);
    }
  }
  // Destroy checks the size against the slab's (a mismatch aborts).
  for (Task* t : tasks) Task::Destroy(t);
  EXPECT_LE(RecordPool::Slabs(), before + 15);  // at most one kept per size used
}

}  // namespace
}  // namespace conveyor::server
