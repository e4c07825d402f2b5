#include <cerrno>
#include <cstring>
#include <sched.h>

#include "heap/blocks.h"
#include "heap/cache_ops.h"
#include "platform/checkers.h"
#include "platform/diag.h"
#include "platform/raw_syscall.h"

namespace secmem::heap {

constinit __attribute__((tls_model("initial-exec"))) thread_local ThreadCache *t_cache = nullptr;

namespace {

// Set once this thread's cache has been retired at its exit: a later free
// (another thread key's destructor, which may run after secmem's) takes the
// lock instead of making a cache that no destructor would retire (its kept
// blocks lost for good: glibc runs destructors at most four rounds).
constinit __attribute__((tls_model("initial-exec"))) thread_local bool t_exiting = false;

} // namespace

ThreadCache *make_cache() {
  if (t_exiting) return nullptr;
  ThreadCache *cache;
  {
    ScopedLock lock(g_heap.lock);
    cache = g_heap.cache_meta.take();
    if (cache == nullptr) return nullptr;
    for (int cls = 0; cls < kNumClasses; ++cls) cache->cap[cls] = g_ro.cache_cap[cls];
    cache->thread_number = this_thread();
    g_heap.caches.push_front(cache);
  }
  pthread_setspecific(g_heap.cache_key, cache);
  // The mirror starts at this thread's count, which is not 0 where the
  // cache is made inside a fork handler (the prepare handler's acquisition)
  // or by a signal handler while its thread takes the lock: started at 0,
  // the outer release wrapped it, and the thread's fast paths went out of
  // line for good, unchecked while it held the lock (adversarial review).
  // (A signal handler meanwhile raises and lowers the count in pairs.)
  cache->lock_entries = t_heap_lock_entries;
  std::atomic_signal_fence(std::memory_order_seq_cst);
  t_lock_entries_mirror = &cache->lock_entries;
  t_cache = cache;
  return cache;
}

namespace {

// Writes only what changes: emptied at every fork (prepare_heap_fork), and
// after a fork each page of the parent is copy-on-write: a store of an
// unchanged count costs a page fault (two per fork, in the cache's pages).
void empty_cache(ThreadCache *cache) REQUIRES(g_heap.lock) {
  for (int cls = 0; cls < kNumClasses; ++cls) {
    if (cache->count[cls] == 0) continue;
    g_heap.central.put(g_heap.pool, cls, cache->blocks[cls], cache->count[cls]);
    cache->count[cls] = 0;
  }
  if (cache->large_count != 0 || cache->large_credit != 0) drop_cached_large(cache);
}

} // namespace

void empty_my_cache() {
  if (t_cache != nullptr) empty_cache(t_cache);
}

namespace {

// A cache's share of the process's growth budget goes back (its caps set back, or the cache gone).
void give_back_growth(ThreadCache *cache) REQUIRES(g_heap.lock) {
  g_heap.cache_growth -= cache->grown_bytes;
  cache->grown_bytes = 0;
}

// With the gate closed: every cache whose thread is out of its operations
// (one in flight is this thread's own, interrupted by a signal handler, or
// that of a thread whose handler waits to fork in the middle of one: left as
// it is), emptied and set back to its first caps. Its thread reads the cache
// next inside the gate, or under the lock, which this thread holds.
void empty_idle_caches() REQUIRES(g_heap.lock) {
  for (ThreadCache *cache = g_heap.caches.front(); cache != nullptr; cache = CacheList::next(cache)) {
    if (cache->in_op.load(std::memory_order_relaxed) != 0) continue;
    empty_cache(cache);
    for (int cls = 0; cls < kNumClasses; ++cls) cache->cap[cls] = g_ro.cache_cap[cls];
    give_back_growth(cache);
  }
}

} // namespace

namespace {

// A cache going away lets go of the spans it claims (Central::take).
void release_claims(ThreadCache *cache) REQUIRES(g_heap.lock) {
  for (int cls = 0; cls < kNumClasses; ++cls) Central::release_claim(&cache->refilling[cls]);
}

} // namespace

void retire_cache(ThreadCache *cache) {
  empty_cache(cache);
  release_claims(cache);
  g_heap.pool.forget_claims(cache);
  if (cache->returning != nullptr) { // a fork child: its thread was on the way to the lock with it
    return_large(cache->returning);
    cache->returning = nullptr;
    g_heap.uncached_frees++;
  }
  g_heap.uncached_allocations += cache->allocations.load(std::memory_order_relaxed);
  g_heap.uncached_frees += cache->frees.load(std::memory_order_relaxed);
  give_back_growth(cache);
  g_heap.caches.remove(cache);
  g_heap.cache_meta.give(cache);
}

namespace {
// Threads inside thread_exit. The unload of a plugin that carries
// libsecmem.a, or of libsecmem.so in a namespace made by dlmopen (in the
// program's own it is never unloaded: os::pin_shared_library), deletes
// the key, which stops new calls but does not wait for one under way: a
// thread waiting there for the heap lock woke up in unmapped code (found by
// the adversarial review, when libsecmem.so could be unloaded: four threads
// at a time that each dlopen a plugin, use the heap and dlclose it, 8 runs
// in 10 died). What remains is the few instructions before the count goes
// up and after it goes down.
std::atomic<int> g_threads_exiting{0};
// This thread is counted there (a signal handler may fork inside thread_exit).
constinit __attribute__((tls_model("initial-exec"))) thread_local bool t_counted_exiting = false;
} // namespace

void thread_exit(void *value) {
  g_threads_exiting.fetch_add(1, std::memory_order_acq_rel);
  t_counted_exiting = true;
  auto *cache = static_cast<ThreadCache *>(value);
  if (t_cache == cache) t_cache = nullptr;
  if (t_lock_entries_mirror == &cache->lock_entries)
    t_lock_entries_mirror = nullptr; // before it goes to another thread
  t_exiting = true;
  {
    ScopedLock lock(g_heap.lock);
    retire_cache(cache);
  }
  t_counted_exiting = false;
  g_threads_exiting.fetch_sub(1, std::memory_order_release);
}

// Threads counted in the parent that a fork child does not have would hold
// its unload (and so its exit) for ever: found by review, a thread exiting
// while another forked (its thread_exit waiting for the forker's lock) left
// the count at 1 in the child.
// Stored only if it changes: the page is copy-on-write after the fork, and
// an unchanged store cost every child a page fault.
SECMEM_FORK_CHILD_TEXT void reset_exiting_threads_in_child() {
  int mine = t_counted_exiting ? 1 : 0;
  if (g_threads_exiting.load(std::memory_order_relaxed) != mine)
    g_threads_exiting.store(mine, std::memory_order_relaxed);
}

void wait_for_exiting_threads() {
  // Not for itself: exit() from a signal handler that interrupted this
  // thread's own thread_exit would wait for ever.
  int mine = t_counted_exiting ? 1 : 0;
  for (unsigned round = 0; g_threads_exiting.load(std::memory_order_acquire) > mine; ++round) {
    if (round < 128) {
      sched_yield();
    } else {
      os::sleep_us(100);
    }
  }
}

ThreadCache *my_cache() { return t_cache; }

// In a fork child only the forking thread exists: the other caches' blocks
// are free, except in a cache whose thread was in an operation (or entering
// one) at the fork: its blocks stay out of use, and the cache leaves the list
// all the same (a later fork in this child would wait for its operation to
// end, for ever: seen under TSan, a child hung in its own fork). Run at the
// child's first acquisition of the lock (HeapLock::settle_at_next_lock),
// which holds it: no cache has been made in the child before (each is made
// under the lock), so every cache but the forking thread's is a dead
// thread's, and the caller may be a thread the child made since.
void retire_dead_threads_caches(uint32_t survivor) NO_THREAD_SAFETY_ANALYSIS {
  for (ThreadCache *cache = g_heap.caches.front(); cache != nullptr;) {
    ThreadCache *next = CacheList::next(cache);
    bool dead = cache->thread_number != survivor;
    if (dead && cache->in_op.load(std::memory_order_relaxed) == 0)
      retire_cache(cache);
    else if (dead) {
      give_back_growth(cache);
      release_claims(cache);
      forget_large_credit(cache);
      g_heap.pool.forget_claims(cache);
      g_heap.caches.remove(cache); // its memory and blocks are lost to this child only
    }
    cache = next;
  }
}

void clear_dead_threads_gates() {
  for (ThreadCache *cache = g_heap.caches.front(); cache != nullptr; cache = CacheList::next(cache))
    if (cache != t_cache && cache->in_op.load(std::memory_order_relaxed) == kInOp)
      cache->in_op.store(0, std::memory_order_relaxed);
}

namespace {

// take_block and scrub_block (heap/cache_ops.h), and what the memory checkers are told.
void *finish_allocation(const BlockRef &ref, int cls, size_t size) {
  uint32_t block = kClassSizes[cls];
  checkers::expose(ref.address(), block);
  void *p = take_block(ref, ref.address(), block, size);
  checkers::allocated(p, size, block);
  return p;
}

void scrub(void *p, const BlockRef &ref) {
  uint32_t block = kClassSizes[ref.span->cls];
  checkers::freeing(p);
  checkers::expose(p, block);
  scrub_block(p, ref, block);
  checkers::freed(p, block);
}

// A class that overflowed since its last refill bounces: its cap doubles,
// within the process's growth budget (thread_cache.h).
void grow_if_bouncing(ThreadCache *cache, int cls) REQUIRES(g_heap.lock) {
  if (!cache->overflowed[cls]) return;
  cache->overflowed[cls] = false;
  if (g_heap.memory_tight.load(std::memory_order_relaxed)) return;
  uint32_t cap = cache->cap[cls], grown = cap * 2 > kCacheSlots ? kCacheSlots : cap * 2;
  size_t bytes = size_t{grown - cap} * kClassSizes[cls];
  if (grown == cap || g_heap.cache_growth + bytes > kCacheGrowthBudget) return;
  g_heap.cache_growth += bytes;
  cache->grown_bytes += bytes;
  cache->cap[cls] = grown;
}

// A block from the central lists, handed out (its live mark, size and
// canary) before the lock goes: a fork copies the secret pages under the
// lock, and a block made live after that copy but before the kernel's
// would be live in the child without its canary. It comes with a refill of
// half the cache, or alone when this thread has no cache. nullptr when none
// is left.
[[gnu::noinline]] void *take_central(int cls, ThreadCache *cache, size_t size) {
  BlockRef ref;
  ScopedLock lock(g_heap.lock);
  uint32_t cap = cache != nullptr ? cache->cap[cls] : 0;
  if (cap != 0) {
    grow_if_bouncing(cache, cls);
    cap = cache->cap[cls];
    uint32_t n = g_heap.central.take(g_heap.pool, cls, cache->blocks[cls], (cap + 1) / 2, &cache->refilling[cls],
                                     !g_heap.memory_tight.load(std::memory_order_relaxed));
    // A chunk refused meanwhile (reclaim_caches) may have set the cap back.
    if (n > cache->cap[cls]) {
      g_heap.central.put(g_heap.pool, cls, cache->blocks[cls] + cache->cap[cls], n - cache->cap[cls]);
      n = cache->cap[cls];
    }
    if (n != 0) ref = cache->blocks[cls][--n].ref();
    for (uint32_t i = 0; i < n; ++i) cache->addresses[cls][i] = cache->blocks[cls][i].ref().address();
    cache->count[cls] = n;
  } else if (g_heap.central.take(g_heap.pool, cls, &ref, 1) != 0) {
    g_heap.uncached_allocations++;
  }
  if (ref.span == nullptr) return nullptr;
  if (cap != 0) bump(cache->allocations);
  return finish_allocation(ref, cls, size);
}

} // namespace

void *allocate_small(int cls, size_t size) {
  ThreadCache *cache = t_cache;
  if (__builtin_expect(cache != nullptr, 1)) {
    enter_gate(cache);
    if (__builtin_expect(cache->count[cls] != 0, 1)) {
      void *p = finish_allocation(cache->blocks[cls][--cache->count[cls]].ref(), cls, size);
      bump(cache->allocations);
      leave_gate(cache);
      return p;
    }
    leave_gate(cache);
  }
  if (cache == nullptr && g_ro.cache_cap[cls] != 0) cache = make_cache();
  void *p = take_central(cls, cache, size);
  if (p == nullptr) errno = ENOMEM;
  return p;
}

void release_small(void *p, const BlockRef &ref) {
  int cls = ref.span->cls;
  ThreadCache *cache = t_cache;
  if (cache == nullptr && g_ro.cache_cap[cls] != 0) cache = make_cache();
  if (cache == nullptr || g_ro.cache_cap[cls] == 0) {
    ScopedLock lock(g_heap.lock);
    scrub(p, ref);
    g_heap.central.put(g_heap.pool, cls, &ref, 1);
    g_heap.uncached_frees++;
    return;
  }
  // The cap and count are read inside the gate or under the lock: a refused
  // chunk (reclaim_caches) empties every cache and sets its caps back.
  enter_gate(cache);
  if (cache->count[cls] == cache->cap[cls]) { // full: half goes back, under the lock (never inside the gate)
    leave_gate(cache);
    {
      ScopedLock lock(g_heap.lock);
      uint32_t cap = cache->cap[cls], half = cap / 2;
      // Counted again: a fork from a signal handler that interrupted this
      // thread here (out of the gate) has emptied the cache (prepare_fork),
      // and so has a refused chunk (reclaim_caches).
      if (cache->count[cls] == cap) {
        g_heap.central.put(g_heap.pool, cls, cache->blocks[cls], half);
        memmove(cache->blocks[cls], cache->blocks[cls] + half, (cap - half) * sizeof(CachedBlock));
        memmove(cache->addresses[cls], cache->addresses[cls] + half, (cap - half) * sizeof(void *));
        cache->count[cls] = cap - half;
        cache->overflowed[cls] = true;
      }
    }
    enter_gate(cache);
  }
  scrub(p, ref);
  cache->addresses[cls][cache->count[cls]] = p;
  cache->blocks[cls][cache->count[cls]++] = ref;
  bump(cache->frees);
  leave_gate(cache);
}

// The gate closed as for a fork (other threads wait at their next cache
// operation for the lock, which this thread holds), every cache whose thread
// is out of its operations is emptied and set back to its first caps. Not
// inside a fork (a fork handler's allocation): the gate is the fork's, and
// the copy for the child is staged already.
void reclaim_caches() {
  if (!g_heap.memory_tight.exchange(true, std::memory_order_relaxed) && g_ro.config.verbose)
    diag::Line()
        .add("RLIMIT_MEMLOCK refused a chunk: the threads' cached free blocks and the empty spans kept go back to the "
             "heap first, and caches keep to their first sizes from now on")
        .emit();
  if (g_heap.forking.load(std::memory_order_relaxed) != 0) return;
  g_heap.central.drop_kept_empty(g_heap.pool);
  if (g_heap.caches.front() == nullptr) return;
  close_gate(kGateReclaim);
  empty_idle_caches();
  // Release: a thread that saw the gate open reads its cache as left here.
  g_heap.forking.store(0, std::memory_order_release);
}

void gate_not_open(ThreadCache *cache, uint32_t was) {
  if (was != 0 || g_heap.lock.held_by_interrupted_operation()) {
    cache->in_op.store(was, std::memory_order_relaxed);
    HeapLock::held_by_caller();
  }
  // A thread waiting for the heap lock (its handler's call goes on), or
  // the forking thread in a fork handler.
  if (g_heap.forking.load(kGateSeeOpen) != 0) wait_out_fork(cache);
}

void wait_out_fork(ThreadCache *cache) {
  for (;;) {
    if (g_heap.lock.held_by_me()) { // the forking thread, in another fork handler: it goes on
      finish_fork_in_child_now();
      return;
    }
    leave_gate(cache);
    { ScopedLock lock(g_heap.lock); } // held by the forker until the fork is done
    cache->in_op.store(1, kGateOrder);
    light_barrier();
    if (g_heap.forking.load(kGateSeeOpen) == 0) return;
  }
}

namespace {

constinit __attribute__((tls_model("initial-exec"))) thread_local bool t_in_shared_gate = false;

// Yield, then sleep: a real-time forker must let a lower-priority thread on
// its CPU finish its operation.
void pause_for(unsigned round) {
  if (round < 16)
    sched_yield();
  else
    os::sleep_us(50);
}

// Threads without a cache inside the gate (SharedGate): the count went up
// with a full barrier before they read forking, and this thread's
// barrier came after it set forking.
void wait_for_shared_gate() {
#if !defined(SECMEM_TSAN) // (under ThreadSanitizer the gate's atomics are sequentially consistent)
  std::atomic_thread_fence(std::memory_order_seq_cst);
#endif
  for (unsigned round = 0; g_heap.shared_gate_users.load(std::memory_order_seq_cst) != 0; ++round) pause_for(round);
}

} // namespace

SharedGate::SharedGate() {
  t_in_shared_gate = true;
  for (;;) {
    g_heap.shared_gate_users.fetch_add(1, std::memory_order_seq_cst);
    if (g_heap.forking.load(std::memory_order_seq_cst) == 0) return;
    if (g_heap.lock.held_by_me()) { // the forking thread, in another fork handler: it goes on
      // (not a signal handler inside this thread's locked operation: the
      // reclaim's gate, or a fork from a handler that interrupted it)
      if (!g_heap.lock.reentry_allowed()) HeapLock::held_by_caller();
      finish_fork_in_child_now();
      return;
    }
    g_heap.shared_gate_users.fetch_sub(1, std::memory_order_release);
    { ScopedLock lock(g_heap.lock); } // held by the forker until the fork is done
  }
}

SharedGate::~SharedGate() {
  g_heap.shared_gate_users.fetch_sub(1, std::memory_order_release);
  t_in_shared_gate = false;
}

SECMEM_FORK_CHILD_TEXT void reset_shared_gate_in_child() {
  g_heap.shared_gate_users.store(t_in_shared_gate ? 1 : 0, std::memory_order_relaxed);
}

namespace {

#if !defined(SECMEM_TSAN)
constexpr std::memory_order kSeeLeave = std::memory_order_acquire;
#else
constexpr std::memory_order kSeeLeave = std::memory_order_seq_cst;
#endif

// Sets forking to why and puts a barrier between that store and this
// thread's reads of other caches' in_op: a cache read at 0 after it is
// out of its thread's hands until the gate opens (its thread sees the gate
// closed at its next operation and waits for the lock). False when no
// other thread has a cache: caches are made under the heap lock, so none
// can be in a cache operation or start one (a single-threaded process
// skips the barrier).
bool raise_gate(uint32_t why) REQUIRES(g_heap.lock) {
  g_heap.forking.store(why, kGateOrder);
  ThreadCache *first = g_heap.caches.front();
  if (first == nullptr || (first == t_cache && CacheList::next(first) == nullptr)) return false;
#if !defined(SECMEM_TSAN)
  if (g_ro.fence_each_op)
    std::atomic_thread_fence(std::memory_order_seq_cst);
  else
    os::barrier_all_threads();
#endif
  return true;
}

} // namespace

void close_gate(uint32_t why) {
  if (raise_gate(why)) {
    for (ThreadCache *cache = g_heap.caches.front(); cache != nullptr; cache = CacheList::next(cache)) {
      if (cache == t_cache || g_heap.lock.dead_in_child(cache->thread_number)) continue;
      for (unsigned round = 0; cache->in_op.load(kSeeLeave) == kInOp; ++round) pause_for(round);
    }
  }
  wait_for_shared_gate(); // and threads without a cache
}

// Other threads' kept large blocks back to the pool with their credit, for
// a fork about to stage its copy (prepare_heap_fork); their small blocks
// stay. Kept blocks are zero and hold nothing a child needs, but a copy
// takes every run in use: up to the whole budget for kept blocks
// (kLargeCacheBudget) copied at each fork, and as many pages held in each
// staging file. The gate is raised, not closed: a cache whose thread is
// inside an operation keeps its blocks (they are copied, as before; waiting
// for it, a second time in a fork, held forks up where threads outnumber
// processors, preempted inside an operation), and threads without a cache
// do not touch caches. A thread that reaches the gate while the blocks go
// back (up to 64 per cache), and a thread whose next large request its
// cache no longer serves, waits for the lock, which this thread holds until
// the fork is done: through the staging too, which makes pages when no
// staging file is large enough (three threads allocating 64 KiB blocks
// beside a 64 MiB heap stalled 330-360 ms at each of the first two forks).
// So only when a staging file is ready, and when the caches' credit is at
// least half of the pages in use, which the copy takes, kept blocks
// included: threads that keep allocating refill their caches under the
// lock after every drain (three threads bouncing 16-64 KiB blocks beside a
// 16 MiB heap, a fork every 3 ms: 175-190k operations a second without the
// drain, 138-147k with it at a quarter, 157k at half), and for busy threads
// the drain does not shorten the fork (eight threads bouncing 64 KiB
// blocks: 16 ms on average without it, 21 ms with it). It is for idle
// threads' kept blocks, which it keeps out of the copy and the staging
// files. Not on the mlock tier (its pages are copy-on-write: nothing is
// copied). Returns the bytes of the runs given back in memfd_secret
// chunks, guards counted.
size_t drop_other_threads_kept_large() {
  // Credit held by any cache (this thread's went back with its cache):
  // none, nothing kept, and no gate to raise.
  // (Read relaxed: a cache may take credit meanwhile; the rule is a guess.)
  size_t credit = g_heap.large_cached.load(std::memory_order_relaxed), in_use = 0;
  if (g_heap.forking.load(std::memory_order_relaxed) != 0 || credit == 0 || !g_heap.pool.staging_file_ready(&in_use) ||
      credit < in_use / 2)
    return 0;
  size_t bytes = 0;
  if (raise_gate(kGateReclaim)) {
    for (ThreadCache *cache = g_heap.caches.front(); cache != nullptr; cache = CacheList::next(cache)) {
      if (cache == t_cache || cache->in_op.load(kSeeLeave) != 0 || cache->large_credit == 0) continue;
      for (uint32_t i = 0; i < cache->large_count; ++i)
        if (cache->large[i]->chunk->tier == Tier::kSecret) bytes += kept_large_bytes(cache->large[i]);
      drop_cached_large(cache);
    }
    // No cache waits for credit now.
    if (g_heap.large_credit_wanted.load(std::memory_order_relaxed))
      g_heap.large_credit_wanted.store(false, std::memory_order_relaxed);
  }
  // Release: a thread that finds the gate open reads its cache as left here
  // (kGateSeeOpen); one that found it raised waits for the lock.
  g_heap.forking.store(0, std::memory_order_release);
  return bytes;
}

} // namespace secmem::heap
