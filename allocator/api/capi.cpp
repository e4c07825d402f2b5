// The C API: argument checks and errno, then the heap does the work.
#include <cerrno>
#include <cstdint>
#include <cstring>

#include "api/arg_checks.h"
#include "heap/heap.h"
#include "secmem/internal/interpose.h"
#include "secmem/secmem.h"

using namespace secmem;

extern "C" {

void *secmem_malloc(size_t size) { return heap::allocate(size); }

void *secmem_calloc(size_t nmemb, size_t size) {
  size_t total = 0;
  if (!args::checked_mul(nmemb, size, &total)) {
    errno = ENOMEM;
    return nullptr;
  }
  return heap::allocate(total); // free secret memory is always zero
}

void *secmem_realloc(void *p, size_t size) { return heap::reallocate(p, size); }

void *secmem_aligned_alloc(size_t alignment, size_t size) {
  if (!args::valid_alignment(alignment, heap::kMaxAlignment)) {
    errno = EINVAL;
    return nullptr;
  }
  return heap::allocate_aligned(alignment, size);
}

void secmem_free(void *p) { heap::release(p); }

size_t secmem_usable_size(const void *p) { return heap::usable_size(p); }

int secmem_owns(const void *p) { return heap::owns(p) ? 1 : 0; }

// Accumulates the XOR of all the bytes, 8 at a time, then turns "any bit set"
// into 0 without a branch. The empty asm makes `diff` opaque at every step, so
// the compiler cannot end the loop early once a difference is seen.
int secmem_ct_equal(const void *a, const void *b, size_t n) {
  const auto *x = static_cast<const unsigned char *>(a);
  const auto *y = static_cast<const unsigned char *>(b);
  uint64_t diff = 0;
  size_t i = 0;
  for (; n - i >= sizeof(uint64_t); i += sizeof(uint64_t)) {
    uint64_t u = 0;
    uint64_t v = 0;
    memcpy(&u, x + i, sizeof u);
    memcpy(&v, y + i, sizeof v);
    diff |= u ^ v;
    __asm__ volatile("" : "+r"(diff));
  }
  for (; i < n; ++i) {
    diff |= static_cast<uint64_t>(x[i] ^ y[i]);
    __asm__ volatile("" : "+r"(diff));
  }
  return static_cast<int>(1 ^ ((diff | (0 - diff)) >> 63));
}

static_assert(SECMEM_READ == heap::kAccessRead && SECMEM_WRITE == heap::kAccessWrite);

void *secmem_sealed_alloc(size_t size) { return heap::allocate_sealed(size); }

static int access_result(int err) {
  if (err == 0) return 0;
  errno = err;
  return -1;
}

int secmem_access_begin(void *p, int mode) { return access_result(heap::change_access(p, mode, true)); }

int secmem_access_end(void *p, int mode) { return access_result(heap::change_access(p, mode, false)); }

int secmem_get_stats(struct secmem_stats *out) {
  if (out == nullptr) {
    errno = EINVAL;
    return -1;
  }
  heap::get_stats(out);
  return 0;
}

const char *secmem_backend_name(void) { return heap::backend_name(); }

__attribute__((visibility("default"), tls_model("initial-exec"))) __thread unsigned secmem_tag_depth_tls = 0;

// The depth is the word's low bits; its top bit is an interposer's
// (SECMEM_INTERPOSE_TAG_PENDING, interpose.h), which a scope never changes.
void secmem_tag_begin(void) {
  if ((secmem_tag_depth_tls & SECMEM_INTERPOSE_TAG_DEPTH) != SECMEM_INTERPOSE_TAG_DEPTH) ++secmem_tag_depth_tls;
}

void secmem_tag_end(void) {
  if ((secmem_tag_depth_tls & SECMEM_INTERPOSE_TAG_DEPTH) > 0) --secmem_tag_depth_tls;
}

unsigned secmem_tag_depth(void) { return secmem_tag_depth_tls & SECMEM_INTERPOSE_TAG_DEPTH; }

void secmem_reserved_range(uintptr_t *base, size_t *size) { heap::reserved_range(base, size); }

__attribute__((visibility("default"))) void secmem_interpose_watch_reaping(void) { heap::watch_reaping(); }

__attribute__((visibility("default"))) unsigned long long secmem_interpose_forks_done(void) {
  return heap::forks_done();
}

__attribute__((visibility("default"))) unsigned long long secmem_interpose_process_mark(int ask_kernel) {
  return heap::process_mark(ask_kernel != 0);
}

__attribute__((visibility("default"))) void secmem_interpose_child_reaped(int pid, unsigned long long before) {
  heap::child_reaped(pid, before);
}

} // extern "C"
