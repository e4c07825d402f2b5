// OpenSSL 3's secure heap, the cleansing of OPENSSL_free'd memory, and the
// private values OpenSSL derives outside its secure heap (Montgomery contexts
// of RSA's primes, numbers exported for legacy key objects, a private key's DER
// encoding in a buffer of the caller's).
//
// Defined without a symbol version: an unversioned definition satisfies
// libcrypto's references to CRYPTO_secure_*@OPENSSL_3.0.0, a named version
// node of ours would not (and the calls would silently stay in OpenSSL).
#include <cstdlib>
#include <cstring>
#include <malloc.h>
#include <openssl/bn.h>   // types only: the shim does not link libcrypto
#include <openssl/core.h> // OSSL_PARAM, a public structure
#include <openssl/evp.h>  // i2d_PrivateKey's declaration
#include <unistd.h>

#include "platform/cpu.h"
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

namespace {
// Once libcrypto answers with its default, the answer is kept: the pointer
// being freed came from its default CRYPTO_malloc, after which OpenSSL
// refuses new memory functions (so the lookups stay off the hot path: a TLS
// handshake frees thousands of blocks). A program may free with CRYPTO_free
// before OpenSSL's first allocation, though, and set its own functions
// after: a set through the shim forgets the answer.
std::atomic<bool> g_openssl_default_kept{false};
} // namespace

SHIM_API int CRYPTO_set_mem_functions(void *(*m)(size_t, const char *, int),
                                      void *(*r)(void *, size_t, const char *, int),
                                      void (*f)(void *, const char *, int)) {
  auto real = next_for_caller("CRYPTO_set_mem_functions", __builtin_return_address(0), &CRYPTO_set_mem_functions);
  if (real == nullptr || real(m, r, f) != 1) return 0;
  g_openssl_custom_free.store(f, std::memory_order_release);
  g_openssl_default_kept.store(false, std::memory_order_release);
  return 1;
}

namespace {

// The free function libcrypto uses now, asked of libcrypto itself
// (CRYPTO_get_mem_functions): a program may have set its own through a
// dlsym'ed CRYPTO_set_mem_functions that never passed through the shim, or
// set and reset them. What the shim saw set answers where libcrypto cannot
// be asked. Null: libcrypto's default (CRYPTO_malloc's memory is malloc's).
using OpensslFree = void (*)(void *, const char *, int);
OpensslFree openssl_custom_free(const void *caller) {
  using Get = void (*)(void *, void *, OpensslFree *);
  OpensslFree current = nullptr;
  static NextCache get_cache, free_cache; // every free, in a program with functions of its own (stunnel)
  if (auto get = next_for_caller<Get>(get_cache, "CRYPTO_get_mem_functions", caller, nullptr); get != nullptr)
    get(nullptr, nullptr, &current);
  else
    current = g_openssl_custom_free.load(std::memory_order_acquire);
  // libcrypto's own CRYPTO_free (set back by its address) is the default too:
  // calling it would come back here.
  auto real = next_for_caller<OpensslFree>(free_cache, "CRYPTO_free", caller, &CRYPTO_free);
  return current == &CRYPTO_free || current == real ? nullptr : current;
}

} // namespace

// ---- exit --------------------------------------------------------------------------------
//
// Once a process has called exit, OPENSSL_free no longer cleanses: its
// memory goes back to the kernel with it, and in a forked child the bytes it
// inherited are still in the parent's memory anyway (libcrypto's tables,
// which OPENSSL_cleanup frees at exit, are the parent's, in use), while each
// cleansed page cost a copy-on-write copy. A PostgreSQL backend exits at
// every connection: its OPENSSL_cleanup took 397 us of CPU under the shim
// against 328 plain (the memset alone 118 us). Only exit called through the
// program's or a library's reference to it (exits inside glibc, returning
// from main among them, do not pass here: cleansed as before).
//
// The flag holds the process that called exit (libsecmem's mark: its fork
// generation and the pid getpid gave), and counts only in the process that
// libsecmem's fork handlers last saw (at load, and in each fork child): a
// vfork child that calls exit writes it in its parent's memory, with its own
// pid (the parent then cleanses on), a child forked by an exit handler or by
// another thread meanwhile is not exiting, and neither is a later
// descendant that gets the exiting process's pid again (a generation
// further). A getpid at each free to tell them apart made a PostgreSQL
// backend's exit 0.5 ms slower; a fork handler of the shim's own that kept
// the pid took a page fault in every fork child.
namespace {
std::atomic<unsigned long long> g_exiting{0};

bool exiting() {
  unsigned long long mark = g_exiting.load(std::memory_order_relaxed);
  return mark != 0 && mark == secmem_interpose_process_mark(0); // (not followed: 0)
}
} // namespace

SHIM_API __attribute__((noreturn)) void exit(int status) noexcept {
  g_exiting.store(secmem_interpose_process_mark(1), std::memory_order_relaxed);
  if (auto real = next_fn(g_next.exit, "exit"); real != nullptr) real(status);
  _exit(status); // no libc exit to be found: not reached in practice
}

SHIM_API void CRYPTO_free(void *ptr, const char *file, int line) {
  if (ptr == nullptr) return;
  if (!g_openssl_default_kept.load(std::memory_order_relaxed)) {
    if (OpensslFree custom = openssl_custom_free(__builtin_return_address(0)); custom != nullptr)
      return custom(ptr, file, line);
    g_openssl_default_kept.store(true, std::memory_order_relaxed);
  }
  if (is_secret(ptr)) return secret_free(ptr);
  if (bootstrap_owns(ptr)) return free(ptr);
  if (__builtin_expect(exiting(), 0)) return free(ptr);
  if (!g_shim_is_first.load(std::memory_order_acquire)) { // another allocator's block, perhaps
    explicit_bzero(ptr, malloc_usable_size(ptr));
    return free(ptr);
  }
  // The next allocator's block: its own functions, straight (the shim's would
  // ask is_secret and bootstrap_owns again, at every one of the thousands of
  // frees of a TLS handshake).
  size_t usable = g_next.malloc_usable_size.get()(ptr);
  memset(ptr, 0, usable);
  asm volatile("" : : "r"(ptr) : "memory"); // the stores happen: the block is freed next
  g_next.free.get()(ptr);
}

// ---- private values OpenSSL derives into ordinary memory --------------------------------
//
// Interposed exported functions, with no knowledge of OpenSSL's structures:
// a tag scope (secmem_tag_begin) around the real call sends every allocation
// it makes to the secret heap (OPENSSL_malloc calls malloc, which is ours).
// The functions called on every handshake are looked up once per dlclose
// generation (libcrypto may be unloaded and loaded elsewhere), the rest at
// each call.

namespace {

// The BN_get_flags bit of a BIGNUM whose words live in the secure heap.
constexpr int kBnFlagSecure = 0x08; // BN_FLG_SECURE, unchanged since OpenSSL 1.1.0

bool bn_is_secure(const BIGNUM *bn, const void *caller) {
  static NextCache cache;
  auto get_flags = next_for_caller<int (*)(const BIGNUM *, int)>(cache, "BN_get_flags", caller, nullptr);
  return bn != nullptr && get_flags != nullptr && get_flags(bn, kBnFlagSecure) != 0;
}

// The shim's own scope (t_shim_scopes, shim.h): glibc's allocations inside
// it stay ordinary.
struct TagScope {
  TagScope() {
    ++t_shim_scopes;
    secmem_tag_begin();
  }
  ~TagScope() {
    secmem_tag_end();
    --t_shim_scopes;
  }
  TagScope(const TagScope &) = delete;
  TagScope &operator=(const TagScope &) = delete;
};

} // namespace

// A Montgomery context keeps its modulus and two values derived from it
// (R^2 mod m, and -m^-1 mod R). For a secret modulus, RSA's p and q (OpenSSL
// caches a context for each after the key's first private operation), all
// three reveal the key: they are made in the secret heap.
SHIM_API int BN_MONT_CTX_set(BN_MONT_CTX *mont, const BIGNUM *mod, BN_CTX *ctx) {
  const void *caller = __builtin_return_address(0);
  static NextCache cache;
  auto real = next_for_caller(cache, "BN_MONT_CTX_set", caller, &BN_MONT_CTX_set);
  if (real == nullptr) return 0;
  if (!bn_is_secure(mod, caller)) return real(mont, mod, ctx);
  TagScope secret;
  return real(mont, mod, ctx);
}

// A number read out of a parameter that OpenSSL built in the secure heap
// (a private component being exported, as EVP_PKEY_get1_RSA does to make a
// legacy RSA object for libcurl or python3-cryptography) lands in a secure
// BIGNUM: OpenSSL then keeps it, and every copy it makes of it, secure.
SHIM_API int OSSL_PARAM_get_BN(const OSSL_PARAM *p, BIGNUM **val) {
  const void *caller = __builtin_return_address(0);
  static NextCache cache;
  auto real = next_for_caller(cache, "OSSL_PARAM_get_BN", caller, &OSSL_PARAM_get_BN);
  if (real == nullptr) return 0;
  if (p == nullptr || val == nullptr || p->data == nullptr || !is_secret(p->data)) return real(p, val);
  BIGNUM *made = nullptr;
  if (*val == nullptr) {
    if (auto secure_new = next_for_caller<BIGNUM *(*)()>("BN_secure_new", caller, nullptr)) made = *val = secure_new();
  }
  int ok = 0;
  {
    TagScope secret; // a BIGNUM the caller gave grows in the secret heap too
    ok = real(p, val);
  }
  if (ok != 1 && made != nullptr && *val == made) {
    if (auto bn_free = next_for_caller<void (*)(BIGNUM *)>("BN_clear_free", caller, nullptr)) bn_free(made);
    *val = nullptr;
  }
  return ok;
}

// ---- a private key's DER encoding -------------------------------------------------------
//
// i2d_PrivateKey encodes a key, private components and all: into a buffer
// OpenSSL allocates (*pp null), or into the caller's. Every allocation the
// real call makes (the buffer, and the intermediate encodings) is made in
// the secret heap. A caller that brings its own buffer asks the length first
// (pp null) and allocates it: the thread's next allocation of that length
// (or up to kPendingSlack bytes more), among its next kPendingAllocations,
// goes to the secret heap too (Apache's mod_ssl keeps a decrypted key so, in
// a buffer of its own, to load it again at each restart without asking for
// the passphrase). A call that writes ends the wait: its buffer exists by
// then. A signal handler's allocation of that length meanwhile takes the
// place instead. The vector registers are cleared after the call.
namespace {

constexpr uint32_t kPendingAllocations = 8;

#define SECMEM_XMM_CLOBBERS                                                                                           \
  "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", \
      "xmm14", "xmm15"

// The vector registers, which the real call leaves holding key bytes (its
// memcpy of the key into the encoding): the dynamic linker's lazy binding
// of the next function the thread calls for the first time saves them all
// on the stack (_dl_runtime_resolve_xsavec), where they stay (an Ed25519
// key's 32 bytes, found there by the exposure test, twice over; none with
// LD_BIND_NOW=1). All of them are call-clobbered: a call may change them.
// AVX-512's 16 to 31 too (glibc's memcpy uses ymm16 and up there).
__attribute__((noinline)) void clear_vector_registers() {
#if defined(__x86_64__)
  if (int level = secmem::cpu::vector_registers(); level == 2) {
    asm volatile("vzeroall\n\t"
                 "vpxord %%zmm16, %%zmm16, %%zmm16\n\tvpxord %%zmm17, %%zmm17, %%zmm17\n\t"
                 "vpxord %%zmm18, %%zmm18, %%zmm18\n\tvpxord %%zmm19, %%zmm19, %%zmm19\n\t"
                 "vpxord %%zmm20, %%zmm20, %%zmm20\n\tvpxord %%zmm21, %%zmm21, %%zmm21\n\t"
                 "vpxord %%zmm22, %%zmm22, %%zmm22\n\tvpxord %%zmm23, %%zmm23, %%zmm23\n\t"
                 "vpxord %%zmm24, %%zmm24, %%zmm24\n\tvpxord %%zmm25, %%zmm25, %%zmm25\n\t"
                 "vpxord %%zmm26, %%zmm26, %%zmm26\n\tvpxord %%zmm27, %%zmm27, %%zmm27\n\t"
                 "vpxord %%zmm28, %%zmm28, %%zmm28\n\tvpxord %%zmm29, %%zmm29, %%zmm29\n\t"
                 "vpxord %%zmm30, %%zmm30, %%zmm30\n\tvpxord %%zmm31, %%zmm31, %%zmm31"
                 :
                 :
                 : SECMEM_XMM_CLOBBERS);
  } else if (level == 1) {
    asm volatile("vzeroall" : : : SECMEM_XMM_CLOBBERS);
  } else {
    asm volatile("pxor %%xmm0, %%xmm0\n\tpxor %%xmm1, %%xmm1\n\tpxor %%xmm2, %%xmm2\n\tpxor %%xmm3, %%xmm3\n\t"
                 "pxor %%xmm4, %%xmm4\n\tpxor %%xmm5, %%xmm5\n\tpxor %%xmm6, %%xmm6\n\tpxor %%xmm7, %%xmm7\n\t"
                 "pxor %%xmm8, %%xmm8\n\tpxor %%xmm9, %%xmm9\n\tpxor %%xmm10, %%xmm10\n\tpxor %%xmm11, %%xmm11\n\t"
                 "pxor %%xmm12, %%xmm12\n\tpxor %%xmm13, %%xmm13\n\tpxor %%xmm14, %%xmm14\n\tpxor %%xmm15, %%xmm15"
                 :
                 :
                 : SECMEM_XMM_CLOBBERS);
  }
#endif
}
#undef SECMEM_XMM_CLOBBERS

struct PendingDer {
  size_t size;
  uint32_t left; // allocations still looked at
};
__thread PendingDer t_pending_der __attribute__((tls_model("initial-exec"))) = {0, 0};

void end_pending_der() {
  t_pending_der = {0, 0};
  secmem_tag_depth_tls &= ~SECMEM_INTERPOSE_TAG_PENDING;
}

} // namespace

// The buffer may be a little larger than the length: a std::string sized to
// it allocates one byte more for its terminator (found by the adversarial
// review: 6 RSA components readable), a container may round up.
constexpr size_t kPendingSlack = 64;

bool secmem::shim::take_pending_der(size_t n) {
  bool match = n >= t_pending_der.size && n - t_pending_der.size <= kPendingSlack;
  if (match || t_pending_der.left <= 1) {
    end_pending_der();
  } else {
    --t_pending_der.left;
  }
  return match;
}

SHIM_API int i2d_PrivateKey(const EVP_PKEY *key, unsigned char **pp) {
  const void *caller = __builtin_return_address(0);
  static NextCache cache;
  auto real = next_for_caller(cache, "i2d_PrivateKey", caller, &i2d_PrivateKey);
  if (real == nullptr) return -1;
  int length = 0;
  {
    TagScope secret;
    length = real(key, pp);
  }
  clear_vector_registers();
  if (pp != nullptr || length <= 0) {
    if ((secmem_tag_depth_tls & SECMEM_INTERPOSE_TAG_PENDING) != 0) end_pending_der();
    return length;
  }
  t_pending_der = {static_cast<size_t>(length), kPendingAllocations};
  secmem_tag_depth_tls |= SECMEM_INTERPOSE_TAG_PENDING;
  return length;
}
