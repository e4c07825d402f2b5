// Argument checks shared by the C API and the preload shim's wrappers, so
// that both answer a bad size or alignment the same way. Header-only.
#pragma once

#include <cstddef>
#include <cstdint>

namespace secmem::args {

// nmemb * size, or false on overflow (calloc, reallocarray, sodium_allocarray: ENOMEM).
inline bool checked_mul(size_t nmemb, size_t size, size_t *total) {
  return !__builtin_mul_overflow(nmemb, size, total);
}

inline bool is_power_of_two(size_t alignment) { return alignment != 0 && (alignment & (alignment - 1)) == 0; }

// aligned_alloc / memalign: a power of two up to max_alignment (else EINVAL).
inline bool valid_alignment(size_t alignment, size_t max_alignment = SIZE_MAX) {
  return is_power_of_two(alignment) && alignment <= max_alignment;
}

// posix_memalign: also a multiple of sizeof(void *) (else EINVAL).
inline bool valid_posix_memalign_alignment(size_t alignment) {
  return is_power_of_two(alignment) && alignment % sizeof(void *) == 0;
}

inline constexpr size_t kPvallocPage = 4096;

// pvalloc: size rounded up to whole pages (0: one page), or false on overflow (ENOMEM).
inline bool pvalloc_size(size_t size, size_t *rounded) {
  size_t r = (size + kPvallocPage - 1) & ~(kPvallocPage - 1);
  if (r < size) return false;
  *rounded = r == 0 ? kPvallocPage : r;
  return true;
}

} // namespace secmem::args
