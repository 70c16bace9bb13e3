#include "server/huge_page_allocator.h"

#include <sys/mman.h>

#include <new>

namespace conveyor::server::huge_page_internal {

namespace {
size_t Rounded(size_t bytes) { return (bytes + kHugePage - 1) / kHugePage * kHugePage; }
}  // namespace

void* Map(size_t bytes, bool huge) {
  const size_t size = Rounded(bytes);
  // Map one huge page more and trim both ends to an aligned `size`: THP
  // backs only aligned 2 MiB ranges.
  void* raw = mmap(nullptr, size + kHugePage, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) throw std::bad_alloc();
  const auto start = reinterpret_cast<uintptr_t>(raw);
  const uintptr_t aligned = (start + kHugePage - 1) & ~(kHugePage - 1);
  if (aligned > start) munmap(raw, aligned - start);
  const uintptr_t end = start + size + kHugePage;
  if (end > aligned + size) munmap(reinterpret_cast<void*>(aligned + size), end - aligned - size);
  void* p = reinterpret_cast<void*>(aligned);
  // Only the huge pages `bytes` fills: a huge page is resident as a whole
  // once touched, and the tail would hold up to 2 MiB nobody asked for. The
  // advice is only that: without THP the pages stay plain.
  if (huge) (void)madvise(p, bytes / kHugePage * kHugePage, MADV_HUGEPAGE);
  return p;
}

void Unmap(void* p, size_t bytes) { munmap(p, Rounded(bytes)); }

}  // namespace conveyor::server::huge_page_internal
