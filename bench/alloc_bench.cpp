// alloc+free throughput of one block, secmem against its peers, in one run.
// Issue 6 grows this into the full comparison; see README "Performance".
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <cstring>
#include <openssl/crypto.h>

#include "secmem/secmem.h"

namespace {

void touch(void *p, size_t n) {
  static_cast<volatile unsigned char *>(p)[0] = 1;
  static_cast<volatile unsigned char *>(p)[n - 1] = 1;
}

void GlibcBzero(benchmark::State &state) {
  size_t n = static_cast<size_t>(state.range(0));
  for (auto _ : state) {
    void *p = malloc(n);
    touch(p, n);
    explicit_bzero(p, n);
    free(p);
  }
}

void OpenSSLSecureHeap(benchmark::State &state) {
  size_t n = static_cast<size_t>(state.range(0));
  if (state.thread_index() == 0 && !CRYPTO_secure_malloc_initialized()) CRYPTO_secure_malloc_init(size_t{32} << 20, 16);
  for (auto _ : state) {
    void *p = CRYPTO_secure_malloc(n, __FILE__, __LINE__);
    touch(p, n);
    CRYPTO_secure_clear_free(p, n, __FILE__, __LINE__);
  }
}

void Secmem(benchmark::State &state) {
  size_t n = static_cast<size_t>(state.range(0));
  for (auto _ : state) {
    void *p = secmem_malloc(n);
    touch(p, n);
    secmem_free(p);
  }
}

} // namespace

BENCHMARK(GlibcBzero)->Arg(32)->Arg(256)->Arg(1024)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(OpenSSLSecureHeap)->Arg(32)->Arg(256)->Arg(1024)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(Secmem)->Arg(32)->Arg(256)->Arg(1024)->Threads(1)->Threads(2)->UseRealTime();

BENCHMARK_MAIN();
