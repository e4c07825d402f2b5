// The C API's promises, on whichever backend SECMEM_BACKEND selects (meson
// runs this binary once per backend).
#include <gtest/gtest.h>

#include <algorithm>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <thread>

#include "block_model.h"
#include "heap/cache_ops.h"
#include "heap/size_class.h"
#include "heap/state.h"
#include "platform/cpu.h"
#include "platform/linux_facts.h"
#include "secmem/secmem.h"
#include "test_support.h"

#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#endif

using namespace secmem::test;

namespace {

constexpr size_t kChunk = size_t{2} << 20;
constexpr size_t kPage = 4096;

secmem_stats stats() {
  secmem_stats s{};
  EXPECT_EQ(secmem_get_stats(&s), 0);
  return s;
}

const std::vector<size_t> kSizes = {
    0,    1,    15,   16,   17,   31,   32,    100,   255,    256,     1000,          1024,
    4095, 4096, 4097, 8191, 8192, 8193, 12288, 65536, 100000, 1 << 20, (1 << 20) + 1, 3 << 20};

// A field of the first processor in /proc/cpuinfo's text, its value with
// a space before and after ("" when it is missing).
std::string cpuinfo_field(const std::string &info, const std::string &name) {
  size_t at = info.find("\n" + name);
  if (at == std::string::npos) return "";
  size_t colon = info.find(':', at);
  size_t end = info.find('\n', colon);
  return info.substr(colon + 1, end - colon - 1) + " ";
}

// Fills area with 0xa5, zeroes [from, from + n) of it with zero_fn, and
// answers the first byte that is not as it should be (0 inside, 0xa5
// around), or size when none.
template <typename Zero>
size_t first_wrong_byte(unsigned char *area, size_t size, size_t from, size_t n, Zero zero_fn) {
  memset(area, 0xa5, size);
  zero_fn(area + from, n);
  for (size_t i = 0; i < size; ++i)
    if (area[i] != (i >= from && i < from + n ? 0 : 0xa5)) return i;
  return size;
}

// Expects no block twice among blocks, then frees them in an order shuffled
// by seed, each no longer owned once freed.
void free_distinct_blocks_shuffled(std::vector<void *> &blocks, unsigned seed) {
  std::vector<void *> sorted = blocks;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(std::adjacent_find(sorted.begin(), sorted.end()), sorted.end()) << "a block handed out twice";
  std::shuffle(blocks.begin(), blocks.end(), std::mt19937(seed));
  for (void *p : blocks) {
    secmem_free(p);
    EXPECT_FALSE(secmem_owns(p));
  }
}

} // namespace

TEST(Heap, AllocationsAreAlignedZeroedOwnedAndUsable) {
  for (size_t size : kSizes) {
    void *p = secmem_malloc(size);
    ASSERT_NE(p, nullptr) << size;
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 16, 0u) << size;
    EXPECT_TRUE(secmem_owns(p)) << size;
    size_t usable = secmem_usable_size(p);
    EXPECT_GE(usable, size == 0 ? 1 : size);
    EXPECT_TRUE(all_zero(p, usable)) << size;
    fill_pattern(p, usable, size);
    EXPECT_TRUE(holds_pattern(p, usable, size));
    EXPECT_TRUE(secmem_owns(static_cast<char *>(p) + usable - 1)) << "last usable byte";
    // One past the allocation is not in it, even where its block goes on (a
    // 100-byte block's canary slack answered 1).
    if (usable % 16 != 0) {
      EXPECT_FALSE(secmem_owns(static_cast<char *>(p) + usable)) << size;
    }
    secmem_free(p);
    EXPECT_FALSE(secmem_owns(p)) << size;
  }
}

// Blocks freed past a thread cache's capacity go back to the heap in halves,
// and come back in refills: each block comes back at its own address,
// live, its size as asked for (one byte short of the class, so its canary is
// checked), zeroed and distinct.
TEST(Heap, BlocksGoThroughTheThreadCacheIntact) {
  constexpr int kBlocks = 700; // more than the cache holds of any class (128 blocks)
  for (size_t size : {16, 48, 128, 256, 1024}) {
    std::vector<void *> blocks(kBlocks);
    for (int round = 0; round < 3; ++round) {
      for (void *&p : blocks) {
        p = secmem_malloc(size - 1);
        ASSERT_NE(p, nullptr) << size;
        ASSERT_TRUE(secmem_owns(p)) << size;
        ASSERT_EQ(secmem_usable_size(p), size - 1) << size;
        ASSERT_TRUE(all_zero(p, size - 1)) << size;
        memset(p, 0x5a, size - 1);
      }
      free_distinct_blocks_shuffled(blocks, static_cast<unsigned>(round));
    }
  }
}

namespace {

// Large-block operations that took the heap lock, and the credit thread
// caches hold for large blocks (heap/thread_cache.h).
uint64_t locked_large_operations() {
  secmem::heap::ScopedLock lock(secmem::heap::g_heap.lock);
  return secmem::heap::g_heap.uncached_allocations + secmem::heap::g_heap.uncached_frees +
         secmem::heap::g_heap.large_give_backs;
}
size_t large_credit_held() { return secmem::heap::g_heap.large_cached.load(); }

// The thread caches keep large blocks only where no memory checker watches
// each block (ReadOnly::plain_ops: not under ASan or valgrind).
bool caches_keep_large_blocks() { return secmem::heap::g_ro.plain_ops; }

} // namespace

// Past what a thread's cache keeps of large blocks (kLargeSlots, or fewer
// if the process's credit for them, a sixteenth of the memlock budget, holds
// fewer), blocks move between its cache and the heap kLargeBatch at a time
// under one lock: twice as many blocks of 16 KiB, allocated and freed in a
// shuffled order, take the lock about twice per kLargeBatch blocks past
// those a round, not once per block (a second miss for one size stocks the
// cache with spare runs; a free the cache cannot keep gives its oldest
// blocks back and keeps the new one). Every block still comes zeroed, live,
// distinct and of its size.
TEST(Heap, LargeBlocksMoveBetweenACacheAndTheHeapInBatches) {
  std::thread([] {
    constexpr int kRounds = 8;
    constexpr size_t kSize = 16 << 10, kRun = kSize + 4096; // with its guard page
    secmem_free(secmem_malloc(16));                         // the first chunk: the budget is known from here on
    size_t budget = secmem::heap::g_heap.large_cache_budget.load();
    const int kept = static_cast<int>(std::min<size_t>(secmem::heap::kLargeSlots, budget / kRun));
    ASSERT_GE(kept, 8);
    const int kBlocks = 2 * kept;
    std::vector<void *> blocks(static_cast<size_t>(kBlocks));
    for (void *&p : blocks) p = secmem_malloc(kSize); // warm: the chunk's pages in memory
    for (void *p : blocks) secmem_free(p);
    uint64_t before = locked_large_operations();
    for (int round = 0; round < kRounds; ++round) {
      for (void *&p : blocks) {
        p = secmem_malloc(kSize);
        ASSERT_NE(p, nullptr);
        ASSERT_TRUE(secmem_owns(p));
        ASSERT_EQ(secmem_usable_size(p), kSize);
        ASSERT_TRUE(all_zero(p, kSize));
        memset(p, 0x5a, kSize);
      }
      free_distinct_blocks_shuffled(blocks, static_cast<unsigned>(round));
    }
    uint64_t locked = locked_large_operations() - before;
    uint64_t batches = 2 * static_cast<uint64_t>(kBlocks - kept) / secmem::heap::kLargeBatch;
    if (caches_keep_large_blocks())
      EXPECT_LE(locked, kRounds * 2 * batches) << "large blocks should move in batches";
    else
      EXPECT_EQ(locked, uint64_t{kRounds} * 2 * static_cast<uint64_t>(kBlocks));
  }).join();
}

// A free into a full cache (its slots, or its credit) keeps the new block
// (its bytes are in the processor's caches) and gives older ones back; the
// next request of its size gets it.
TEST(Heap, AFullLargeCacheKeepsTheNewestBlock) {
  std::thread([] {
    constexpr size_t kRun = (20 << 10) + 4096; // with its guard page
    secmem_free(secmem_malloc(20 << 10));      // a large block: the budget is known from here on
    size_t budget = secmem::heap::g_heap.large_cache_budget.load();
    std::vector<void *> blocks(std::min<size_t>(secmem::heap::kLargeSlots, budget / kRun) + 1);
    for (void *&p : blocks) {
      p = secmem_malloc(20 << 10);
      ASSERT_NE(p, nullptr);
    }
    for (void *p : blocks) secmem_free(p);
    void *again = secmem_malloc(20 << 10);
    ASSERT_NE(again, nullptr);
    if (caches_keep_large_blocks()) {
      EXPECT_EQ(again, blocks.back());
    }
    EXPECT_TRUE(all_zero(again, 20 << 10));
    secmem_free(again);
  }).join();
}

// The caches' credit for large blocks stays within the process's budget
// (kLargeCacheBudget, 32 MiB, or a sixteenth of the memlock budget if less)
// while eight threads keep more blocks than it holds (about 40 MiB), and
// comes back in full when they exit.
TEST(Heap, LargeBlockCreditStaysWithinTheBudgetAndComesBack) {
  secmem_free(secmem_malloc(20 << 10)); // a large block: the budget is known from here on
  const size_t kBudget = secmem::heap::g_heap.large_cache_budget.load();
  ASSERT_LE(kBudget, secmem::heap::kLargeCacheBudget);
  size_t start = large_credit_held();
  std::atomic<int> parked{0};
  std::atomic<bool> go{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&, t] {
      size_t size = static_cast<size_t>(48 + 8 * t) << 10;
      std::vector<void *> blocks(secmem::heap::kLargeSlots);
      for (int round = 0; round < 20; ++round) {
        for (void *&p : blocks) p = secmem_malloc(size);
        for (void *p : blocks) secmem_free(p);
        EXPECT_LE(large_credit_held(), kBudget);
      }
      parked.fetch_add(1);
      while (!go.load()) std::this_thread::yield();
    });
  while (parked.load() != 8) std::this_thread::yield();
  EXPECT_LE(large_credit_held(), kBudget);
  if (caches_keep_large_blocks() && !secmem::heap::g_heap.memory_tight.load()) { // none kept once memlock refused
    EXPECT_GT(large_credit_held(), start + kBudget / 2) << "the threads keep large blocks";
  }
  go.store(true);
  for (auto &thread : threads) thread.join();
  EXPECT_EQ(large_credit_held(), start);
}

TEST(Heap, MemoryComesFromTheConfiguredBackend) {
  if (!running_on_mlock_backend()) SECMEM_REQUIRE_SECRETMEM();
  void *p = secmem_malloc(64);
  ASSERT_NE(p, nullptr);
  secmem_stats s = stats();
  EXPECT_EQ(std::string(s.backend), expected_backend());
  EXPECT_EQ(std::string(secmem_backend_name()), expected_backend());
  Mapping mapping;
  ASSERT_TRUE(find_mapping(p, &mapping, true));
  if (running_on_mlock_backend()) {
    EXPECT_GE(s.in_use_locked, 64u);
    EXPECT_EQ(s.mapped_secret, 0u);
    EXPECT_EQ(mapping.path, "");
    EXPECT_EQ(mapping.perms, "rw-p");
  } else {
    EXPECT_GE(s.in_use_secret, 64u);
    EXPECT_EQ(s.mapped_locked + s.mapped_unlocked, 0u);
    EXPECT_EQ(mapping.path, secmem::linux_facts::kSecretMapName);
    EXPECT_EQ(mapping.perms, "rw-s");
  }
  // Locked and excluded from core dumps either way.
  EXPECT_TRUE(mapping.has_vm_flag("lo"));
  EXPECT_TRUE(mapping.has_vm_flag("dd"));
  secmem_free(p);
}

TEST(Heap, FreeZeroesEveryUsableByte) {
  // Every small class, whole and with slack (memset, 16-byte stores, 64-byte
  // stores from 2 KiB on processors with fast AVX-512), and large blocks.
  std::vector<size_t> sizes = {20000, 300000};
  for (uint32_t block : secmem::kClassSizes) {
    sizes.push_back(block);
    sizes.push_back(block - 15);
  }
  for (size_t size : sizes) {
    void *p = secmem_malloc(size);
    ASSERT_NE(p, nullptr);
    size_t usable = secmem_usable_size(p);
    fill_pattern(p, usable, 7);
    secmem_free(p);
    // Chunks stay mapped (SECMEM_RELEASE=never), so the freed bytes can be inspected.
    EXPECT_TRUE(all_zero(p, usable)) << size;
  }
}

namespace {
bool running_on_valgrind() {
#if defined(RUNNING_ON_VALGRIND)
  return RUNNING_ON_VALGRIND != 0;
#else
  return false;
#endif
}
} // namespace

// The wide-store zeroing (platform/cpu.h): 64-byte stores up to 8 KiB
// where glibc would use 512-bit stores itself on an Intel processor, 32-byte
// stores up to 64 KiB on an AMD processor with AVX2, memset elsewhere, as
// the processor answers CPUID (GCC's __builtin_cpu_*: what valgrind's
// emulated processor answers under valgrind, an Intel one without AVX-512)
// and, on the processor itself, as /proc/cpuinfo lists its flags; and each
// width the processor can run exact: every byte of the range zeroed, none
// before or after it, at lengths from the width up and at any alignment.
TEST(Heap, WideZeroingIsOnWhereItIsFasterAndExact) {
  __builtin_cpu_init();
  bool avx2 = __builtin_cpu_supports("avx2") != 0, avx512 = __builtin_cpu_supports("avx512f") != 0;
  unsigned width = __builtin_cpu_is("intel") && avx512 && __builtin_cpu_supports("avxvnni") ? 64
                   : __builtin_cpu_is("amd") && avx2                                        ? 32
                                                                                            : 0;
  size_t max_bytes = width == 64 ? 8192 : width == 32 ? 65536 : 0;
  if (!running_on_valgrind()) {
    std::string info = read_file("/proc/cpuinfo");
    std::string flags = cpuinfo_field(info, "flags");
    std::string vendor = cpuinfo_field(info, "vendor_id");
    auto has = [&flags](const char *flag) { return flags.find(std::string(" ") + flag + " ") != std::string::npos; };
    unsigned listed = vendor == " GenuineIntel " && has("avx512f") && has("avx_vnni") ? 64
                      : vendor == " AuthenticAMD " && has("avx2")                     ? 32
                                                                                      : 0;
    EXPECT_EQ(width, listed) << "vendor:" << vendor << " flags:" << flags;
  }
  secmem::cpu::WideZero wide = secmem::cpu::wide_zero();
  EXPECT_EQ(wide.width, width);
  EXPECT_EQ(wide.max_bytes, max_bytes);
  void *p = secmem_malloc(1); // the heap started
  secmem_free(p);
  EXPECT_EQ(secmem::heap::g_ro.wide_zero.width, width);
  EXPECT_EQ(secmem::heap::g_ro.wide_zero.max_bytes, max_bytes);
  std::vector<unsigned> widths;
  if (avx2) widths.push_back(32);
  if (avx512) widths.push_back(64);
  for (unsigned w : widths) {
    std::vector<size_t> lengths = {2047, 2048, 2049, 4095, 4096, 4097, 8191, 8192, 16384, 65535, 65536};
    for (size_t n = w; n <= 600; ++n) lengths.push_back(n);
    auto zero = [w](void *at, size_t n) { secmem::cpu::zero_wide(at, n, w); };
    for (size_t offset : {0, 1, 7, 16, 63}) {
      for (size_t n : lengths) {
        std::vector<unsigned char> area(n + 256);
        ASSERT_EQ(first_wrong_byte(area.data(), area.size(), 64 + offset, n, zero), area.size())
            << "width " << w << ", offset " << offset << ", n " << n;
      }
    }
  }
}

// The vector registers the shim clears after a call that leaves key bytes
// in them (platform/cpu.h, read from glibc's record of CPUID and XCR0): the
// same answer as GCC's __builtin_cpu_supports, which asks the processor
// itself, and, on the processor itself, as /proc/cpuinfo lists its flags.
TEST(Heap, VectorRegistersAreTheProcessorsAsItSaysItself) {
  __builtin_cpu_init();
  int expected = __builtin_cpu_supports("avx512f") ? 2 : __builtin_cpu_supports("avx") ? 1 : 0;
  EXPECT_EQ(secmem::cpu::vector_registers(), expected);
  if (!running_on_valgrind()) {
    std::string flags = cpuinfo_field(read_file("/proc/cpuinfo"), "flags");
    auto has = [&flags](const char *flag) { return flags.find(std::string(" ") + flag + " ") != std::string::npos; };
    EXPECT_EQ(secmem::cpu::vector_registers(), has("avx512f") ? 2 : has("avx") ? 1 : 0) << "flags:" << flags;
  }
}

// A small block's zeroing, whichever stores it takes (inline, memset, or
// 64-byte stores from 2 KiB): every byte of the block, none around it, at
// every class size.
TEST(Heap, SmallBlockZeroingIsExact) {
  alignas(64) static unsigned char area[8192 + 128];
  for (uint32_t block : secmem::kClassSizes) {
    auto zero_block = [](void *p, uint32_t n) { secmem::heap::zero_small(p, n); };
    ASSERT_EQ(first_wrong_byte(area, sizeof area, 64, block, zero_block), sizeof area) << "block " << block;
  }
}

TEST(Heap, CallocIsZeroedAfterReuseAndChecksOverflow) {
  std::vector<void *> blocks;
  for (int i = 0; i < 200; ++i) {
    void *p = secmem_malloc(96);
    fill_pattern(p, 96, i);
    blocks.push_back(p);
  }
  for (void *p : blocks) secmem_free(p);
  for (int i = 0; i < 200; ++i) {
    auto *p = static_cast<unsigned char *>(secmem_calloc(3, 32));
    ASSERT_NE(p, nullptr);
    EXPECT_TRUE(all_zero(p, secmem_usable_size(p)));
    blocks[i] = p;
  }
  for (void *p : blocks) secmem_free(p);
  errno = 0;
  EXPECT_EQ(secmem_calloc(SIZE_MAX / 2, 3), nullptr);
  EXPECT_EQ(errno, ENOMEM);
}

TEST(Heap, ReallocKeepsContentsAndZeroesWhatItLeaves) {
  auto *p = static_cast<unsigned char *>(secmem_realloc(nullptr, 40));
  ASSERT_NE(p, nullptr);
  fill_pattern(p, 40, 1);
  // Growing within the size class stays in place.
  EXPECT_EQ(secmem_realloc(p, 48), p);
  // Shrinking in place drops the tail past the new size: growing back shows zeros.
  fill_pattern(p, 48, 2);
  EXPECT_EQ(secmem_realloc(p, 40), p);
  EXPECT_TRUE(holds_pattern(p, 40, 2));
  EXPECT_EQ(secmem_realloc(p, 48), p);
  EXPECT_TRUE(all_zero(p + 40, 8));
  EXPECT_EQ(secmem_realloc(p, 40), p);
  // Moving copies, and leaves the old block zeroed.
  auto *q = static_cast<unsigned char *>(secmem_realloc(p, 5000));
  ASSERT_NE(q, nullptr);
  ASSERT_NE(q, p);
  EXPECT_TRUE(holds_pattern(q, 40, 2));
  EXPECT_TRUE(all_zero(p, 48));
  auto *r = static_cast<unsigned char *>(secmem_realloc(q, 24));
  EXPECT_TRUE(holds_pattern(r, 24, 2));
  // A failed realloc leaves the block alone.
  errno = 0;
  EXPECT_EQ(secmem_realloc(r, SIZE_MAX), nullptr);
  EXPECT_EQ(errno, ENOMEM);
  EXPECT_TRUE(holds_pattern(r, 24, 2));
  EXPECT_TRUE(secmem_owns(r));
  // Size 0 frees.
  EXPECT_EQ(secmem_realloc(r, 0), nullptr);
  EXPECT_FALSE(secmem_owns(r));
}

TEST(Heap, ReallocOfLargeBlocks) {
  auto *p = static_cast<unsigned char *>(secmem_malloc(10000));
  fill_pattern(p, 10000, 3);
  auto *q = static_cast<unsigned char *>(secmem_realloc(p, 2 << 20));
  ASSERT_NE(q, nullptr);
  EXPECT_TRUE(holds_pattern(q, 10000, 3));
  auto *r = static_cast<unsigned char *>(secmem_realloc(q, 9000));
  EXPECT_TRUE(holds_pattern(r, 9000, 3));
  secmem_free(r);
}

TEST(Heap, AlignedAllocHonoursEveryPowerOfTwo) {
  for (size_t alignment = 1; alignment <= kChunk; alignment *= 2) {
    for (size_t size : {size_t{1}, size_t{24}, size_t{100}, size_t{5000}, alignment, alignment + 1}) {
      void *p = secmem_aligned_alloc(alignment, size);
      ASSERT_NE(p, nullptr) << alignment << " " << size;
      EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % alignment, 0u) << alignment << " " << size;
      EXPECT_GE(secmem_usable_size(p), size);
      fill_pattern(p, size, alignment);
      EXPECT_TRUE(holds_pattern(p, size, alignment));
      secmem_free(p);
    }
  }
}

TEST(Heap, AlignedAllocRejectsBadAlignments) {
  for (size_t alignment : {size_t{0}, size_t{3}, size_t{24}, (size_t{4} << 20) + 4096, SIZE_MAX}) {
    errno = 0;
    EXPECT_EQ(secmem_aligned_alloc(alignment, 16), nullptr) << alignment;
    EXPECT_EQ(errno, EINVAL) << alignment;
  }
}

// Alignments past a slot's (2 MiB): a chunk of its own at an aligned slot
// (they used to be refused with EINVAL here, and with ENOMEM through the
// shim's posix_memalign); the largest power of two cannot be placed: ENOMEM.
TEST(Heap, AlignmentsPastTwoMibGetAChunkOfTheirOwn) {
  for (size_t alignment : {size_t{4} << 20, size_t{64} << 20, size_t{1} << 30}) {
    for (size_t size : {size_t{1}, size_t{5000}, (size_t{4} << 20) + 1}) {
      auto *p = static_cast<unsigned char *>(secmem_aligned_alloc(alignment, size));
      ASSERT_NE(p, nullptr) << alignment << " " << size;
      EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % alignment, 0u) << alignment << " " << size;
      p[0] = 1;
      p[size - 1] = 2;
      EXPECT_TRUE(secmem_owns(p + size - 1));
      secmem_free(p);
    }
  }
  errno = 0;
  EXPECT_EQ(secmem_aligned_alloc(SIZE_MAX / 2 + 1, 16), nullptr);
  EXPECT_EQ(errno, ENOMEM);
}

TEST(Heap, AbsurdSizesFailWithEnomem) {
  for (size_t size : {SIZE_MAX, SIZE_MAX / 2, (size_t{1} << 40) + 1}) {
    errno = 0;
    EXPECT_EQ(secmem_malloc(size), nullptr);
    EXPECT_EQ(errno, ENOMEM);
    errno = 0;
    EXPECT_EQ(secmem_aligned_alloc(4096, size), nullptr);
    EXPECT_EQ(errno, ENOMEM);
  }
}

TEST(Heap, OwnsIsExact) {
  int on_stack = 0;
  void *from_libc = malloc(32);
  EXPECT_FALSE(secmem_owns(nullptr));
  EXPECT_FALSE(secmem_owns(&on_stack));
  EXPECT_FALSE(secmem_owns(from_libc));
  EXPECT_FALSE(secmem_owns(reinterpret_cast<void *>(1)));
  EXPECT_FALSE(secmem_owns(reinterpret_cast<void *>(UINTPTR_MAX)));
  free(from_libc);
  auto *p = static_cast<char *>(secmem_malloc(100));
  EXPECT_TRUE(secmem_owns(p));
  EXPECT_TRUE(secmem_owns(p + 50));
  EXPECT_EQ(secmem_usable_size(p + 50), 0u); // owned, but not a block's start (secmem.h)
  // Either of the range's pointers may be null (a null one crashed).
  uintptr_t base = 0;
  size_t size = 0;
  secmem_reserved_range(nullptr, nullptr);
  secmem_reserved_range(&base, nullptr);
  secmem_reserved_range(nullptr, &size);
  EXPECT_LE(base, reinterpret_cast<uintptr_t>(p));
  EXPECT_GT(size, 0u);
  // The chunk's guard page and its start (slot bookkeeping) are not allocations.
  uintptr_t chunk = reinterpret_cast<uintptr_t>(p) & ~(kChunk - 1);
  EXPECT_FALSE(secmem_owns(reinterpret_cast<void *>(chunk + kChunk - kPage)));
  EXPECT_FALSE(secmem_owns(reinterpret_cast<void *>(chunk - 1)));
  secmem_free(p);
  EXPECT_FALSE(secmem_owns(p));
  EXPECT_EQ(secmem_usable_size(p), 0u);
  EXPECT_EQ(secmem_usable_size(nullptr), 0u);
  EXPECT_EQ(secmem_usable_size(&on_stack), 0u);
}

TEST(Heap, StatsCountWhatHappens) {
  secmem_stats before = stats();
  void *p = secmem_malloc(200);
  void *q = secmem_malloc(50000);
  secmem_stats during = stats();
  EXPECT_EQ(during.allocations, before.allocations + 2);
  size_t in_use = in_use_bytes(during);
  size_t in_use_before = in_use_bytes(before);
  // Live blocks, each rounded up to its size class or to pages.
  EXPECT_EQ(secmem_usable_size(p) + secmem_usable_size(q), 50200u);
  EXPECT_GE(in_use, in_use_before + 50200);
  EXPECT_LE(in_use, in_use_before + 50200 + 32 + 4095);
  EXPECT_GE(during.peak_held, in_use);
  EXPECT_GE(during.chunks, 1u);
  EXPECT_GE(during.memlock_charged, during.mapped_secret);
  EXPECT_LE(during.memlock_charged, during.mapped_secret + during.mapped_locked);
  if (running_on_mlock_backend()) {
    EXPECT_GT(during.memlock_charged, 0u);
  }
  EXPECT_GE(during.pages_touched * kPage, in_use);
  secmem_free(p);
  secmem_free(q);
  secmem_stats after = stats();
  EXPECT_EQ(after.frees, before.frees + 2);
  EXPECT_EQ(in_use_bytes(after), in_use_before);
  // None of these blocks fell back. (The counts are the process's: under an
  // ordinary user's 8 MiB RLIMIT_MEMLOCK, earlier tests in this binary spent
  // the budget and fell back, and an absolute 0 failed.)
  auto fallbacks = [](const secmem_stats &s) {
    return s.fallbacks_enosys + s.fallbacks_eperm + s.fallbacks_memlock + s.fallbacks_other;
  };
  EXPECT_EQ(fallbacks(after), fallbacks(before));
  errno = 0;
  EXPECT_EQ(secmem_get_stats(nullptr), -1);
  EXPECT_EQ(errno, EINVAL);
}

// Every chunk sits at a 2 MiB boundary with inaccessible (PROT_NONE) address
// space before it, and every block ends at inaccessible pages: the slot's
// unmapped last page, or a large block's guard page.
TEST(Heap, ChunksAreAlignedAndGuarded) {
  std::vector<void *> blocks;
  const std::vector<size_t> sizes = {32, 4000, 200000, 1500000, 5000000};
  for (size_t size : sizes) blocks.push_back(secmem_malloc(size));
  for (size_t i = 0; i < blocks.size(); ++i) {
    auto chunk = reinterpret_cast<uintptr_t>(blocks[i]) / kChunk * kChunk;
    Mapping first, before, after;
    ASSERT_TRUE(find_mapping(reinterpret_cast<void *>(chunk), &first));
    EXPECT_EQ(first.start, chunk) << sizes[i];
    ASSERT_TRUE(find_mapping(reinterpret_cast<void *>(chunk - 1), &before));
    EXPECT_EQ(before.perms.substr(0, 3), "---") << sizes[i];
    if (sizes[i] <= 8192) continue; // small blocks share pages with their neighbours
    uintptr_t end = (reinterpret_cast<uintptr_t>(blocks[i]) + sizes[i] + kPage - 1) / kPage * kPage;
    ASSERT_TRUE(find_mapping(reinterpret_cast<void *>(end), &after));
    EXPECT_EQ(after.perms.substr(0, 3), "---") << sizes[i];
  }
  for (void *p : blocks) secmem_free(p);
}

TEST(Heap, HugeBlocksReturnTheirMemoryWhenFreed) {
  secmem_stats before = stats();
  void *p = secmem_malloc(6 << 20);
  ASSERT_NE(p, nullptr);
  fill_pattern(p, 6 << 20, 9);
  EXPECT_TRUE(holds_pattern(p, 6 << 20, 9));
  EXPECT_EQ(stats().chunks, before.chunks + 1);
  secmem_free(p);
  secmem_stats after = stats();
  EXPECT_EQ(after.chunks, before.chunks);
  EXPECT_EQ(after.memlock_charged, before.memlock_charged);
}

// Misuse aborts with one fixed line on stderr.
using HeapDeathTest = testing::Test;

// Correctness only: no timing is measured.
TEST(Heap, CtEqualComparesEveryByteOfEveryLength) {
  unsigned char a[70];
  unsigned char b[70];
  for (size_t i = 0; i < sizeof a; ++i) a[i] = b[i] = static_cast<unsigned char>(i * 11);
  for (size_t n = 0; n <= sizeof a; ++n) {
    EXPECT_EQ(secmem_ct_equal(a, b, n), 1) << n;
    for (size_t i = 0; i < n; ++i) {
      for (int bit = 0; bit < 8; ++bit) {
        b[i] ^= static_cast<unsigned char>(1u << bit);
        EXPECT_EQ(secmem_ct_equal(a, b, n), 0) << n << " byte " << i << " bit " << bit;
        b[i] ^= static_cast<unsigned char>(1u << bit);
      }
    }
  }
  EXPECT_EQ(secmem_ct_equal(nullptr, nullptr, 0), 1);
}

// Reads a block's slack, which the ASan build poisons.
__attribute__((no_sanitize("address"))) bool slack_is_zero(const unsigned char *from, const unsigned char *to) {
  unsigned char seen = 0;
  for (const volatile unsigned char *p = from; p < to; ++p) seen |= *p;
  return seen == 0;
}

// A thread keeps a few freed large blocks (up to 256 KiB) for its next
// request of as many pages: zeroed when freed, not owned while kept, its
// guards in place, the size asked for its own.
TEST(Heap, AFreedLargeBlockIsReusedByItsThreadZeroed) {
  auto *p = static_cast<unsigned char *>(secmem_malloc(20000));
  ASSERT_NE(p, nullptr);
  memset(p, 0xab, 20000);
  secmem_free(p);
  EXPECT_FALSE(secmem_owns(p));
  EXPECT_EQ(secmem_usable_size(p), 0u);
  auto *q = static_cast<unsigned char *>(secmem_calloc(1, 17000)); // 5 pages, as 20000 takes
  ASSERT_EQ(q, p) << "the thread's kept block";
  EXPECT_TRUE(std::all_of(q, q + 17000, [](unsigned char b) { return b == 0; }));
  EXPECT_TRUE(slack_is_zero(q + 17008, q + 5 * kPage)); // past the canary's 8 bytes
  EXPECT_EQ(secmem_usable_size(q), 17000u);
  EXPECT_TRUE(secmem_owns(q + 16999));
  void *other = secmem_malloc(30000); // 8 pages: another block
  EXPECT_NE(other, q);
  secmem_free(other);
  secmem_free(q);
}

TEST(HeapDeathTest, DoubleFreeOfAKeptLargeBlock) {
  void *volatile p = secmem_malloc(20000);
  secmem_free(p);
  EXPECT_SECMEM_DEATH(secmem_free(p), "^secmem: double free of 0x[0-9a-f]+\n$");
  void *q = secmem_malloc(20000); // the kept block is whole
  EXPECT_EQ(q, p);
  secmem_free(q);
}

TEST(HeapDeathTest, DoubleFree) {
  void *volatile p = secmem_malloc(32);
  secmem_free(p);
  EXPECT_SECMEM_DEATH(secmem_free(p), "^secmem: double free of 0x[0-9a-f]+\n$");
}

// A block whose span went back to the pool (its freeing thread exited and
// retired its cache): a second free is still called a double free, for
// every block that started its span (4 and 8 KiB blocks, a span each).
TEST(HeapDeathTest, DoubleFreeAfterTheFreeingThreadExited) {
  for (size_t size : {size_t{4096}, size_t{8192}}) {
    EXPECT_SECMEM_DEATH(
        {
          void *volatile p = secmem_malloc(size);
          std::thread([&] {
            secmem_free(secmem_malloc(size));
            secmem_free(p);
          }).join();
          secmem_free(p);
        },
        "^secmem: double free of 0x[0-9a-f]+\n$")
        << size;
  }
}

TEST(HeapDeathTest, DoubleFreeOfALargeBlock) {
  void *volatile p = secmem_malloc(100000);
  secmem_free(p);
  EXPECT_SECMEM_DEATH(secmem_free(p), "^secmem: double free of 0x[0-9a-f]+\n$");
}

TEST(HeapDeathTest, FreeOfAPointerInsideABlock) {
  char *volatile p = static_cast<char *>(secmem_malloc(64));
  EXPECT_SECMEM_DEATH(secmem_free(p + 16), "^secmem: invalid free of 0x[0-9a-f]+: pointer inside a block\n$");
  secmem_free(p);
}

TEST(HeapDeathTest, FreeOfAForeignPointer) {
  int on_stack = 0;
  int *volatile p = &on_stack;
  EXPECT_SECMEM_DEATH(secmem_free(p), "^secmem: invalid free of 0x[0-9a-f]+: not allocated by secmem\n$");
  void *volatile from_libc = malloc(16);
  EXPECT_SECMEM_DEATH(secmem_free(from_libc), "^secmem: invalid free of 0x[0-9a-f]+: not allocated by secmem\n$");
  free(from_libc);
}

TEST(HeapDeathTest, FreeOfAGuardPage) {
  void *p = secmem_malloc(32);
  void *volatile guard = reinterpret_cast<void *>((reinterpret_cast<uintptr_t>(p) & ~(kChunk - 1)) + kChunk - kPage);
  EXPECT_SECMEM_DEATH(secmem_free(guard), "^secmem: invalid free of 0x[0-9a-f]+: no block starts here\n$");
  secmem_free(p);
}

TEST(HeapDeathTest, ReallocOfAFreedOrForeignPointer) {
  void *volatile p = secmem_malloc(32);
  secmem_free(p);
  EXPECT_SECMEM_DEATH(secmem_realloc(p, 64), "^secmem: invalid realloc of 0x[0-9a-f]+: block already freed\n$");
  int on_stack = 0;
  int *volatile q = &on_stack;
  EXPECT_SECMEM_DEATH(secmem_realloc(q, 64), "^secmem: invalid realloc of 0x[0-9a-f]+: not allocated by secmem\n$");
}
