#include "platform/checkers.h"

extern "C" {
// AddressSanitizer's public interface (sanitizer/asan_interface.h), weak:
// null unless an ASan runtime is loaded.
void __asan_poison_memory_region(void const volatile *addr, size_t size) __attribute__((weak));
void __asan_unpoison_memory_region(void const volatile *addr, size_t size) __attribute__((weak));
}

namespace secmem::checkers {

namespace {

void asan_poison(void *p, size_t n) {
  if (__asan_poison_memory_region != nullptr) __asan_poison_memory_region(p, n);
}

void asan_unpoison(void *p, size_t n) {
  if (__asan_unpoison_memory_region != nullptr) __asan_unpoison_memory_region(p, n);
}

} // namespace

bool g_active = false;

void detect() {
#if SECMEM_HAVE_VALGRIND
  g_active = __asan_poison_memory_region != nullptr || RUNNING_ON_VALGRIND != 0;
#else
  g_active = __asan_poison_memory_region != nullptr;
#endif
}

void expose_slow(void *p, size_t block) {
  asan_unpoison(p, block);
#if SECMEM_HAVE_VALGRIND
  VALGRIND_MAKE_MEM_DEFINED(p, block);
#endif
}

void allocated_slow(void *p, size_t requested, size_t block) {
  asan_poison(p, block);
  asan_unpoison(p, requested);
#if SECMEM_HAVE_VALGRIND
  VALGRIND_MALLOCLIKE_BLOCK(p, requested, 0, 1);
  VALGRIND_MAKE_MEM_NOACCESS(static_cast<char *>(p) + requested, block - requested);
#else
  (void)block;
#endif
}

void freeing_slow(void *p) {
#if SECMEM_HAVE_VALGRIND
  VALGRIND_FREELIKE_BLOCK(p, 0);
#else
  (void)p;
#endif
}

void freed_slow(void *p, size_t block) {
  asan_poison(p, block);
#if SECMEM_HAVE_VALGRIND
  VALGRIND_MAKE_MEM_NOACCESS(p, block);
#endif
}

void resized_slow(void *p, size_t old_requested, size_t requested, size_t block) {
  asan_poison(p, block);
  asan_unpoison(p, requested);
#if SECMEM_HAVE_VALGRIND
  VALGRIND_RESIZEINPLACE_BLOCK(p, old_requested, requested, 0);
  VALGRIND_MAKE_MEM_NOACCESS(static_cast<char *>(p) + requested, block - requested);
#else
  (void)old_requested;
#endif
}

} // namespace secmem::checkers
