// Run three ways by bench/run: plainly, with OpenSSL's own secure heap
// (BENCH_OPENSSL_SECURE_HEAP=1), and under libsecmem_preload.so.
//  - MallocFree: untagged malloc/free of mixed sizes (must not slow down)
//  - RsaSign, EcdsaSign: RSA-2048 and ECDSA P-256 / SHA-256 signatures
//    (private keys in secure memory where there is one)
//  - ForkWithKey/KiB: fork + child _exit + waitpid of a process holding the
//    RSA and ECDSA keys of the signing runs (which come first) and KiB more
//    of secure-heap memory (0, 1024), and after a peak of 512 KiB given back
//    (Shrunk); ForkWithKeyExec: the child execs /bin/true instead, which
//    under the shim loads it and the library (stunnel's exec=, CGI, a shell);
//    ForkWithKeyBesideThreads: the keys only, four threads that signed with
//    the EC key idle beside the forking one (a threaded server: stunnel
//    forks from a connection's thread)
//  - SecurePairs: CRYPTO_secure_malloc/free pairs of 64 to 176 B, in 1 and 2
//    threads: the shim's secret path, which OpenSSL's secure heap and tagged
//    allocations take (bench/run runs it in a process of its own: after
//    ForkWithKey/1024, OpenSSL's own secure heap is full)
#include <benchmark/benchmark.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

extern char **environ;

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

// One signature of a fixed digest input with key (EVP_DigestSign, SHA-256).
bool sign_once(EVP_PKEY *key) {
  const unsigned char digest_input[32] = {1, 2, 3};
  unsigned char signature[256];
  size_t length = sizeof signature;
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  bool signed_ = EVP_DigestSignInit(ctx, nullptr, EVP_sha256(), nullptr, key) == 1 &&
                 EVP_DigestSign(ctx, signature, &length, digest_input, sizeof digest_input) == 1;
  EVP_MD_CTX_free(ctx);
  return signed_;
}

void Sign(benchmark::State &state, EVP_PKEY *key) {
  for (auto _ : state)
    if (!sign_once(key)) state.SkipWithError("signing failed");
}

void fork_exit_wait(benchmark::State &state) {
  for (auto _ : state) {
    pid_t pid = fork();
    if (pid == 0) _exit(0);
    if (pid < 0 || waitpid(pid, nullptr, 0) != pid) state.SkipWithError("fork failed");
  }
}

// The child runs a program: /bin/true, with this process's environment
// (LD_PRELOAD under the shim).
void fork_exec_wait(benchmark::State &state) {
  char true_path[] = "/bin/true";
  char *argv[] = {true_path, nullptr};
  for (auto _ : state) {
    pid_t pid = fork();
    if (pid == 0) {
      execve(true_path, argv, environ);
      _exit(127);
    }
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) != pid || status != 0) state.SkipWithError("fork or exec failed");
  }
}

// Live secure-heap memory in 64 KiB blocks, written once (as much as
// OpenSSL's own 1 MiB secure heap holds, in that run).
void hold_secure(size_t kib) {
  for (size_t i = 0; i < kib / 64; ++i) {
    void *p = OPENSSL_secure_malloc(64 << 10);
    if (p == nullptr) return;
    memset(p, 1, 64 << 10);
  }
}

} // namespace

void ForkWithKey(benchmark::State &state) {
  static size_t held_kib = 0;
  ec_key();
  if (auto kib = static_cast<size_t>(state.range(0)); kib > held_kib) {
    hold_secure(kib - held_kib);
    held_kib = kib;
  }
  fork_exit_wait(state);
}

void ForkWithKeyExec(benchmark::State &state) {
  ec_key();
  fork_exec_wait(state);
}

// Four threads that signed with the EC key (their caches hold what the
// secure heap gave them) idle while this one forks; they end with the run.
void ForkWithKeyBesideThreads(benchmark::State &state) {
  EVP_PKEY *key = ec_key();
  std::atomic<bool> stop{false};
  std::atomic<int> ready{0};
  std::vector<std::thread> idlers;
  for (int i = 0; i < 4; ++i)
    idlers.emplace_back([&] {
      if (!sign_once(key)) abort();
      ready++;
      while (!stop.load()) usleep(1000);
    });
  while (ready.load() < 4) usleep(1000);
  fork_exit_wait(state);
  stop = true;
  for (std::thread &idler : idlers) idler.join();
}

// A heap that once held 512 KiB and now holds the key only.
void ForkWithKeyShrunk(benchmark::State &state) {
  static const bool shrunk = [] {
    ec_key();
    void *blocks[8];
    for (void *&p : blocks) {
      p = OPENSSL_secure_malloc(64 << 10);
      if (p != nullptr) memset(p, 1, 64 << 10);
    }
    for (void *p : blocks) OPENSSL_secure_free(p);
    return true;
  }();
  (void)shrunk;
  fork_exit_wait(state);
}

BENCHMARK(MallocFree)->UseRealTime();
void RsaSign(benchmark::State &state) { Sign(state, rsa_key()); }
void EcdsaSign(benchmark::State &state) { Sign(state, ec_key()); }

BENCHMARK(RsaSign)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(EcdsaSign)->UseRealTime()->Unit(benchmark::kMicrosecond);
// In this order: the keys alone in a heap that held no more than they and
// the signing runs' memory (forks, then forks that exec), then Shrunk (its peak), then 1 MiB more, held
// for good. (Shrunk used to come first, and the keys alone were measured in
// a heap that had peaked: its guards and pages.)
BENCHMARK(ForkWithKey)->Arg(0)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(ForkWithKeyExec)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(ForkWithKeyBesideThreads)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(ForkWithKeyShrunk)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(ForkWithKey)->Arg(1024)->UseRealTime()->Unit(benchmark::kMicrosecond);

void SecurePairs(benchmark::State &state) {
  maybe_secure_heap();
  size_t round = 0;
  for (auto _ : state) {
    for (int i = 0; i < 64; ++i) {
      void *p = CRYPTO_secure_malloc(64 + ((round + i) % 8) * 16, __FILE__, __LINE__);
      if (p == nullptr) {
        state.SkipWithError("CRYPTO_secure_malloc failed");
        break;
      }
      static_cast<volatile char *>(p)[0] = 1;
      CRYPTO_secure_free(p, __FILE__, __LINE__);
    }
    ++round;
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * 64);
}
BENCHMARK(SecurePairs)->Threads(1)->Threads(2)->UseRealTime();

BENCHMARK_MAIN();
