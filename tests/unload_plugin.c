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
