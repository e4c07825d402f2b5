// The executables' main: the throughput benchmarks (throughput.h), or one measurement per process
// (bench/run spawns them), of a peer registered in this executable:
//   footprint PEER N SIZE: N live blocks; prints requested bytes, the resident bytes they added,
//     and the process's locked bytes (VmLck: what RLIMIT_MEMLOCK sees) with them live
//   fork PEER MIB: MIB of live secrets, then the median time of fork + child _exit + waitpid
//     over 21 forks, in microseconds
//   churn PEER OPS: OPS random alloc/free operations over 2,048 slots (sizes 16 B to 4 KiB, one
//     in 64 of 64 KiB); prints the page faults taken during the workload, the kernel's direct-map
//     splits meanwhile (/proc/vmstat, machine-wide), and, as root, the distinct 2 MiB physical
//     blocks that ever held this process's memfd_secret pages (pagemap, sampled every 256
//     operations and at the end)
// or, for the throughput benchmarks, --single_threaded_process: no thread is made, and only the
// one-thread benchmarks are registered (a filter that selects others finds none of them). Without it one thread is made
// and joined first, so that every figure is one of a process that has had threads: secmem clears a live mark without a
// locked instruction while the process has never had a second thread (heap/span.h), and a process's first benchmark
// would otherwise measure that path and the rest the other.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <random>
#include <sys/resource.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include "peers.h"
#include "platform/linux_facts.h"
#include "throughput.h"

namespace bench {
namespace {

// Resident bytes of this process (Rss of /proc/self/smaps_rollup).
size_t rss_bytes() {
  FILE *f = fopen("/proc/self/smaps_rollup", "r");
  char line[256];
  size_t value = 0;
  while (f != nullptr && fgets(line, sizeof line, f) != nullptr)
    if (strncmp(line, "Rss:", 4) == 0) value = strtoull(line + 4, nullptr, 10) * 1024;
  if (f != nullptr) fclose(f);
  return value;
}

const Peer *find_peer(const char *name) {
  for (const Peer &peer : peers())
    if (strcmp(peer.name, name) == 0) return &peer;
  return nullptr;
}

int footprint(const Peer &peer, size_t n, size_t size) {
  peer.release(peer.alloc(size), size); // set-up costs (arenas, first chunk) are part of the footprint
  size_t rss = rss_bytes();
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
  size_t rss_after = rss_bytes(), locked_after = secmem::linux_facts::vmlck_bytes();
  printf("{\"requested\": %zu, \"resident\": %zu, \"locked\": %zu}\n", n * size, rss_after - rss, locked_after);
  for (void *p : blocks) peer.release(p, size);
  return 0;
}

int fork_time(const Peer &peer, size_t mib) {
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
  // Streams /proc/self/maps line by line: a parser that builds every region first would allocate
  // (and fault) inside the measured workload.
  FILE *maps = fopen("/proc/self/maps", "r");
  int pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  char line[512];
  while (maps != nullptr && pagemap >= 0 && fgets(line, sizeof line, maps) != nullptr) {
    if (strstr(line, secmem::linux_facts::kSecretMapName) == nullptr) continue;
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

int churn(const Peer &peer, size_t ops) {
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
} // namespace bench

int main(int argc, char **argv) {
  using namespace bench;
  if (argc >= 4 &&
      (strcmp(argv[1], "footprint") == 0 || strcmp(argv[1], "fork") == 0 || strcmp(argv[1], "churn") == 0)) {
    const Peer *peer = find_peer(argv[2]);
    if (peer == nullptr) return 2;
    if (strcmp(argv[1], "fork") == 0) return fork_time(*peer, strtoull(argv[3], nullptr, 10));
    if (strcmp(argv[1], "churn") == 0) return churn(*peer, strtoull(argv[3], nullptr, 10));
    if (argc < 5) return 2;
    return footprint(*peer, strtoull(argv[3], nullptr, 10), strtoull(argv[4], nullptr, 10));
  }
  bool single_threaded = false;
  for (int i = 1; i < argc; ++i)
    if (strcmp(argv[i], "--single_threaded_process") == 0) {
      single_threaded = true;
      for (int j = i; j < argc; ++j) argv[j] = argv[j + 1]; // argv[argc] is the null pointer
      --argc;
      break;
    }
  if (!single_threaded) std::thread([] {}).join();
  register_throughput_benchmarks(single_threaded);
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
