/* A library whose allocations SECMEM_TAG_CALLERS=libtagme.so sends to the
 * secret heap (loaded by shim_probe with dlopen, after start-up). The writes
 * after each call keep the compiler from turning them into tail calls, which
 * would hide this library as the caller. */
#include <stdlib.h>

void *tagme_malloc(size_t n) {
  char *p = malloc(n);
  if (p != NULL) p[0] = 1;
  return p;
}

void *tagme_calloc(size_t n) {
  char *p = calloc(1, n);
  if (p != NULL) p[1] = 0;
  return p;
}
