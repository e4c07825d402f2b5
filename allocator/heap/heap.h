// The heap: the public operations over the chunk pool.
//
// Small requests (<= 8 KiB) are rounded to a size class and packed into
// spans of 1..8 pages; each span's live bytes (atomic, one per block) are the
// source of truth for double-free detection and secmem_owns, and its free
// bitmap (under the heap lock) is the central free list. Both live outside
// the secret pages. Per-thread caches hold freed blocks for reuse
// without the lock. Large requests take page runs inside a chunk; huge ones
// (> 1 MiB) a chunk of their own.
//
// Files: heap.cpp (start-up, fork, dispatch), cache_ops.h (the common small
// operations, inlined into the dispatch), thread_cache.cpp (the rest of small
// blocks), central.cpp (central lists), large.cpp (large and sealed blocks),
// stats.cpp; pagemap.h finds a pointer's block.
//
// Invariant: every byte of secret memory that is not in a live allocation
// is zero (fresh pages are zero, and every free zeroes the whole usable
// size), so calloc needs no memset.
#pragma once

#include <cstddef>
#include <cstdint>

#include "chunks/chunk.h"

struct secmem_stats;

namespace secmem::heap {

inline constexpr size_t kMaxRequest = size_t{1} << 40;    // larger requests fail with ENOMEM
inline constexpr size_t kMaxAlignment = SIZE_MAX / 2 + 1; // any power of two (past a slot's: a chunk of its own)

void *allocate(size_t size);
void *allocate_aligned(size_t alignment, size_t size); // alignment: a power of two <= kMaxAlignment
void *reallocate(void *p, size_t size);
void release(void *p);
size_t usable_size(const void *p); // the size asked for; 0 unless p is a live allocation's start

// Sealed blocks: page-granular, guard pages on both sides, PROT_NONE except
// inside access scopes. change_access returns 0 or an errno (EINVAL: not a
// live sealed block, bad mode, or no scope of that mode open; ENOMEM:
// mprotect refused, the mapping count limit).
inline constexpr int kAccessRead = 1;  // SECMEM_READ
inline constexpr int kAccessWrite = 2; // SECMEM_WRITE (reads too)
void *allocate_sealed(size_t size);
int change_access(void *p, int mode, bool begin);
bool owns(const void *p); // p inside a live allocation
void get_stats(secmem_stats *out);
const char *backend_name();
void reserved_range(uintptr_t *base, size_t *size);

// Children reaped, as an interposer of the wait calls sees them
// (secmem/internal/interpose.h). Async-signal-safe.
void watch_reaping();
uint64_t forks_done();
// This process as its fork handlers last saw it (ask_kernel false: no
// system call), or with ask_kernel its generation and the pid the kernel
// gives the caller: a vfork child, which runs no fork handler and shares
// its parent's memory, gets a mark that is not its parent's. 0 when the
// fork handlers are not registered (not followed).
uint64_t process_mark(bool ask_kernel);
void child_reaped(int pid, uint64_t forks_done_before);

} // namespace secmem::heap
