// HugePageAllocator: a std allocator for the broker's big flat indexes. An
// allocation of 2 MiB or more is mapped on its own, aligned to 2 MiB, and
// the huge pages it fills are marked MADV_HUGEPAGE, so that with transparent
// huge pages in `madvise` mode (Debian's default) a table of millions of
// slots is covered by a few hundred TLB entries instead of tens of
// thousands: at 10 million queued tasks, every lookup in the id index would
// otherwise also miss the TLB (a page walk, dearer still under a
// hypervisor). Smaller allocations go to operator new. Without THP the
// mapping behaves as any other.
#ifndef CONVEYOR_SERVER_HUGE_PAGE_ALLOCATOR_H_
#define CONVEYOR_SERVER_HUGE_PAGE_ALLOCATOR_H_

#include <cstddef>
#include <cstdint>
#include <new>

namespace conveyor::server {

namespace huge_page_internal {
inline constexpr size_t kHugePage = size_t{2} << 20;
// `bytes` rounded up to whole huge pages, mapped 2 MiB-aligned; with `huge`,
// the huge pages `bytes` fills are marked MADV_HUGEPAGE. std::bad_alloc if
// the system has no memory for it.
void* Map(size_t bytes, bool huge = true);
void Unmap(void* p, size_t bytes);
}  // namespace huge_page_internal

template <typename T>
class HugePageAllocator {
 public:
  using value_type = T;
  HugePageAllocator() = default;
  template <typename U>
  HugePageAllocator(const HugePageAllocator<U>&) {}  // NOLINT: rebinding

  T* allocate(size_t n) {
    const size_t bytes = n * sizeof(T);
    if (bytes < huge_page_internal::kHugePage) {
      return static_cast<T*>(::operator new(bytes, std::align_val_t(alignof(T))));
    }
    return static_cast<T*>(huge_page_internal::Map(bytes));
  }
  void deallocate(T* p, size_t n) {
    const size_t bytes = n * sizeof(T);
    if (bytes < huge_page_internal::kHugePage) {
      ::operator delete(p, std::align_val_t(alignof(T)));
      return;
    }
    huge_page_internal::Unmap(p, bytes);
  }
  template <typename U>
  friend bool operator==(const HugePageAllocator&, const HugePageAllocator<U>&) {
    return true;
  }
};

}  // namespace conveyor::server

#endif  // CONVEYOR_SERVER_HUGE_PAGE_ALLOCATOR_H_
