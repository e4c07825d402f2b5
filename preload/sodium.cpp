// libsodium's guarded allocations: sodium_malloc'd secrets go to the secret
// heap. sodium_mprotect_* cannot protect one block of a shared chunk: for our
// blocks they do nothing and return 0 (page-granular sealed secrets are
// secmem_sealed_alloc). Other pointers go to libsodium's own functions.
#include <cerrno>

#include "api/arg_checks.h"
#include "shim.h"

using namespace secmem;
using namespace secmem::shim;

namespace {

// libsodium's function for a pointer that is not ours; -1 when libsodium is not loaded.
int forward_protect(const char *name, void *ptr, const void *caller, int (*self)(void *)) {
  auto fn = next_for_caller(name, caller, self);
  return fn != nullptr ? fn(ptr) : -1;
}

} // namespace

SHIM_API void *sodium_malloc(size_t size) { return secret_alloc(16, size, Source::kSodium); }

SHIM_API void *sodium_allocarray(size_t count, size_t size) {
  size_t total = 0;
  if (!args::checked_mul(count, size, &total)) {
    errno = ENOMEM;
    return nullptr;
  }
  return secret_alloc(16, total, Source::kSodium);
}

SHIM_API void sodium_free(void *ptr) {
  if (is_secret(ptr)) return secret_free(ptr);
  if (ptr == nullptr) return;
  if (auto fn = next_for_caller("sodium_free", __builtin_return_address(0), &sodium_free)) fn(ptr);
}

SHIM_API int sodium_mprotect_noaccess(void *ptr) {
  return is_secret(ptr)
             ? 0
             : forward_protect("sodium_mprotect_noaccess", ptr, __builtin_return_address(0), &sodium_mprotect_noaccess);
}

SHIM_API int sodium_mprotect_readonly(void *ptr) {
  return is_secret(ptr)
             ? 0
             : forward_protect("sodium_mprotect_readonly", ptr, __builtin_return_address(0), &sodium_mprotect_readonly);
}

SHIM_API int sodium_mprotect_readwrite(void *ptr) {
  return is_secret(ptr) ? 0
                        : forward_protect("sodium_mprotect_readwrite", ptr, __builtin_return_address(0),
                                          &sodium_mprotect_readwrite);
}
