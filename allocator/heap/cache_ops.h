// The common small-block operations, inlined into heap::allocate and
// heap::release: a block taken from, or given to, this thread's cache
// without the lock, in one function each (measured in instructions: the
// calls, the memset call and the memory checkers' branches were a third of
// an alloc+free of 32 bytes).
//
// pop_cached and push_cached answer "not here" (nullptr, false) when the
// thread has no cache yet, its cache is empty or full for the class, or the
// process runs the plain operations' alternative (ReadOnly::plain_ops false:
// a memory checker is active, or the fork gate fences each operation); the
// out-of-line paths of thread_cache.cpp then do the work, with the same
// block steps (take_block, scrub_block) and the checkers' calls.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstring>

#include "heap/canary.h"
#include "heap/fork_gate.h"
#include "heap/span.h"
#include "heap/state.h"
#include "heap/thread_cache.h"
#include "platform/cpu.h"

namespace secmem::heap {

// This thread's cache, once it has one (made after the heap is ready).
extern constinit __attribute__((tls_model("initial-exec"))) thread_local ThreadCache *t_cache;

// Zeroes a small block: up to kInlineZeroBytes in 16-byte stores inline
// (blocks are 16-byte aligned, their sizes multiples of 16), larger ones
// with memset, or from kWideZeroMin with a loop of wide stores where the
// processor has a faster one (zero_block; platform/cpu.h: glibc's memset
// takes `rep stosb` there, slower for a block just used).
// The stores must happen: the block may be reused by anyone.
inline constexpr uint32_t kInlineZeroBytes = 128;
inline void zero_small(void *p, uint32_t n) {
  if (n > kInlineZeroBytes) {
    if (n >= kWideZeroMin) return zero_block(p, n);
    return zero(p, n);
  }
  using Vec = unsigned long long __attribute__((vector_size(16)));
  for (char *q = static_cast<char *>(p), *end = q + n; q < end; q += 16) {
    const Vec none{};
    memcpy(q, &none, sizeof none);
    asm volatile("" : : : "memory"); // each store as written (not a call to memset)
  }
}

// A block taken out of the free lists becomes live: its live mark (the size asked for) and canary.
inline void *take_block(const BlockRef &ref, void *p, uint32_t block, size_t size) {
  ref.set_live(size);
  canary::write(g_ro.canary_key, p, size, block);
  return p;
}

// A live block being freed: its live mark cleared (a double free aborts), its canary checked, its bytes zeroed.
inline void scrub_block(void *p, const BlockRef &ref, uint32_t block) {
  uint32_t size = ref.clear_live();
  canary::check(g_ro.canary_key, p, size, block);
  zero_small(p, block);
}

// The fast path's side of the gate (fork_gate.h): with a fork or a reclaim
// in progress it leaves at once and answers false, and the caller's out-of-
// line path waits (enter_gate). Inside the gate the fast paths call nothing
// that waits: what never returns, and memset or cpu::zero_wide (a push of a
// block over kInlineZeroBytes).
// Inside another of this thread's heap operations (a signal handler's
// call: the mark was up, or the thread holds the heap lock) it answers false
// too, the mark put back as it was, and the out-of-line path aborts
// (gate_not_open).
inline bool try_enter_gate(ThreadCache *cache) {
  uint32_t was = cache->in_op.load(std::memory_order_relaxed);
  cache->in_op.store(1, kGateOrder);
  light_barrier<false>();
  if (__builtin_expect((g_heap.forking.load(kGateSeeOpen) | was | cache->lock_entries) == 0, 1)) return true;
  cache->in_op.store(was, std::memory_order_release); // leave_gate, or the interrupted operation's mark
  return false;
}

inline void bump(std::atomic<uint64_t> &counter) {
  counter.store(counter.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
}

[[gnu::always_inline]] inline void *pop_cached(int cls, size_t size) {
  ThreadCache *cache = t_cache;
  if (cache == nullptr || !g_ro.plain_ops || !try_enter_gate(cache)) return nullptr;
  uint32_t n = cache->count[cls];
  if (__builtin_expect(n == 0, 0)) {
    leave_gate(cache);
    return nullptr;
  }
  cache->count[cls] = n - 1;
  void *p = take_block(cache->blocks[cls][n - 1].ref(), cache->addresses[cls][n - 1], kClassSizes[cls], size);
  bump(cache->allocations);
  leave_gate(cache);
  return p;
}

[[gnu::always_inline]] inline bool push_cached(void *p, const BlockRef &ref) {
  ThreadCache *cache = t_cache;
  if (cache == nullptr || !g_ro.plain_ops || !try_enter_gate(cache)) return false;
  int cls = ref.span->cls;
  uint32_t n = cache->count[cls];
  if (__builtin_expect(n == cache->cap[cls], 0)) { // full (or no cache for the class)
    leave_gate(cache);
    return false;
  }
  scrub_block(p, ref, kClassSizes[cls]);
  cache->blocks[cls][n] = ref;
  cache->addresses[cls][n] = p;
  cache->count[cls] = n + 1;
  bump(cache->frees);
  leave_gate(cache);
  return true;
}

} // namespace secmem::heap
