// The model of live secmem blocks that the model test and the fuzzer check the heap against: each
// block's size, alignment, sealed state, and contents derived from a seed. Header-only, no gtest and
// no exceptions: a disagreement goes to the driver's failure callback (the fuzzer aborts, the test
// records a failure) and the check that found it returns false.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "secmem/secmem.h"

namespace secmem::test {

// A byte pattern for block contents: deterministic from (seed, index).
inline uint8_t pattern_byte(uint64_t seed, size_t index) {
  uint64_t x = seed * 0x9e3779b97f4a7c15ull + index * 0xbf58476d1ce4e5b9ull;
  x ^= x >> 31;
  return static_cast<uint8_t>(x | 1); // never zero, so zeroing is always visible
}

// Writes the pattern of seed into bytes [from, n) of p.
inline void fill_pattern(void *p, size_t n, uint64_t seed, size_t from = 0) {
  auto *bytes = static_cast<unsigned char *>(p);
  for (size_t i = from; i < n; ++i) bytes[i] = pattern_byte(seed, i);
}

// The index of the first of the n bytes of p that is not the pattern of seed, or n.
inline size_t first_mismatch(const void *p, size_t n, uint64_t seed) {
  const auto *bytes = static_cast<const unsigned char *>(p);
  for (size_t i = 0; i < n; ++i)
    if (bytes[i] != pattern_byte(seed, i)) return i;
  return n;
}

inline bool holds_pattern(const void *p, size_t n, uint64_t seed) { return first_mismatch(p, n, seed) == n; }

// Bytes in live blocks over all of the heap's tiers (secret, locked, unlocked).
inline size_t in_use_bytes(const secmem_stats &s) { return s.in_use_secret + s.in_use_locked + s.in_use_unlocked; }
inline size_t in_use_bytes() {
  secmem_stats s{};
  secmem_get_stats(&s);
  return in_use_bytes(s);
}

// The index of the first of the n bytes of p that is not zero, or n.
inline size_t first_nonzero(const void *p, size_t n) {
  const auto *bytes = static_cast<const unsigned char *>(p);
  for (size_t i = 0; i < n; ++i)
    if (bytes[i] != 0) return i;
  return n;
}

struct Block {
  unsigned char *p = nullptr;
  size_t size = 0;
  uint64_t seed = 0;     // byte i holds pattern_byte(seed, i)
  size_t alignment = 16; // what the allocation call was asked for
  bool sealed = false;   // from secmem_sealed_alloc: readable only inside an access scope
};

// Told what disagreed and about which block; may return (the check then returns false) or abort.
using ModelFailure = void (*)(const char *what, const Block &block);

// The live blocks, in the order they were made.
class BlockModel {
public:
  explicit BlockModel(ModelFailure fail) : fail_(fail) {}

  bool empty() const { return live_.empty(); }
  size_t size() const { return live_.size(); }
  const Block &operator[](size_t i) const { return live_[i]; }
  const std::vector<Block> &blocks() const { return live_; }

  // p, just returned for size bytes: aligned, not live already and zero; then filled with the
  // pattern of seed (a sealed block inside a write scope) and recorded.
  bool add(void *p, size_t size, uint64_t seed, size_t alignment = 16, bool sealed = false) {
    Block b{static_cast<unsigned char *>(p), size, seed, alignment, sealed};
    if (reinterpret_cast<uintptr_t>(p) % alignment != 0) return fail("misaligned", b);
    if (find(p) != live_.size()) return fail("handed out twice", b);
    if (sealed && secmem_access_begin(p, SECMEM_WRITE) != 0) return fail("access_begin refused", b);
    if (first_nonzero(p, size) != size) return fail("fresh block is not zero", b);
    fill_pattern(p, size, seed);
    if (sealed && secmem_access_end(p, SECMEM_WRITE) != 0) return fail("access_end refused", b);
    live_.push_back(b);
    return true;
  }

  // Block i still owned and holding its pattern; a sealed one must be open for reading.
  bool verify(size_t i) const {
    const Block &b = live_[i];
    if (!secmem_owns(b.p)) return fail("not owned", b);
    if (!holds_pattern(b.p, b.size, b.seed)) return fail("contents changed", b);
    return true;
  }

  // Block i moved to q by a realloc to size bytes: q is no other live block and the first bytes are
  // kept; the rest is filled with the same pattern.
  bool moved(size_t i, void *q, size_t size) {
    Block old = live_[i];
    Block &b = live_[i];
    b = Block{static_cast<unsigned char *>(q), size, old.seed, 16, false};
    size_t other = find(q);
    if (other != i && other != live_.size()) return fail("realloc returned another live block", b);
    size_t kept = size < old.size ? size : old.size;
    if (first_mismatch(q, kept, old.seed) != kept) return fail("realloc lost contents", b);
    fill_pattern(q, size, old.seed, kept);
    return true;
  }

  // Block i rewritten with the pattern of seed (a sealed block inside a write scope).
  bool rewrite(size_t i, uint64_t seed) {
    Block &b = live_[i];
    if (b.sealed && secmem_access_begin(b.p, SECMEM_WRITE) != 0) return fail("access_begin refused", b);
    b.seed = seed;
    fill_pattern(b.p, b.size, seed);
    if (b.sealed && secmem_access_end(b.p, SECMEM_WRITE) != 0) return fail("access_end refused", b);
    return true;
  }

  // Frees block i, which must then no longer be owned.
  bool release(size_t i) {
    Block b = live_[i];
    forget(i);
    secmem_free(b.p);
    if (secmem_owns(b.p)) return fail("owned after free", b);
    return true;
  }

  // Drops block i, which the heap has freed by itself (a realloc to 0 bytes).
  void forget(size_t i) { live_.erase(live_.begin() + static_cast<ptrdiff_t>(i)); }

private:
  size_t find(const void *p) const {
    for (size_t i = 0; i < live_.size(); ++i)
      if (live_[i].p == p) return i;
    return live_.size();
  }

  bool fail(const char *what, const Block &b) const {
    fail_(what, b);
    return false;
  }

  ModelFailure fail_;
  std::vector<Block> live_;
};

} // namespace secmem::test
