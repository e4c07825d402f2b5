// The heap lock, as a capability the compiler checks (-Wthread-safety in
// clang builds): functions that need it say REQUIRES(g_heap.lock).
#pragma once

#include <pthread.h>

#include "support/thread_annotations.h"

namespace secmem::heap {

class CAPABILITY("mutex") HeapLock {
public:
  void lock() ACQUIRE() { pthread_mutex_lock(&mutex_); }
  void unlock() RELEASE() { pthread_mutex_unlock(&mutex_); }
  // In a fork child, where only the forking thread (which holds it) exists.
  void reset_in_child() RELEASE() { pthread_mutex_init(&mutex_, nullptr); }

private:
  pthread_mutex_t mutex_ = PTHREAD_MUTEX_INITIALIZER;
};

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
