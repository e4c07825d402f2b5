// SECMEM_RELEASE: `empty` gives chunks back to the kernel once nothing in
// them is in use; `never` keeps faulted pages for reuse. Its own binary (run
// once per setting), so the heap starts empty.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <vector>

#include "secmem/secmem.h"
#include "test_support.h"

using namespace secmem::test;

namespace {
// Chunks mapped from memfd_secret: their first mapping starts at a 2 MiB
// boundary (guard pages inside a chunk split it into several mappings).
size_t heap_mappings() {
  size_t count = 0;
  for (const Mapping &m : read_mappings())
    if (m.secret() && m.start % (size_t{2} << 20) == 0) ++count;
  return count;
}

void churn(size_t bytes_each, size_t count) {
  std::vector<void *> blocks;
  for (size_t i = 0; i < count; ++i) blocks.push_back(secmem_malloc(bytes_each));
  for (void *p : blocks) secmem_free(p);
}
} // namespace

TEST(Release, FollowsTheConfiguredPolicy) {
  SECMEM_REQUIRE_SECRETMEM();
  churn(100, 30000); // several chunks' worth
  churn(50000, 100);
  secmem_stats s{};
  secmem_get_stats(&s);
  if (env_is("SECMEM_RELEASE", "empty")) {
    EXPECT_EQ(s.chunks, 0u);
    EXPECT_EQ(s.memlock_charged, 0u);
    EXPECT_EQ(s.pages_touched, 0u);
    EXPECT_EQ(heap_mappings(), 0u);
  } else {
    EXPECT_GE(s.chunks, 2u);
    EXPECT_EQ(heap_mappings(), s.chunks);
    // The same work again reuses the faulted pages.
    churn(100, 30000);
    secmem_stats again{};
    secmem_get_stats(&again);
    EXPECT_EQ(again.pages_touched, s.pages_touched);
    EXPECT_EQ(again.chunks, s.chunks);
  }
}
