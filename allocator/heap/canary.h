// Overflow canaries. The slack between the requested size and the end of the
// block holds a canary in its first (up to) 8 bytes, derived from a random
// key and the block's address, with no zero byte; the rest of the slack stays
// zero. Free and realloc check both, so a linear overflow of even one byte (a
// string's terminating NUL) is caught when the block is freed. A request that
// fills its block exactly has no slack and no canary.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "platform/diag.h"

namespace secmem::canary {

inline constexpr size_t kBytes = 8;

inline uint64_t value(uint64_t key, const void *p) {
  uint64_t v = (key ^ reinterpret_cast<uintptr_t>(p)) * 0x9E3779B97F4A7C15ull;
  return v | 0x0101010101010101ull;
}

// The canary bytes of a block with requested bytes in use: what realloc must clear when it moves the end.
inline size_t span_after(size_t requested, size_t usable) {
  return usable - requested < kBytes ? usable - requested : kBytes;
}

inline void write(uint64_t key, void *p, size_t requested, size_t usable) {
  if (usable == requested) return; // no slack: nothing to compute
  char *slack = static_cast<char *>(p) + requested;
  uint64_t v = value(key, p);
  if (usable - requested >= kBytes) {
    memcpy(slack, &v, kBytes); // one 8-byte store
    return;
  }
  for (size_t i = 0; i < usable - requested; ++i) slack[i] = static_cast<char>(v >> (8 * i));
}

[[gnu::noinline, noreturn]] inline void overflow_found(const void *p, size_t requested) {
  diag::Line()
      .add("heap buffer overflow: the bytes after the ")
      .dec(requested)
      .add("-byte block at ")
      .hex(reinterpret_cast<uintptr_t>(p))
      .add(" were overwritten")
      .emit();
  abort();
}

inline void check(uint64_t key, const void *p, size_t requested, size_t usable) {
  if (usable == requested) return;
  const auto *slack = static_cast<const unsigned char *>(p) + requested;
  size_t n = usable - requested;
  uint64_t v = value(key, p);
  if (n >= kBytes) {
    uint64_t seen;
    memcpy(&seen, slack, kBytes);
    uint64_t rest = 0;
    for (size_t i = kBytes; i < n; ++i) rest |= slack[i];
    if (seen != v || rest != 0) overflow_found(p, requested);
    return;
  }
  for (size_t i = 0; i < n; ++i)
    if (slack[i] != static_cast<unsigned char>(v >> (8 * i))) overflow_found(p, requested);
}

} // namespace secmem::canary
