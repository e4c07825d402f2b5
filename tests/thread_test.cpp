// Threads: allocate and free each other's blocks; thread exit returns caches.
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "block_model.h"
#include "secmem/secmem.h"
#include "test_support.h"

using namespace secmem::test;

namespace {

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
