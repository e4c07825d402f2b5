// The heap's internal entry points, one group per file: small blocks and
// thread caches (thread_cache.cpp), large and sealed blocks (large.cpp).
// heap.cpp dispatches the public operations to them.
#pragma once

#include <cstddef>

#include "heap/span.h"
#include "heap/state.h"

namespace secmem::heap {

// thread_cache.cpp
void *allocate_small(int cls, size_t size);
void release_small(void *p, const BlockRef &ref);
// Flushes a cache's blocks to the central lists and forgets the cache.
void retire_cache(ThreadCache *cache) REQUIRES(g_heap.lock);
// Flushes this thread's cache (a fork: the blocks a cache keeps hold their
// spans' pages, which the copy for the child would take).
void empty_my_cache() REQUIRES(g_heap.lock);
void thread_exit(void *cache); // the cache key's destructor
// Waits until no thread is inside thread_exit: libsecmem's unload (the key
// deleted first) must not unmap code that an exiting thread runs.
void wait_for_exiting_threads();
// In a fork child: only the forking thread can be inside thread_exit.
void reset_exiting_threads_in_child();
// (retire_dead_threads_caches, heap/lock.h: in a fork child, every cache
// but the forking thread's, at the first acquisition of the lock.)
// In the child of a fork from a signal handler that interrupted an operation
// holding the lock (the caches stay listed): a dead thread caught entering
// the gate (in_op 1, about to see it closed and leave) would hold up the
// next close_gate for ever.
void clear_dead_threads_gates() REQUIRES(g_heap.lock);
// The pool's reclaimer (ChunkPool::set_reclaimer): RLIMIT_MEMLOCK refused a
// new chunk. Every thread's cached blocks go back to the central lists and
// the pool, and from then on caches keep no more than their first caps.
void reclaim_caches() REQUIRES(g_heap.lock);
// A fork, before it stages the copy: the large blocks that other threads'
// caches keep (zero) go back to the pool, so that the copy leaves their
// runs out (thread_cache.cpp). Returns the bytes of their runs, guards counted.
size_t drop_other_threads_kept_large() REQUIRES(g_heap.lock);

// thread_cache.cpp: this thread's cache, made and listed (its key set, so
// that thread_exit retires it); nullptr once retired at the thread's exit,
// or with no room for one.
ThreadCache *make_cache();

// large.cpp: page-granular blocks between guard pages; sealed ones start PROT_NONE.
// cache_missed: this thread's cache had no block of as many pages (pop_large);
// a miss for as many pages as the thread's last miss takes spare runs for
// the cache as well.
void *allocate_large(size_t bytes, size_t alignment, bool sealed, bool cache_missed = false);
void release_large(void *p, const BlockRef &ref);
// A page-aligned block of bytes from this thread's cache of large blocks, or nullptr.
void *pop_large(size_t bytes);
// Gives a cache's large blocks back to the pool, and its credit (an emptied or retiring cache).
void drop_cached_large(ThreadCache *cache) REQUIRES(g_heap.lock);
// The pool's OwnReturner (chunks/chunk_pool.h): this thread's kept large
// blocks go back before the pool makes pages; false if it had none, or a
// fork or a reclaim holds the gate.
bool give_back_own_kept() REQUIRES(g_heap.lock);
// Gives the cache's credit back (a cache lost with its blocks, in a fork child).
void forget_large_credit(ThreadCache *cache) REQUIRES(g_heap.lock);
// Gives a freed, zeroed large block that is in no cache back to the pool.
void return_large(Span *span) REQUIRES(g_heap.lock);

} // namespace secmem::heap
