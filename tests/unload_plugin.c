/* A plugin that links libsecmem.so, for tests/unload.c. */
#include <secmem/secmem.h>
#include <string.h>

__attribute__((visibility("default"))) int plugin_use_secret(void) {
  char *p = secmem_malloc(64);
  if (p == NULL) return 0;
  strcpy(p, "plugin secret");
  secmem_free(p);
  return 1;
}

/* Large and small blocks, so that the calling thread makes a cache that
 * keeps them (its exit then retires the cache under the heap lock). */
__attribute__((visibility("default"))) int plugin_churn(void) {
  for (int i = 0; i < 50; i++) {
    size_t n = 100 + (size_t)i * 1000;
    char *p = secmem_malloc(n);
    if (p == NULL) return 0;
    memset(p, 3, n);
    secmem_free(p);
  }
  return 1;
}
