// What the heap tells the memory checkers a user already runs.
//
// AddressSanitizer: when the process has an ASan runtime (the program, or
// this library, was built with -fsanitize=address), the bytes of a block
// past the requested size and every freed block are poisoned, so an
// over-read or a use-after-free of a secret is reported like one of malloc's.
// The runtime is found through weak symbols: without one these are no-ops.
//
// valgrind (memcheck): every block is announced with MALLOCLIKE/FREELIKE
// client requests, and its slack and freed blocks are marked no-access.
// Outside valgrind a client request is a few instructions that do nothing.
#pragma once

#include <cstddef>

#if SECMEM_HAVE_VALGRIND
#include <valgrind/memcheck.h>
#else
#define VALGRIND_DISABLE_ERROR_REPORTING
#define VALGRIND_ENABLE_ERROR_REPORTING
#endif

namespace secmem::checkers {

// True when an ASan runtime is loaded or the process runs under valgrind
// (decided once, at the heap's initialisation): otherwise the calls below
// cost one predictable branch.
extern bool g_active;
void detect();

void expose_slow(void *p, size_t block);
void allocated_slow(void *p, size_t requested, size_t block);
void freeing_slow(void *p);
void freed_slow(void *p, size_t block);
void resized_slow(void *p, size_t old_requested, size_t requested, size_t block);

// The heap is about to read or write the whole block (canary, zeroing).
inline void expose(void *p, size_t block) {
  if (__builtin_expect(g_active, 0)) expose_slow(p, block);
}
// A block was handed out: [p, p+requested) is the caller's, the rest is slack.
inline void allocated(void *p, size_t requested, size_t block) {
  if (__builtin_expect(g_active, 0)) allocated_slow(p, requested, block);
}
// A live block is being freed (before expose + zeroing).
inline void freeing(void *p) {
  if (__builtin_expect(g_active, 0)) freeing_slow(p);
}
// The block is free: any access is a use-after-free.
inline void freed(void *p, size_t block) {
  if (__builtin_expect(g_active, 0)) freed_slow(p, block);
}
// A live block changed size in place.
inline void resized(void *p, size_t old_requested, size_t requested, size_t block) {
  if (__builtin_expect(g_active, 0)) resized_slow(p, old_requested, requested, block);
}

} // namespace secmem::checkers
