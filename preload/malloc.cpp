// The malloc family. One routed body serves every allocating variant (as
// hardened_malloc's alloc_aligned serves its aligned ones): a secret source
// sends the request to the secret heap, the bootstrap arena serves it while
// the next allocator is being found, and otherwise the next allocator's own
// function answers, called exactly as the program called ours. A block keeps
// the heap it came from: free, realloc and malloc_usable_size of a secret
// pointer (a range check) go to the secret heap.
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>

#include "api/arg_checks.h"
#include "shim.h"

using namespace secmem;
using namespace secmem::shim;

namespace {

#define CALLER() __builtin_return_address(0)

// secret_alloc refuses an alignment that is not a power of two (EINVAL); the
// next allocator checks its own.
template <typename NextCall>
[[gnu::always_inline]] inline void *route(size_t alignment, size_t n, const void *caller, NextCall next_call) {
  Source source = secret_source(caller);
  if (__builtin_expect(source != Source::kNone, 0)) return secret_alloc(alignment, n, source);
  if (__builtin_expect(!resolve(), 0)) return bootstrap_alloc(n, alignment);
  if (pending_der(n, caller)) return secret_alloc(alignment, n, Source::kOpenSSL);
  return next_call();
}

__attribute__((noinline)) void *malloc_slow(size_t n, const void *caller) {
  return route(16, n, caller, [n] { return g_next.malloc.get()(n); });
}

inline bool ours(const void *p) { return is_secret(p) || bootstrap_owns(p); }

} // namespace

// Until the next allocator is known, free's call for every pointer (shim.h).
__attribute__((noinline)) void secmem::shim::free_slow(void *p) {
  if (is_secret(p)) return secret_free(p);
  if (bootstrap_owns(p)) return; // never reused
  if (resolve()) g_next.free.get()(p);
}

// The fast paths have no stack frame: a few loads and a jump to the next
// allocator. Over a forwarder that only jumps, they cost 1.5% of glibc's
// malloc/free pairs of 16 B to 4 KiB (1.037x against 1.021x).
SHIM_API void *malloc(size_t n) {
  auto fn = g_untagged_malloc.load(std::memory_order_acquire);
  if (__builtin_expect(fn != nullptr && secmem_tag_depth_tls == 0, 1)) return fn(n);
  return malloc_slow(n, CALLER());
}

SHIM_API void free(void *p) {
  auto fn = g_plain_free.load(std::memory_order_acquire); // never null
  if (__builtin_expect(below_ours(p) || !ours(p), 1)) return fn(p);
  free_slow(p);
}

SHIM_API void *calloc(size_t count, size_t size) {
  size_t total = 0;
  if (!args::checked_mul(count, size, &total)) {
    errno = ENOMEM;
    return nullptr;
  }
  // Secret memory is always zero; so is the bootstrap arena.
  return route(16, total, CALLER(), [=] { return g_next.calloc.get()(count, size); });
}

// glibc's alignment rules, for requests that go to the secret heap (the
// next allocator applies its own to the rest): memalign takes any alignment
// up to SIZE_MAX / 2 + 1 (more: EINVAL), rounding it up to a power of two
// (at most 16 is malloc's own); posix_memalign wants a power-of-two multiple
// of sizeof(void *) (else EINVAL, returned); aligned_alloc is memalign up to
// glibc 2.37 and wants a power of two from 2.38 (asked of glibc itself, once).
namespace {

size_t memalign_alignment(size_t alignment) {
  if (alignment <= 16) return 16;
  if (alignment > SIZE_MAX / 2 + 1) return 0;
  if (args::is_power_of_two(alignment)) return alignment;
  size_t rounded = 32;
  while (rounded < alignment) rounded <<= 1;
  return rounded;
}

void *secret_memalign(size_t alignment, size_t n, Source source) {
  size_t rounded = memalign_alignment(alignment);
  if (rounded == 0) {
    errno = EINVAL;
    return nullptr;
  }
  return secret_alloc(rounded, n, source);
}

// Whether the next aligned_alloc refuses an alignment that is not a power of two.
bool aligned_alloc_wants_power_of_two() {
  static std::atomic<int> answer{-1};
  int known = answer.load(std::memory_order_relaxed);
  if (known < 0 && resolve()) {
    int saved = errno;
    void *p = g_next.aligned_alloc.get()(24, 1);
    known = p == nullptr ? 1 : 0;
    if (p != nullptr) g_next.free.get()(p);
    errno = saved;
    answer.store(known, std::memory_order_relaxed);
  }
  return known == 1;
}

} // namespace

SHIM_API void *memalign(size_t alignment, size_t n) {
  Source source = secret_source(CALLER());
  if (__builtin_expect(source != Source::kNone, 0)) return secret_memalign(alignment, n, source);
  if (__builtin_expect(!resolve(), 0)) return bootstrap_alloc(n, memalign_alignment(alignment));
  return g_next.memalign.get()(alignment, n);
}

SHIM_API void *aligned_alloc(size_t alignment, size_t n) {
  Source source = secret_source(CALLER());
  if (__builtin_expect(source != Source::kNone, 0)) {
    if (!args::is_power_of_two(alignment) && aligned_alloc_wants_power_of_two()) {
      errno = EINVAL;
      return nullptr;
    }
    return secret_memalign(alignment, n, source);
  }
  if (__builtin_expect(!resolve(), 0)) return bootstrap_alloc(n, memalign_alignment(alignment));
  return g_next.aligned_alloc.get()(alignment, n);
}

// Answers with an error code and leaves errno alone (POSIX); its own shape
// of the routed body.
SHIM_API int posix_memalign(void **out, size_t alignment, size_t n) {
  Source source = secret_source(CALLER());
  if (__builtin_expect(source != Source::kNone, 0)) {
    if (!args::valid_posix_memalign_alignment(alignment)) return EINVAL;
    int saved = errno;
    void *p = secret_memalign(alignment, n, source);
    errno = saved;
    if (p == nullptr) return ENOMEM;
    *out = p;
    return 0;
  }
  if (__builtin_expect(!resolve(), 0)) {
    *out = bootstrap_alloc(n, alignment);
    return *out != nullptr ? 0 : ENOMEM;
  }
  return g_next.posix_memalign.get()(out, alignment, n);
}

SHIM_API void *valloc(size_t n) {
  return route(args::kPvallocPage, n, CALLER(), [n] { return g_next.valloc.get()(n); });
}

SHIM_API void *pvalloc(size_t n) {
  size_t rounded = 0;
  if (!args::pvalloc_size(n, &rounded)) {
    errno = ENOMEM;
    return nullptr;
  }
  return route(args::kPvallocPage, rounded, CALLER(), [n] { return g_next.pvalloc.get()(n); });
}

namespace {

// The next allocator's block p, resized to n bytes in the secret heap: the
// buffer of a private key's DER encoding that a program grows to a new
// key's length (pending_der; mod_ssl reuses its buffer at a restart). Its
// old bytes are cleared before the next allocator has it back. Where the
// secret heap has no room, or the old block's size cannot be asked, it is
// resized where it is.
void *realloc_into_secret(void *p, size_t n) {
  auto usable_size = g_next.malloc_usable_size.get();
  void *moved = usable_size != nullptr ? secret_alloc(16, n, Source::kOpenSSL) : nullptr;
  if (moved == nullptr) return g_next.realloc.get()(p, n);
  size_t old = usable_size(p);
  memcpy(moved, p, old < n ? old : n);
  explicit_bzero(p, old);
  g_next.free.get()(p);
  return moved;
}

} // namespace

// Only realloc(NULL, n) is a new allocation; a block is resized in its own
// heap (but for a key's DER buffer: realloc_into_secret).
SHIM_API void *realloc(void *p, size_t n) {
  if (is_secret(p)) return secret_realloc(p, n);
  if (p == nullptr) return route(16, n, CALLER(), [n] { return g_next.realloc.get()(nullptr, n); });
  if (__builtin_expect(bootstrap_owns(p), 0)) {
    void *moved = malloc(n);
    if (moved != nullptr) memcpy(moved, p, bootstrap_size(p) < n ? bootstrap_size(p) : n);
    return moved;
  }
  if (!resolve()) return bootstrap_alloc(n, 16);
  if (n != 0 && pending_der(n, CALLER())) return realloc_into_secret(p, n);
  return g_next.realloc.get()(p, n);
}

SHIM_API void *reallocarray(void *p, size_t count, size_t size) {
  size_t total = 0;
  if (!args::checked_mul(count, size, &total)) {
    errno = ENOMEM;
    return nullptr;
  }
  return realloc(p, total);
}

SHIM_API size_t malloc_usable_size(void *p) {
  if (is_secret(p)) return secmem_usable_size(p);
  if (p == nullptr) return 0;
  if (bootstrap_owns(p)) return bootstrap_size(p);
  if (!resolve()) return 0;
  return g_next.malloc_usable_size.get()(p);
}

SHIM_API void free_sized(void *p, size_t n) {
  if (ours(p) || !resolve() || g_next.free_sized.get() == nullptr) return free(p);
  g_next.free_sized.get()(p, n);
}

SHIM_API void free_aligned_sized(void *p, size_t alignment, size_t n) {
  if (ours(p) || !resolve() || g_next.free_aligned_sized.get() == nullptr) return free(p);
  g_next.free_aligned_sized.get()(p, alignment, n);
}
