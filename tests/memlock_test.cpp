// RLIMIT_MEMLOCK as an ordinary process meets it. meson runs this binary
// under `setpriv --inh-caps=-ipc_lock --bounding-set=-ipc_lock prlimit
// --memlock=1048576`, once per SECMEM_ON_EXHAUSTION policy and backend; the
// first test fails if that wrapper is missing, so nothing passes vacuously.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <pthread.h>
#include <random>
#include <string>
#include <sys/resource.h>
#include <sys/wait.h>
#include <thread>
#include <vector>

#include "block_model.h"
#include "heap/state.h"
#include "platform/linux_facts.h"
#include "secmem/secmem.h"
#include "test_support.h"

using namespace secmem::test;

namespace {

constexpr size_t kLimit = 1 << 20;

struct Held {
  unsigned char *p;
  size_t size;
  uint64_t seed;
};

bool intact(const Held &h) { return holds_pattern(h.p, h.size, h.seed); }

} // namespace

// Every tier refused, each for its own reason (tests/fork_edges.c
// all-tiers-refused: the budget, then the mapping count the program took to
// its limit): NULL with ENOMEM, and the one line names the last tier's reason
// too (it gave the first tier's alone, the memlock budget, for a failure of
// unlocked memory that has none; found by the adversarial review).
// Plain build only, as the map-limit tests (tests/meson.build): a
// sanitizer's runtime needs mappings of its own at the limit.
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
TEST(Memlock, EveryTierRefusedSaysEachReason) {
  Result r = run({SECMEM_FORK_EDGES_PATH, "all-tiers-refused"});
  EXPECT_EQ(r.status, 0) << r.out << r.err;
  const std::string refused = "allocations return NULL with ENOMEM";
  if (exhaustion_policy_fail()) {
    EXPECT_NE(r.err.find("out of secret memory (EAGAIN: RLIMIT_MEMLOCK budget spent); " + refused), std::string::npos)
        << r.err;
  } else {
    EXPECT_NE(r.err.find("out of secret memory (EAGAIN: RLIMIT_MEMLOCK budget spent; unlocked anonymous memory "
                         "(MADV_DONTDUMP; it can be swapped): ENOMEM: the kernel refused the mapping "
                         "(vm.max_map_count reached?)); " +
                         refused),
              std::string::npos)
        << r.err;
  }
}
#endif

TEST(Memlock, RunsWithoutCapIpcLockUnderASmallLimit) {
  rlimit limit{};
  ASSERT_EQ(getrlimit(RLIMIT_MEMLOCK, &limit), 0);
  ASSERT_EQ(limit.rlim_cur, kLimit) << "run me under prlimit --memlock=" << kLimit;
  ASSERT_FALSE(secmem::linux_facts::has_cap_ipc_lock())
      << "run me under setpriv --inh-caps=-ipc_lock --bounding-set=-ipc_lock";
}

// With no budget left in the parent for a second memfd_secret copy, the
// child makes its private copy itself, charged to its own budget: it stays in
// memfd_secret (nothing lands in the parent's readable memory), and nothing
// crosses.
TEST(Memlock, ForkWithoutBudgetForASecretCopy) {
  if (!running_on_mlock_backend()) SECMEM_REQUIRE_SECRETMEM();
  auto *secret = static_cast<char *>(secmem_malloc(64));
  ASSERT_NE(secret, nullptr);
  strcpy(secret, "parent");
  int status = run_in_child([&] {
    secmem_stats s{};
    secmem_get_stats(&s);
    bool ok = strcmp(secret, "parent") == 0;
    if (running_on_mlock_backend())
      ok = ok && std::string(s.backend) == "mlock" && s.in_use_locked >= 64;
    else
      ok = ok && std::string(s.backend) == "memfd_secret" && s.in_use_secret >= 64 && s.fork_privatisations >= 1;
    strcpy(secret, "child");
    return ok;
  });
  EXPECT_EQ(status, 0);
  EXPECT_STREQ(secret, "parent");
  secmem_free(secret);
}

// A program that lowers its memlock limit after the heap locked its pages,
// then forks: the child's copy (its own mapping of a staged memfd_secret
// file, or its copy-on-write pages locked again: no lock is inherited) needs
// budget the child does not have. It follows the policy with one message:
// an unlocked copy that holds the parent's secret, or the child stops.
TEST(Memlock, AChildWhoseLimitWasLoweredFollowsThePolicy) {
  if (!running_on_mlock_backend()) SECMEM_REQUIRE_SECRETMEM();
  auto *secret = static_cast<char *>(secmem_malloc(64));
  ASSERT_NE(secret, nullptr);
  strcpy(secret, "parent");
  std::string err;
  int status = run_in_child(
      [&] {
        rlimit lim{};
        if (getrlimit(RLIMIT_MEMLOCK, &lim) != 0) return false;
        lim.rlim_cur = 0;
        if (setrlimit(RLIMIT_MEMLOCK, &lim) != 0) return false;
        pid_t pid = fork();
        if (pid == 0) {
          secmem_stats s{};
          secmem_get_stats(&s);
          _exit(strcmp(secret, "parent") == 0 && std::string(s.backend) == "unlocked" ? 0 : 1);
        }
        int child = 0;
        if (pid < 0 || waitpid(pid, &child, 0) != pid) return false;
        if (exhaustion_policy_fail()) return WIFSIGNALED(child) && WTERMSIG(child) == SIGABRT;
        return WIFEXITED(child) && WEXITSTATUS(child) == 0;
      },
      &err);
  EXPECT_EQ(status, 0) << err;
  const char *line =
      exhaustion_policy_fail()
          ? "^secmem: fork: [^\n]*the configuration allows no other tier\n$"
          : "^secmem: [^\n]* unavailable \\([A-Z]+: RLIMIT_MEMLOCK budget spent(, or vm.max_map_count reached)?\\); "
            "falling back to "
            "unlocked anonymous memory[^\n]*\n$";
  EXPECT_TRUE(testing::internal::RE::FullMatch(err, line)) << err;
  EXPECT_STREQ(secret, "parent");
  secmem_free(secret);
}

TEST(Memlock, ExhaustionFollowsThePolicyAndLosesNothing) {
  if (!running_on_mlock_backend()) SECMEM_REQUIRE_SECRETMEM();
  const std::string top = expected_backend();
  std::vector<Held> held;
  int refused_errno = 0;
  std::string err = stderr_of([&] {
    // Three times the limit, in 4 KiB secrets.
    for (size_t i = 0; i < 3 * kLimit / 4096; ++i) {
      auto *p = static_cast<unsigned char *>(secmem_malloc(4096));
      if (p == nullptr) {
        refused_errno = errno;
        break;
      }
      fill_pattern(p, 4096, i);
      held.push_back({p, 4096, i});
    }
  });
  secmem_stats s{};
  secmem_get_stats(&s);
  EXPECT_LE(s.memlock_charged, kLimit) << "the heap charged more than the limit";
  EXPECT_GT(s.memlock_charged, kLimit / 2) << "chunks are sized to the budget";
  EXPECT_GE(s.fallbacks_memlock + s.failed_chunks, 1u);
  if (exhaustion_policy_fail()) {
    EXPECT_EQ(refused_errno, ENOMEM);
    EXPECT_LT(held.size(), 3 * kLimit / 4096);
    EXPECT_EQ(s.in_use_unlocked, 0u);
    EXPECT_EQ(err, "secmem: out of secret memory (EAGAIN: RLIMIT_MEMLOCK budget spent); allocations return NULL "
                   "with ENOMEM (SECMEM_ON_EXHAUSTION=fail)\n");
  } else {
    EXPECT_EQ(refused_errno, 0);
    EXPECT_EQ(held.size(), 3 * kLimit / 4096);
    EXPECT_GT(s.in_use_unlocked, 0u);
    EXPECT_EQ(std::string(s.backend), "unlocked");
    EXPECT_EQ(err, "secmem: " + top +
                       " unavailable (EAGAIN: RLIMIT_MEMLOCK budget spent); falling back to unlocked anonymous "
                       "memory (MADV_DONTDUMP; it can be swapped), and the process is made non-dumpable so that its "
                       "user cannot read it (SECMEM_NODUMP=fallback) (set SECMEM_ON_EXHAUSTION=fail to refuse "
                       "instead)\n");
  }
  for (const Held &h : held) ASSERT_TRUE(intact(h));
  // Freed memory is reused: after freeing, the same amount fits again.
  size_t count = held.size();
  for (const Held &h : held) secmem_free(h.p);
  held.clear();
  for (size_t i = 0; i < count; ++i) {
    auto *p = static_cast<unsigned char *>(secmem_malloc(4096));
    ASSERT_NE(p, nullptr) << i;
    held.push_back({p, 0, 0});
  }
  for (const Held &h : held) secmem_free(h.p);
}

size_t mem_total() {
  FILE *f = fopen("/proc/meminfo", "r");
  size_t kib = 0;
  if (f != nullptr) {
    if (fscanf(f, "MemTotal: %zu kB", &kib) != 1) kib = 0;
    fclose(f);
  }
  return kib << 10;
}

// Blocks of 4 GiB and more, up to the documented 1 TiB, past the budget: on
// the unlocked tier (fallback policy: mapped, never touched but for a byte at
// each end, so they cost no RAM) or NULL with ENOMEM. Each keeps its size
// (a 32-bit block size used to wrap: secmem_malloc(4 GiB) segfaulted, and
// free zeroed size mod 4 GiB bytes), and free does not fault in pages that
// were never touched. Each case in a fresh child.
TEST(Memlock, BlocksOfFourGibAndMoreWorkOrReturnEnomem) {
  constexpr size_t kGib = size_t{1} << 30;
  for (size_t size :
       {4 * kGib - 1, 4 * kGib, 4 * kGib + 1, 5 * kGib + 123, 17 * kGib, size_t{1} << 40, (size_t{1} << 40) + 1}) {
    std::string err;
    int status = run_in_child(
        [size] {
          errno = 0;
          auto *p = static_cast<unsigned char *>(secmem_malloc(size));
          // Past the budget: the fail policy refuses; the fallback policy must
          // give blocks that the machine's memory could hold (the kernel's
          // overcommit check may refuse larger ones).
          if (p == nullptr)
            return errno == ENOMEM && (exhaustion_policy_fail() || size > (size_t{1} << 40) || size > mem_total() / 2);
          if (exhaustion_policy_fail()) return false;
          p[0] = 'a';
          p[size - 1] = 'z';
          bool ok = secmem_owns(p) && secmem_owns(p + size - 1) && secmem_usable_size(p) == size;
          size_t rss_before = secmem::linux_facts::status_kib_field_bytes("VmRSS");
          secmem_free(p);
          size_t rss_after = secmem::linux_facts::status_kib_field_bytes("VmRSS");
          ok = ok && rss_after < rss_before + (64u << 20); // free touched no page it had not
          // The range is free again: the next block of the same size fits.
          p = static_cast<unsigned char *>(secmem_malloc(size));
          ok = ok && p != nullptr && p[size / 2] == 0;
          secmem_free(p);
          return ok;
        },
        &err);
    EXPECT_EQ(status, 0) << size << " bytes: " << err;
  }
}

// A second free of a huge block (over 1 MiB: a chunk of its own, gone once
// freed) is the documented double free, not "no block starts here".
TEST(Memlock, DoubleFreeOfAHugeBlockIsCalledThat) {
  for (size_t size : {size_t{3} << 20, size_t{5} << 30}) {
    std::string err;
    int status = run_in_child(
        [size] {
          void *p = secmem_malloc(size);
          if (p == nullptr) return exhaustion_policy_fail();
          secmem_free(p);
          secmem_free(p);
          return false;
        },
        &err);
    if (err.empty() && status == 0) continue; // refused under the fail policy
    EXPECT_NE(err.find("secmem: double free of 0x"), std::string::npos) << size << ": " << err;
  }
}

namespace {

// Blocks that thread caches keep for speed: freed large blocks (this
// thread's or an idle thread's) and a small-block cache grown by bouncing.
// And the empty spans the heap keeps, one per size class.
enum class Kept { kThisThreadsLarge, kIdleThreadsLarge, kGrownSmallCache, kEmptySpans };

constexpr size_t kPage = 4096;
constexpr size_t kRunPages = 17;                        // a 15-page block with its two guards
constexpr size_t kBlock = (kRunPages - 2) * kPage;      // 60 KiB
constexpr size_t kOtherBlock = (kRunPages - 3) * kPage; // 56 KiB: a page fewer, so never a kept block

// Fills the one chunk the budget allows while caches keep blocks that the
// last requests need: they must all fit, on the top tier, with no fallback,
// failure or message (the caches give their blocks back when the budget
// refuses a second chunk). In a fresh process (a death test: the budget is
// spent once); says what went wrong, or "all fit".
[[noreturn]] void fill_the_budget_past_kept_blocks(Kept kept) {
  void *first = secmem_malloc(16);
  secmem_stats s{};
  secmem_get_stats(&s);
  size_t chunk_pages = (s.mapped_secret + s.mapped_locked) / kPage;
  if (first == nullptr || s.chunks != 1 || chunk_pages < 128 || chunk_pages > kLimit / kPage) {
    fprintf(stderr, "unexpected start: %zu chunks of %zu pages\n", s.chunks, chunk_pages);
    _exit(1);
  }
  std::vector<Held> held;
  bool all_fit = true;
  auto take = [&](size_t size) {
    auto *p = static_cast<unsigned char *>(secmem_malloc(size));
    if (p == nullptr) {
      all_fit = false;
      return;
    }
    fill_pattern(p, size, held.size());
    held.push_back({p, size, held.size()});
  };
  // Blocks of kRunPages up to 4 pages short of the chunk (its first page
  // holds the 16-byte block's span), then 4 of them freed and kept: 4 blocks
  // of another size fit only in their pages.
  size_t blocks = (chunk_pages - 4) / kRunPages;
  if (kept == Kept::kThisThreadsLarge) {
    for (size_t i = 0; i < blocks; ++i) take(kBlock);
    for (int i = 0; i < 4 && all_fit; ++i) secmem_free(held[i].p);
    if (all_fit) held.erase(held.begin(), held.begin() + 4);
    for (int i = 0; i < 4; ++i) take(kOtherBlock);
  } else if (kept == Kept::kIdleThreadsLarge) {
    for (size_t i = 0; i < blocks - 4; ++i) take(kBlock);
    static pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, nullptr, 2);
    pthread_t idle;
    pthread_create(
        &idle, nullptr,
        [](void *) -> void * {
          secmem_free(secmem_malloc(16)); // a thread keeps large blocks once it has a cache
          void *mine[4];
          for (void *&p : mine) p = secmem_malloc(kBlock);
          for (void *p : mine) secmem_free(p);
          pthread_barrier_wait(&barrier); // freed, kept
          pthread_barrier_wait(&barrier); // the main thread has its blocks
          return nullptr;
        },
        nullptr);
    pthread_barrier_wait(&barrier);
    for (int i = 0; i < 4; ++i) take(kOtherBlock);
    pthread_barrier_wait(&barrier);
    pthread_join(idle, nullptr);
  } else if (kept == Kept::kEmptySpans) {
    // A block of every other size class (a span each, about 80 pages in
    // all), freed: the spans stay, empty, for the next block of their class.
    for (size_t size = 32; size <= 8192; size = size < 1024 ? size + 16 : size + 256) secmem_free(secmem_malloc(size));
    for (size_t i = 0; i < blocks; ++i) take(kBlock);
  } else {
    // 40 blocks of 8 KiB (80 pages), allocated and freed 12 times: the
    // class's cache grows to hold them all.
    void *bounce[40];
    for (int round = 0; round < 12; ++round) {
      for (void *&p : bounce) p = secmem_malloc(8192);
      for (void *p : bounce) secmem_free(p);
    }
    for (size_t i = 0; i < (chunk_pages - 16) / kRunPages; ++i) take(kBlock);
  }
  secmem_get_stats(&s);
  bool intact_all = true;
  for (const Held &h : held) intact_all = intact_all && intact(h);
  if (!all_fit || !intact_all || s.chunks != 1 || s.in_use_unlocked != 0 || s.fallbacks_memlock != 0 ||
      s.failed_chunks != 0) {
    fprintf(stderr, "all fit %d, intact %d, %zu chunks, %zu unlocked bytes, %llu memlock fallbacks, %llu failed\n",
            all_fit, intact_all, s.chunks, s.in_use_unlocked, static_cast<unsigned long long>(s.fallbacks_memlock),
            static_cast<unsigned long long>(s.failed_chunks));
    _exit(1);
  }
  fprintf(stderr, "all fit\n");
  _exit(0);
}

void expect_all_fit(Kept kept) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(fill_the_budget_past_kept_blocks(kept), testing::ExitedWithCode(0), "^all fit\n$");
}

} // namespace

// What fits in the budget fits with blocks kept by thread caches: they go
// back when RLIMIT_MEMLOCK refuses a chunk, before the heap falls back to a
// weaker tier or fails (they made allocations fail, or land in unlocked
// memory, where the same program without them fitted).
TEST(Memlock, BlocksKeptByThisThreadGoBackWhenTheBudgetIsSpent) { expect_all_fit(Kept::kThisThreadsLarge); }

TEST(Memlock, BlocksKeptByAnIdleThreadGoBackWhenTheBudgetIsSpent) { expect_all_fit(Kept::kIdleThreadsLarge); }

TEST(Memlock, EmptySpansKeptPerClassGoBackWhenTheBudgetIsSpent) { expect_all_fit(Kept::kEmptySpans); }

TEST(Memlock, AGrownCacheGoesBackWhenTheBudgetIsSpent) { expect_all_fit(Kept::kGrownSmallCache); }

namespace {

// 48 threads each take a 16-byte block at once and hold it; prints how many
// pages (one-page spans) their blocks are in.
[[noreturn]] void threads_take_one_block_each_and_report_spans() {
  constexpr int kThreads = 48;
  std::vector<uintptr_t> pages(kThreads);
  std::atomic<int> holding{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&pages, &holding, t] {
      void *p = secmem_malloc(16);
      pages[t] = reinterpret_cast<uintptr_t>(p) / 4096;
      holding.fetch_add(1);
      while (holding.load() != kThreads) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      secmem_free(p);
    });
  }
  for (std::thread &thread : threads) thread.join();
  std::sort(pages.begin(), pages.end());
  long spans = std::unique(pages.begin(), pages.end()) - pages.begin();
  fprintf(stderr, "spans %ld\n", spans);
  _exit(spans <= 32 ? 0 : 1);
}

} // namespace

// Threads refill from spans of their own (a page each for 16-byte blocks),
// within a sixteenth of the budget: 16 pages of the 1 MiB here, so 48
// threads at once use about 25 spans, not 48 (with 32 threads each making
// spans of 12 classes, requests near a 2 MiB limit failed that had fitted).
TEST(Memlock, SpansOfTheirOwnForThreadsStayWithinASixteenthOfTheBudget) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(threads_take_one_block_each_and_report_spans(), testing::ExitedWithCode(0), "spans");
}

namespace {

// Four threads each allocate and free six 16 KiB blocks fifty times (their
// caches keep and stock large blocks), then wait; prints the credit their
// caches hold for large blocks.
[[noreturn]] void threads_keep_large_blocks_and_report_credit() {
  constexpr int kThreads = 4;
  std::atomic<int> done{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&done] {
      void *blocks[6];
      for (int round = 0; round < 50; ++round) {
        for (void *&p : blocks) p = secmem_malloc(16 << 10);
        for (void *p : blocks) secmem_free(p);
      }
      done.fetch_add(1);
      while (done.load() != kThreads + 1) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    });
  while (done.load() != kThreads) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  size_t credit = secmem::heap::g_heap.large_cached.load();
  fprintf(stderr, "credit %zu\n", credit);
  done.fetch_add(1);
  for (std::thread &thread : threads) thread.join();
  _exit(credit <= kLimit / 16 ? 0 : 1);
}

} // namespace

// What the thread caches keep of large blocks (and the spare runs they take
// for them) is runs no other thread can have: under the 1 MiB budget they
// hold at most a sixteenth of it, 64 KiB, not the 1 MiB of a process without
// a limit (four threads held 512 KiB of it; a ninth thread among eight busy ones
// got two or three 64 KiB blocks fewer before the budget ran out).
TEST(Memlock, LargeBlocksKeptForThreadsStayWithinASixteenthOfTheBudget) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(threads_keep_large_blocks_and_report_credit(), testing::ExitedWithCode(0), "credit");
}

namespace {

// A thread allocates and frees 24 blocks of 16 KiB (runs of 20 KiB with their
// guards) 20 times, in a fresh process: its cache's credit, a sixteenth of
// the budget, holds three; prints the locked operations a round.
[[noreturn]] void bounce_past_the_credit_and_report_locked() {
  std::thread([] {
    constexpr int kBlocks = 24, kRounds = 20;
    void *blocks[kBlocks];
    auto locked = [] {
      secmem::heap::ScopedLock lock(secmem::heap::g_heap.lock);
      return secmem::heap::g_heap.uncached_allocations + secmem::heap::g_heap.uncached_frees +
             secmem::heap::g_heap.large_give_backs;
    };
    for (int round = 0; round < 2; ++round) { // warm
      for (void *&p : blocks) p = secmem_malloc(16 << 10);
      for (void *p : blocks) secmem_free(p);
    }
    uint64_t before = locked();
    for (int round = 0; round < kRounds; ++round) {
      for (void *&p : blocks) {
        p = secmem_malloc(16 << 10);
        if (p == nullptr) _exit(2);
        memset(p, 0x5a, 16 << 10);
      }
      for (void *p : blocks) secmem_free(p);
    }
    uint64_t per_round = (locked() - before) / kRounds;
    fprintf(stderr, "locked %llu a round\n", static_cast<unsigned long long>(per_round));
    _exit(!secmem::heap::g_ro.plain_ops || per_round <= 24 ? 0 : 1);
  }).join();
  _exit(3);
}

} // namespace

// A thread whose kept large blocks outgrow its credit gives its oldest back
// in a batch and keeps the new one, as when its slots are full: 24 blocks of
// 16 KiB a round take the lock 19 times, not 30 (once for each free the
// credit refused).
TEST(Memlock, ACacheOutOfCreditMovesLargeBlocksInBatches) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(bounce_past_the_credit_and_report_locked(), testing::ExitedWithCode(0), "locked [0-9]+ a round");
}

namespace {

// Threads whose caches are emptied while they run: four threads keep twice
// the budget live between them, so chunks are refused all the time and every
// refusal empties every cache (the gate closed as for a fork) in the middle
// of the others' allocations and frees. Nothing is lost or corrupted; the
// fallback policy refuses nothing, the fail policy some.
[[noreturn]] void churn_over_the_budget() {
  std::atomic<uint64_t> corrupted{0}, refused{0}, allocations{0};
  std::vector<std::thread> threads;
  for (int id = 0; id < 4; ++id)
    threads.emplace_back([id, &corrupted, &refused, &allocations] {
      std::mt19937_64 rng(static_cast<uint64_t>(id) + 1);
      std::vector<Held> live;
      size_t live_bytes = 0;
      auto drop = [&](size_t index) {
        if (!intact(live[index])) corrupted++;
        secmem_free(live[index].p);
        live_bytes -= live[index].size;
        live[index] = live.back();
        live.pop_back();
      };
      for (int op = 0; op < 40000; ++op) {
        if (live_bytes < kLimit / 2 && (live.empty() || rng() % 4 != 0)) {
          size_t size = rng() % 8 == 0 ? 8193 + rng() % 65536 : 1 + rng() % 8192;
          auto *p = static_cast<unsigned char *>(secmem_malloc(size));
          if (p == nullptr) {
            refused++;
            if (!live.empty()) drop(rng() % live.size());
            continue;
          }
          uint64_t seed = rng();
          fill_pattern(p, size, seed);
          live.push_back({p, size, seed});
          live_bytes += size;
          allocations++;
        } else if (!live.empty()) {
          drop(rng() % live.size());
        }
      }
      while (!live.empty()) drop(live.size() - 1);
    });
  for (std::thread &thread : threads) thread.join();
  secmem_stats s{};
  secmem_get_stats(&s);
  bool refusals_as_policy = exhaustion_policy_fail() ? refused.load() > 0 : refused.load() == 0;
  if (corrupted.load() != 0 || in_use_bytes(s) != 0 || !refusals_as_policy || allocations.load() < 10000) {
    fprintf(stderr, "corrupted %llu, in use %zu, refused %llu, allocations %llu\n",
            static_cast<unsigned long long>(corrupted.load()), in_use_bytes(s),
            static_cast<unsigned long long>(refused.load()), static_cast<unsigned long long>(allocations.load()));
    _exit(1);
  }
  fprintf(stderr, "nothing lost\n");
  _exit(0);
}

} // namespace

TEST(Memlock, CachesEmptiedUnderRunningThreadsLoseNothing) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(churn_over_the_budget(), testing::ExitedWithCode(0), "nothing lost\n$");
}
