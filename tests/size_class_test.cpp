// Size classes: dense packing and exact rounding.
#include <gtest/gtest.h>

#include "heap/size_class.h"

using namespace secmem;

TEST(SizeClass, EveryRequestGetsTheSmallestClassThatFits) {
  for (size_t size = 0; size <= kMaxSmallSize; ++size) {
    int cls = size_to_class(size);
    ASSERT_GE(kClassSizes[cls], size) << size;
    if (cls > 0) {
      ASSERT_LT(kClassSizes[cls - 1], size == 0 ? 1 : size) << size;
    }
  }
}

TEST(SizeClass, ClassesKeepSixteenByteAlignmentAndRoundLittle) {
  for (int cls = 0; cls < kNumClasses; ++cls) {
    EXPECT_EQ(kClassSizes[cls] % 16, 0u);
    if (cls > 0) {
      EXPECT_LE(kClassSizes[cls], kClassSizes[cls - 1] * 5 / 4 + 16) << "class " << cls;
    }
  }
}

TEST(SizeClass, SpansWasteAtMostAnEighth) {
  for (int cls = 0; cls < kNumClasses; ++cls) {
    uint32_t bytes = kClassTable.span_pages[cls] * static_cast<uint32_t>(os::kPageSize);
    uint32_t used = kClassTable.blocks_per_span[cls] * kClassSizes[cls];
    EXPECT_GE(kClassTable.blocks_per_span[cls], 1u);
    EXPECT_LE(kClassTable.blocks_per_span[cls], static_cast<uint32_t>(kMaxBlocksPerSpan));
    EXPECT_LE(bytes - used, bytes / 8) << "class " << kClassSizes[cls];
  }
}
