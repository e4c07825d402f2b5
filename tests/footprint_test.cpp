// Dense packing: 10,000 live 32-byte secrets touch at most 1.25x the pages
// their bytes need, plus one page per size class in use. Its own binary, so
// the heap starts empty.
#include <gtest/gtest.h>

#include <vector>

#include "block_model.h"
#include "secmem/secmem.h"

using secmem::test::in_use_bytes;

TEST(Footprint, TenThousandSmallSecretsArePackedDensely) {
  constexpr size_t kCount = 10000, kSize = 32, kPage = 4096;
  secmem_stats before{};
  secmem_get_stats(&before);
  std::vector<void *> blocks;
  for (size_t i = 0; i < kCount; ++i) blocks.push_back(secmem_malloc(kSize));
  secmem_stats after{};
  secmem_get_stats(&after);
  size_t needed = (kCount * kSize + kPage - 1) / kPage;
  size_t touched = after.pages_touched - before.pages_touched;
  RecordProperty("pages_touched", static_cast<int>(touched));
  RecordProperty("pages_needed", static_cast<int>(needed));
  EXPECT_LE(touched, needed * 5 / 4 + 1) << touched << " pages for " << needed << " pages of data";
  EXPECT_EQ(in_use_bytes(after), kCount * kSize);
  for (void *p : blocks) secmem_free(p);
}
