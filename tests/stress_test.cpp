// Exhaustion and faults: 4 threads keep secrets live under a memlock limit
// (meson runs this under setpriv without CAP_IPC_LOCK and prlimit
// --memlock=8 MiB). Half-way a seccomp filter (synchronised to every thread)
// makes memfd_secret fail with EPERM, and from then on the threads keep 12 MiB
// live. Under either SECMEM_ON_EXHAUSTION policy the process keeps working
// and no block loses a byte: with `fallback` every allocation succeeds in a
// weaker tier (unlocked: mlock, never checked before the filter came, is not
// made under a filter installed since, which may kill on it); with `fail`
// some return NULL (ENOMEM) and the thread carries on with what it has.
//
// SECMEM_STRESS_SECONDS sets the length (default 4: the run in ./bootstrap
// test); the long run is `meson test -C build --suite long` (120 s per
// policy), or any length with the variable.
#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "block_model.h"
#include "secmem/secmem.h"
#include "test_support.h"

using namespace secmem::test;

namespace {

// Live bytes per thread: 768 KiB in all before the filter (memfd_secret holds
// them, in one or two chunks), 12 MiB after it (half as much again as the limit).
constexpr size_t kFirstHalfLive = size_t{192} << 10;
constexpr size_t kSecondHalfLive = size_t{3} << 20;
std::atomic<bool> g_second_half{false};

double seconds() {
  const char *value = getenv("SECMEM_STRESS_SECONDS");
  return value != nullptr ? atof(value) : 4.0;
}

struct Block {
  unsigned char *p;
  size_t size;
  uint64_t seed;
};

struct Totals {
  std::atomic<uint64_t> allocations{0}, refused{0}, corrupted{0}, frees{0};
};

void run_worker(int id, std::chrono::steady_clock::time_point end, Totals &totals) {
  std::mt19937_64 rng(static_cast<uint64_t>(id) * 7919 + 1);
  std::vector<Block> live;
  size_t live_bytes = 0;
  auto verify_and_free = [&](size_t index) {
    Block b = live[index];
    if (!holds_pattern(b.p, b.size, b.seed)) totals.corrupted++;
    secmem_free(b.p);
    live_bytes -= b.size;
    live[index] = live.back();
    live.pop_back();
    totals.frees++;
  };
  while (std::chrono::steady_clock::now() < end) {
    size_t target = g_second_half.load(std::memory_order_relaxed) ? kSecondHalfLive : kFirstHalfLive;
    bool grow = live_bytes < target ? rng() % 4 != 0 : rng() % 4 == 0;
    if (grow || live.empty()) {
      size_t size = rng() % 8 == 0 ? 1 + rng() % 65536 : 1 + rng() % 1024;
      auto *p = static_cast<unsigned char *>(secmem_malloc(size));
      if (p == nullptr) {
        EXPECT_EQ(errno, ENOMEM);
        totals.refused++;
        if (!live.empty()) verify_and_free(rng() % live.size()); // make room, keep going
        continue;
      }
      uint64_t seed = rng();
      fill_pattern(p, size, seed);
      live.push_back({p, size, seed});
      live_bytes += size;
      totals.allocations++;
    } else {
      verify_and_free(rng() % live.size());
    }
  }
  while (!live.empty()) verify_and_free(live.size() - 1);
}

} // namespace

TEST(Stress, OverTheLimitAndRefusedHalfWayNothingIsLost) {
  SECMEM_REQUIRE_SECRETMEM();
  ASSERT_NE(getenv("SECMEM_STRESS_WRAPPED"), nullptr) << "run me through meson: setpriv + prlimit --memlock";
  auto start = std::chrono::steady_clock::now();
  auto end = start + std::chrono::milliseconds(static_cast<long>(seconds() * 1000));
  Totals totals;
  std::vector<std::thread> workers;
  for (int id = 0; id < 4; ++id) workers.emplace_back(run_worker, id, end, std::ref(totals));
  std::this_thread::sleep_until(start + (end - start) / 2);
  secmem_stats before_filter{};
  secmem_get_stats(&before_filter);
  ASSERT_TRUE(refuse_memfd_secret(EPERM, true));
  g_second_half = true;
  for (auto &worker : workers) worker.join();

  secmem_stats s{};
  secmem_get_stats(&s);
  std::printf("%s: %llu allocations, %llu refused, %llu frees in %.0f s; chunks %zu; fallbacks: memlock %llu, "
              "eperm %llu; failed chunks %llu; secret %zu / locked %zu / unlocked %zu bytes mapped\n",
              exhaustion_policy_fail() ? "fail" : "fallback",
              static_cast<unsigned long long>(totals.allocations.load()),
              static_cast<unsigned long long>(totals.refused.load()),
              static_cast<unsigned long long>(totals.frees.load()), seconds(), s.chunks,
              static_cast<unsigned long long>(s.fallbacks_memlock), static_cast<unsigned long long>(s.fallbacks_eperm),
              static_cast<unsigned long long>(s.failed_chunks), s.mapped_secret, s.mapped_locked, s.mapped_unlocked);
  EXPECT_EQ(totals.corrupted.load(), 0u) << "a block lost its contents";
  EXPECT_EQ(totals.frees.load(), totals.allocations.load());
  EXPECT_EQ(in_use_bytes(s), 0u);
  EXPECT_GT(totals.allocations.load(), 1000u);
  EXPECT_GT(before_filter.mapped_secret, 0u) << "memfd_secret was in use before the filter";
  EXPECT_EQ(before_filter.failed_chunks + before_filter.fallbacks_eperm + before_filter.fallbacks_memlock, 0u)
      << "the first half stays within the limit";
  if (exhaustion_policy_fail()) {
    EXPECT_GT(totals.refused.load(), 0u) << "over the limit, yet nothing was refused";
    EXPECT_GT(s.failed_chunks, 0u);
    EXPECT_EQ(s.mapped_locked + s.mapped_unlocked, 0u) << "fail never degrades";
  } else {
    EXPECT_EQ(totals.refused.load(), 0u) << "fallback refused an allocation";
    EXPECT_GT(s.fallbacks_eperm, 0u) << "memfd_secret refused by the filter: the next chunks fall back";
    EXPECT_EQ(s.mapped_locked, 0u) << "mlock, never checked before the filter, is not made under it";
    EXPECT_GT(s.mapped_unlocked, 0u) << "the unlocked tier holds what memfd_secret no longer may";
  }
}
