// A library that defines the libcrypto functions the shim's CRYPTO_free asks
// for (as an unpinned libcrypto would: LibreSSL, an OpenSSL built with
// no-pinshared), and can be unloaded: shim_probe stale-lookup.
#include <stdlib.h>

typedef void (*free_fn)(void *, const char *, int);
static free_fn g_free;

void fake_set_free(free_fn f) { g_free = f; }

void CRYPTO_get_mem_functions(void *m, void *r, free_fn *f) {
  (void)m;
  (void)r;
  if (f != NULL) *f = g_free;
}

void CRYPTO_free(void *p, const char *file, int line) {
  (void)file;
  (void)line;
  free(p);
}
