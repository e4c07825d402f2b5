// libFuzzer target: random sequences of C API operations against a model of
// every live block (its size, its bytes, sealed or not). Any disagreement,
// and any crash or sanitizer report, is a finding. Built by
// `meson setup -Dfuzz=true` with clang (./bootstrap fuzz; a short run is part
// of ./bootstrap test).
#include <fuzzer/FuzzedDataProvider.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "secmem/secmem.h"

namespace {

struct Block {
  unsigned char *p;
  size_t size;
  uint8_t seed; // contents: (seed + i) & 0xff
  bool sealed;
};

[[noreturn]] void fail(const char *what, const Block &b) {
  fprintf(stderr, "heap_fuzzer: %s (block %p, size %zu)\n", what, static_cast<void *>(b.p), b.size);
  abort();
}

void fill(Block &b, uint8_t seed) {
  b.seed = seed;
  for (size_t i = 0; i < b.size; ++i) b.p[i] = static_cast<unsigned char>(seed + i);
}

void check(const Block &b) {
  if (secmem_usable_size(b.p) != b.size) fail("usable size differs from the size asked for", b);
  if (!secmem_owns(b.p) || !secmem_owns(b.p + b.size - 1)) fail("not owned", b);
  for (size_t i = 0; i < b.size; ++i)
    if (b.p[i] != static_cast<unsigned char>(b.seed + i)) fail("contents changed", b);
}

// Sizes: mostly small, sometimes around the class and page boundaries, rarely huge.
size_t pick_size(FuzzedDataProvider &in) {
  switch (in.ConsumeIntegralInRange<int>(0, 7)) {
  case 0: return in.ConsumeIntegralInRange<size_t>(1, 64);
  case 1: return in.ConsumeIntegralInRange<size_t>(1, 8192);
  case 2: return 4096 * in.ConsumeIntegralInRange<size_t>(1, 8) + in.ConsumeIntegralInRange<size_t>(0, 2) - 1;
  case 3: return in.ConsumeIntegralInRange<size_t>(8193, 300000);
  case 4: return in.ConsumeBool() ? (size_t{1} << 20) + 1 : (size_t{3} << 20) - 7;
  default: return in.ConsumeIntegralInRange<size_t>(1, 1024);
  }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  FuzzedDataProvider in(data, size);
  std::vector<Block> live;
  while (in.remaining_bytes() > 0 && live.size() < 64) {
    int op = in.ConsumeIntegralInRange<int>(0, 7);
    size_t pick = live.empty() ? 0 : in.ConsumeIntegralInRange<size_t>(0, live.size() - 1);
    uint8_t seed = in.ConsumeIntegral<uint8_t>();
    switch (op) {
    case 0: // malloc
    case 1: { // calloc
      size_t n = pick_size(in);
      auto *p = static_cast<unsigned char *>(op == 0 ? secmem_malloc(n) : secmem_calloc(1, n));
      if (p == nullptr) break;
      Block b{p, n, 0, false};
      for (size_t i = 0; i < n; ++i)
        if (p[i] != 0) fail("new block not zero", b);
      fill(b, seed);
      live.push_back(b);
      break;
    }
    case 2: { // aligned_alloc
      size_t alignment = size_t{16} << in.ConsumeIntegralInRange<int>(0, 13);
      size_t n = pick_size(in);
      auto *p = static_cast<unsigned char *>(secmem_aligned_alloc(alignment, n));
      if (p == nullptr) break;
      if (reinterpret_cast<uintptr_t>(p) % alignment != 0) fail("misaligned", Block{p, n, 0, false});
      Block b{p, n, 0, false};
      fill(b, seed);
      live.push_back(b);
      break;
    }
    case 3: { // realloc
      if (live.empty() || live[pick].sealed) break;
      Block &b = live[pick];
      check(b);
      size_t n = pick_size(in);
      auto *p = static_cast<unsigned char *>(secmem_realloc(b.p, n));
      if (p == nullptr) break; // b untouched
      Block moved{p, n, b.seed, false};
      size_t kept = n < b.size ? n : b.size;
      for (size_t i = 0; i < kept; ++i)
        if (p[i] != static_cast<unsigned char>(b.seed + i)) fail("realloc lost contents", moved);
      for (size_t i = kept; i < n; ++i) p[i] = static_cast<unsigned char>(b.seed + i);
      b = moved;
      break;
    }
    case 4: { // free
      if (live.empty()) break;
      Block b = live[pick];
      if (b.sealed && secmem_access_begin(b.p, SECMEM_READ) == 0) {
        check(b);
        secmem_access_end(b.p, SECMEM_READ);
      } else if (!b.sealed) {
        check(b);
      }
      secmem_free(b.p);
      if (secmem_owns(b.p)) fail("owned after free", b);
      live.erase(live.begin() + static_cast<ptrdiff_t>(pick));
      break;
    }
    case 5: { // sealed_alloc, filled inside a write scope
      size_t n = pick_size(in);
      auto *p = static_cast<unsigned char *>(secmem_sealed_alloc(n));
      if (p == nullptr) break;
      Block b{p, n, 0, true};
      if (secmem_access_begin(p, SECMEM_WRITE) != 0) fail("access_begin refused", b);
      fill(b, seed);
      if (secmem_access_end(p, SECMEM_WRITE) != 0) fail("access_end refused", b);
      live.push_back(b);
      break;
    }
    case 6: { // read a block (in a scope if sealed); unbalanced ends are refused
      if (live.empty()) break;
      Block &b = live[pick];
      if (b.sealed) {
        if (secmem_access_end(b.p, SECMEM_READ) != -1) fail("access_end without begin accepted", b);
        if (secmem_access_begin(b.p, SECMEM_READ) != 0) fail("access_begin refused", b);
        check(b);
        if (secmem_access_end(b.p, SECMEM_READ) != 0) fail("access_end refused", b);
      } else {
        check(b);
        if (secmem_access_begin(b.p, SECMEM_READ) != -1) fail("access_begin on an unsealed block accepted", b);
      }
      break;
    }
    default: { // rewrite a block's contents
      if (live.empty()) break;
      Block &b = live[pick];
      if (b.sealed) secmem_access_begin(b.p, SECMEM_WRITE);
      fill(b, seed);
      if (b.sealed) secmem_access_end(b.p, SECMEM_WRITE);
      break;
    }
    }
  }
  for (Block &b : live) secmem_free(b.p);
  secmem_stats stats{};
  secmem_get_stats(&stats);
  if (stats.in_use_secret + stats.in_use_locked + stats.in_use_unlocked != 0) {
    fprintf(stderr, "heap_fuzzer: %zu bytes still in use after every block was freed\n",
            stats.in_use_secret + stats.in_use_locked + stats.in_use_unlocked);
    abort();
  }
  return 0;
}
