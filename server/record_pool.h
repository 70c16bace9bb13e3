// RecordPool: where the broker's task records live (Task::Create and
// Task::Destroy). Records of up to 512 bytes (a task with a payload of up to
// about 440 bytes) are carved from 2 MiB slabs, one set of slabs per size in
// steps of 8 bytes; larger ones go to operator new.
//
// Why not malloc: a record lives as long as its task, and the allocations
// made while a task is submitted (the request's strings, the journal record)
// live microseconds. From one heap, the short-lived ones leave holes between
// millions of records, and with 10 million tasks queued every later malloc
// walked free chunks spread over gigabytes (glibc's _int_malloc, 23% of the
// broker's samples in a drain at that depth). Here records sit with records,
// so the heap that malloc serves stays small and warm; a record costs its
// size rounded to 8 bytes (malloc: 16, plus an 8-byte header); a class's
// slabs from the fifth on are marked MADV_HUGEPAGE, so the records of a big
// queue are reached through few TLB entries; and a slab whose records are all
// gone is returned to the system (one empty slab per size is kept). The cost:
// records left scattered keep whole slabs, where malloc_trim could return
// single pages; a queue drained in order, and retained tasks evicted oldest
// first, give their slabs back.
//
// Thread-safe (one mutex; the broker calls it under its own lock anyway).
// Built with AddressSanitizer, every record comes from operator new, so that
// the sanitizer sees each one.
#ifndef CONVEYOR_SERVER_RECORD_POOL_H_
#define CONVEYOR_SERVER_RECORD_POOL_H_

#include <cstddef>

namespace conveyor::server {

class RecordPool {
 public:
  // The largest record kept in slabs.
  static constexpr size_t kMaxPooledBytes = 512;

  // 8-byte aligned, at least `bytes` long; std::bad_alloc if no memory.
  static void* Allocate(size_t bytes);
  // `bytes` as given to Allocate.
  static void Free(void* p, size_t bytes);

  // Slabs mapped now, over all sizes (tests and diagnostics).
  static size_t Slabs();
  // False when built with AddressSanitizer (every record from operator new).
  static bool Enabled();
};

}  // namespace conveyor::server

#endif  // CONVEYOR_SERVER_RECORD_POOL_H_
