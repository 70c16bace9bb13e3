// HugePageAllocator (server/huge_page_allocator.h): small allocations from
// operator new, 2 MiB and up mapped on their own, aligned to 2 MiB, usable to
// the last byte; and a hash set growing through both kinds keeps every key.
#include "server/huge_page_allocator.h"

#include <cstdint>
#include <cstring>

#include "absl/container/flat_hash_set.h"
#include "gtest/gtest.h"

namespace conveyor::server {
namespace {

constexpr size_t kHuge = size_t{2} << 20;

TEST(HugePageAllocatorTest, BigAllocationsAreAlignedToHugePagesAndWholeUsable) {
  HugePageAllocator<uint64_t> alloc;
  for (size_t bytes : {kHuge, kHuge + 8, 3 * kHuge + 4096}) {
    const size_t n = bytes / sizeof(uint64_t);
    uint64_t* p = alloc.allocate(n);
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % kHuge, 0u) << bytes;
    for (size_t i = 0; i < n; ++i) p[i] = i;
    EXPECT_EQ(p[n - 1], n - 1);
    alloc.deallocate(p, n);
  }
}

TEST(HugePageAllocatorTest, SmallAllocationsKeepTheirAlignment) {
  struct alignas(64) Wide {
    char bytes[64];
  };
  HugePageAllocator<Wide> alloc;
  Wide* p = alloc.allocate(10);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 64, 0u);
  std::memset(p, 0xab, 10 * sizeof(Wide));
  alloc.deallocate(p, 10);
}

TEST(HugePageAllocatorTest, HashSetGrowsThroughSmallAndHugeTables) {
  // 600,000 keys: the table grows from a few slots to 1M (9 MiB), crossing
  // from operator new to mapped huge pages; every rehash keeps every key.
  absl::flat_hash_set<uint64_t, absl::Hash<uint64_t>, std::equal_to<uint64_t>,
                      HugePageAllocator<uint64_t>>
      set;
  for (uint64_t i = 0; i < 600'000; ++i) set.insert(i * 7919);
  EXPECT_EQ(set.size(), 600'000u);
  for (uint64_t i = 0; i < 600'000; ++i) ASSERT_TRUE(set.contains(i * 7919)) << i;
  EXPECT_FALSE(set.contains(1));
  for (uint64_t i = 0; i < 600'000; i += 2) set.erase(i * 7919);
  EXPECT_EQ(set.size(), 300'000u);
  set.clear();
  set.rehash(0);  // gives the mapping back
  EXPECT_TRUE(set.empty());
}

}  // namespace
}  // namespace conveyor::server
