// libFuzzer target: random sequences of C API operations against a model of
// every live block (its size, its bytes, sealed or not: tests/block_model.h,
// shared with the model test). Any disagreement,
// and any crash or sanitizer report, is a finding. Built by
// `meson setup -Dfuzz=true` with clang (./bootstrap fuzz; a short run is part
// of ./bootstrap test).
#include <fuzzer/FuzzedDataProvider.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "block_model.h"
#include "secmem/secmem.h"

using secmem::test::Block;
using secmem::test::BlockModel;

namespace {

[[noreturn]] void fail(const char *what, const Block &b) {
  fprintf(stderr, "heap_fuzzer: %s (block %p, size %zu)\n", what, static_cast<void *>(b.p), b.size);
  abort();
}

// The model's check, and what the fuzzer adds since it never asks for 0 bytes: the exact usable size, the last
// byte owned.
void check(const BlockModel &live, size_t i) {
  const Block &b = live[i];
  if (secmem_usable_size(b.p) != b.size) fail("usable size differs from the size asked for", b);
  if (!secmem_owns(b.p + b.size - 1)) fail("not owned", b);
  live.verify(i);
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
  BlockModel live(fail);
  while (in.remaining_bytes() > 0 && live.size() < 64) {
    int op = in.ConsumeIntegralInRange<int>(0, 7);
    size_t pick = live.empty() ? 0 : in.ConsumeIntegralInRange<size_t>(0, live.size() - 1);
    uint8_t seed = in.ConsumeIntegral<uint8_t>();
    switch (op) {
    case 0:   // malloc
    case 1: { // calloc
      size_t n = pick_size(in);
      void *p = op == 0 ? secmem_malloc(n) : secmem_calloc(1, n);
      if (p != nullptr) live.add(p, n, seed);
      break;
    }
    case 2: { // aligned_alloc
      size_t alignment = size_t{16} << in.ConsumeIntegralInRange<int>(0, 13);
      size_t n = pick_size(in);
      void *p = secmem_aligned_alloc(alignment, n);
      if (p != nullptr) live.add(p, n, seed, alignment);
      break;
    }
    case 3: { // realloc
      if (live.empty() || live[pick].sealed) break;
      check(live, pick);
      size_t n = pick_size(in);
      void *p = secmem_realloc(live[pick].p, n);
      if (p != nullptr) live.moved(pick, p, n); // on NULL the block is untouched
      break;
    }
    case 4: { // free
      if (live.empty()) break;
      const Block &b = live[pick];
      if (!b.sealed) {
        check(live, pick);
      } else if (secmem_access_begin(b.p, SECMEM_READ) == 0) {
        check(live, pick);
        secmem_access_end(b.p, SECMEM_READ);
      }
      live.release(pick);
      break;
    }
    case 5: { // sealed_alloc, filled inside a write scope
      size_t n = pick_size(in);
      void *p = secmem_sealed_alloc(n);
      if (p != nullptr) live.add(p, n, seed, 16, true);
      break;
    }
    case 6: { // read a block (in a scope if sealed); unbalanced ends are refused
      if (live.empty()) break;
      const Block &b = live[pick];
      if (b.sealed) {
        if (secmem_access_end(b.p, SECMEM_READ) != -1) fail("access_end without begin accepted", b);
        if (secmem_access_begin(b.p, SECMEM_READ) != 0) fail("access_begin refused", b);
        check(live, pick);
        if (secmem_access_end(b.p, SECMEM_READ) != 0) fail("access_end refused", b);
      } else {
        check(live, pick);
        if (secmem_access_begin(b.p, SECMEM_READ) != -1) fail("access_begin on an unsealed block accepted", b);
      }
      break;
    }
    default: // rewrite a block's contents (in a write scope if sealed)
      if (!live.empty()) live.rewrite(pick, seed);
      break;
    }
  }
  for (const Block &b : live.blocks()) secmem_free(b.p);
  if (size_t in_use = secmem::test::in_use_bytes(); in_use != 0) {
    fprintf(stderr, "heap_fuzzer: %zu bytes still in use after every block was freed\n", in_use);
    abort();
  }
  return 0;
}
