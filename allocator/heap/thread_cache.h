// Per-thread caches of free small blocks, so that the common malloc and free
// take no lock. Each holds up to cap[cls] blocks per class: at first
// ReadOnly::cache_cap[cls] (about 16 KiB); a miss refills half from the
// central lists, an overflow flushes half back. A class that bounces (a
// refill after an overflow: the thread's working set is larger than its
// cache, and every few operations take the heap lock) doubles its cap, up to
// kCacheSlots, while the process's caches have grown by less than
// kCacheGrowthBudget bytes in all; an exiting thread gives its growth back.
#pragma once

#include <atomic>
#include <cstdint>

#include "heap/size_class.h"
#include "heap/span.h"
#include "support/list.h"

namespace secmem::heap {

inline constexpr uint32_t kCacheSlots = 128;
inline constexpr size_t kCacheGrowthBudget = size_t{4} << 20; // 8 threads bouncing at 4 KiB

// Freed large blocks (8 KiB to 256 KiB, zeroed, their page runs and guards
// kept; none whose alignment took more than one guard page before it) that
// the thread reuses for a request of as many pages, without the lock: up to
// kLargeSlots per thread, and kLargeCacheBudget bytes of runs for the
// process (less under a small RLIMIT_MEMLOCK budget: Heap::large_cache_budget),
// held as credit (Heap::large_cached) that each cache takes in
// kLargeCreditUnit steps and keeps until it is emptied or another cache is
// refused, so that keeping and reusing blocks does not bounce one counter
// between threads. Neither grows nor keeps once RLIMIT_MEMLOCK has refused
// a chunk (Heap::memory_tight). Past the slots or the credit, blocks move
// between a cache and the pool kLargeBatch at a time, under one lock
// (large.cpp): a miss for as many pages as the last miss takes spare runs
// for the cache too, and a free that the cache cannot keep gives back its
// oldest blocks and keeps the new one. (With 4 slots, two threads each
// allocating and freeing 64 blocks of 16 KiB in turn took the lock every
// fourth block and ran at 1.0-1.1x one thread: the pool's lock, and the
// lines of metadata it guards, went back and forth between them. With a
// thread's 64 blocks kept, 2.0x. With 8 MiB for the process, eight threads
// on two cores in random batches of 64 blocks of 16 or 64 KiB, 1.3 or 4.3
// MiB each with guards, ran at 0.76-0.88x two threads, the rest of their
// blocks through the lock; with 32 MiB, 0.98-1.09x. A fork with a staging
// file ready gives other threads' kept blocks back to the pool first, so
// that its copy leaves them out: drop_other_threads_kept_large.)
inline constexpr uint32_t kLargeSlots = 64;
inline constexpr uint32_t kLargeBatch = 8;
inline constexpr size_t kLargeCreditUnit = size_t{64} << 10;
inline constexpr size_t kLargeCacheBlock = size_t{256} << 10;
inline constexpr size_t kLargeCacheBudget = size_t{32} << 20;

// What a kept large block holds of the pool: its run, guards included.
inline size_t kept_large_bytes(const Span *span) {
  return size_t{span->run.guard_lead + span->run.pages + span->run.guard_tail} * os::kPageSize;
}

struct alignas(128) ThreadCache { // aligned: no false sharing between threads
  // 1 while the owning thread is inside a lock-free operation on this cache
  // (the fork gate, heap/fork_gate.h).
  std::atomic<uint32_t> in_op{0};
  // The owning thread's t_heap_lock_entries (heap/lock.h), beside the mark:
  // the fast paths take neither while the thread is inside a locked
  // operation (a signal handler's call), which may be changing this cache.
  uint32_t lock_entries = 0;
  // Its thread's number (heap/lock.h, this_thread), which a fork child's
  // forking thread keeps: the cache that survives there.
  uint32_t thread_number = 0;
  uint32_t count[kNumClasses] = {};
  uint32_t cap[kNumClasses] = {}; // read by the owning thread; changed by it under the heap lock
  bool overflowed[kNumClasses] = {};
  size_t grown_bytes = 0; // this cache's share of Heap::cache_growth (heap lock)
  CachedBlock blocks[kNumClasses][kCacheSlots] = {};
  // Each cached block's address, beside it: the fast path hands the block
  // out from here, so that what malloc returns waits for no load of the
  // span's fields, and free stores what it was given. (From the span, the
  // address was the end of a chain of dependent loads that ran from one
  // free to the next malloc: alloc+free of 32 bytes took 1.6x glibc's.)
  void *addresses[kNumClasses][kCacheSlots] = {};
  // Per class, the span this cache's refills take from (Central::take).
  Span *refilling[kNumClasses] = {};
  Span *large[kLargeSlots] = {}; // oldest first
  // Each kept block's pages, beside it: a request looks for its size here
  // (256 bytes for all of them), not in the spans (a line each).
  uint32_t large_pages[kLargeSlots] = {};
  uint32_t large_count = 0;
  // The pages of this thread's last large request that its cache could not serve.
  uint32_t large_missed_pages = 0;
  // After this thread waited for the heap lock, its large runs come first
  // from a chunk it claims (ChunkPool::alloc_guarded), so that threads at
  // work at once do not take turns at one chunk's runs, bitmaps and pages.
  uintptr_t large_chunk = 0;    // an address in the chunk of its last large run
  uint32_t lock_waits_seen = 0; // t_lock_waits at this thread's last large allocation
  uint32_t large_apart = 0;     // large allocations left that look in large_chunk first
  size_t large_bytes = 0;       // what the kept large blocks hold of the pool (kept_large_bytes)
  size_t large_credit = 0;      // this cache's share of Heap::large_cached: at least large_bytes
  // A large block that its thread freed and zeroed inside the gate and is
  // taking back to the pool (out of the gate, waiting for the heap lock):
  // set inside the gate, cleared under the lock. A fork child whose copy
  // was made meanwhile gives it back for the dead thread (retire_cache).
  Span *returning = nullptr;
  // Written by the owning thread only; read by secmem_get_stats.
  std::atomic<uint64_t> allocations{0};
  std::atomic<uint64_t> frees{0};
  ListLinks<ThreadCache> links;
};

using CacheList = IntrusiveList<ThreadCache, &ThreadCache::links>;

} // namespace secmem::heap
