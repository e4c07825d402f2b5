// Size classes: every small request is rounded up to one of these, and each
// class packs its blocks densely into spans of a few pages.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

#include "platform/os.h"

namespace secmem {

inline constexpr std::array<uint32_t, 32> kClassSizes = {
    16,  32,  48,  64,   80,   96,   112,  128,  160,  192,  224,  256,  320,  384,  448,  512,
    640, 768, 896, 1024, 1280, 1536, 1792, 2048, 2560, 3072, 3584, 4096, 5120, 6144, 7168, 8192};
inline constexpr int kNumClasses = static_cast<int>(kClassSizes.size());
inline constexpr size_t kMaxSmallSize = 8192;
inline constexpr int kMaxBlocksPerSpan = 512;

// Pages per span: the fewest (up to 8) that waste at most 1/8 of the span.
constexpr uint32_t span_pages_for(uint32_t size) {
  for (uint32_t pages = 1; pages <= 8; ++pages) {
    uint32_t bytes = pages * static_cast<uint32_t>(os::kPageSize);
    if (bytes / size > kMaxBlocksPerSpan) return pages - 1 == 0 ? 1 : pages - 1;
    if (bytes >= size && bytes % size <= bytes / 8) return pages;
  }
  return 8;
}

struct ClassTable {
  std::array<uint8_t, kMaxSmallSize / 16 + 1> by_granule{}; // (size + 15) / 16 -> class
  std::array<uint32_t, kNumClasses> span_pages{};
  std::array<uint32_t, kNumClasses> blocks_per_span{};
};

constexpr ClassTable make_class_table() {
  ClassTable table;
  int cls = 0;
  for (size_t granule = 0; granule < table.by_granule.size(); ++granule) {
    while (kClassSizes[cls] < granule * 16) ++cls;
    table.by_granule[granule] = static_cast<uint8_t>(cls);
  }
  for (int c = 0; c < kNumClasses; ++c) {
    table.span_pages[c] = span_pages_for(kClassSizes[c]);
    table.blocks_per_span[c] = table.span_pages[c] * static_cast<uint32_t>(os::kPageSize) / kClassSizes[c];
  }
  return table;
}

inline constexpr ClassTable kClassTable = make_class_table();

// Class for a request of size bytes (size <= kMaxSmallSize); 0 maps to 16 bytes.
inline int size_to_class(size_t size) { return kClassTable.by_granule[(size + 15) >> 4]; }

static_assert(kClassSizes[kNumClasses - 1] == kMaxSmallSize);
static_assert(kClassTable.blocks_per_span[0] <= kMaxBlocksPerSpan);

} // namespace secmem
