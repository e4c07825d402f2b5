// alloc+free throughput: secmem against its peers, in one process.
//   GlibcBzero        glibc malloc + explicit_bzero + free (the floor)
//   OpenSSLSecureHeap CRYPTO_secure_malloc / CRYPTO_secure_clear_free (32 MiB arena)
//   Sodium            sodium_malloc / sodium_free (guard pages, mlock, canary)
//   JemallocMemfd     a jemalloc arena whose extents come from memfd_secret
//                     through extent hooks, + explicit_bzero (what a user
//                     would assemble from jemalloc). Linking jemalloc replaces
//                     the process's malloc, so this peer is built alone into
//                     jemalloc_bench (JEMALLOC_PEER_ONLY); bench/run runs both.
//   NaiveMemfd        one memfd_secret file and mapping per allocation
//   Secmem            secmem_malloc / secmem_free
// Patterns: Lifo (allocate one, free it) and RandomBatch (allocate 64,
// free them in a shuffled order). Times are per alloc+free pair.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <sys/resource.h>
#include <sys/wait.h>
#include <vector>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#ifdef JEMALLOC_PEER_ONLY
#include <jemalloc/jemalloc.h>
#else
struct extent_hooks_t;
#endif
#include <openssl/crypto.h>
#include <random>
#include <sodium.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "secmem/secmem.h"

namespace {

// ---- the peers, behind one interface ---------------------------------------------

struct GlibcBzero {
  static void *alloc(size_t n) { return malloc(n); }
  static void release(void *p, size_t n) {
    explicit_bzero(p, n);
    free(p);
  }
};

struct OpenSSLSecureHeap {
  static void *alloc(size_t n) {
    static const bool ready = CRYPTO_secure_malloc_init(size_t{32} << 20, 16) != 0;
    return ready ? CRYPTO_secure_malloc(n, __FILE__, __LINE__) : nullptr;
  }
  static void release(void *p, size_t n) { CRYPTO_secure_clear_free(p, n, __FILE__, __LINE__); }
};

struct Sodium {
  static void *alloc(size_t n) {
    static const bool ready = sodium_init() >= 0;
    return ready ? sodium_malloc(n) : nullptr;
  }
  static void release(void *p, size_t) { sodium_free(p); }
};

void *map_secret(size_t size) {
  long fd = syscall(447, O_CLOEXEC);
  if (fd < 0) return nullptr;
  void *p = MAP_FAILED;
  if (ftruncate(static_cast<int>(fd), static_cast<off_t>(size)) == 0)
    p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, static_cast<int>(fd), 0);
  close(static_cast<int>(fd));
  return p == MAP_FAILED ? nullptr : p;
}

struct NaiveMemfd {
  static size_t pages(size_t n) { return (n + 4095) & ~size_t{4095}; }
  static void *alloc(size_t n) { return map_secret(pages(n)); }
  static void release(void *p, size_t n) { munmap(p, pages(n)); } // secretmem pages are zeroed when freed
};

// jemalloc with memfd_secret extents.
struct Jemalloc {
  int flags = 0;
  bool ok = false;

  static void *extent_alloc(extent_hooks_t *, void *new_addr, size_t size, size_t alignment, bool *zero, bool *commit,
                            unsigned) {
    if (new_addr != nullptr) return nullptr;
    auto *raw = static_cast<char *>(map_secret(size + alignment));
    if (raw == nullptr) return nullptr;
    uintptr_t aligned = (reinterpret_cast<uintptr_t>(raw) + alignment - 1) & ~(uintptr_t{alignment} - 1);
    size_t head = aligned - reinterpret_cast<uintptr_t>(raw);
    if (head != 0) munmap(raw, head);
    if (alignment - head != 0) munmap(reinterpret_cast<char *>(aligned) + size, alignment - head);
    *zero = true;
    *commit = true;
    return reinterpret_cast<void *>(aligned);
  }
  static bool opt_out(extent_hooks_t *, void *, size_t, bool, unsigned) { return true; } // keep extents
  static void destroy(extent_hooks_t *, void *addr, size_t size, bool, unsigned) { munmap(addr, size); }
  static bool commit(extent_hooks_t *, void *, size_t, size_t, size_t, unsigned) { return false; }
  static bool refuse(extent_hooks_t *, void *, size_t, size_t, size_t, unsigned) { return true; } // no purge
  static bool split(extent_hooks_t *, void *, size_t, size_t, size_t, bool, unsigned) { return false; }
  static bool merge(extent_hooks_t *, void *, size_t, void *, size_t, bool, unsigned) { return false; }

  Jemalloc() {
#ifdef JEMALLOC_PEER_ONLY
    static extent_hooks_t hooks = {extent_alloc, opt_out, destroy, commit, refuse, refuse, refuse, split, merge};
    unsigned arena = 0;
    size_t arena_size = sizeof arena;
    extent_hooks_t *hooks_ptr = &hooks;
    if (mallctl("arenas.create", &arena, &arena_size, &hooks_ptr, sizeof hooks_ptr) != 0) return;
    flags = MALLOCX_ARENA(arena);
    ok = true;
#endif
  }
  static Jemalloc &get() {
    static Jemalloc instance;
    return instance;
  }
};

#ifdef JEMALLOC_PEER_ONLY
struct JemallocMemfd {
  static void *alloc(size_t n) { return Jemalloc::get().ok ? mallocx(n, Jemalloc::get().flags) : nullptr; }
  static void release(void *p, size_t n) {
    explicit_bzero(p, n);
    dallocx(p, Jemalloc::get().flags);
  }
};
#endif

struct Secmem {
  static void *alloc(size_t n) { return secmem_malloc(n); }
  static void release(void *p, size_t) { secmem_free(p); }
};

// ---- the patterns ----------------------------------------------------------------------

void touch(void *p, size_t n) {
  static_cast<volatile unsigned char *>(p)[0] = 1;
  static_cast<volatile unsigned char *>(p)[n - 1] = 1;
}

template <typename Peer> void Lifo(benchmark::State &state) {
  size_t n = static_cast<size_t>(state.range(0));
  for (auto _ : state) {
    void *p = Peer::alloc(n);
    if (p == nullptr) {
      state.SkipWithError("allocation failed");
      break;
    }
    touch(p, n);
    Peer::release(p, n);
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}

template <typename Peer> void RandomBatch(benchmark::State &state) {
  constexpr int kBatch = 64;
  size_t n = static_cast<size_t>(state.range(0));
  std::array<int, kBatch> order;
  for (int i = 0; i < kBatch; ++i) order[i] = i;
  std::shuffle(order.begin(), order.end(), std::mt19937(42 + state.thread_index()));
  std::array<void *, kBatch> blocks;
  for (auto _ : state) {
    for (int i = 0; i < kBatch; ++i) {
      blocks[i] = Peer::alloc(n);
      if (blocks[i] == nullptr) {
        state.SkipWithError("allocation failed");
        return;
      }
      touch(blocks[i], n);
    }
    for (int i : order) Peer::release(blocks[i], n);
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * kBatch);
}

void sizes(benchmark::internal::Benchmark *b) {
  for (int size : {16, 32, 256, 1024, 4096, 65536}) b->Arg(size);
  b->Threads(1)->Threads(2)->UseRealTime();
}

} // namespace

#define PEER(P)                                                                                                      \
  BENCHMARK_TEMPLATE(Lifo, P)->Apply(sizes);                                                                         \
  BENCHMARK_TEMPLATE(RandomBatch, P)->Apply(sizes)

#ifdef JEMALLOC_PEER_ONLY
PEER(JemallocMemfd);
#else
PEER(GlibcBzero);
PEER(OpenSSLSecureHeap);
PEER(Sodium);
PEER(NaiveMemfd);
PEER(Secmem);
#endif

// ---- footprint and fork, one measurement per process (bench/run spawns them) ------------
//   alloc_bench footprint PEER N SIZE: N live blocks; prints requested bytes,
//     the resident bytes they added, and the process's locked bytes
//     (VmLck: what RLIMIT_MEMLOCK sees) with them live
//   alloc_bench fork PEER MIB: MIB of live secrets, then the median time of
//     fork + child _exit + waitpid over 21 forks, in microseconds
//   alloc_bench churn PEER OPS: OPS random alloc/free operations over 2,048
//     slots (sizes 16 B to 4 KiB, one in 64 of 64 KiB); prints the page faults
//     taken during the workload, the kernel's direct-map splits meanwhile
//     (/proc/vmstat, machine-wide), and, as root, the distinct 2 MiB physical
//     blocks that ever held this process's memfd_secret pages (pagemap,
//     sampled every 256 operations and at the end)

namespace {

struct PeerOps {
  const char *name;
  void *(*alloc)(size_t);
  void (*release)(void *, size_t);
};

const PeerOps kPeerOps[] = {
#ifdef JEMALLOC_PEER_ONLY
    {"JemallocMemfd", JemallocMemfd::alloc, JemallocMemfd::release},
#else
    {"GlibcBzero", GlibcBzero::alloc, GlibcBzero::release},
    {"OpenSSLSecureHeap", OpenSSLSecureHeap::alloc, OpenSSLSecureHeap::release},
    {"Sodium", Sodium::alloc, Sodium::release},
    {"NaiveMemfd", NaiveMemfd::alloc, NaiveMemfd::release},
    {"Secmem", Secmem::alloc, Secmem::release},
#endif
};

// A field of /proc/self/smaps_rollup or /proc/self/status, in bytes.
size_t kib_field(const char *file, const char *field) {
  FILE *f = fopen(file, "r");
  char line[256];
  size_t value = 0, len = strlen(field);
  while (f != nullptr && fgets(line, sizeof line, f) != nullptr)
    if (strncmp(line, field, len) == 0 && line[len] == ':') value = strtoull(line + len + 1, nullptr, 10) * 1024;
  if (f != nullptr) fclose(f);
  return value;
}

const PeerOps *find_peer(const char *name) {
  for (const PeerOps &peer : kPeerOps)
    if (strcmp(peer.name, name) == 0) return &peer;
  return nullptr;
}

int footprint(const PeerOps &peer, size_t n, size_t size) {
  peer.release(peer.alloc(size), size); // set-up costs (arenas, first chunk) are part of the footprint
  size_t rss = kib_field("/proc/self/smaps_rollup", "Rss");
  std::vector<void *> blocks;
  for (size_t i = 0; i < n; ++i) {
    void *p = peer.alloc(size);
    if (p == nullptr) {
      printf("{\"error\": \"allocation %zu failed\"}\n", i);
      return 1;
    }
    memset(p, 0x5a, size);
    blocks.push_back(p);
  }
  size_t rss_after = kib_field("/proc/self/smaps_rollup", "Rss"), locked_after = kib_field("/proc/self/status", "VmLck");
  printf("{\"requested\": %zu, \"resident\": %zu, \"locked\": %zu}\n", n * size, rss_after - rss, locked_after);
  for (void *p : blocks) peer.release(p, size);
  return 0;
}

int fork_time(const PeerOps &peer, size_t mib) {
  std::vector<void *> blocks;
  for (size_t i = 0; i < mib * 16; ++i) { // 64 KiB blocks
    void *p = peer.alloc(65536);
    if (p == nullptr) return 1;
    memset(p, 0x5a, 65536);
    blocks.push_back(p);
  }
  std::vector<double> times;
  for (int i = 0; i < 21; ++i) {
    auto start = std::chrono::steady_clock::now();
    pid_t pid = fork();
    if (pid == 0) _exit(0);
    int status = 0;
    waitpid(pid, &status, 0);
    times.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(times.begin(), times.end());
  printf("{\"fork_us\": %.1f}\n", times[times.size() / 2]);
  for (void *p : blocks) peer.release(p, 65536);
  return 0;
}

unsigned long long vmstat(const char *field) {
  FILE *f = fopen("/proc/vmstat", "r");
  char name[128];
  unsigned long long value = 0, total = 0;
  while (f != nullptr && fscanf(f, "%127s %llu", name, &value) == 2)
    if (strcmp(name, field) == 0) total = value;
  if (f != nullptr) fclose(f);
  return total;
}

// Adds the 2 MiB physical block of every present page of this process's
// memfd_secret mappings to blocks. Without CAP_SYS_ADMIN pagemap hides the
// frame numbers, and nothing is added.
void secret_blocks(std::vector<uint64_t> &blocks) {
  FILE *maps = fopen("/proc/self/maps", "r");
  int pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  char line[512];
  while (maps != nullptr && pagemap >= 0 && fgets(line, sizeof line, maps) != nullptr) {
    if (strstr(line, "secretmem") == nullptr) continue;
    unsigned long start = 0, end = 0;
    if (sscanf(line, "%lx-%lx", &start, &end) != 2) continue;
    std::vector<uint64_t> entries((end - start) / 4096);
    ssize_t got = pread(pagemap, entries.data(), entries.size() * 8, static_cast<off_t>(start / 4096 * 8));
    for (ssize_t i = 0; i < got / 8; ++i) {
      uint64_t entry = entries[static_cast<size_t>(i)];
      uint64_t pfn = entry & ((uint64_t{1} << 55) - 1);
      if ((entry >> 63) != 0 && pfn != 0) blocks.push_back(pfn >> 9);
    }
  }
  if (maps != nullptr) fclose(maps);
  if (pagemap >= 0) close(pagemap);
  std::sort(blocks.begin(), blocks.end());
  blocks.erase(std::unique(blocks.begin(), blocks.end()), blocks.end());
}

int churn(const PeerOps &peer, size_t ops) {
  constexpr size_t kSlots = 2048;
  std::vector<std::pair<void *, size_t>> slots(kSlots, {nullptr, 0});
  std::vector<uint64_t> blocks;
  std::mt19937 rng(7);
  peer.release(peer.alloc(16), 16); // set-up (arenas, first chunk) counted as for footprint
  rusage before{};
  getrusage(RUSAGE_SELF, &before);
  unsigned long long splits = vmstat("direct_map_level2_splits") + vmstat("direct_map_level3_splits");
  for (size_t op = 0; op < ops; ++op) {
    auto &[p, n] = slots[rng() % kSlots];
    if (p != nullptr) {
      peer.release(p, n);
      p = nullptr;
    } else {
      n = rng() % 64 == 0 ? 65536 : size_t{16} << (rng() % 9); // 16 B .. 4 KiB
      n -= rng() % (n / 2);
      p = peer.alloc(n);
      if (p == nullptr) {
        printf("{\"error\": \"allocation failed at operation %zu\"}\n", op);
        return 1;
      }
      memset(p, 0x5a, n);
    }
    if (op % 256 == 0) secret_blocks(blocks);
  }
  secret_blocks(blocks);
  rusage after{};
  getrusage(RUSAGE_SELF, &after);
  splits = vmstat("direct_map_level2_splits") + vmstat("direct_map_level3_splits") - splits;
  printf("{\"faults\": %ld, \"splits\": %llu, \"blocks_2m\": %zu}\n", after.ru_minflt - before.ru_minflt, splits,
         blocks.size());
  for (auto &[p, n] : slots)
    if (p != nullptr) peer.release(p, n);
  return 0;
}

} // namespace

int main(int argc, char **argv) {
  if (argc >= 4 && (strcmp(argv[1], "footprint") == 0 || strcmp(argv[1], "fork") == 0 || strcmp(argv[1], "churn") == 0)) {
    const PeerOps *peer = find_peer(argv[2]);
    if (peer == nullptr) return 2;
    if (strcmp(argv[1], "fork") == 0) return fork_time(*peer, strtoull(argv[3], nullptr, 10));
    if (strcmp(argv[1], "churn") == 0) return churn(*peer, strtoull(argv[3], nullptr, 10));
    if (argc < 5) return 2;
    return footprint(*peer, strtoull(argv[3], nullptr, 10), strtoull(argv[4], nullptr, 10));
  }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
