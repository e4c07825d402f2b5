// The fork gate: no lock-free heap operation is in flight while the parent
// copies its secret pages for the child and the kernel copies the process,
// and none starts until the fork is done (or, where the child copies for
// itself, until it has its copy). Writes to blocks outside the lock (a large
// block zeroed at free, a resize in place) happen inside the gate too.
//
// Thread caches pop and push without the heap lock. A fork that catches a
// thread halfway (a block taken from its cache but not yet marked live, or a
// cache the child sees from one moment and the span from another) would
// leave the child a heap that is not self-consistent, and a block that
// another thread takes from its cache between the copy of the secret pages
// and the fork would be free in the child but hold that thread's data. So:
//
//   thread, per operation:          forking thread, in the prepare handler:
//     in_op = 1                       (holds the heap lock)
//     compiler barrier                forking = 1
//     if forking: in_op = 0, wait     membarrier(PRIVATE_EXPEDITED)
//     ... pop or push ...             wait until every other in_op == 0
//     in_op = 0 (release)             ... staged copy, fork ...
//
// membarrier runs a full barrier on every running thread of the process, so
// either the forker sees a thread's in_op == 1 or that thread sees forking ==
// 1 (an asymmetric Dekker: the fast side pays a compiler barrier only). A
// thread that waits takes the heap lock, which the forker holds until the
// fork is done. Where membarrier cannot be registered, each
// operation fences instead (ReadOnly::fence_each_op); under ThreadSanitizer
// the gate uses sequentially consistent atomics, which it can check.
//
// The forking thread itself never waits: its own operation may be the one a
// signal handler interrupted to fork, and other fork handlers (registered
// before secmem's, so run after its prepare handler) may use the heap.
#pragma once

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <optional>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "heap/state.h"
#include "heap/thread_cache.h"
#include "platform/raw_syscall.h"
#include "platform/sanitizers.h"
#include "platform/signals.h"

namespace secmem::heap {

#if defined(SECMEM_TSAN)
inline constexpr std::memory_order kGateOrder = std::memory_order_seq_cst;
inline constexpr std::memory_order kGateSeeOpen = std::memory_order_seq_cst;
#else
inline constexpr std::memory_order kGateOrder = std::memory_order_relaxed;
// An operation's read of forking: acquire, so that one that finds the gate
// open again after a reclaim or a fork's drain of kept blocks (which changed
// idle caches, then opened the gate with a release store) reads its cache
// as they left it, on processors that reorder loads too (x86: a plain load).
inline constexpr std::memory_order kGateSeeOpen = std::memory_order_acquire;
#endif

// Heap::forking: why the gate is closed.
inline constexpr uint32_t kGateFork = 1, kGateReclaim = 2;

// Out of line: a fork is in progress, or a reclaim.
void wait_out_fork(ThreadCache *cache);

// Out of line, from enter_gate and the fast paths' try_enter_gate: the gate
// is closed, or this thread is inside another heap operation, which a
// signal handler interrupted: its cache's mark (was) was already up, or it
// holds the heap lock outside a fork's handlers. Such a call aborts with
// HeapLock's line, the mark left as the interrupted operation set it: the
// cache or the central lists may be halfway through a change (a handler's
// small allocation there handed a block out twice, and its leave_gate let
// a fork copy the interrupted operation half done).
void gate_not_open(ThreadCache *cache, uint32_t was);

// kMayFence false: the caller knows the gate does not fence each operation (ReadOnly::plain_ops).
template <bool kMayFence = true> inline void light_barrier() {
#if !defined(SECMEM_TSAN)
  if (kMayFence && __builtin_expect(g_ro.fence_each_op, 0)) {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    return;
  }
#endif
  std::atomic_signal_fence(std::memory_order_seq_cst);
}

// The mark's old value and the lock count go with forking's read into one
// branch: a call inside another of this thread's operations takes the
// out-of-line path (gate_not_open), which tells it from a waiting one.
template <bool kMayFence = true> inline void enter_gate(ThreadCache *cache) {
  uint32_t was = cache->in_op.load(std::memory_order_relaxed);
  cache->in_op.store(1, kGateOrder);
  light_barrier<kMayFence>();
  if (__builtin_expect((g_heap.forking.load(kGateSeeOpen) | was | cache->lock_entries) != 0, 0))
    gate_not_open(cache, was);
}

inline void leave_gate(ThreadCache *cache) { cache->in_op.store(0, std::memory_order_release); }

// Before a write to a sealed block under the lock (its zeroing at free;
// with the gate, wait_out_fork and SharedGate do this): a fork
// handler that runs on the forking thread between secmem's handlers, where
// the lock lets it in. In a child whose own handler has not run yet (a child
// handler registered before secmem's) the pages are still shared with the
// parent: the child takes its copy first. In the parent (a prepare handler
// registered before secmem's) the staged copy is out of date.
inline void settle_fork_before_write() {
  if (__builtin_expect(g_heap.forking.load(std::memory_order_relaxed) == kGateFork, 0) && g_heap.lock.held_by_me())
    finish_fork_in_child_now();
}

// The gate for a thread without a cache (none is made for a write: a thread
// key's destructor that runs after secmem's may free, and a cache made then
// would never be retired): one count for all such threads
// (Heap::shared_gate_users), raised with a full barrier, which close_gate
// waits to see at 0. Signals stay blocked inside, so that no signal
// handler's fork finds this thread's own count in it (the count cannot say
// whose it is); a fork handler's write on the forking thread goes on.
class SharedGate {
public:
  SharedGate();
  ~SharedGate();
  SharedGate(const SharedGate &) = delete;
  SharedGate &operator=(const SharedGate &) = delete;

private:
  SignalsBlocked signals_; // first in, last out
};
// In a fork child: the count is this thread's own (0, or 1 inside a fork
// handler's write); a dead thread caught entering left it higher.
void reset_shared_gate_in_child();

// A write to a block outside the lock (a large block zeroed at free, a
// resize in place): inside this thread's cache's gate, or the shared one.
class WriteGate {
public:
  explicit WriteGate(ThreadCache *cache) : cache_(cache) {
    if (cache_ != nullptr)
      enter_gate(cache_);
    else
      shared_.emplace();
  }
  ~WriteGate() {
    if (cache_ != nullptr) leave_gate(cache_);
  }
  WriteGate(const WriteGate &) = delete;
  WriteGate &operator=(const WriteGate &) = delete;

private:
  ThreadCache *cache_;
  std::optional<SharedGate> shared_;
};

// The forking (or reclaiming) thread's side, holding the heap lock: close
// the gate (why: kGateFork or kGateReclaim) and wait for every other
// thread's operation in flight (in_op 1). A thread whose signal handler
// forks while its own operation is in flight marks it 2 while it waits for
// the lock: a fork in progress goes on without it, and that fork's child
// leaves the cache alone.
void close_gate(uint32_t why) REQUIRES(g_heap.lock);
ThreadCache *my_cache();
inline constexpr uint32_t kInOp = 1, kInOpWaitingToFork = 2;

} // namespace secmem::heap
