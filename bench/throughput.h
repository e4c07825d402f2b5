// alloc+free throughput of one peer: Lifo (allocate one, free it) and RandomBatch (allocate 64,
// free them in a shuffled order). Times are per alloc+free pair. Templates, instantiated where a
// peer is registered, so that its alloc and release are inlined (through a pointer: +15% at 32 B).
#pragma once

#include <benchmark/benchmark.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <random>

#include "peers.h"

namespace bench {

// Writes the block's first and last bytes, as a user of it would.
inline void touch(void *p, size_t n) {
  static_cast<volatile unsigned char *>(p)[0] = 1;
  static_cast<volatile unsigned char *>(p)[n - 1] = 1;
}

template <typename P> void Lifo(benchmark::State &state) {
  size_t n = static_cast<size_t>(state.range(0));
  for (auto _ : state) {
    void *p = P::alloc(n);
    if (p == nullptr) {
      state.SkipWithError("allocation failed");
      break;
    }
    touch(p, n);
    P::release(p, n);
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}

template <typename P> void RandomBatch(benchmark::State &state) {
  constexpr int kBatch = 64;
  size_t n = static_cast<size_t>(state.range(0));
  std::array<int, kBatch> order;
  for (int i = 0; i < kBatch; ++i) order[i] = i;
  std::shuffle(order.begin(), order.end(), std::mt19937(42 + state.thread_index()));
  std::array<void *, kBatch> blocks;
  for (auto _ : state) {
    for (int i = 0; i < kBatch; ++i) {
      blocks[i] = P::alloc(n);
      if (blocks[i] == nullptr) {
        state.SkipWithError("allocation failed");
        return;
      }
      touch(blocks[i], n);
    }
    for (int i : order) P::release(blocks[i], n);
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * kBatch);
}

// Registers every peer's "Lifo<name>" and "RandomBatch<name>" for every block size, on 1 and 2
// threads, or on 1 only (main, before the benchmarks run).
void register_throughput_benchmarks(bool one_thread_only);

// Registers peer P under name, in peers(): for measure.cpp, and for its throughput benchmarks.
template <typename P> bool register_peer(const char *name) {
  peers().push_back({name, P::alloc, P::release, Lifo<P>, RandomBatch<P>});
  return true;
}

} // namespace bench
