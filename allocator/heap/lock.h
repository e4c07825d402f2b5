// The heap lock, as a capability the compiler checks (-Wthread-safety in
// clang builds): functions that need it say REQUIRES(g_heap.lock).
//
// It knows its owner, for fork (heap/fork_gate.h): the forking thread holds
// it from the prepare handler to the parent and child handlers, and other
// fork handlers that run in between (registered before secmem's) may use the
// heap on that thread; while a fork is in progress the owner re-enters
// (not when the fork came from a signal handler that interrupted one of the
// thread's heap operations: allow_reentry stays false). Outside fork a
// re-entry aborts with one line (it would wait for itself for ever): a
// signal handler that interrupts a heap operation must not run another one.
#pragma once

#include <atomic>
#include <cstdint>

#include "support/thread_annotations.h"

namespace secmem::heap {

// heap.cpp: a fork handler registered before secmem's re-enters the heap on
// the forking thread (through the lock or the fork gate); in a fork child
// that is where the child gets its copy, if secmem's own child handler has
// not run yet.
void finish_fork_in_child_now();

// thread_cache.cpp: in a fork child, the caches of the threads the child
// does not have (every cache but the one of the thread numbered survivor)
// go back to the central lists: at the child's first acquisition of the
// lock (HeapLock::settle_at_next_lock), not in its fork handler.
void retire_dead_threads_caches(uint32_t survivor);

// This thread's identity for the lock: a number taken once per thread from a
// counter, no system call (a strict seccomp filter may not allow gettid). It
// wraps at 2^31, skipping 0: two live threads share a number only if 2^31
// threads were started while one of them lived. The forking thread keeps
// its number in a child; threads started there take new ones.
extern constinit __attribute__((tls_model("initial-exec"))) thread_local uint32_t t_thread_number;
// Times this thread found the heap lock taken (it then spun or slept), for
// the heap's choices that depend on other threads being at work (large.cpp).
extern constinit __attribute__((tls_model("initial-exec"))) thread_local uint32_t t_lock_waits;
// The heap-lock acquisitions this thread has begun and not finished letting
// go (the one HeapLock, g_heap.lock): raised before the compare-exchange
// that takes the lock, lowered after the exchange that lets it go. A signal
// handler's heap call on this thread finds it above its own: an operation
// it interrupted is taking, holding or letting go of the lock. With the
// owner's number that tells a call that would wait for itself (lock_contended
// aborts) from a thread that got the holder's number after 2^31 others (it
// waits its turn), at every instruction: a flag set after the
// compare-exchange and cleared before the exchange left an instant on each
// side where a handler's call waited for its own thread for ever.
// held_by_me (fork handlers) goes by the number alone.
extern constinit __attribute__((tls_model("initial-exec"))) thread_local uint32_t t_heap_lock_entries;
// The same count, mirrored beside this thread's cache's gate mark (its
// ThreadCache::lock_entries; nullptr until the thread has a cache, and
// from its exit on), where the cache's fast paths read it with the mark:
// a thread-local read of its own there cost 0.8 ns an alloc+free of 32 B.
extern constinit __attribute__((tls_model("initial-exec"))) thread_local uint32_t *t_lock_entries_mirror;
inline void raise_lock_entries() {
  ++t_heap_lock_entries;
  if (uint32_t *mirror = t_lock_entries_mirror) ++*mirror;
}
inline void lower_lock_entries() {
  --t_heap_lock_entries;
  if (uint32_t *mirror = t_lock_entries_mirror) --*mirror;
}
// The fork's own acquisition (heap.cpp: taken in the prepare handler, let
// go in the parent and child handlers) leaves the mirror alone: written
// at every fork, the cache's page took a page fault each time (copy-on-write
// in the parent and in the child after the kernel's fork, or at the next
// prepare handler). The mirror is detached before the lock is taken and
// attached again once it is let go, as it was: a fork from a signal handler
// may come between the count's change and the mirror's (raise and lower
// above), which the interrupted code finishes after it (attaching it at
// the count, then, left it one off for good; one below the count, after a
// fork inside a lower, a handler's call inside a later locked operation
// went through, and a block was handed out twice: adversarial review).
// A cache made by a fork handler meanwhile starts at the count with the
// fork's acquisition in it, and the release lowers both. Meanwhile no fast
// path of the thread relies on the mirror: signals are blocked in secmem's
// fork handlers, and from the closing of the gate to its opening (the other
// fork handlers between) the fast paths, which read it only together with
// the gate, go out of line, where the thread-local count is read.
extern constinit __attribute__((tls_model("initial-exec"))) thread_local uint32_t *t_mirror_detached_for_fork;
inline void detach_lock_entries_mirror() {
  t_mirror_detached_for_fork = t_lock_entries_mirror;
  t_lock_entries_mirror = nullptr;
}
inline void attach_lock_entries_mirror() {
  if (uint32_t *mirror = t_mirror_detached_for_fork) {
    t_lock_entries_mirror = mirror;
    t_mirror_detached_for_fork = nullptr;
  }
}
uint32_t take_thread_number();
inline uint32_t this_thread() {
  uint32_t number = t_thread_number;
  if (__builtin_expect(number == 0, 0)) number = t_thread_number = take_thread_number();
  return number;
}

// A futex lock whose word is its owner's number: taking it and letting it
// go are single atomic operations, so a signal handler on the owning thread
// (one that forks) always knows whether its thread holds it.
class CAPABILITY("mutex") HeapLock {
public:
  void lock() ACQUIRE() {
    uint32_t me = this_thread();
    if (reentry_allowed_.load(std::memory_order_relaxed) && owner() == me) {
      ++depth_;
      finish_fork_in_child_now();
      // A fork handler registered before secmem's, using the heap in the
      // child: the dead threads' blocks are its to use, as they were when
      // the child handler gave them back (without, its allocations made a
      // chunk, or were refused under a tight memlock budget).
      if (__builtin_expect(settle_pending_.load(std::memory_order_relaxed), 0)) settle();
      return;
    }
    raise_lock_entries();
    std::atomic_signal_fence(std::memory_order_seq_cst); // raised before the lock is taken
    uint32_t expected = 0;
    if (!word_.compare_exchange_strong(expected, me, std::memory_order_acquire, std::memory_order_relaxed))
      lock_contended(me);
    if (__builtin_expect(settle_pending_.load(std::memory_order_relaxed), 0)) settle();
  }
  void unlock() RELEASE() {
    if (depth_ != 0) {
      --depth_;
      return;
    }
    uint32_t was = word_.exchange(0, std::memory_order_release);
    std::atomic_signal_fence(std::memory_order_seq_cst); // lowered once the lock is let go
    lower_lock_entries();
    if (was & kWaiters) wake_one();
  }
  bool held_by_me() const { return owner() == this_thread(); }
  // This thread is inside one of its own locked operations, outside a
  // fork's handlers: a heap call now came from a signal handler that
  // interrupted it (large.cpp, gate_not_open).
  bool held_by_interrupted_operation() const { return t_heap_lock_entries != 0 && held_by_me() && !reentry_allowed(); }
  // A heap call on a thread inside another of its heap operations, outside
  // a fork: one line and an abort (large.cpp calls it for an operation on
  // the thread's cache that a signal handler interrupted).
  [[noreturn, gnu::noinline, gnu::cold]] static void held_by_caller();
  // Only the owner calls these (fork handlers).
  void allow_reentry(bool allow) { reentry_allowed_.store(allow, std::memory_order_relaxed); }
  bool reentry_allowed() const { return reentry_allowed_.load(std::memory_order_relaxed); }
  // In a fork child, where only the forking thread exists: held by it
  // (taken in the prepare handler: its acquisition ends too), or by a thread
  // of the parent that is not here.
  void reset_in_child(bool taken_here) RELEASE() {
    if (taken_here) lower_lock_entries();
    depth_ = 0;
    word_.store(0, std::memory_order_relaxed);
  }
  // In a fork child's handler: the dead threads' caches go back at the
  // lock's next acquisition, on whichever thread it is, before anything
  // else it guards is read or changed (every cache is made, and every walk
  // of the caches made, under the lock: until then none but the survivor's
  // is used). A child that execs or exits without taking the lock never
  // writes their pages: each one written was a copy-on-write fault, and the
  // walk itself took 10-35 us, in every child of a fork made beside other
  // threads (stunnel forks from a connection's thread).
  void settle_at_next_lock(uint32_t survivor) {
    survivor_ = survivor;
    settle_pending_.store(true, std::memory_order_relaxed);
  }
  // In the child of a fork from a signal handler that interrupted this
  // thread's settle (or its acquisition just before it): only this thread
  // is left there, and the settle goes on for it when the handler returns.
  void settle_for_survivor(uint32_t survivor) {
    if (settle_pending_.load(std::memory_order_relaxed)) survivor_ = survivor;
  }
  // A cache of a thread that a fork child does not have, not yet given back
  // (close_gate waits for none: its thread may have been caught entering
  // the gate at the fork, in_op 1 for ever).
  bool dead_in_child(uint32_t thread_number) const {
    return settle_pending_.load(std::memory_order_relaxed) && thread_number != survivor_;
  }

private:
  static constexpr uint32_t kWaiters = 1u << 31;
  uint32_t owner() const { return word_.load(std::memory_order_relaxed) & ~kWaiters; }
  void lock_contended(uint32_t me);
  void wake_one();
  // Pending until every dead cache is gone (dead_in_child). Once per
  // survivor: a fork from a signal handler meanwhile names this thread the
  // survivor of its child (settle_for_survivor), whose settle then goes on
  // in the child with a second round. Not inside itself: that fork's
  // handlers, or a handler's heap call in the child, find it under way.
  [[gnu::noinline, gnu::cold]] void settle() {
    if (settling_) return;
    settling_ = true;
    for (uint32_t survivor = survivor_;; survivor = survivor_) {
      retire_dead_threads_caches(survivor);
      if (survivor_ == survivor) break;
    }
    settling_ = false;
    settle_pending_.store(false, std::memory_order_relaxed);
  }

  // Sized to fit the padding of the lock's 16 bytes, on g_heap's page: its
  // fork fields fill the page (state.h).
  std::atomic<uint32_t> word_{0}; // 0, or the owner's number | kWaiters
  std::atomic<bool> reentry_allowed_{false};
  std::atomic<bool> settle_pending_{false}; // settle_at_next_lock
  bool settling_ = false;                   // settle under way (on the lock's owner)
  unsigned depth_ = 0;                      // re-entries by the owner (fork handlers only)
  uint32_t survivor_ = 0;                   // the forking thread's number, in a child that settles
};
static_assert(sizeof(HeapLock) == 16);

class SCOPED_CAPABILITY ScopedLock {
public:
  explicit ScopedLock(HeapLock &lock) ACQUIRE(lock) : lock_(lock) { lock_.lock(); }
  ~ScopedLock() RELEASE() { lock_.unlock(); }
  ScopedLock(const ScopedLock &) = delete;
  ScopedLock &operator=(const ScopedLock &) = delete;

private:
  HeapLock &lock_;
};

} // namespace secmem::heap
