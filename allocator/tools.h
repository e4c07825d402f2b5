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

namespace secmem::tools {

// The heap is about to read or write the whole block (canary, zeroing).
void open(void *p, size_t block);
// A block was handed out: [p, p+requested) is the caller's, the rest is slack.
void allocated(void *p, size_t requested, size_t block);
// A live block is being freed (before open + zeroing).
void freeing(void *p);
// The block is free: any access is a use-after-free.
void freed(void *p, size_t block);
// A live block changed size in place.
void resized(void *p, size_t old_requested, size_t requested, size_t block);

} // namespace secmem::tools
