// Bitmaps over arrays of 64-bit words: page maps, slot maps and free lists.
// The caller owns the words and their bounds; no allocation, no locking.
#pragma once

#include <cstddef>
#include <cstdint>

namespace secmem::bitmap {

inline constexpr uint32_t kWordBits = 64;

inline constexpr size_t words_for(size_t bits) { return (bits + kWordBits - 1) / kWordBits; }

inline bool test(const uint64_t *words, uint32_t bit) { return (words[bit / kWordBits] >> (bit % kWordBits)) & 1; }

inline void set(uint64_t *words, uint32_t bit) { words[bit / kWordBits] |= uint64_t{1} << (bit % kWordBits); }

inline void clear(uint64_t *words, uint32_t bit) { words[bit / kWordBits] &= ~(uint64_t{1} << (bit % kWordBits)); }

inline void set_range(uint64_t *words, uint32_t first, uint32_t count) {
  for (uint32_t bit = first; bit < first + count; ++bit) set(words, bit);
}

inline void clear_range(uint64_t *words, uint32_t first, uint32_t count) {
  for (uint32_t bit = first; bit < first + count; ++bit) clear(words, bit);
}

// The first set bit in [first, first + count), or UINT32_MAX when none is.
inline uint32_t find_set_in(const uint64_t *words, uint32_t first, uint32_t count) {
  for (uint32_t bit = first; bit < first + count; ++bit)
    if (test(words, bit)) return bit;
  return UINT32_MAX;
}

// Finds count clear bits in a row within [0, limit), starting at a multiple of
// align (a power of two or 1), the lowest such run first. False when none fits.
inline bool find_clear_run(const uint64_t *words, uint32_t limit, uint32_t count, uint32_t align, uint32_t *first) {
  uint32_t start = 0;
  while (count <= limit && start <= limit - count) {
    uint32_t blocked = find_set_in(words, start, count);
    if (blocked == UINT32_MAX) {
      *first = start;
      return true;
    }
    start = (blocked + align) / align * align; // the next aligned start past the set bit
  }
  return false;
}

// Clears and returns the lowest set bit among nwords words, or -1 when all are clear.
inline int take_lowest_set(uint64_t *words, uint32_t nwords) {
  for (uint32_t w = 0; w < nwords; ++w) {
    if (words[w] == 0) continue;
    int bit = __builtin_ctzll(words[w]);
    words[w] &= words[w] - 1;
    return static_cast<int>(w * kWordBits) + bit;
  }
  return -1;
}

} // namespace secmem::bitmap
