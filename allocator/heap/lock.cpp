#include "heap/lock.h"

#include <cerrno>
#include <cstdlib>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "platform/diag.h"

namespace secmem::heap {

constinit __attribute__((tls_model("initial-exec"))) thread_local uint32_t t_thread_number = 0;
constinit __attribute__((tls_model("initial-exec"))) thread_local uint32_t t_lock_waits = 0;
constinit __attribute__((tls_model("initial-exec"))) thread_local uint32_t t_heap_lock_entries = 0;
constinit __attribute__((tls_model("initial-exec"))) thread_local uint32_t *t_lock_entries_mirror = nullptr;
constinit __attribute__((tls_model("initial-exec"))) thread_local uint32_t *t_mirror_detached_for_fork = nullptr;

uint32_t take_thread_number() {
  static std::atomic<uint32_t> next{0};
  for (;;) {
    uint32_t number = (next.fetch_add(1, std::memory_order_relaxed) + 1) & 0x7fffffffu;
    if (number != 0) return number;
  }
}

void HeapLock::lock_contended(uint32_t me) {
  // Another acquisition of this thread's, beside this one, that holds the
  // lock: this call would wait for itself, for ever.
  if (t_heap_lock_entries > 1 && owner() == me) held_by_caller();
  ++t_lock_waits;
  for (int spin = 0; spin < 64; ++spin) {
    uint32_t expected = 0;
    if (word_.load(std::memory_order_relaxed) == 0 &&
        word_.compare_exchange_weak(expected, me, std::memory_order_acquire, std::memory_order_relaxed))
      return;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
  }
  for (;;) {
    uint32_t seen = word_.load(std::memory_order_relaxed);
    if (seen == 0) {
      // Taken with the waiters mark: others may still sleep on it.
      if (word_.compare_exchange_weak(seen, me | kWaiters, std::memory_order_acquire, std::memory_order_relaxed))
        return;
      continue;
    }
    if ((seen & kWaiters) == 0 &&
        !word_.compare_exchange_weak(seen, seen | kWaiters, std::memory_order_relaxed, std::memory_order_relaxed))
      continue;
    syscall(SYS_futex, &word_, FUTEX_WAIT_PRIVATE, seen | kWaiters, nullptr, nullptr, 0);
  }
}

// A heap call on a thread that holds the heap lock, outside a fork: a
// signal handler that interrupted a heap operation called the heap (the
// functions are not async-signal-safe; glibc's malloc deadlocks there too).
// One line and an abort, not a silent hang.
void HeapLock::held_by_caller() {
  diag::Line()
      .add("a secmem function was called on a thread inside another (a signal handler that interrupted a heap "
           "operation?); secmem's functions are not async-signal-safe: aborting instead of waiting for ever "
           "or working on a heap halfway through a change")
      .emit();
  abort();
}

void HeapLock::wake_one() { syscall(SYS_futex, &word_, FUTEX_WAKE_PRIVATE, 1, nullptr, nullptr, 0); }

} // namespace secmem::heap
