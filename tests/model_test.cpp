// Randomised model-based test: long random sequences of malloc, calloc,
// realloc, aligned_alloc and free, checked against a reference model of what
// every live block must contain.
#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <random>
#include <vector>

#include "secmem/secmem.h"
#include "test_support.h"

using namespace secmem::test;

namespace {

struct Block {
  size_t size;
  uint64_t seed;
  size_t alignment;
};

class Model {
public:
  explicit Model(uint64_t seed) : rng_(seed) {}

  void step() {
    std::uniform_int_distribution<int> op(0, 999);
    int which = live_.empty() ? 0 : op(rng_);
    if (which < 400) {
      allocate();
    } else if (which < 700) {
      release(pick());
    } else if (which < 999) {
      resize(pick());
    } else {
      verify_all();
    }
  }

  void verify_all() {
    for (auto &[p, block] : live_) verify(p, block);
  }

  void release_all() {
    while (!live_.empty()) release(live_.begin()->first);
  }

private:
  size_t random_size() {
    std::uniform_int_distribution<int> bucket(0, 99);
    int b = bucket(rng_);
    size_t max = b < 70 ? 256 : b < 90 ? 8192 : b < 99 ? 300000 : 3 << 20;
    return std::uniform_int_distribution<size_t>(0, max)(rng_);
  }

  void allocate() {
    size_t size = random_size();
    std::uniform_int_distribution<int> kind(0, 2);
    size_t alignment = 16;
    void *p = nullptr;
    switch (kind(rng_)) {
    case 0: p = secmem_malloc(size); break;
    case 1: p = secmem_calloc(1, size); break;
    case 2:
      alignment = size_t{1} << std::uniform_int_distribution<int>(4, 16)(rng_);
      p = secmem_aligned_alloc(alignment, size);
      break;
    }
    ASSERT_NE(p, nullptr) << size;
    ASSERT_EQ(reinterpret_cast<uintptr_t>(p) % alignment, 0u);
    ASSERT_EQ(live_.count(p), 0u) << "handed out twice";
    ASSERT_GE(secmem_usable_size(p), size);
    // Fresh memory is always zero, whichever call made it.
    ASSERT_EQ(first_nonzero(p, size), size) << "fresh block of " << size << " bytes is not zero";
    Block block{size, next_seed_++, alignment};
    write(p, block);
    live_[p] = block;
  }

  void release(void *p) {
    verify(p, live_[p]);
    secmem_free(p);
    ASSERT_FALSE(secmem_owns(p));
    live_.erase(p);
  }

  void resize(void *p) {
    Block block = live_[p];
    verify(p, block);
    size_t size = random_size();
    void *q = secmem_realloc(p, size);
    if (size == 0) {
      ASSERT_EQ(q, nullptr);
      live_.erase(p);
      return;
    }
    ASSERT_NE(q, nullptr);
    live_.erase(p);
    ASSERT_EQ(live_.count(q), 0u);
    size_t kept = std::min(size, block.size);
    ASSERT_EQ(first_mismatch(q, kept, block.seed), kept) << "realloc lost contents";
    Block resized{size, next_seed_++, 16};
    write(q, resized);
    live_[q] = resized;
  }

  void *pick() {
    auto it = live_.begin();
    std::advance(it, std::uniform_int_distribution<size_t>(0, live_.size() - 1)(rng_));
    return it->first;
  }

  static size_t first_nonzero(const void *p, size_t n) {
    const auto *bytes = static_cast<const unsigned char *>(p);
    for (size_t i = 0; i < n; ++i)
      if (bytes[i] != 0) return i;
    return n;
  }

  static size_t first_mismatch(const void *p, size_t n, uint64_t seed) {
    const auto *bytes = static_cast<const unsigned char *>(p);
    for (size_t i = 0; i < n; ++i)
      if (bytes[i] != pattern_byte(seed, i)) return i;
    return n;
  }

  static void write(void *p, const Block &block) {
    auto *bytes = static_cast<unsigned char *>(p);
    for (size_t i = 0; i < block.size; ++i) bytes[i] = pattern_byte(block.seed, i);
  }

  static void verify(void *p, const Block &block) {
    ASSERT_TRUE(secmem_owns(p));
    ASSERT_EQ(first_mismatch(p, block.size, block.seed), block.size) << "block " << p;
  }

  std::mt19937_64 rng_;
  std::map<void *, Block> live_;
  uint64_t next_seed_ = 1;
};

} // namespace

class RandomSequences : public testing::TestWithParam<uint64_t> {};

TEST_P(RandomSequences, MatchTheModel) {
  Model model(GetParam());
  for (int i = 0; i < 10000; ++i) {
    ASSERT_NO_FATAL_FAILURE(model.step()) << "step " << i;
  }
  model.verify_all();
  model.release_all();
  secmem_stats s{};
  secmem_get_stats(&s);
  EXPECT_EQ(s.in_use_secret + s.in_use_locked + s.in_use_unlocked, 0u);
}

INSTANTIATE_TEST_SUITE_P(Seeds, RandomSequences, testing::Values(1, 2, 3, 42, 1234567));
