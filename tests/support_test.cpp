// The small data structures the allocator is built from: the intrusive list
// (chunks, spans, thread caches) and the bitmaps (slots, pages, free blocks).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include <sys/mman.h>

#include "support/bitmap.h"
#include "support/list.h"
#include "support/object_pool.h"

using namespace secmem;

namespace {

struct Item {
  int value = 0;
  ListLinks<Item> links;
};
using ItemList = IntrusiveList<Item, &Item::links>;

std::vector<int> values(const ItemList &list) {
  std::vector<int> out;
  for (Item *item = list.front(); item != nullptr; item = ItemList::next(item)) out.push_back(item->value);
  return out;
}

} // namespace

TEST(IntrusiveList, PushInsertAndRemoveKeepTheOrderAndTheBackLinks) {
  Item a{1, {}}, b{2, {}}, c{3, {}}, d{4, {}};
  ItemList list;
  EXPECT_TRUE(list.empty());
  list.push_front(&b);
  list.push_front(&a);
  list.insert_after(&b, &d);
  list.insert_after(&b, &c);
  EXPECT_EQ(values(list), (std::vector<int>{1, 2, 3, 4}));
  EXPECT_EQ(c.links.prev, &b);
  EXPECT_EQ(d.links.prev, &c);
  list.remove(&a); // the head
  list.remove(&c); // the middle
  list.remove(&d); // the tail
  EXPECT_EQ(values(list), (std::vector<int>{2}));
  EXPECT_EQ(b.links.prev, nullptr);
  EXPECT_EQ(b.links.next, nullptr);
  EXPECT_EQ(c.links.next, nullptr); // a removed item keeps no stale links
  list.remove(&b);
  EXPECT_TRUE(list.empty());
}

TEST(IntrusiveList, MatchesAVectorOverRandomOperations) {
  std::mt19937 rng(7);
  std::vector<Item> items(64);
  for (int i = 0; i < 64; ++i) items[i].value = i;
  std::vector<int> model;
  std::vector<bool> in(64, false);
  ItemList list;
  for (int step = 0; step < 20000; ++step) {
    int i = static_cast<int>(rng() % 64);
    if (in[i]) {
      list.remove(&items[i]);
      model.erase(std::find(model.begin(), model.end(), i));
    } else if (model.empty() || rng() % 2 == 0) {
      list.push_front(&items[i]);
      model.insert(model.begin(), i);
    } else {
      size_t at = rng() % model.size();
      list.insert_after(&items[model[at]], &items[i]);
      model.insert(model.begin() + static_cast<long>(at) + 1, i);
    }
    in[i] = !in[i];
    ASSERT_EQ(values(list), model) << "step " << step;
  }
}

TEST(Bitmap, SetClearAndRangesAcrossWordBoundaries) {
  uint64_t words[3] = {};
  bitmap::set_range(words, 60, 10);
  for (uint32_t bit = 0; bit < 192; ++bit) EXPECT_EQ(bitmap::test(words, bit), bit >= 60 && bit < 70) << bit;
  bitmap::clear(words, 64);
  EXPECT_FALSE(bitmap::test(words, 64));
  EXPECT_EQ(bitmap::find_set_in(words, 64, 10), 65u);
  EXPECT_EQ(bitmap::find_set_in(words, 70, 100), UINT32_MAX);
  bitmap::clear_range(words, 0, 192);
  EXPECT_EQ(words[0] | words[1] | words[2], 0u);
  EXPECT_EQ(bitmap::words_for(0), 0u);
  EXPECT_EQ(bitmap::words_for(64), 1u);
  EXPECT_EQ(bitmap::words_for(65), 2u);
}

TEST(Bitmap, FindClearRunHonoursAlignmentAndTheLimit) {
  uint64_t words[8] = {};
  uint32_t first = 0;
  ASSERT_TRUE(bitmap::find_clear_run(words, 512, 512, 1, &first));
  EXPECT_EQ(first, 0u);
  EXPECT_FALSE(bitmap::find_clear_run(words, 511, 512, 1, &first)); // longer than the limit
  bitmap::set(words, 0);
  bitmap::set(words, 130);
  ASSERT_TRUE(bitmap::find_clear_run(words, 512, 4, 1, &first));
  EXPECT_EQ(first, 1u);
  ASSERT_TRUE(bitmap::find_clear_run(words, 512, 4, 64, &first));
  EXPECT_EQ(first, 64u);
  ASSERT_TRUE(bitmap::find_clear_run(words, 512, 70, 64, &first)); // 128..197 holds bit 130
  EXPECT_EQ(first, 192u);
  EXPECT_FALSE(bitmap::find_clear_run(words, 260, 70, 64, &first)); // 192+70 passes the limit
}

// The word-at-a-time searches and ranges against a bit-at-a-time model, over
// 8 words (a chunk's 512 pages), runs up to 80 bits long, alignments up to 64.
TEST(Bitmap, FindClearRunMatchesABruteForceSearch) {
  std::mt19937 rng(11);
  auto random_word = [&rng] { return rng() | (uint64_t{rng()} << 32); };
  for (int round = 0; round < 4000; ++round) {
    uint64_t words[8];
    int sparseness = static_cast<int>(rng() % 6); // more and more clear bits
    for (uint64_t &word : words) {
      word = random_word();
      for (int i = 0; i < sparseness; ++i) word &= random_word();
    }
    uint32_t limit = rng() % 513, count = 1 + rng() % 80, align = 1u << (rng() % 7);
    auto clear_from = [&words](uint32_t start, uint32_t n) {
      for (uint32_t bit = start; bit < start + n; ++bit)
        if (bitmap::test(words, bit)) return false;
      return true;
    };
    uint32_t expected = UINT32_MAX;
    for (uint32_t start = 0; start + count <= limit && expected == UINT32_MAX; start += align)
      if (clear_from(start, count)) expected = start;
    uint32_t first = UINT32_MAX;
    bool found = bitmap::find_clear_run(words, limit, count, align, &first);
    ASSERT_EQ(found, expected != UINT32_MAX) << "round " << round;
    if (found) {
      ASSERT_EQ(first, expected) << "round " << round;
    }
    uint32_t from = rng() % 512, n = rng() % (513 - from), set = UINT32_MAX;
    for (uint32_t bit = from; bit < from + n && set == UINT32_MAX; ++bit)
      if (bitmap::test(words, bit)) set = bit;
    ASSERT_EQ(bitmap::find_set_in(words, from, n), set) << "round " << round;
  }
}

TEST(Bitmap, RangesMatchBitAtATime) {
  std::mt19937 rng(12);
  uint64_t words[8] = {};
  bool model[512] = {};
  for (int round = 0; round < 4000; ++round) {
    uint32_t first = rng() % 512, count = rng() % (513 - first);
    bool set = rng() % 2 == 0;
    if (set)
      bitmap::set_range(words, first, count);
    else
      bitmap::clear_range(words, first, count);
    for (uint32_t bit = first; bit < first + count; ++bit) model[bit] = set;
    for (uint32_t bit = 0; bit < 512; ++bit) ASSERT_EQ(bitmap::test(words, bit), model[bit]) << "round " << round;
  }
}

// Metadata objects: zero when taken (also when reused), and a slab's pages
// are touched only as objects are taken from it (each page touched is one
// more for every fork to copy; the pool used to link every object of a new
// slab, touching all of its pages).
struct Meta {
  unsigned char bytes[1000];
};

TEST(ObjectPool, TakesZeroObjectsAndTouchesOnlyThePagesTaken) {
  ObjectPool<Meta> pool;
  Meta *first = pool.take();
  ASSERT_NE(first, nullptr);
  EXPECT_TRUE(std::all_of(first->bytes, first->bytes + sizeof first->bytes, [](unsigned char b) { return b == 0; }));
  auto *slab = reinterpret_cast<char *>(first); // the first object starts the slab
  unsigned char in_memory[16] = {};
  ASSERT_EQ(mincore(slab, sizeof in_memory * 4096, in_memory), 0);
  int pages = 0;
  for (unsigned char page : in_memory) pages += page & 1;
  EXPECT_EQ(pages, 1) << "a new slab of 64 KiB: only the page of the one object taken is in memory";
  std::vector<Meta *> taken{first};
  for (int i = 0; i < 200; ++i) { // past the first slab
    Meta *m = pool.take();
    ASSERT_NE(m, nullptr);
    memset(m->bytes, 0xAB, sizeof m->bytes);
    taken.push_back(m);
  }
  std::sort(taken.begin(), taken.end());
  EXPECT_EQ(std::adjacent_find(taken.begin(), taken.end()), taken.end()) << "an object handed out twice";
  Meta *back = taken[7];
  pool.give(back);
  Meta *again = pool.take();
  EXPECT_EQ(again, back) << "a given-back object is taken first";
  EXPECT_TRUE(std::all_of(again->bytes, again->bytes + sizeof again->bytes, [](unsigned char b) { return b == 0; }));
}
