// Threads: allocate and free each other's blocks; thread exit returns caches.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <pthread.h>
#include <random>
#include <sys/prctl.h>
#include <thread>
#include <unistd.h>
#include <vector>
#if defined(__x86_64__)
#include <x86intrin.h>
#endif

#include "block_model.h"
#include "heap/lock.h"
#include "heap/state.h"
#include "secmem/secmem.h"
#include "test_support.h"

using namespace secmem::test;

namespace {

// A counter that two cores read alike: the time-stamp counter on x86-64.
uint64_t cycles() {
#if defined(__x86_64__)
  return __rdtsc();
#else
  return static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
#endif
}

// A shared pool of blocks that threads hand to each other.
struct Exchange {
  std::mutex lock;
  std::vector<std::pair<unsigned char *, std::pair<size_t, uint64_t>>> blocks;
};

} // namespace

TEST(Threads, StressWithCrossThreadFrees) {
  constexpr int kThreads = 4;
  constexpr int kSteps = 40000;
  Exchange exchange;
  std::atomic<int> corrupt{0};
  std::atomic<uint64_t> seeds{1};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(t + 100);
      std::vector<std::pair<unsigned char *, std::pair<size_t, uint64_t>>> mine;
      for (int step = 0; step < kSteps; ++step) {
        int op = static_cast<int>(rng() % 10);
        if (op < 5 || mine.empty()) {
          size_t size = rng() % 10 == 0 ? rng() % 20000 : rng() % 300;
          auto *p = static_cast<unsigned char *>(secmem_malloc(size));
          if (p == nullptr) {
            corrupt++;
            continue;
          }
          uint64_t seed = seeds++;
          fill_pattern(p, size, seed);
          mine.push_back({p, {size, seed}});
        } else if (op < 8) {
          auto entry = mine.back();
          mine.pop_back();
          if (!holds_pattern(entry.first, entry.second.first, entry.second.second)) corrupt++;
          secmem_free(entry.first);
        } else {
          // Hand one over, and free one handed over by someone else.
          std::lock_guard<std::mutex> guard(exchange.lock);
          exchange.blocks.push_back(mine.back());
          mine.pop_back();
          if (exchange.blocks.size() > 8) {
            auto entry = exchange.blocks.front();
            exchange.blocks.erase(exchange.blocks.begin());
            if (!holds_pattern(entry.first, entry.second.first, entry.second.second)) corrupt++;
            secmem_free(entry.first);
          }
        }
      }
      for (auto &entry : mine) {
        if (!holds_pattern(entry.first, entry.second.first, entry.second.second)) corrupt++;
        secmem_free(entry.first);
      }
    });
  }
  for (auto &thread : threads) thread.join();
  for (auto &entry : exchange.blocks) {
    EXPECT_TRUE(holds_pattern(entry.first, entry.second.first, entry.second.second));
    secmem_free(entry.first);
  }
  EXPECT_EQ(corrupt.load(), 0);
  secmem_stats s{};
  secmem_get_stats(&s);
  EXPECT_EQ(in_use_bytes(s), 0u);
  EXPECT_EQ(s.allocations, s.frees);
}

// Two threads that free one block at the same moment: one free succeeds and
// the other aborts as a double free, every time. The threads start together
// by the time-stamp counter, one of them a few cycles later each round.
// (With the live mark cleared by a load and a store instead of an exchange,
// a standalone run of this race saw both frees succeed in 1 to 4 rounds in
// 400: the block sat in both threads' caches, and the child said "handed out
// twice" when they took it; this test's 200 rounds of a size catch that only
// now and then.)
TEST(Threads, TwoThreadsFreeingOneBlockAtOnceAbortAsADoubleFree) {
  for (size_t size : {size_t{32}, size_t{1024}, size_t{100000}}) {
    for (int round = 0; round < 200; ++round) {
      void *volatile block = secmem_malloc(size);
      if (block == nullptr) {
        ADD_FAILURE() << "no " << size << "-byte block";
        break;
      }
      std::atomic<int> arrived{0};
      std::atomic<uint64_t> start{0};
      auto free_it = [&](uint64_t delay) {
        secmem_free(secmem_malloc(size)); // this thread's cache made first
        if (arrived.fetch_add(1) == 1) start.store(cycles() + 20000);
        uint64_t at;
        while ((at = start.load()) == 0) {}
        while (cycles() < at + delay) {}
        secmem_free(block);
        // Both frees returned (the other's abort ends the process first):
        // each thread takes the block from its cache, if it is there.
        arrived.fetch_add(1);
        while (arrived.load() < 4) {}
        void *again = secmem_malloc(size);
        static_cast<volatile char *>(again)[0] = 1;
      };
      testing::AssertionResult died = dies_saying(
          [&] {
            prctl(PR_SET_DUMPABLE, 0); // 600 aborts: no core files
            uint64_t delay = uint64_t{4} * (round / 2 % 5);
            std::thread other(free_it, round % 2 == 0 ? delay : 0);
            free_it(round % 2 == 0 ? 0 : delay);
            other.join();
          },
          "^secmem: double free of 0x[0-9a-f]+\n$");
      EXPECT_TRUE(died) << size << "-byte block, round " << round;
      secmem_free(block);
      if (!died) break;
    }
  }
}

// Blocks cached by a thread come back to everyone when it exits: a thread
// that churns through many short-lived threads does not grow the heap.
TEST(Threads, ExitingThreadsReturnTheirCaches) {
  auto churn = [] {
    for (int i = 0; i < 50; ++i) {
      std::thread([] {
        std::vector<void *> blocks;
        for (int j = 0; j < 200; ++j) blocks.push_back(secmem_malloc(64));
        for (void *p : blocks) secmem_free(p);
      }).join();
    }
  };
  churn();
  secmem_stats first{};
  secmem_get_stats(&first);
  churn();
  secmem_stats second{};
  secmem_get_stats(&second);
  EXPECT_EQ(second.pages_touched, first.pages_touched);
  EXPECT_EQ(second.chunks, first.chunks);
  EXPECT_EQ(second.allocations - first.allocations, 50u * 200u);
}

namespace {

// Blocks of 48 bytes: their spans are one page each (size_class.h).
constexpr size_t kOnePageSpanBlock = 48;
uintptr_t page_of(const void *p) { return reinterpret_cast<uintptr_t>(p) / 4096; }

// Four threads each allocate 64 blocks of 48 bytes at once and hold them:
// the pages (the spans) of any two threads' blocks are different.
[[noreturn]] void allocate_in_threads_and_report_shared_spans() {
  constexpr int kThreads = 4;
  std::vector<std::vector<uintptr_t>> pages(kThreads);
  std::atomic<int> holding{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&pages, &holding, t] {
      std::vector<void *> blocks;
      for (int i = 0; i < 64; ++i) blocks.push_back(secmem_malloc(kOnePageSpanBlock));
      for (void *p : blocks) pages[t].push_back(page_of(p));
      holding.fetch_add(1);
      while (holding.load() != kThreads) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      for (void *p : blocks) secmem_free(p);
    });
  }
  for (std::thread &thread : threads) thread.join();
  int shared = 0;
  for (int a = 0; a < kThreads; ++a)
    for (int b = a + 1; b < kThreads; ++b)
      for (uintptr_t page : pages[a]) shared += std::count(pages[b].begin(), pages[b].end(), page) != 0 ? 1 : 0;
  fprintf(stderr, "blocks in pages that another thread's blocks share: %d\n", shared);
  _exit(shared == 0 ? 0 : 1);
}

// A thread allocates 64 blocks of 48 bytes (of the 85 in a span), frees all
// but 8 and exits: its span, with 77 free blocks and nobody's, holds this
// thread's first refill (64 blocks) and so its first block.
[[noreturn]] void reuse_an_exited_threads_span() {
  secmem_free(secmem_malloc(16)); // this thread's cache first: the other's is not made again for it
  std::vector<void *> kept;
  std::thread([&kept] {
    std::vector<void *> blocks;
    for (int i = 0; i < 64; ++i) blocks.push_back(secmem_malloc(kOnePageSpanBlock));
    for (int i = 0; i < 64; ++i) {
      if (i % 8 != 0)
        secmem_free(blocks[i]);
      else
        kept.push_back(blocks[i]);
    }
  }).join();
  void *mine = secmem_malloc(kOnePageSpanBlock);
  bool same = page_of(mine) == page_of(kept.front());
  fprintf(stderr, "the first block after the thread's exit is %s its span\n", same ? "in" : "outside");
  secmem_free(mine);
  for (void *p : kept) secmem_free(p);
  _exit(same ? 0 : 1);
}

// Allocates a batch of blocks of one size and frees them all, rounds times:
// a working set larger than a first-sized thread cache (about 16 KiB per
// class), so that every round overflows the cache and refills it.
void bounce(size_t size, int rounds, size_t batch = 64) {
  std::vector<void *> blocks(batch);
  for (int round = 0; round < rounds; ++round) {
    for (void *&p : blocks) {
      p = secmem_malloc(size);
      ASSERT_NE(p, nullptr);
      memset(p, 0x5a, size);
    }
    for (void *p : blocks) secmem_free(p);
  }
}

size_t peak_held() {
  secmem_stats s{};
  secmem_get_stats(&s);
  return s.peak_held;
}

// The two cases below, each in a fresh process (peak_held is the
// process's): they print the peak and exit 0 when it is as expected.

// A thread bounces with 64 blocks of 4 KiB and stays alive with its cache;
// then this thread holds 64 blocks of 4 KiB: at the peak, those and the
// blocks the other thread kept: with its cache grown, at least half a batch;
// with the first cache (4 blocks), at most 4.
[[noreturn]] void bounce_and_report_growth() {
  std::atomic<bool> bounced{false}, leave{false};
  std::thread other([&bounced, &leave] {
    bounce(4096, 12);
    bounced.store(true);
    while (!leave.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  });
  while (!bounced.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  std::vector<void *> blocks;
  for (int i = 0; i < 64; ++i) blocks.push_back(secmem_malloc(4096));
  size_t peak = peak_held();
  for (void *p : blocks) secmem_free(p);
  leave.store(true);
  other.join();
  fprintf(stderr, "peak held %zu\n", peak);
  _exit(peak >= (64 + 32) * 4096 ? 0 : 1);
}

// Runs work on kThreads threads in turn, each staying alive (with its
// cache) once done; the process's peak held bytes when all are done.
constexpr int kThreadsInTurn = 6;
size_t peak_with_threads_in_turn(void (*work)()) {
  std::atomic<int> done{0};
  std::atomic<bool> leave{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreadsInTurn; ++t) {
    threads.emplace_back([&done, &leave, work] {
      work();
      done.fetch_add(1);
      while (!leave.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    });
    while (done.load() != t + 1) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  size_t peak = peak_held();
  leave.store(true);
  for (std::thread &thread : threads) thread.join();
  fprintf(stderr, "peak held %zu\n", peak);
  return peak;
}

// Six threads bounce in turn with 128 blocks of 8 KiB (their caches grow to
// hold them all, 1 MiB each) and stay alive with their caches: at the peak
// no more than one batch, the growth budget (4 MiB) and the first caches,
// and more than the budget's half (the caches did grow).
[[noreturn]] void bounce_in_threads_and_report_peak() {
  size_t peak = peak_with_threads_in_turn([] { bounce(8192, 14, 128); });
  constexpr size_t kBatch = 128 * 8192, kBudget = size_t{4} << 20, kFirstCaches = kThreadsInTurn * 2 * 8192;
  _exit(peak <= kBatch + kBudget + kFirstCaches + 64 * 1024 && peak > kBatch + kBudget / 2 ? 0 : 1);
}

// Six threads in turn free 32 blocks of 200 KiB each and stay alive: the
// large blocks their caches keep stay within the process's budget
// (kLargeCacheBudget, 32 MiB, or a sixteenth of the memlock budget if less:
// six threads' 32 would be 38 MiB): at the peak no more than one thread's
// 32 blocks and the budget, and more than half the budget (the caches do
// keep blocks).
constexpr size_t kKeptBlock = 200 * 1024;
constexpr int kKeptBlocks = 32;
[[noreturn]] void keep_large_blocks_in_threads_and_report_peak() {
  size_t peak = peak_with_threads_in_turn([] {
    void *blocks[kKeptBlocks];
    for (void *&p : blocks) {
      p = secmem_malloc(kKeptBlock);
      if (p == nullptr) _exit(2);
      memset(p, 0x5a, kKeptBlock);
    }
    for (void *p : blocks) secmem_free(p);
  });
  static_assert(kThreadsInTurn * kKeptBlocks * kKeptBlock > secmem::heap::kLargeCacheBudget,
                "the threads would keep more than the budget");
  const size_t kBudget = secmem::heap::g_heap.large_cache_budget.load();
  bool keeps = secmem::heap::g_ro.plain_ops; // not under a memory checker
  _exit(peak <= kKeptBlocks * kKeptBlock + kBudget + kKeptBlocks * 4096 && (!keeps || peak > kBudget / 2) ? 0 : 1);
}

// Six threads in turn free four blocks aligned to 1 MiB (runs of 260 pages
// with their leading guards: one per chunk) and stay alive: none is kept
// (each would hold a chunk, counted as its 12 KiB), so each thread reuses
// the chunks the one before it freed.
[[noreturn]] void free_over_aligned_blocks_in_threads_and_report_mapped() {
  peak_with_threads_in_turn([] {
    secmem_free(secmem_malloc(16)); // a thread keeps large blocks once it has a cache
    void *blocks[4];
    for (void *&p : blocks) {
      p = secmem_aligned_alloc(size_t{1} << 20, 8193);
      memset(p, 0x5a, 8193);
    }
    for (void *p : blocks) secmem_free(p);
  });
  secmem_stats s{};
  secmem_get_stats(&s);
  size_t mapped = s.mapped_secret + s.mapped_locked + s.mapped_unlocked;
  fprintf(stderr, "mapped %zu\n", mapped);
  _exit(mapped <= size_t{12} << 20 ? 0 : 1);
}

// Thread key destructors created after secmem's run after its own (which
// retires the thread's cache) and may free; one that frees in glibc's last
// round of destructors made a cache that nothing retired, and kept the block
// there for good: 100 such threads each freeing a 200 KiB block held 1.2 MB
// at the peak (the process's budget for kept blocks, spent for ever).
pthread_key_t g_late_key;
struct LateFree {
  int round = 0;
  void *block = nullptr;
};
void free_in_last_round(void *value) {
  auto *late = static_cast<LateFree *>(value);
  if (++late->round < PTHREAD_DESTRUCTOR_ITERATIONS) { // set again: called in the next round
    pthread_setspecific(g_late_key, late);
    return;
  }
  secmem_free(late->block);
  delete late;
}
[[noreturn]] void free_in_late_destructors_and_report_peak() {
  secmem_free(secmem_malloc(16)); // secmem's key first
  if (pthread_key_create(&g_late_key, free_in_last_round) != 0) _exit(2);
  for (int t = 0; t < 100; ++t) {
    std::thread([] {
      auto *late = new LateFree;
      late->block = secmem_malloc(kKeptBlock);
      memset(late->block, 0x5a, kKeptBlock);
      pthread_setspecific(g_late_key, late);
    }).join();
  }
  secmem_stats s{};
  secmem_get_stats(&s);
  fprintf(stderr, "peak held %zu, %llu allocations, %llu frees\n", s.peak_held,
          static_cast<unsigned long long>(s.allocations), static_cast<unsigned long long>(s.frees));
  _exit(s.peak_held <= 2 * kKeptBlock && s.allocations == s.frees ? 0 : 1);
}

} // namespace

// A thread whose working set outgrows its cache gets a larger one: the
// blocks it frees stay with it instead of going back under the heap lock
// (what made two threads slower than one with batches of 1-4 KiB).
TEST(Threads, ABouncingThreadsCacheGrows) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(bounce_and_report_growth(), testing::ExitedWithCode(0), "peak held");
}

// Threads refill their caches from spans of their own: two threads using
// blocks of one span wrote to neighbouring lines of its live marks, and
// random batches of 16-byte blocks ran 1.5x faster on 2 threads than on 1.
TEST(Threads, ThreadsAllocateFromSpansOfTheirOwn) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(allocate_in_threads_and_report_shared_spans(), testing::ExitedWithCode(0), "share: 0");
}

namespace {

uintptr_t chunk_number(const void *p) { return reinterpret_cast<uintptr_t>(p) >> 21; }

size_t distinct(std::vector<uintptr_t> values) {
  std::sort(values.begin(), values.end());
  return static_cast<size_t>(std::unique(values.begin(), values.end()) - values.begin());
}

// Runs allocate(0) on one thread, then allocate(1) on another, each as if it
// had found the heap lock taken, both alive (and so holding their claims)
// until both have run.
template <typename Allocate> void in_turn_on_two_threads_that_waited(Allocate allocate) {
  std::atomic<int> turn{0};
  auto work = [&allocate, &turn](int t) {
    while (turn.load() != t) std::this_thread::yield();
    ++secmem::heap::t_lock_waits;
    allocate(t);
    turn.fetch_add(1);
    while (turn.load() != 2) std::this_thread::yield();
  };
  std::thread one(work, 0), two(work, 1);
  one.join();
  two.join();
}

// Two chunks with room in each (a block kept in each, so that neither is
// given back); then two threads that have waited for the heap lock take
// eight 16 KiB blocks each, one after the other, both alive until both
// have. Prints whether their blocks are in one chunk each, apart.
[[noreturn]] void threads_that_waited_take_chunks_apart() {
  std::vector<void *> made;
  std::thread([&made] { // its cache, and the blocks it keeps there, go back at its exit
    do {
      made.push_back(secmem_malloc(16 << 10));
      if (made.back() == nullptr) _exit(3);
    } while (chunk_number(made.back()) == chunk_number(made.front()));
    for (size_t i = 1; i + 1 < made.size(); ++i) secmem_free(made[i]); // keeps the first and the last
  })
      .join();
  std::vector<uintptr_t> chunks[2];
  in_turn_on_two_threads_that_waited([&chunks](int t) {
    for (int i = 0; i < 8; ++i) {
      void *p = secmem_malloc(16 << 10);
      if (p == nullptr) _exit(3);
      chunks[t].push_back(chunk_number(p));
    }
  });
  bool apart = distinct(chunks[0]) == 1 && distinct(chunks[1]) == 1 && chunks[0].front() != chunks[1].front();
  fprintf(stderr, "first thread's blocks in %zu chunk(s), the second's in %zu, %s\n", distinct(chunks[0]),
          distinct(chunks[1]), apart ? "apart" : "together");
  // Under a memory checker (ReadOnly::plain_ops false) threads have no large-block cache to keep a claim in.
  _exit(!secmem::heap::g_ro.plain_ops || apart ? 0 : 1);
}

// A chunk in use (a block kept in it) and two empty chunks; then two threads
// that have waited for the heap lock take a 16 KiB block each, one after
// the other, both alive until both have. Prints whether the second's block
// went into an empty chunk.
[[noreturn]] void threads_that_waited_leave_empty_chunks_whole() {
  std::vector<void *> made;
  do { // three chunks' worth of 1000 KiB blocks (two to a chunk)
    made.push_back(secmem_malloc(1000 << 10));
    if (made.back() == nullptr) _exit(3);
  } while (made.size() < 6);
  void *kept = secmem_malloc(16 << 10); // in the chunk of the first two, after them
  if (kept == nullptr) _exit(3);
  for (void *p : made) secmem_free(p); // the other two chunks are empty now
  uintptr_t blocks[2] = {};
  in_turn_on_two_threads_that_waited([&blocks](int t) { blocks[t] = chunk_number(secmem_malloc(16 << 10)); });
  bool whole = blocks[0] == chunk_number(kept) && blocks[1] == chunk_number(kept);
  fprintf(stderr, "the threads' blocks %s\n", whole ? "in the chunk in use" : "in an empty chunk");
  _exit(!secmem::heap::g_ro.plain_ops || whole ? 0 : 1);
}

} // namespace

// Claims only move blocks between chunks in use: a thread that waited for
// the lock, when the one chunk in use is claimed by another, still takes
// its block there (first-fit) rather than from an empty chunk, which stays
// whole for a block that needs most of it (claims that took empty chunks
// left the adversarial review's 1000 KiB blocks no room: a new chunk, or a
// weaker tier under a memlock limit).
TEST(Threads, ThreadsThatWaitedForTheLockLeaveEmptyChunksWhole) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(threads_that_waited_leave_empty_chunks_whole(), testing::ExitedWithCode(0), "the threads. blocks");
}

// Threads that have waited for the heap lock take their large blocks' runs
// from a chunk no other such thread claims, while there is one with room:
// two threads bouncing 16 KiB blocks took turns at one chunk's runs,
// bitmaps and pages (random batches on two threads 0.72-0.78x of one;
// with chunks of their own 1.0-1.1x in interleaved runs).
TEST(Threads, ThreadsThatWaitedForTheLockTakeLargeRunsFromChunksOfTheirOwn) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(threads_that_waited_take_chunks_apart(), testing::ExitedWithCode(0), "first thread.s blocks");
}

// A thread's claim on its span ends with the thread: the span's free blocks
// go to the next thread that needs them, not to waste beside a new span.
TEST(Threads, AnExitedThreadsSpanIsAnyonesAgain) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(reuse_an_exited_threads_span(), testing::ExitedWithCode(0), "is in its span");
}

// The growth of all caches together is bounded for the process.
TEST(Threads, CacheGrowthIsBoundedForTheProcess) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(bounce_in_threads_and_report_peak(), testing::ExitedWithCode(0), "peak held");
}

// Freed large blocks kept by threads for reuse are bounded for the process too.
TEST(Threads, KeptLargeBlocksAreBoundedForTheProcess) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(keep_large_blocks_in_threads_and_report_peak(), testing::ExitedWithCode(0), "peak held");
}

// A freed block whose alignment took many guard pages before it is not kept.
TEST(Threads, OverAlignedBlocksAreNotKept) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(free_over_aligned_blocks_in_threads_and_report_mapped(), testing::ExitedWithCode(0), "mapped");
}

// A block freed by a thread key's destructor in the last round is not kept
// by a cache made for a thread that is going away.
TEST(Threads, LateKeyDestructorsLeaveNoCacheBehind) {
#if defined(__SANITIZE_THREAD__)
  // ThreadSanitizer destroys its own state of the thread in that last round:
  // any atomic operation there crashes inside its runtime (secmem's or not).
  GTEST_SKIP() << "ThreadSanitizer's runtime cannot run atomics in the last round of thread key destructors";
#endif
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(free_in_late_destructors_and_report_peak(), testing::ExitedWithCode(0), "peak held");
}
