// The heap's state, shared by the files of heap/: the lock and what it
// guards, the read-only page sealed after start-up, and the start-up state.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstring>
#include <pthread.h>

#include "chunks/chunk_pool.h"
#include "config/config.h"
#include "heap/central.h"
#include "heap/lock.h"
#include "heap/size_class.h"
#include "heap/thread_cache.h"
#include "platform/cpu.h"
#include "support/object_pool.h"

namespace secmem::heap {

struct Heap {
  // What every thread reads without the lock comes first, with what changes
  // only at a fork: the fork gate, read by every cache operation, and the
  // pool's reservation, read by every free's lookup. The lock word, and what
  // is written under the lock at every locked operation, come last (with
  // two threads bouncing 16 KiB blocks, perf put a fifth of free's own time
  // on the lookup's load from the lock's line).
  //
  // The fork gate (heap/fork_gate.h): kGateFork, set by the forking thread,
  // holding the lock, from its prepare handler to its parent or child
  // handler; kGateReclaim while a thread holding the lock empties every cache
  // (reclaim_caches); 0 when open.
  std::atomic<uint32_t> forking{0};
  // Threads without a cache inside the gate (SharedGate): a large
  // block's zeroing at free, a resize in place.
  std::atomic<uint32_t> shared_gate_users{0};
  uint32_t gate_before_fork = 0; // what a fork from a signal handler found (and puts back)
  // RLIMIT_MEMLOCK has refused a chunk (reclaim_caches): caches stop growing and keep no large blocks.
  std::atomic<bool> memory_tight{false};
  // A cache was refused credit for a large block (large.cpp): the others
  // give back what credit they do not use.
  std::atomic<bool> large_credit_wanted{false};
  // The credit all caches may hold for large blocks: kLargeCacheBudget, or a
  // sixteenth of the RLIMIT_MEMLOCK budget seen at the first locked chunk
  // if that is less (blocks kept for one thread are runs another cannot
  // have: under a 1 MiB limit, eight threads' kept and spare 16 KiB blocks
  // left a ninth thread two or three 64 KiB blocks fewer). Set under the lock.
  std::atomic<size_t> large_cache_budget{kLargeCacheBudget};
  pthread_key_t cache_key{};
  // The fork handlers' own state (heap/heap.cpp), on the lock's page: after a
  // fork every page is copy-on-write in parent and child, and each page that
  // either of them writes before the next fork costs a fault (g_heap is one
  // page).
  unsigned fork_nest = 0;
  pid_t fork_parent = 0;
  bool lock_was_mine = false;
  bool child_done = false;
  bool nested_child_done = false;
  std::atomic<bool> fork_handlers_running{false};
  // Forks whose parent handler has run (their child exists): read without
  // the lock by an interposer's wait call (heap::forks_done).
  std::atomic<uint64_t> forks_done{0};
  // This process as its fork handlers last saw it (heap::process_mark): its
  // fork generation (0 at load, one more in each fork child) above its pid.
  // 0 while the handlers are not registered. Written by the child handler,
  // on this page, which the child writes anyway once the heap has started
  // (before, a program linked with libsecmem takes a page fault in each
  // fork child for it): the shim, which reads it, took one of its own in
  // every child (about 2 us). With this field the struct fills its page.
  std::atomic<uint64_t> own_process{0};
  ChunkPool pool GUARDED_BY(lock);
  Central central GUARDED_BY(lock);
  CacheList caches GUARDED_BY(lock);
  ObjectPool<ThreadCache> cache_meta GUARDED_BY(lock);
  // Counters of exited threads and of operations that bypass the caches.
  uint64_t uncached_allocations GUARDED_BY(lock) = 0;
  uint64_t uncached_frees GUARDED_BY(lock) = 0;
  // Frees that a cache could not keep without giving older large blocks back under the lock (large.cpp).
  uint64_t large_give_backs GUARDED_BY(lock) = 0;
  size_t cache_growth GUARDED_BY(lock) = 0; // bytes of cache capacity past the first caps (thread_cache.h)
  std::atomic<size_t> large_cached{0};      // the credit thread caches hold for large blocks (thread_cache.h)
  HeapLock lock;
};

// Written once at start-up, then read-only (os::seal_readonly): a stray
// write cannot change the configuration, the canary key or the cache sizes.
struct alignas(os::kPageSize) ReadOnly {
  Config config;
  uint64_t canary_key = 0;
  uint32_t cache_cap[kNumClasses] = {}; // per-thread cache slots per class (0: none)
  // membarrier(2) could not be registered: the fork gate's fast side fences.
  bool fence_each_op = false;
  // No memory checker to tell, no fence in the gate: small blocks go to and
  // from the thread caches inline (heap/cache_ops.h).
  bool plain_ops = false;
  // Blocks of 2 KiB to wide_zero.max_bytes are zeroed with a loop of wide
  // stores, where the processor has one faster than memset (platform/cpu.h):
  // small ones in heap/cache_ops.h, large ones in heap/large.cpp.
  cpu::WideZero wide_zero;
};

enum class State : int { kUninitialised, kReady, kFailed };

extern constinit Heap g_heap;
extern constinit ReadOnly g_ro;
extern std::atomic<State> g_state;

bool init_slow();

inline bool ready() {
  State state = g_state.load(std::memory_order_acquire);
  return state == State::kReady || (state == State::kUninitialised && init_slow());
}

inline bool is_ready() { return g_state.load(std::memory_order_acquire) == State::kReady; }

// The lock-free lookups (chunk_of, in_range) read tables that are published
// under the lock before any block in them is handed out.
inline const ChunkPool &lookup_pool() NO_THREAD_SAFETY_ANALYSIS { return g_heap.pool; }

inline void zero(void *p, size_t n) {
  memset(p, 0, n);
  asm volatile("" : : "r"(p) : "memory"); // the stores must happen: the block may be reused by anyone
}

// Zeroes a freed block of kWideZeroMin bytes or more: with the wide-store
// loop up to its largest size where the processor has one (ReadOnly::wide_zero),
// with memset otherwise.
inline constexpr size_t kWideZeroMin = 2048;
inline void zero_block(void *p, size_t n) {
  if (g_ro.wide_zero.width != 0 && n <= g_ro.wide_zero.max_bytes) {
    cpu::zero_wide(p, n, g_ro.wide_zero.width);
    asm volatile("" : : "r"(p) : "memory"); // the stores must happen, as in zero()
    return;
  }
  zero(p, n);
}

} // namespace secmem::heap
