// Run three ways by bench/run: plainly, with OpenSSL's own secure heap
// (BENCH_OPENSSL_SECURE_HEAP=1), and under libsecmem_preload.so.
//  - MallocFree: untagged malloc/free of mixed sizes (must not slow down)
//  - RsaSign: RSA-2048 / SHA-256 signatures (private key in secure memory)
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <cstring>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>

namespace {

void MallocFree(benchmark::State &state) {
  void *blocks[64];
  size_t round = 0;
  for (auto _ : state) {
    for (int i = 0; i < 64; ++i) {
      blocks[i] = malloc(16 + ((round + i) * 97) % 4080);
      static_cast<volatile char *>(blocks[i])[0] = 1;
    }
    for (int i = 63; i >= 0; --i) free(blocks[i]);
    ++round;
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * 64);
}

EVP_PKEY *rsa_key() {
  static EVP_PKEY *key = [] {
    const char *secure = getenv("BENCH_OPENSSL_SECURE_HEAP");
    if (secure != nullptr && strcmp(secure, "1") == 0 && CRYPTO_secure_malloc_init(size_t{1} << 20, 16) == 0)
      abort();
    return EVP_RSA_gen(2048);
  }();
  return key;
}

void RsaSign(benchmark::State &state) {
  EVP_PKEY *key = rsa_key();
  const unsigned char digest_input[32] = {1, 2, 3};
  unsigned char signature[256];
  for (auto _ : state) {
    size_t length = sizeof signature;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (EVP_DigestSignInit(ctx, nullptr, EVP_sha256(), nullptr, key) != 1 ||
        EVP_DigestSign(ctx, signature, &length, digest_input, sizeof digest_input) != 1)
      state.SkipWithError("signing failed");
    EVP_MD_CTX_free(ctx);
  }
}

} // namespace

BENCHMARK(MallocFree)->UseRealTime();
BENCHMARK(RsaSign)->UseRealTime()->Unit(benchmark::kMicrosecond);

BENCHMARK_MAIN();
