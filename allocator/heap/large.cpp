// Large and sealed blocks: page-granular, one guarded run each (the pool
// builds and owns the guard layout), zeroed on free inside the fork gate
// (outside the lock), sealed ones under the lock.
#include <algorithm>
#include <cerrno>
#include <sys/mman.h>

#include "heap/blocks.h"
#include "heap/cache_ops.h"
#include "heap/canary.h"
#include "heap/heap.h"
#include "heap/pagemap.h"
#include "platform/checkers.h"

namespace secmem::heap {

namespace {

constexpr int kReadWrite = PROT_READ | PROT_WRITE;

// Returns a large block that is no longer live to the pool, zeroing it first
// unless the caller has.
void give_back(Span *span, bool zeroed) REQUIRES(g_heap.lock) {
  void *p = reinterpret_cast<void *>(span->start);
  if (!zeroed) {
    checkers::expose(p, span->block_size);
    zero_block(p, span->block_size);
  }
  checkers::freed(p, span->block_size);
  // A run in a shared chunk keeps its guards while free, for the next large block there.
  if (!span->chunk->huge) clear_owners(span, kFreedRun);
  g_heap.pool.free_guarded(span->run);
  g_heap.central.drop_large_span(span);
}

// Zeroes the pages of a huge block (a chunk of its own, released when it is
// freed) that are in memory: pages never touched (a huge block mapped and
// barely used) are not faulted in to be zeroed; they hold nothing, and go
// back to the kernel with the chunk. (A block in a shared chunk stays mapped
// for reuse: every byte of it is zeroed, swapped-out pages too.) A window
// whose residency cannot be read is zeroed whole.
void zero_in_memory(char *p, size_t len) {
  constexpr size_t kWindowPages = 512;
  unsigned char in_memory[kWindowPages];
  for (size_t at = 0; at < len;) {
    size_t n = (len - at) / os::kPageSize < kWindowPages ? len - at : kWindowPages * os::kPageSize;
    size_t pages = (n + os::kPageSize - 1) / os::kPageSize;
    if (os::pages_in_memory(p + at, n, in_memory) != 0) {
      zero(p + at, n);
    } else {
      for (size_t i = 0; i < pages;) {
        size_t end = i + 1;
        while (end < pages && (in_memory[end] & 1) == (in_memory[i] & 1)) ++end;
        if ((in_memory[i] & 1) != 0) {
          size_t from = i * os::kPageSize, to = end * os::kPageSize < n ? end * os::kPageSize : n;
          zero(p + at + from, to - from);
        }
        i = end;
      }
    }
    at += n;
  }
}

// A large block that this thread's cache may keep once freed and zeroed:
// not sealed, in a shared chunk, no larger than kLargeCacheBlock, and with no
// more than one guard page before it (an over-aligned block's run can be
// many times its size).
bool cacheable(const Span *span) {
  return !span->sealed && !span->chunk->huge && span->block_size <= kLargeCacheBlock && span->run.guard_lead <= 1;
}

// Whether a cache keeps such a block now: no memory checker watches each
// block, and RLIMIT_MEMLOCK has refused no chunk (Heap::memory_tight).
bool keepable(const Span *span) {
  return g_ro.plain_ops && cacheable(span) && !g_heap.memory_tight.load(std::memory_order_relaxed);
}

// A run from the pool; for a claimant (a cache keeping apart from other
// threads: allocate_large), from the chunk of its last run first.
bool take_run(size_t pages, size_t alignment, GuardedRun *run, bool spare, ThreadCache *claimant)
    REQUIRES(g_heap.lock) {
  return g_heap.pool.alloc_guarded(pages, alignment, run, spare, claimant != nullptr ? claimant->large_chunk : 0,
                                   claimant);
}

// Counts bytes into the cache's kept blocks against the process's budget.
// The shared counter moves by whole units of credit, taken when the kept
// bytes pass the cache's credit and kept until the cache is emptied or
// another cache is refused (Heap::large_credit_wanted), so that a thread
// keeping and reusing blocks does not touch it (touched at every keep and
// reuse, it took a fifth of two threads' time with 16 KiB blocks).
bool charge_large(ThreadCache *cache, size_t bytes) {
  size_t need = cache->large_bytes + bytes;
  if (need > cache->large_credit) {
    size_t grant = (need - cache->large_credit + kLargeCreditUnit - 1) / kLargeCreditUnit * kLargeCreditUnit;
    // Compare and swap, not add and take back: the counter never passes the
    // budget, even for a moment (a thread reading it while another's grant
    // was being taken back saw 1 MiB + 64 KiB).
    size_t held = g_heap.large_cached.load(std::memory_order_relaxed);
    do {
      if (held + grant > g_heap.large_cache_budget.load(std::memory_order_relaxed)) {
        if (!g_heap.large_credit_wanted.load(std::memory_order_relaxed))
          g_heap.large_credit_wanted.store(true, std::memory_order_relaxed);
        return false;
      }
    } while (!g_heap.large_cached.compare_exchange_weak(held, held + grant, std::memory_order_relaxed));
    cache->large_credit += grant;
  }
  cache->large_bytes = need;
  return true;
}

void uncharge_large(ThreadCache *cache, size_t bytes) {
  cache->large_bytes -= bytes;
  size_t spare = (cache->large_credit - cache->large_bytes) / kLargeCreditUnit * kLargeCreditUnit;
  if (spare == 0 || !g_heap.large_credit_wanted.load(std::memory_order_relaxed)) return;
  g_heap.large_credit_wanted.store(false, std::memory_order_relaxed);
  cache->large_credit -= spare;
  g_heap.large_cached.fetch_sub(spare, std::memory_order_relaxed);
}

// Appends span to the cache's kept blocks (the newest last), its credit taken.
void put_cached(ThreadCache *cache, Span *span) {
  cache->large_pages[cache->large_count] = span->pages;
  cache->large[cache->large_count++] = span;
}

// Keeps a freed, zeroed large block in this thread's cache
// (heap/thread_cache.h), inside the gate that the caller holds: a fork sees
// the block, its bytes and the count together.
bool keep_large(ThreadCache *cache, Span *span) {
  if (!keepable(span) || cache->large_count == kLargeSlots) return false;
  if (!charge_large(cache, kept_large_bytes(span))) return false;
  put_cached(cache, span);
  bump(cache->frees);
  return true;
}

// Takes the cached block at index i out, keeping the others' order.
Span *take_cached(ThreadCache *cache, uint32_t i) {
  Span *span = cache->large[i];
  for (--cache->large_count; i < cache->large_count; ++i) {
    cache->large[i] = cache->large[i + 1];
    cache->large_pages[i] = cache->large_pages[i + 1];
  }
  uncharge_large(cache, kept_large_bytes(span));
  return span;
}

// A block the cache could not keep, its slots all taken or its credit
// refused: up to kLargeBatch of its oldest go back to the pool instead (this
// thread holds the lock now for one of them anyway), and the cache keeps the
// new block, the one whose bytes are in the processor's caches, in their
// credit. (Refused credit gave each block back alone, a lock each: eight
// threads on two cores, whose kept blocks outgrew the budget, ran at 0.75x
// two.) Under the heap lock, which keeps forks and reclaim_caches out as the
// gate does.
bool keep_by_giving_back(ThreadCache *cache, Span *span) REQUIRES(g_heap.lock) {
  if (cache->large_count == 0 || !keepable(span)) return false;
  g_heap.large_give_backs++;
  for (uint32_t n = 0; n < kLargeBatch && cache->large_count != 0; ++n) return_large(take_cached(cache, 0));
  return keep_large(cache, span);
}

// After a block of `made`'s pages was made because this thread's cache had
// none, as at its last miss (blocks of one size outnumber the slots): up to
// kLargeBatch - 1 spare runs of as many pages, from pages the pool has in
// memory already, for the cache (zero: every run in the pool is), under the
// lock taken for the first.
void stock_cache(const Span *made) REQUIRES(g_heap.lock) {
  ThreadCache *cache = t_cache;
  if (cache == nullptr || !keepable(made)) return;
  bool again = cache->large_missed_pages == made->pages;
  cache->large_missed_pages = made->pages;
  for (uint32_t n = 1; again && n < kLargeBatch && cache->large_count < kLargeSlots; ++n) {
    GuardedRun run;
    if (!take_run(made->pages, os::kPageSize, &run, true, cache->large_apart != 0 ? cache : nullptr)) return;
    Span *span = g_heap.central.new_large_span(run);
    if (span == nullptr || !charge_large(cache, kept_large_bytes(span))) {
      if (span != nullptr) g_heap.central.drop_large_span(span);
      g_heap.pool.free_guarded(run);
      return;
    }
    span->live[0].store(0, std::memory_order_relaxed);
    set_owners(span);
    g_heap.central.note_large(static_cast<ptrdiff_t>(span->block_size));
    put_cached(cache, span);
  }
}

// A freed block's canary checked and its bytes zeroed.
void scrub_large(void *p, Span *span) {
  checkers::freeing(p);
  checkers::expose(p, span->block_size);
  canary::check(g_ro.canary_key, p, span->large_requested, span->block_size);
  if (span->chunk->huge)
    zero_in_memory(static_cast<char *>(p), span->block_size);
  else
    zero_block(p, span->block_size);
}

// A large-block call from a signal handler that interrupted this thread's
// own cache operation (its in_op set, no fork or reclaim closing the gate),
// or its locked operation (which may be changing the cache's kept blocks:
// stock_cache, keep_by_giving_back) outside a fork's handlers: the cache is
// halfway through a change (with 64 kept blocks most large operations are
// such, and a handler's allocation there handed a block out twice); one
// line and an abort, as for a locked one.
void check_not_reentered(const ThreadCache *cache) {
  bool in_cache_op =
      cache->in_op.load(std::memory_order_relaxed) != 0 && g_heap.forking.load(std::memory_order_relaxed) == 0;
  if (__builtin_expect(in_cache_op || g_heap.lock.held_by_interrupted_operation(), 0)) HeapLock::held_by_caller();
}

int access_prot(uint32_t readers, uint32_t writers) {
  return writers != 0 ? kReadWrite : readers != 0 ? PROT_READ : PROT_NONE;
}

} // namespace

void *allocate_large(size_t bytes, size_t alignment, bool sealed, bool cache_missed) {
  size_t pages = (bytes + os::kPageSize - 1) / os::kPageSize;
  ScopedLock lock(g_heap.lock);
  // A sealed block always has its guards (closed, they and it are one
  // mapping): past the heap's share of the mapping count it is refused,
  // not made without them (found by the adversarial review: each then
  // split its unguarded neighbours' mapping in three).
  if (sealed && !g_heap.pool.mappings_allowed()) {
    errno = ENOMEM;
    return nullptr;
  }
  GuardedRun run;
  ThreadCache *cache = cache_missed ? t_cache : nullptr;
  ThreadCache *apart = nullptr;
  if (cache != nullptr) {
    // Waited for the lock since the last large allocation: keep apart from
    // the other threads for the next kApartAllocations (ChunkPool claims).
    constexpr uint32_t kApartAllocations = 256;
    if (t_lock_waits != cache->lock_waits_seen) cache->large_apart = kApartAllocations;
    cache->lock_waits_seen = t_lock_waits;
    if (cache->large_apart != 0) {
      --cache->large_apart;
      apart = cache;
    }
  }
  if (!take_run(pages, alignment, &run, false, apart)) return nullptr; // errno ENOMEM
  if (cache != nullptr) cache->large_chunk = run.chunk->base;
  Span *span = g_heap.central.new_large_span(run);
  if (span == nullptr) {
    g_heap.pool.free_guarded(run);
    errno = ENOMEM;
    return nullptr;
  }
  set_owners(span);
  void *p = reinterpret_cast<void *>(span->start);
  span->large_requested = bytes;
  checkers::expose(p, span->block_size);
  canary::write(g_ro.canary_key, p, bytes, span->block_size);
  checkers::allocated(p, bytes, span->block_size);
  if (sealed) {
    span->sealed = true;
    int err = g_heap.pool.protect_guarded(span->run, PROT_NONE);
    if (err != 0) {                                       // nothing to seal it with: give it back
      g_heap.pool.protect_guarded(span->run, kReadWrite); // mprotect may have changed part of it
      span->live[0].store(0, std::memory_order_relaxed);
      give_back(span, false);
      errno = err;
      return nullptr;
    }
  }
  g_heap.central.note_large(static_cast<ptrdiff_t>(span->block_size));
  g_heap.uncached_allocations++;
  // Known from the first locked chunk on, which this block's run is in or follows.
  size_t budget = std::min(kLargeCacheBudget, g_heap.pool.first_memlock_budget() / 16);
  if (g_heap.large_cache_budget.load(std::memory_order_relaxed) != budget)
    g_heap.large_cache_budget.store(budget, std::memory_order_relaxed);
  if (cache_missed) stock_cache(span);
  return p;
}

void *pop_large(size_t bytes) {
  ThreadCache *cache = t_cache;
  if (cache == nullptr) {
    // A thread's first block that a cache may keep makes its cache, so that
    // the block's free finds it. A free never makes one (a thread key's
    // destructor that runs after secmem's may free): without a cache it
    // zeroes in a SharedGate (signals blocked: two system calls) and takes
    // the lock: a thread allocating and freeing 64 KiB blocks took 3.0 us a
    // pair against 2.4 with its cache, and two such threads ran at 1.46x
    // one against 2.1x.
    if (g_ro.plain_ops && g_ro.cache_cap[0] != 0 && bytes <= kLargeCacheBlock) make_cache(); // caps 0: no caches
    return nullptr;
  }
  if (!g_ro.plain_ops) return nullptr;
  check_not_reentered(cache);
  enter_gate<false>(cache);                         // before large_count: reclaim_caches empties other threads' caches
  for (uint32_t i = cache->large_count; i-- > 0;) { // the newest first: its bytes are in the processor's caches
    // The same number of pages: a block is never larger than its request rounded up to pages.
    if ((bytes + os::kPageSize - 1) / os::kPageSize != cache->large_pages[i]) continue;
    Span *span = take_cached(cache, i);
    BlockRef{span, 0}.set_live();
    span->large_requested = bytes;
    void *p = reinterpret_cast<void *>(span->start);
    canary::write(g_ro.canary_key, p, bytes, span->block_size);
    bump(cache->allocations);
    leave_gate(cache);
    return p;
  }
  leave_gate(cache);
  return nullptr;
}

void drop_cached_large(ThreadCache *cache) {
  for (uint32_t i = 0; i < cache->large_count; ++i) return_large(cache->large[i]);
  cache->large_count = 0;
  forget_large_credit(cache);
}

bool give_back_own_kept() {
  ThreadCache *cache = t_cache;
  if (cache == nullptr || cache->large_count == 0 || g_heap.forking.load(std::memory_order_relaxed) != 0) return false;
  drop_cached_large(cache);
  return true;
}

void forget_large_credit(ThreadCache *cache) {
  g_heap.large_cached.fetch_sub(cache->large_credit, std::memory_order_relaxed);
  cache->large_credit = cache->large_bytes = 0;
}

void return_large(Span *span) {
  g_heap.central.note_large(-static_cast<ptrdiff_t>(span->block_size));
  give_back(span, true);
}

// The live mark, the zeroing and the cache or the pool in one step for a
// fork: inside the gate (zeroing a large block holds a fork, not every
// other thread's heap operations; SharedGate for a thread without a cache),
// or under the lock for a sealed block. Where the child copies its secret
// pages for itself after the kernel's fork, the parent's other threads run
// until it has: a block zeroed then, outside both, was live in the child
// and zero.
namespace {
bool unseal_refused_said GUARDED_BY(g_heap.lock) = false; // release_large's one message
} // namespace

void release_large(void *p, const BlockRef &ref) {
  Span *span = ref.span;
  if (span->sealed) {
    settle_fork_before_write(); // a fork handler on the forking thread: the lock lets it in
    ScopedLock lock(g_heap.lock);
    ref.clear_live();
    int err = g_heap.pool.protect_guarded(span->run, kReadWrite);
    if (err != 0) {
      // Refused (ENOMEM at vm.max_map_count): its bytes stay sealed, not
      // zeroed (no thread reads them; a fork child copies them with the
      // chunk, as sealed blocks), and the block out of use; not the process
      // stopped for it. Not in use in the stats.
      if (!unseal_refused_said) {
        unseal_refused_said = true;
        diag::Line()
            .add("cannot unseal a freed sealed block to zero it (")
            .err(err)
            .add("); it stays sealed and out of use")
            .emit();
      }
      g_heap.central.note_large(-static_cast<ptrdiff_t>(span->block_size));
      g_heap.uncached_frees++;
      return;
    }
    span->readers = span->writers = 0;
    scrub_large(p, span);
    g_heap.uncached_frees++;
    return_large(span);
    return;
  }
  ThreadCache *cache = t_cache;
  bool kept = false;
  if (cache != nullptr) check_not_reentered(cache);
  {
    WriteGate gate(cache); // on the forking thread, in a fork handler: the child takes its copy first
    ref.clear_live();
    scrub_large(p, span);
    if (cache != nullptr) {
      kept = keep_large(cache, span);
      if (!kept) cache->returning = span;
    }
  } // without a cache, a fork now leaves the run, not live and zero, out of use in the child
  if (kept) return;
  ScopedLock lock(g_heap.lock);
  // Taking the lock may have given credit back: in a fork child, the dead
  // threads' caches' (HeapLock::settle_at_next_lock), which refused the
  // survivor's first keep there. Then no cache wants credit (the refusal
  // above said one did): one that is refused again says so again.
  if (cache != nullptr && keep_large(cache, span)) {
    if (g_heap.large_credit_wanted.load(std::memory_order_relaxed))
      g_heap.large_credit_wanted.store(false, std::memory_order_relaxed);
    cache->returning = nullptr;
    return;
  }
  if (cache == nullptr || !keep_by_giving_back(cache, span)) {
    g_heap.uncached_frees++;
    return_large(span);
  }
  if (cache != nullptr) cache->returning = nullptr;
}

int change_access(void *p, int mode, bool begin) {
  if (mode != kAccessRead && mode != kAccessWrite) return EINVAL;
  if (p == nullptr) return EINVAL;
  // Looked up under the lock only: a sealed block is made and freed under
  // it. Looked up before it, a block freed meanwhile could have had its
  // pages, even its span, made into an ordinary block at the same address
  // (another thread's stale pointer made that block's pages read-only: found
  // by the adversarial review), and the look read a span being made again
  // (ThreadSanitizer).
  ScopedLock lock(g_heap.lock);
  BlockRef ref;
  if (find_block(p, &ref) != Found::kBlock || !ref.span->sealed || !ref.is_live()) return EINVAL;
  Span *span = ref.span;
  uint32_t readers = span->readers, writers = span->writers;
  uint32_t &count = mode == kAccessWrite ? writers : readers;
  if (!begin && count == 0) return EINVAL; // no such scope is open
  count = begin ? count + 1 : count - 1;
  // Opening a closed block splits its mapping: refused past the heap's
  // share of the mapping count (closing is always let through).
  if (begin && access_prot(span->readers, span->writers) == PROT_NONE && !g_heap.pool.mappings_allowed()) return ENOMEM;
  if (access_prot(readers, writers) != access_prot(span->readers, span->writers)) {
    int err = g_heap.pool.protect_guarded(span->run, access_prot(readers, writers));
    if (err != 0) return err;
  }
  span->readers = readers;
  span->writers = writers;
  return 0;
}

} // namespace secmem::heap
