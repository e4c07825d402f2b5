// The heap's start-up, its half of fork, and the public operations, which
// dispatch to small (thread_cache.cpp) or large (large.cpp) blocks.
#include "heap/heap.h"

#include <cerrno>
#include <cstring>
#include <pthread.h>

#include "config/environ.h"
#include "config/policy.h"
#include "heap/blocks.h"
#include "heap/canary.h"
#include "heap/pagemap.h"
#include "platform/checkers.h"

namespace secmem::heap {

constinit Heap g_heap;
constinit ReadOnly g_ro;
std::atomic<State> g_state{State::kUninitialised};

namespace {

pthread_mutex_t g_init_lock = PTHREAD_MUTEX_INITIALIZER;
bool g_cache_key_created = false;

// ---- fork: the lock and the caches (the chunk copies are the pool's, chunks/fork.cpp) ----

void prepare_fork() ACQUIRE(g_heap.lock) {
  g_heap.lock.lock();
  g_heap.pool.prepare_fork();
}

void after_fork_parent() RELEASE(g_heap.lock) {
  g_heap.pool.after_fork_parent();
  g_heap.lock.unlock();
}

void after_fork_child() RELEASE(g_heap.lock) {
  g_heap.pool.after_fork_child();
  retire_other_caches();
  g_heap.lock.reset_in_child();
}

// ---- start-up ----

void read_configuration() {
  g_ro.config = parse_config(process_environment(), is_secure_exec());
  const Config &config = g_ro.config;
  if (config.verbose) print_config(config);
  if (!os::random_bytes(&g_ro.canary_key, sizeof g_ro.canary_key)) // no entropy yet: ASLR's
    g_ro.canary_key = reinterpret_cast<uintptr_t>(&g_heap) ^ (reinterpret_cast<uintptr_t>(&config) << 17);
  // Thread caches need a key whose destructor hands an exiting thread's blocks back.
  int err = pthread_key_create(&g_heap.cache_key, thread_exit);
  g_cache_key_created = err == 0;
  if (!g_cache_key_created)
    diag::Line()
        .add("cannot create a thread key for the thread caches (")
        .err(err)
        .add("); every operation takes the heap lock (slower)")
        .emit();
  for (int cls = 0; cls < kNumClasses; ++cls)
    g_ro.cache_cap[cls] = g_cache_key_created ? policy::cache_capacity(config, kClassSizes[cls], kCacheSlots) : 0;
  if (int seal_err = os::seal_readonly(&g_ro, sizeof g_ro); seal_err != 0)
    diag::Line().add("cannot make the configuration read-only (").err(seal_err).add(")").emit();
}

// Without its fork handlers a child would write the parent's secret pages:
// the heap does not start.
bool register_fork_handlers() {
  int err = pthread_atfork(prepare_fork, after_fork_parent, after_fork_child);
  if (err != 0)
    diag::Line().add("cannot register the fork handlers (").err(err).add("); every allocation will return NULL").emit();
  return err == 0;
}

// dlclose of the last object that needs libsecmem (a plugin): no thread may
// call into the unloaded code when it exits (glibc drops the fork handlers
// itself).
__attribute__((destructor)) void unload() {
  if (g_cache_key_created) pthread_key_delete(g_heap.cache_key);
}

} // namespace

bool init_slow() {
  pthread_mutex_lock(&g_init_lock);
  if (g_state.load(std::memory_order_acquire) == State::kUninitialised) {
    read_configuration();
    const Config &config = g_ro.config;
    checkers::detect();
    if (policy::undumpable_from_start(config)) make_undumpable_or_say();
    bool ok;
    {
      ScopedLock lock(g_heap.lock);
      g_heap.central.init(policy::keeps_memory(config));
      ok = g_heap.pool.init(config);
    }
    ok = ok && register_fork_handlers();
    g_state.store(ok ? State::kReady : State::kFailed, std::memory_order_release);
  }
  pthread_mutex_unlock(&g_init_lock);
  return g_state.load(std::memory_order_acquire) == State::kReady;
}

namespace {

// The smallest class at or above size whose blocks are all aligned, or -1.
int aligned_class(size_t size, size_t alignment) {
  if (size > kMaxSmallSize || alignment > os::kPageSize) return -1; // spans are only page-aligned
  for (int cls = size_to_class(size); cls < kNumClasses; ++cls)
    if (kClassSizes[cls] % alignment == 0) return cls;
  return -1;
}

void *fail_enomem() {
  errno = ENOMEM;
  return nullptr;
}

// A live block's new size fits where it is: same class, or a large block that stays more than half full.
bool resizes_in_place(const BlockRef &ref, size_t size) {
  size_t block = ref.span->block_size;
  if (size > block) return false;
  return ref.span->cls >= 0 ? size <= kMaxSmallSize && size_to_class(size) == ref.span->cls
                            : size > block / 2 && size > kMaxSmallSize;
}

void resize_in_place(void *p, const BlockRef &ref, size_t size) {
  size_t block = ref.span->block_size, old = ref.requested_size();
  checkers::expose(p, block);
  canary::check(g_ro.canary_key, p, old, block);
  // Shrinking keeps no stale tail; the old canary goes (the rest of the slack is zero).
  size_t keep = size < old ? size : old;
  zero(static_cast<char *>(p) + keep, old + canary::span_after(old, block) - keep);
  ref.set_requested(size);
  canary::write(g_ro.canary_key, p, size, block);
  checkers::resized(p, old, size, block);
}

} // namespace

void *allocate(size_t size) {
  if (size > kMaxRequest || !ready()) return fail_enomem();
  if (size <= kMaxSmallSize) return allocate_small(size_to_class(size), size == 0 ? 1 : size);
  return allocate_large(size, os::kPageSize, false);
}

void *allocate_aligned(size_t alignment, size_t size) {
  if (alignment <= 16) return allocate(size);
  if (size > kMaxRequest || !ready()) return fail_enomem();
  int cls = aligned_class(size, alignment);
  if (cls >= 0) return allocate_small(cls, size == 0 ? 1 : size);
  return allocate_large(size == 0 ? 1 : size, alignment, false);
}

void *allocate_sealed(size_t size) {
  if (size > kMaxRequest || !ready()) return fail_enomem();
  return allocate_large(size == 0 ? 1 : size, os::kPageSize, true);
}

void release(void *p) {
  if (p == nullptr) return;
  BlockRef ref = checked_block(p, Misuse::kFree);
  if (ref.span->cls >= 0)
    release_small(p, ref);
  else
    release_large(p, ref);
}

void *reallocate(void *p, size_t size) {
  if (p == nullptr) return allocate(size);
  BlockRef ref = checked_block(p, Misuse::kRealloc);
  if (!ref.is_live()) diag::fatal_pointer("invalid realloc of", p, "block already freed");
  if (ref.span->sealed) { // its pages may be inaccessible; it keeps its place
    errno = EINVAL;
    return nullptr;
  }
  if (size == 0) {
    release(p);
    return nullptr;
  }
  if (resizes_in_place(ref, size)) {
    resize_in_place(p, ref, size);
    return p;
  }
  size_t old = ref.requested_size();
  void *moved = allocate(size);
  if (moved == nullptr) return nullptr;
  memcpy(moved, p, size < old ? size : old);
  release(p);
  return moved;
}

size_t usable_size(const void *p) {
  BlockRef ref;
  if (p == nullptr || find_block(p, &ref) != Found::kBlock || !ref.is_live()) return 0;
  return ref.requested_size();
}

bool owns(const void *p) {
  BlockRef ref;
  Found found = find_block(p, &ref);
  return (found == Found::kBlock || found == Found::kInterior) && ref.is_live();
}

} // namespace secmem::heap
