/* Built twice, as libtagrace.so (named by SECMEM_TAG_CALLERS in the test)
 * and libplainrace.so: the same code at the same size, so one loads where
 * the other was. Its constructor and destructor allocate, as many libraries'
 * do; the destructor then calls a hook of the program's (shim_probe's
 * callers-unload-race). The writes keep the calls from being tail calls. */
#include <stdlib.h>
#include <string.h>

void *race_ctor_block;
void *race_dtor_block; /* global, so that the compiler keeps the destructor's malloc */
void (*race_dtor_hook)(void);

void *race_malloc(size_t n) {
  char *p = malloc(n);
  if (p != NULL) memset(p, 0x5a, n);
  return p;
}

__attribute__((constructor)) static void allocate_at_load(void) {
  race_ctor_block = malloc(40);
  if (race_ctor_block != NULL) memset(race_ctor_block, 1, 40);
}

__attribute__((destructor)) static void allocate_at_unload(void) {
  race_dtor_block = malloc(48);
  if (race_dtor_hook != NULL) race_dtor_hook();
  free(race_dtor_block);
}
