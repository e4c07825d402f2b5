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

// The bits [bit, bit + n) of one word, n <= 64 - bit % 64.
inline uint64_t word_mask(uint32_t bit, uint32_t n) {
  return (n == kWordBits ? ~uint64_t{0} : (uint64_t{1} << n) - 1) << (bit % kWordBits);
}

// Word at a time: a large block's page run is found and marked under the
// heap lock (bit at a time, the search was a third of a 64 KiB alloc+free).
inline void set_range(uint64_t *words, uint32_t first, uint32_t count) {
  while (count != 0) {
    uint32_t n = kWordBits - first % kWordBits < count ? kWordBits - first % kWordBits : count;
    words[first / kWordBits] |= word_mask(first, n);
    first += n;
    count -= n;
  }
}

inline void clear_range(uint64_t *words, uint32_t first, uint32_t count) {
  while (count != 0) {
    uint32_t n = kWordBits - first % kWordBits < count ? kWordBits - first % kWordBits : count;
    words[first / kWordBits] &= ~word_mask(first, n);
    first += n;
    count -= n;
  }
}

// The first bit in [from, limit) that is set (flip = 0) or clear (flip = ~0),
// or limit when none is.
inline uint32_t next_bit(const uint64_t *words, uint32_t from, uint32_t limit, uint64_t flip) {
  if (from >= limit) return limit;
  uint32_t w = from / kWordBits;
  uint64_t word = (words[w] ^ flip) & (~uint64_t{0} << (from % kWordBits));
  while (word == 0) {
    if (++w >= (limit + kWordBits - 1) / kWordBits) return limit;
    word = words[w] ^ flip;
  }
  uint32_t bit = w * kWordBits + static_cast<uint32_t>(__builtin_ctzll(word));
  return bit < limit ? bit : limit;
}

// The first set bit in [first, first + count), or UINT32_MAX when none is.
inline uint32_t find_set_in(const uint64_t *words, uint32_t first, uint32_t count) {
  uint32_t bit = next_bit(words, first, first + count, 0);
  return bit < first + count ? bit : UINT32_MAX;
}

// Finds count clear bits in a row within [0, limit), starting at a multiple of
// align (a power of two or 1), the lowest such run first. False when none fits.
inline bool find_clear_run(const uint64_t *words, uint32_t limit, uint32_t count, uint32_t align, uint32_t *first) {
  if (count == 0) {
    *first = 0;
    return true;
  }
  uint32_t start = 0;
  while (count <= limit && start <= limit - count) {
    start = next_bit(words, start, limit, ~uint64_t{0}); // the next clear bit
    start = (start + align - 1) / align * align;
    if (start > limit - count) return false;
    uint32_t blocked = next_bit(words, start, start + count, 0);
    if (blocked == start + count) {
      *first = start;
      return true;
    }
    start = blocked + 1;
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
