// stale_lookup LIB, under the preload shim, in a program that does not link
// libcrypto: LIB (tests/fake_crypto.c) defines CRYPTO_get_mem_functions and
// CRYPTO_free and says this program's own free function. The shim's
// CRYPTO_free is called twice: before, and after LIB was unloaded by libc's
// own dlclose (which the shim's wrapper does not see), a page put where it
// was, and LIB loaded again elsewhere. Prints how many times the program's
// free ran each time (1 and 1); a lookup the shim kept from the first load
// would jump into the page.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

typedef void (*free_fn)(void *, const char *, int);
static int g_frees;

static void own_free(void *p, const char *file, int line) {
  (void)file;
  (void)line;
  ++g_frees;
  free(p);
}

static void *load(const char *path) {
  void *handle = dlopen(path, RTLD_NOW | RTLD_GLOBAL);
  if (handle == NULL) return NULL;
  void (*set)(free_fn) = (void (*)(free_fn))dlsym(handle, "fake_set_free");
  if (set != NULL) set(own_free);
  return handle;
}

int main(int argc, char **argv) {
  if (argc < 2) return 2;
  free_fn shim_free = (free_fn)dlsym(RTLD_DEFAULT, "CRYPTO_free");
  void *handle = load(argv[1]);
  if (handle == NULL || shim_free == NULL) return 2;
  int before = g_frees;
  shim_free(malloc(100), __FILE__, __LINE__);
  int first = g_frees - before;
  Dl_info info;
  if (dladdr(dlsym(handle, "CRYPTO_free"), &info) == 0) return 2;
  int (*libc_dlclose)(void *) = (int (*)(void *))dlsym(dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD), "dlclose");
  if (libc_dlclose == NULL || libc_dlclose(handle) != 0) return 2;
  if (dlopen(argv[1], RTLD_NOW | RTLD_NOLOAD) != NULL) return 3; // still loaded: nothing tested
  void *page = mmap(info.dli_fbase, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
  if (load(argv[1]) == NULL) return 2;
  before = g_frees;
  shim_free(malloc(100), __FILE__, __LINE__);
  printf("own free: %d, then %d (a page at the old place: %s)\n", first, g_frees - before,
         page != MAP_FAILED ? "yes" : "no");
  return 0;
}
