// secmem_get_stats: the pool's facts, the live bytes of every span, and the
// threads' counters.
#include <cstring>

#include "heap/heap.h"
#include "heap/state.h"
#include "secmem/secmem.h"

namespace secmem::heap {

namespace {

// Live bytes per tier, from every span's live marks.
void count_in_use(size_t in_use[kNumTiers]) REQUIRES(g_heap.lock) {
  g_heap.central.for_each_span([in_use](const Span &span) {
    size_t live = 0;
    for (uint32_t i = 0; i < span.blocks; ++i) live += span.live[i].load(std::memory_order_relaxed) != 0 ? 1 : 0;
    in_use[static_cast<int>(span.chunk->tier)] += live * span.block_size;
  });
}

} // namespace

void get_stats(secmem_stats *out) {
  *out = secmem_stats{};
  out->backend = "none";
  if (!is_ready()) return;
  ScopedLock lock(g_heap.lock);
  PoolFacts pool;
  g_heap.pool.facts(&pool);
  size_t in_use[kNumTiers] = {};
  count_in_use(in_use);
  out->backend = pool.weakest_tier < 0 ? "none" : tier_name(static_cast<Tier>(pool.weakest_tier));
  out->in_use_secret = in_use[static_cast<int>(Tier::kSecret)];
  out->in_use_locked = in_use[static_cast<int>(Tier::kLocked)];
  out->in_use_unlocked = in_use[static_cast<int>(Tier::kUnlocked)];
  out->mapped_secret = pool.mapped_bytes[static_cast<int>(Tier::kSecret)];
  out->mapped_locked = pool.mapped_bytes[static_cast<int>(Tier::kLocked)];
  out->mapped_unlocked = pool.mapped_bytes[static_cast<int>(Tier::kUnlocked)];
  out->memlock_charged = out->mapped_secret + pool.mlocked_bytes;
  out->pages_touched = pool.pages_touched;
  out->chunks = pool.chunks;
  out->peak_held = g_heap.central.peak_held();
  out->allocations = g_heap.uncached_allocations;
  out->frees = g_heap.uncached_frees;
  for (const ThreadCache *cache = g_heap.caches.front(); cache != nullptr; cache = CacheList::next(cache)) {
    out->allocations += cache->allocations.load(std::memory_order_relaxed);
    out->frees += cache->frees.load(std::memory_order_relaxed);
  }
  const uint64_t *fallbacks = pool.tiers.fallbacks;
  out->fallbacks_enosys = fallbacks[static_cast<int>(FallbackReason::kNoKernelSupport)];
  out->fallbacks_eperm =
      fallbacks[static_cast<int>(FallbackReason::kRefused)] + fallbacks[static_cast<int>(FallbackReason::kSandbox)];
  out->fallbacks_memlock = fallbacks[static_cast<int>(FallbackReason::kMemlock)];
  out->fallbacks_other = fallbacks[static_cast<int>(FallbackReason::kOther)];
  out->failed_chunks = pool.tiers.failed_chunks;
  out->fork_privatisations = pool.fork_privatisations;
}

const char *backend_name() {
  if (!is_ready()) return "none";
  ScopedLock lock(g_heap.lock);
  return g_heap.pool.weakest_tier_name();
}

void reserved_range(uintptr_t *base, size_t *size) {
  bool ready = is_ready();
  // One read of the size: the range may grow (downwards) meanwhile.
  size_t bytes = ready ? lookup_pool().reserved_bytes() : 0;
  if (size != nullptr) *size = bytes;
  if (base != nullptr) *base = ready ? lookup_pool().reserved_top() - bytes : 0;
}

} // namespace secmem::heap
