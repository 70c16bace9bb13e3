#include "server/record_pool.h"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <new>

#include "absl/base/const_init.h"
#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "server/huge_page_allocator.h"

#if defined(__SANITIZE_ADDRESS__)
#define CONVEYOR_RECORD_POOL_OFF 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CONVEYOR_RECORD_POOL_OFF 1
#endif
#endif

namespace conveyor::server {
namespace {

constexpr size_t kSlabBytes = huge_page_internal::kHugePage;
constexpr size_t kGrain = 8;
constexpr size_t kClasses = RecordPool::kMaxPooledBytes / kGrain;
// A class's first slabs stay on 4 KiB pages, so that a broker holding a few
// tasks of many sizes keeps only the pages it touched; from this many on, the
// class is big and its slabs are marked for huge pages.
constexpr size_t kPlainSlabs = 4;

// At the start of its slab (slabs are 2 MiB-aligned, so a record's slab is
// its address rounded down).
struct Slab {
  Slab* prev = nullptr;  // in its class's list of slabs with room
  Slab* next = nullptr;
  bool listed = false;
  uint32_t cls = 0;
  uint32_t live = 0;
  void* free = nullptr;  // freed slots, each holding the next
  char* bump = nullptr;  // the first slot never handed out
  char* end = nullptr;
};
constexpr size_t kHeaderBytes = (sizeof(Slab) + 63) / 64 * 64;

// The class of a record of `bytes`: class i holds records of up to 8(i+1).
uint32_t ClassOf(size_t bytes) {
  return static_cast<uint32_t>(bytes == 0 ? 0 : (bytes - 1) / kGrain);
}

struct Class {
  Slab* with_room = nullptr;
  size_t slabs = 0;
  size_t empty = 0;  // slabs mapped with no record in them
};

ABSL_CONST_INIT absl::Mutex mu(absl::kConstInit);
Class classes[kClasses] ABSL_GUARDED_BY(mu);
size_t slabs_total ABSL_GUARDED_BY(mu) = 0;

void Link(Class& c, Slab* s) {
  s->prev = nullptr;
  s->next = c.with_room;
  if (c.with_room != nullptr) c.with_room->prev = s;
  c.with_room = s;
  s->listed = true;
}

void Unlink(Class& c, Slab* s) {
  if (s->prev != nullptr) s->prev->next = s->next;
  if (s->next != nullptr) s->next->prev = s->prev;
  if (c.with_room == s) c.with_room = s->next;
  s->prev = s->next = nullptr;
  s->listed = false;
}

Slab* NewSlab(Class& c, uint32_t cls) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
  void* const aligned = huge_page_internal::Map(kSlabBytes, c.slabs >= kPlainSlabs);
  Slab* s = new (aligned) Slab();
  s->cls = cls;
  s->bump = static_cast<char*>(aligned) + kHeaderBytes;
  s->end = static_cast<char*>(aligned) + kSlabBytes;
  ++c.slabs;
  ++c.empty;
  ++slabs_total;
  Link(c, s);
  return s;
}

}  // namespace

void* RecordPool::Allocate(size_t bytes) {
#ifdef CONVEYOR_RECORD_POOL_OFF
  return ::operator new(bytes);
#else
  if (bytes > kMaxPooledBytes) return ::operator new(bytes);
  const uint32_t cls = ClassOf(bytes);
  const size_t size = (cls + 1) * kGrain;
  absl::MutexLock lock(&mu);
  Class& c = classes[cls];
  Slab* s = c.with_room != nullptr ? c.with_room : NewSlab(c, cls);
  void* p;
  if (s->live == 0) --c.empty;
  if (s->free != nullptr) {
    p = s->free;
    s->free = *static_cast<void**>(p);
  } else {
    p = s->bump;
    s->bump += size;
  }
  ++s->live;
  if (s->free == nullptr && s->bump + size > s->end) Unlink(c, s);
  return p;
#endif
}

void RecordPool::Free(void* p, size_t bytes) {
  if (p == nullptr) return;
#ifdef CONVEYOR_RECORD_POOL_OFF
  ::operator delete(p);
#else
  if (bytes > kMaxPooledBytes) {
    ::operator delete(p);
    return;
  }
  Slab* s = reinterpret_cast<Slab*>(reinterpret_cast<uintptr_t>(p) & ~(kSlabBytes - 1));
  if (s->cls != ClassOf(bytes)) {
    // A size that is not the one allocated would corrupt the slab's list.
    std::fprintf(stderr, "RecordPool::Free: %zu bytes given for a record of class %u\n", bytes,
                 s->cls);
    std::abort();
  }
  absl::MutexLock lock(&mu);
  Class& c = classes[s->cls];
  *static_cast<void**>(p) = s->free;
  s->free = p;
  --s->live;
  if (!s->listed) Link(c, s);
  // An empty slab goes back to the system, but one per size is kept: a
  // queue that empties and fills again (or hovers at a slab's edge) would
  // otherwise map and unmap one over and over.
  if (s->live == 0 && ++c.empty > 1) {
    Unlink(c, s);
    --c.empty;
    --c.slabs;
    --slabs_total;
    huge_page_internal::Unmap(s, kSlabBytes);
  }
#endif
}

bool RecordPool::Enabled() {
#ifdef CONVEYOR_RECORD_POOL_OFF
  return false;
#else
  return true;
#endif
}

size_t RecordPool::Slabs() {
  absl::MutexLock lock(&mu);
  return slabs_total;
}

}  // namespace conveyor::server
