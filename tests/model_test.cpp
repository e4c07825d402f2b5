// Randomised model-based test: long random sequences of malloc, calloc,
// realloc, aligned_alloc and free, checked against a reference model of what
// every live block must contain (block_model.h, shared with the fuzzer).
#include <gtest/gtest.h>

#include <random>

#include "block_model.h"
#include "secmem/secmem.h"

using namespace secmem::test;

namespace {

void report(const char *what, const Block &block) {
  ADD_FAILURE() << what << ": block " << static_cast<void *>(block.p) << " of " << block.size << " bytes";
}

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
    for (size_t i = 0; i < live_.size(); ++i) ASSERT_TRUE(live_.verify(i));
  }

  void release_all() {
    while (!live_.empty()) release(0);
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
    ASSERT_GE(secmem_usable_size(p), size);
    // Aligned, not handed out twice, and zero whichever call made it.
    ASSERT_TRUE(live_.add(p, size, next_seed_++, alignment));
  }

  void release(size_t i) {
    ASSERT_TRUE(live_.verify(i));
    ASSERT_TRUE(live_.release(i));
  }

  void resize(size_t i) {
    ASSERT_TRUE(live_.verify(i));
    size_t size = random_size();
    void *q = secmem_realloc(live_[i].p, size);
    if (size == 0) {
      ASSERT_EQ(q, nullptr);
      live_.forget(i);
      return;
    }
    ASSERT_NE(q, nullptr);
    ASSERT_TRUE(live_.moved(i, q, size));
    ASSERT_TRUE(live_.rewrite(i, next_seed_++));
  }

  size_t pick() { return std::uniform_int_distribution<size_t>(0, live_.size() - 1)(rng_); }

  std::mt19937_64 rng_;
  BlockModel live_{report};
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
  EXPECT_EQ(in_use_bytes(), 0u);
}

INSTANTIATE_TEST_SUITE_P(Seeds, RandomSequences, testing::Values(1, 2, 3, 42, 1234567));
