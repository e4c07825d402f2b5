// OpenSSL 3's secure heap, and the cleansing of OPENSSL_free'd memory.
//
// Defined without a symbol version: an unversioned definition satisfies
// libcrypto's references to CRYPTO_secure_*@OPENSSL_3.0.0, a named version
// node of ours would not (and the calls would silently stay in OpenSSL).
#include <cstring>
#include <malloc.h>

#include "shim.h"

using namespace secmem::shim;

SHIM_API void *CRYPTO_secure_malloc(size_t num, const char *, int) { return secret_alloc(16, num, Source::kOpenSSL); }

SHIM_API void *CRYPTO_secure_zalloc(size_t num, const char *, int) { return secret_alloc(16, num, Source::kOpenSSL); }

// A pointer that is not ours can only come from OpenSSL's fallback, CRYPTO_malloc.
// Secret pointers never go through the global free: another allocator may be
// first in LD_PRELOAD.
SHIM_API void CRYPTO_secure_free(void *ptr, const char *, int) {
  if (is_secret(ptr)) return secret_free(ptr);
  if (ptr != nullptr) free(ptr);
}

SHIM_API void CRYPTO_secure_clear_free(void *ptr, size_t num, const char *, int) {
  if (is_secret(ptr)) return secret_free(ptr); // the heap zeroes its own blocks
  if (ptr == nullptr) return;
  explicit_bzero(ptr, num);
  free(ptr);
}

SHIM_API int CRYPTO_secure_allocated(const void *ptr) { return secmem_owns(ptr); }

SHIM_API size_t CRYPTO_secure_actual_size(void *ptr) { return secmem_usable_size(ptr); }

SHIM_API size_t CRYPTO_secure_used(void) {
  secmem_stats stats{};
  secmem_get_stats(&stats);
  return stats.in_use_secret + stats.in_use_locked + stats.in_use_unlocked;
}

// OpenSSL asks these before it uses the secure heap for some secrets: the
// answer is always yes, with no set-up by the application.
SHIM_API int CRYPTO_secure_malloc_initialized(void) { return 1; }

SHIM_API int CRYPTO_secure_malloc_init(size_t, size_t) { return 1; }

SHIM_API int CRYPTO_secure_malloc_done(void) { return CRYPTO_secure_used() == 0 ? 1 : 0; }

// OpenSSL frees decoded key material (DER buffers, PKCS#8 intermediates)
// with plain OPENSSL_free, uncleansed: the heap copies a memory scan finds.
// Under the shim every OPENSSL_free of ordinary memory is cleansed first.
// An application's own CRYPTO_set_mem_functions allocator is still used.
namespace {
std::atomic<void (*)(void *, const char *, int)> g_openssl_custom_free{nullptr};
} // namespace

SHIM_API int CRYPTO_set_mem_functions(void *(*m)(size_t, const char *, int),
                                      void *(*r)(void *, size_t, const char *, int),
                                      void (*f)(void *, const char *, int)) {
  using Set = int (*)(decltype(m), decltype(r), decltype(f));
  auto real = next_in_loaded_library<Set>("CRYPTO_set_mem_functions");
  if (real == nullptr || real(m, r, f) != 1) return 0;
  g_openssl_custom_free.store(f, std::memory_order_release);
  return 1;
}

SHIM_API void CRYPTO_free(void *ptr, const char *file, int line) {
  if (ptr == nullptr) return;
  auto custom = g_openssl_custom_free.load(std::memory_order_acquire);
  if (custom != nullptr && custom != &CRYPTO_free) return custom(ptr, file, line);
  if (is_secret(ptr)) return secret_free(ptr);
  if (!bootstrap_owns(ptr)) explicit_bzero(ptr, malloc_usable_size(ptr));
  free(ptr);
}
