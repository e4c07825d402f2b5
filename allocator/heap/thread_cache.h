// Per-thread caches of free small blocks, so that the common malloc and free
// take no lock. Each holds up to cache_cap[cls] blocks per class (about
// 16 KiB); a miss refills half from the central lists, an overflow flushes
// half back.
#pragma once

#include <atomic>
#include <cstdint>

#include "heap/size_class.h"
#include "heap/span.h"
#include "support/list.h"

namespace secmem::heap {

inline constexpr uint32_t kCacheSlots = 128;

struct alignas(128) ThreadCache { // aligned: no false sharing between threads
  // 1 while the owning thread is inside a lock-free operation on this cache
  // (the fork gate, heap/fork_gate.h).
  std::atomic<uint32_t> in_op{0};
  uint32_t count[kNumClasses] = {};
  CachedBlock blocks[kNumClasses][kCacheSlots] = {};
  // Written by the owning thread only; read by secmem_get_stats.
  std::atomic<uint64_t> allocations{0};
  std::atomic<uint64_t> frees{0};
  ListLinks<ThreadCache> links;
};

using CacheList = IntrusiveList<ThreadCache, &ThreadCache::links>;

} // namespace secmem::heap
