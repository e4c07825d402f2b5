/* secmem: an allocator for secrets, backed by memfd_secret(2).
 *
 * Every block comes from pages that only this process maps, that are removed
 * from the kernel's direct map, never swapped and never in a core dump (or,
 * where the kernel or a sandbox refuses memfd_secret, from mlock'ed
 * MADV_DONTDUMP memory, as configured: see README.md). Every byte is zeroed
 * when it is freed. Misuse (double free, freeing an interior or foreign
 * pointer) aborts with a one-line message starting with "secmem:".
 *
 * All functions are thread-safe. None allocates from the libc heap.
 */
#ifndef SECMEM_SECMEM_H
#define SECMEM_SECMEM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define SECMEM_API __attribute__((visibility("default")))
#define SECMEM_MALLOC_LIKE __attribute__((malloc, warn_unused_result))
#else
#define SECMEM_API
#define SECMEM_MALLOC_LIKE
#endif

/* size bytes (at least 1), 16-byte aligned, zero-filled. NULL with errno
 * ENOMEM when no secret memory is left under the configured policy. */
SECMEM_API SECMEM_MALLOC_LIKE void *secmem_malloc(size_t size);
/* nmemb * size bytes, zero-filled; NULL with ENOMEM on overflow. */
SECMEM_API SECMEM_MALLOC_LIKE void *secmem_calloc(size_t nmemb, size_t size);
/* Resizes p (NULL: like secmem_malloc; size 0: frees p and returns NULL).
 * The old block is zeroed when it moves. On failure p is left untouched. */
SECMEM_API void *secmem_realloc(void *p, size_t size);
/* alignment: a power of two, else NULL with errno EINVAL. An alignment over
 * 2 MiB gives the block a chunk of its own (NULL with ENOMEM when no aligned
 * place is left in the reserved range). */
SECMEM_API SECMEM_MALLOC_LIKE void *secmem_aligned_alloc(size_t alignment, size_t size);
/* Zeroes the whole usable size, then frees. NULL is ignored. */
SECMEM_API void secmem_free(void *p);
/* The size a live allocation was asked for (its usable bytes: the slack
 * after them holds an overflow canary); 0 for NULL, a pointer secmem does
 * not own, or one inside a block but not at its start (secmem_owns is 1
 * for that one). */
SECMEM_API size_t secmem_usable_size(const void *p);
/* 1 if p points into a live allocation of this heap (its bytes, the
 * secmem_usable_size ones; not the slack after them), else 0. O(1), safe
 * for any pointer value. */
SECMEM_API int secmem_owns(const void *p);
/* 1 if the n bytes at a and at b are equal, else 0, in time that depends on
 * n only: every byte is read, with no exit at the first difference, so the
 * timing does not tell where two secrets (MACs, tokens, passwords) differ.
 * n == 0 gives 1 (a and b may then be NULL). Compare lengths first: they are
 * not hidden. */
SECMEM_API int secmem_ct_equal(const void *a, const void *b, size_t n);

/* Sealed secrets: a block of its own pages, between PROT_NONE guard pages,
 * that stays inaccessible (PROT_NONE) except inside access scopes. A stray
 * read of a sealed secret -- an over-read in a parser, a debugger's
 * formatter, a heap walker -- faults instead of leaking it.
 *
 *   unsigned char *key = secmem_sealed_alloc(32);       // sealed, zero
 *   secmem_access_begin(key, SECMEM_WRITE);  fill(key);  secmem_access_end(key, SECMEM_WRITE);
 *   secmem_access_begin(key, SECMEM_READ);   use(key);   secmem_access_end(key, SECMEM_READ);
 *   secmem_free(key);                                   // zeroed, whatever its state
 *
 * Scopes nest and may be open in several threads: the block is read-write
 * while any SECMEM_WRITE scope is open, read-only while only SECMEM_READ
 * scopes are, and sealed again when the last one ends. Protection is per
 * process (all threads see the same), and each sealed block costs at least
 * two pages (its own and a guard), and up to two mappings while a scope is
 * open (sealed blocks side by side, and their guards, are one mapping while
 * closed). secmem_realloc refuses sealed blocks (NULL, EINVAL), also with
 * size 0 (the block stays: free it with secmem_free). */
#define SECMEM_READ 1
#define SECMEM_WRITE 2
/* size bytes (at least 1) on their own pages, zero-filled and sealed. NULL
 * with errno ENOMEM when no secret memory is left, mprotect is refused, or
 * the heap's guards and sealed blocks already split its memory into a
 * quarter of vm.max_map_count mappings. */
SECMEM_API SECMEM_MALLOC_LIKE void *secmem_sealed_alloc(size_t size);
/* Opens an access scope (mode SECMEM_READ or SECMEM_WRITE) on a sealed
 * block. Returns 0, or -1 with errno EINVAL (p is not a live sealed block,
 * or mode is neither) or ENOMEM (mprotect refused: the mapping count limit;
 * or opening a closed block past the heap's quarter of it). */
SECMEM_API int secmem_access_begin(void *p, int mode);
/* Closes one scope of that mode. -1 with EINVAL when none is open. */
SECMEM_API int secmem_access_end(void *p, int mode);

struct secmem_stats {
  const char *backend; /* weakest tier holding memory: "memfd_secret", "mlock", "unlocked", or "none" */
  /* bytes of live blocks (each request rounded up to its size class or to
   * whole pages), per protection tier */
  size_t in_use_secret;   /* memfd_secret pages */
  size_t in_use_locked;   /* mlock'ed anonymous pages (fallback) */
  size_t in_use_unlocked; /* anonymous MADV_DONTDUMP pages (last fallback) */
  /* bytes mapped for the heap, per tier */
  size_t mapped_secret;
  size_t mapped_locked;
  size_t mapped_unlocked;
  size_t memlock_charged; /* what RLIMIT_MEMLOCK sees: all of mapped_secret, and the touched (mlock'ed) part of
                             mapped_locked */
  size_t pages_touched;   /* pages faulted into the heap's mappings */
  size_t chunks;
  size_t peak_held; /* most bytes held at once: in use, or cached by threads for reuse */
  uint64_t allocations;
  uint64_t frees;
  /* chunks placed in a weaker tier than configured, by the first tier's refusal */
  uint64_t fallbacks_enosys;  /* no kernel support */
  uint64_t fallbacks_eperm;   /* refused (seccomp) */
  uint64_t fallbacks_memlock; /* RLIMIT_MEMLOCK budget spent */
  uint64_t fallbacks_other;
  uint64_t failed_chunks;       /* a chunk was needed and no allowed tier gave one */
  uint64_t fork_privatisations; /* chunks copied privately into a fork child */
};

/* Fills *out. Returns 0, or -1 with errno EINVAL when out is NULL. */
SECMEM_API int secmem_get_stats(struct secmem_stats *out);
/* Same as secmem_get_stats(...).backend. */
SECMEM_API const char *secmem_backend_name(void);

/* Tags: between secmem_tag_begin() and the matching secmem_tag_end(), plain
 * malloc/calloc/realloc/aligned allocations made by this thread go to the
 * secret heap -- when the preload shim (libsecmem_preload.so) is loaded.
 * Without it the calls only count. Scopes nest. */
SECMEM_API void secmem_tag_begin(void);
SECMEM_API void secmem_tag_end(void);
/* This thread's tag depth (0: not inside a tagged scope). */
SECMEM_API unsigned secmem_tag_depth(void);

/* For interposers such as the preload shim: the address range the heap has
 * reserved (every secret pointer lies in it); *size is 0 until the first
 * allocation. The range's end (*base + *size) never changes once set; the
 * range may grow downwards (a smaller *base, a larger *size) when a block
 * does not fit, before that block is returned: a pointer secmem returned
 * lies in the range as read after it was returned. Either pointer may be
 * NULL: that value is not stored. */
SECMEM_API void secmem_reserved_range(uintptr_t *base, size_t *size);

#ifdef __cplusplus
}
#endif

#endif /* SECMEM_SECMEM_H */
