// Run three ways by bench/run: plainly, with OpenSSL's own secure heap
// (BENCH_OPENSSL_SECURE_HEAP=1), and under libsecmem_preload.so.
//  - MallocFree: untagged malloc/free of mixed sizes (must not slow down)
//  - RsaSign, EcdsaSign: RSA-2048 and ECDSA P-256 / SHA-256 signatures
//    (private keys in secure memory where there is one)
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <cstring>
#include <openssl/crypto.h>
#include <openssl/ec.h>
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

// OpenSSL's own secure heap, when this run asks for it, before any key exists.
void maybe_secure_heap() {
  static const bool done = [] {
    const char *secure = getenv("BENCH_OPENSSL_SECURE_HEAP");
    if (secure != nullptr && strcmp(secure, "1") == 0 && CRYPTO_secure_malloc_init(size_t{1} << 20, 16) == 0) abort();
    return true;
  }();
  (void)done;
}

EVP_PKEY *rsa_key() {
  maybe_secure_heap();
  static EVP_PKEY *key = EVP_RSA_gen(2048);
  return key;
}

EVP_PKEY *ec_key() {
  maybe_secure_heap();
  static EVP_PKEY *key = EVP_EC_gen("P-256");
  return key;
}

void Sign(benchmark::State &state, EVP_PKEY *key) {
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
void RsaSign(benchmark::State &state) { Sign(state, rsa_key()); }
void EcdsaSign(benchmark::State &state) { Sign(state, ec_key()); }

BENCHMARK(RsaSign)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(EcdsaSign)->UseRealTime()->Unit(benchmark::kMicrosecond);

BENCHMARK_MAIN();
