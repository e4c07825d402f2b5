// The secmem C API for fork_edges_late: libsecmem is loaded with dlopen at
// the first call (not when the program starts), so that fork handlers the
// program registered before that call were registered before secmem's.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

#include "secmem/secmem.h"

// dlopen is the once: a thread that calls it while another loads waits for
// that load and gets the same handle. (Not pthread_once: a fork child of a
// process whose other thread was loading would wait for it for ever under
// ThreadSanitizer, whose pthread_once knows nothing of fork.)
static void *g_lib;

static void *load(void) {
  void *lib = __atomic_load_n(&g_lib, __ATOMIC_ACQUIRE);
  if (lib != NULL) return lib;
  lib = dlopen(SECMEM_LIBRARY_PATH, RTLD_NOW | RTLD_GLOBAL);
  if (lib == NULL) {
    printf("FAIL dlopen %s: %s\n", SECMEM_LIBRARY_PATH, dlerror());
    exit(1);
  }
  __atomic_store_n(&g_lib, lib, __ATOMIC_RELEASE);
  return lib;
}

static void *find(const char *name) {
  void *fn = dlsym(load(), name);
  if (fn == NULL) {
    printf("FAIL dlsym %s\n", name);
    exit(1);
  }
  return fn;
}

#define LATE(ret, name, params, args)                                                             \
  ret name params {                                                                               \
    static ret(*fn) params;                                                                       \
    ret(*call) params = __atomic_load_n(&fn, __ATOMIC_ACQUIRE);                                   \
    if (call == NULL) __atomic_store_n(&fn, call = (ret(*) params)find(#name), __ATOMIC_RELEASE); \
    return call args;                                                                             \
  }

LATE(void *, secmem_malloc, (size_t size), (size))
LATE(void *, secmem_calloc, (size_t n, size_t size), (n, size))
LATE(void *, secmem_realloc, (void *p, size_t size), (p, size))
LATE(void *, secmem_sealed_alloc, (size_t size), (size))
LATE(void, secmem_free, (void *p), (p))
LATE(int, secmem_owns, (const void *p), (p))
LATE(int, secmem_get_stats, (struct secmem_stats * out), (out))
LATE(const char *, secmem_backend_name, (void), ())
LATE(void, secmem_tag_begin, (void), ())
LATE(void, secmem_tag_end, (void), ())
LATE(void, secmem_reserved_range, (uintptr_t * base, size_t *size), (base, size))
LATE(int, secmem_access_begin, (void *p, int mode), (p, mode))
LATE(int, secmem_access_end, (void *p, int mode), (p, mode))
