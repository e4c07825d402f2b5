// Overflow canaries, guard pages, sealed blocks and SECMEM_NODUMP, on
// whichever backend SECMEM_BACKEND selects (meson runs this binary once per
// backend, and with SECMEM_NODUMP settings).
#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <functional>
#include <string>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include "heap/state.h"
#include "secmem/secmem.h"
#include "secmem/secure_alloc.hpp"
#include "test_support.h"

using namespace secmem::test;

namespace {

constexpr size_t kPage = 4096;

constexpr const char *kOverflow = "secmem: heap buffer overflow: the bytes after the";

// Stray accesses through volatile pointers, so that the compiler keeps them.
// Not checked by AddressSanitizer (in the ASan build the heap poisons slack
// and freed blocks, and ASan would report these first): what is tested here
// is the heap's own canaries, guard pages and seals.
__attribute__((no_sanitize("address"))) void poke(void *p, ptrdiff_t offset, unsigned char value) {
  static_cast<volatile unsigned char *>(p)[offset] = value;
}
__attribute__((no_sanitize("address"))) unsigned char peek(const void *p, ptrdiff_t offset) {
  return static_cast<const volatile unsigned char *>(p)[offset];
}
// Changes every bit of one byte: whatever the (random) canary, it no longer matches.
void flip(void *p, ptrdiff_t offset) { poke(p, offset, static_cast<unsigned char>(~peek(p, offset))); }

// Runs fn in a child: true when it died of SIGSEGV (or, in a sanitizer
// build, when the sanitizer's SEGV handler reported it).
bool faults(const std::function<bool()> &fn) {
  std::string err;
  int status = run_in_child(fn, &err);
  return status == 128 + SIGSEGV || err.find("Sanitizer: SEGV on unknown address") != std::string::npos;
}

} // namespace

// ---- canaries ---------------------------------------------------------------------

TEST(Canary, UsableSizeIsTheSizeAskedFor) {
  for (size_t size : {1, 15, 20, 31, 100, 1000, 5000, 10000, 70000}) {
    void *p = secmem_malloc(size);
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(secmem_usable_size(p), size);
    secmem_free(p);
  }
  void *empty = secmem_malloc(0);
  EXPECT_EQ(secmem_usable_size(empty), 1u); // malloc(0): one usable byte, a unique pointer
  secmem_free(empty);
}

TEST(CanaryDeathTest, OneByteOverflowOfASmallBlockAbortsAtFree) {
  EXPECT_SECMEM_DEATH(
      {
        char *p = static_cast<char *>(secmem_malloc(20));
        memcpy(p, "0123456789abcdefghij", 20);
        poke(p, 20, 0); // the terminating NUL that did not fit
        secmem_free(p);
      },
      kOverflow);
}

// Each size with slack, down to one byte of it, has a canary (a request
// that fills its block exactly has none, and skips the canary's work).
TEST(CanaryDeathTest, EverySlackDownToOneByteCatchesAOneByteOverflow) {
  for (size_t size : {1, 8, 9, 14, 15, 17, 24, 25, 31}) {
    EXPECT_SECMEM_DEATH(
        {
          char *p = static_cast<char *>(secmem_malloc(size));
          flip(p, static_cast<ptrdiff_t>(size));
          secmem_free(p);
        },
        kOverflow)
        << size;
  }
}

TEST(CanaryDeathTest, OverflowIntoTheZeroSlackAborts) {
  EXPECT_SECMEM_DEATH(
      {
        char *p = static_cast<char *>(secmem_malloc(100)); // 112-byte class: 8 canary bytes, 4 zero
        flip(p, 110);
        secmem_free(p);
      },
      kOverflow);
}

TEST(CanaryDeathTest, OverflowOfALargeBlockAbortsAtFree) {
  EXPECT_SECMEM_DEATH(
      {
        char *p = static_cast<char *>(secmem_malloc(10000));
        flip(p, 10003);
        secmem_free(p);
      },
      kOverflow);
}

TEST(CanaryDeathTest, ReallocChecksTheCanary) {
  EXPECT_SECMEM_DEATH(
      {
        char *p = static_cast<char *>(secmem_malloc(40));
        flip(p, 40);
        void *q = secmem_realloc(p, 44); // same class: stays in place, checked
        secmem_free(q);
      },
      kOverflow);
}

TEST(Canary, ReallocInPlaceKeepsTheCanaryRightAndNewBytesZero) {
  auto *p = static_cast<unsigned char *>(secmem_malloc(40));
  memset(p, 0xab, 40);
  auto *q = static_cast<unsigned char *>(secmem_realloc(p, 46)); // 48-byte class
  ASSERT_EQ(q, p);
  for (int i = 40; i < 46; ++i) EXPECT_EQ(q[i], 0) << i;   // the old canary is gone
  q = static_cast<unsigned char *>(secmem_realloc(q, 20)); // 32-byte class: moves
  ASSERT_NE(q, nullptr);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(q[i], 0xab);
  auto *r = static_cast<unsigned char *>(secmem_realloc(q, 24)); // grows in place
  ASSERT_EQ(r, q);
  for (int i = 20; i < 24; ++i) EXPECT_EQ(r[i], 0) << i;
  secmem_free(r); // the canaries written at each step check out
}

TEST(Canary, CallocIsZeroAfterCanariesCameAndWent) {
  for (int round = 0; round < 3; ++round) {
    std::vector<void *> blocks;
    for (int i = 0; i < 200; ++i) blocks.push_back(secmem_malloc(static_cast<size_t>(1 + i % 47)));
    for (void *p : blocks) secmem_free(p);
    for (int i = 0; i < 200; ++i) {
      auto *p = static_cast<unsigned char *>(secmem_calloc(1, 48));
      for (int b = 0; b < 48; ++b) ASSERT_EQ(p[b], 0) << "calloc byte " << b;
      blocks[static_cast<size_t>(i)] = p;
    }
    for (void *p : blocks) secmem_free(p);
  }
}

// ---- guard pages ------------------------------------------------------------------

TEST(Guard, LargeBlocksHaveInaccessiblePagesOnBothSides) {
  for (size_t size : {size_t{8193}, size_t{12288}, size_t{100000}, size_t{2} << 20}) {
    char *p = static_cast<char *>(secmem_malloc(size));
    ASSERT_NE(p, nullptr);
    size_t end = (size + kPage - 1) / kPage * kPage;
    EXPECT_TRUE(faults([&] { return peek(p, -1) == 0; })) << size << ": byte before";
    EXPECT_TRUE(faults([&] { return peek(p, static_cast<ptrdiff_t>(end)) == 0; }))
        << size << ": byte after the last page";
    EXPECT_EQ(run_in_child([&] { return peek(p, static_cast<ptrdiff_t>(end - 1)) == 0; }), 0) << size;
    secmem_free(p);
  }
}

// A large block its thread kept and handed out again: guards in place, and
// a canary at its new size.
TEST(Guard, AReusedLargeBlockKeepsItsGuards) {
  char *p = static_cast<char *>(secmem_malloc(12288));
  ASSERT_NE(p, nullptr);
  secmem_free(p);
  char *q = static_cast<char *>(secmem_malloc(12000));
  ASSERT_EQ(q, p);
  EXPECT_TRUE(faults([&] { return peek(q, -1) == 0; }));
  EXPECT_TRUE(faults([&] { return peek(q, 12288) == 0; }));
  secmem_free(q);
}

TEST(CanaryDeathTest, OverflowOfAReusedLargeBlockAbortsAtFree) {
  EXPECT_SECMEM_DEATH(
      {
        char *p = static_cast<char *>(secmem_malloc(10000));
        secmem_free(p);
        char *q = static_cast<char *>(secmem_malloc(9000)); // the same 3 pages
        flip(q, 9000);
        secmem_free(q);
      },
      kOverflow);
}

TEST(Guard, AlignedLargeBlocksAreAlignedAndGuarded) {
  char *p = static_cast<char *>(secmem_aligned_alloc(65536, 20000));
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 65536, 0u);
  EXPECT_TRUE(faults([&] { return peek(p, -1) == 0; }));
  EXPECT_TRUE(faults([&] { return peek(p, 20480) == 0; }));
  secmem_free(p);
}

TEST(Guard, FreedGuardPagesAreReusable) {
  // Many large blocks come and go; their runs are reused for small spans.
  for (int round = 0; round < 50; ++round) {
    void *big = secmem_malloc(3 * kPage + 1);
    ASSERT_NE(big, nullptr);
    secmem_free(big);
    std::vector<void *> small;
    for (int i = 0; i < 300; ++i) {
      small.push_back(secmem_malloc(64));
      memset(small.back(), 1, 64); // would fault on a page left PROT_NONE
    }
    for (void *p : small) secmem_free(p);
  }
}

// ---- sealed blocks ----------------------------------------------------------------

TEST(Sealed, IsInaccessibleOutsideScopes) {
  auto *key = static_cast<unsigned char *>(secmem_sealed_alloc(32));
  ASSERT_NE(key, nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(key) % kPage, 0u);
  EXPECT_TRUE(secmem_owns(key));
  EXPECT_EQ(secmem_usable_size(key), 32u);
  EXPECT_TRUE(faults([&] { return peek(key, 0) == 0; })) << "a sealed block was readable";

  ASSERT_EQ(secmem_access_begin(key, SECMEM_WRITE), 0);
  for (int i = 0; i < 32; ++i) key[i] = static_cast<unsigned char>(i + 1);
  ASSERT_EQ(secmem_access_end(key, SECMEM_WRITE), 0);
  EXPECT_TRUE(faults([&] { return peek(key, 5) == 6; }));

  ASSERT_EQ(secmem_access_begin(key, SECMEM_READ), 0);
  EXPECT_EQ(key[31], 32);
  EXPECT_TRUE(faults([&] {
    poke(key, 0, 9); // read-only scope: writes fault
    return true;
  }));
  ASSERT_EQ(secmem_access_end(key, SECMEM_READ), 0);
  secmem_free(key);
}

TEST(Sealed, ScopesNestAndTheStrongestWins) {
  auto *key = static_cast<unsigned char *>(secmem_sealed_alloc(100));
  ASSERT_EQ(secmem_access_begin(key, SECMEM_READ), 0);
  ASSERT_EQ(secmem_access_begin(key, SECMEM_WRITE), 0);
  key[0] = 7; // writable while the writer is open
  ASSERT_EQ(secmem_access_end(key, SECMEM_WRITE), 0);
  EXPECT_EQ(key[0], 7); // still readable: the reader is open
  ASSERT_EQ(secmem_access_begin(key, SECMEM_READ), 0);
  ASSERT_EQ(secmem_access_end(key, SECMEM_READ), 0);
  EXPECT_EQ(key[0], 7);
  ASSERT_EQ(secmem_access_end(key, SECMEM_READ), 0);
  EXPECT_TRUE(faults([&] { return peek(key, 0) == 7; }));
  secmem_free(key);
}

TEST(Sealed, BadCallsAreRefusedWithEinval) {
  auto *key = static_cast<unsigned char *>(secmem_sealed_alloc(16));
  void *plain = secmem_malloc(16);
  int on_stack = 0;
  struct Case {
    void *p;
    int mode;
    bool begin;
    const char *what;
  } cases[] = {{key, SECMEM_READ, false, "end without begin"},
               {key, SECMEM_WRITE, false, "end without begin (write)"},
               {key, 0, true, "mode 0"},
               {key, 3, true, "mode 3"},
               {plain, SECMEM_READ, true, "not sealed"},
               {&on_stack, SECMEM_READ, true, "not ours"},
               {nullptr, SECMEM_READ, true, "NULL"},
               {key + 1, SECMEM_READ, true, "interior pointer"}};
  for (const Case &c : cases) {
    errno = 0;
    int rc = c.begin ? secmem_access_begin(c.p, c.mode) : secmem_access_end(c.p, c.mode);
    EXPECT_EQ(rc, -1) << c.what;
    EXPECT_EQ(errno, EINVAL) << c.what;
  }
  errno = 0;
  EXPECT_EQ(secmem_realloc(key, 64), nullptr);
  EXPECT_EQ(errno, EINVAL);
  EXPECT_TRUE(secmem_owns(key)); // realloc left it alone
  secmem_free(plain);
  secmem_free(key);
  EXPECT_EQ(secmem_access_begin(key, SECMEM_READ), -1); // freed
}

TEST(Sealed, FreeWorksInAnyStateAndZeroes) {
  for (int state = 0; state < 3; ++state) {
    auto *key = static_cast<unsigned char *>(secmem_sealed_alloc(5000));
    ASSERT_EQ(secmem_access_begin(key, SECMEM_WRITE), 0);
    memset(key, 0x77, 5000);
    if (state != 2) {
      ASSERT_EQ(secmem_access_end(key, SECMEM_WRITE), 0);
    }
    if (state == 1) {
      ASSERT_EQ(secmem_access_begin(key, SECMEM_READ), 0);
    }
    secmem_free(key);                                                // sealed, read-only, read-write
    auto *again = static_cast<unsigned char *>(secmem_malloc(5000)); // reuses the run: accessible and zero
    for (int i = 0; i < 5000; ++i) ASSERT_EQ(again[i], 0);
    secmem_free(again);
  }
}

TEST(Sealed, HugeSealedBlocks) {
  size_t size = (size_t{3} << 20) + 5;
  auto *big = static_cast<unsigned char *>(secmem_sealed_alloc(size));
  ASSERT_NE(big, nullptr);
  EXPECT_TRUE(faults([&] { return peek(big, static_cast<ptrdiff_t>(size / 2)) == 0; }));
  ASSERT_EQ(secmem_access_begin(big, SECMEM_WRITE), 0);
  big[size - 1] = 1;
  ASSERT_EQ(secmem_access_end(big, SECMEM_WRITE), 0);
  secmem_free(big);
}

TEST(Sealed, ThreadsShareScopes) {
  auto *key = static_cast<unsigned char *>(secmem_sealed_alloc(64));
  std::vector<std::thread> threads;
  std::atomic<int> errors{0};
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 2000; ++i) {
        int mode = (i + t) % 4 == 0 ? SECMEM_WRITE : SECMEM_READ;
        if (secmem_access_begin(key, mode) != 0) errors++;
        if (mode == SECMEM_WRITE)
          key[t] = static_cast<unsigned char>(i);
        else
          (void)peek(key, t);
        if (secmem_access_end(key, mode) != 0) errors++;
      }
    });
  for (auto &thread : threads) thread.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_TRUE(faults([&] { return peek(key, 0) == 0; })) << "sealed again at the end";
  secmem_free(key);
}

// Other threads open and close scopes on a sealed block's pointer while its
// owner frees it and makes an ordinary block of the same size, which takes
// its address, and writes it: a scope on the stale pointer is refused
// (EINVAL) and never changes the ordinary block's pages. It made them
// read-only (the sealed check came before the lock): the owner died of
// SIGSEGV within about a second (found by the adversarial review).
TEST(SealedDeathTest, AScopeOnAStalePointerNeverTouchesAnOrdinaryBlock) {
  EXPECT_EXIT(
      {
        std::atomic<void *> published{nullptr};
        std::atomic<bool> stop{false};
        std::vector<std::thread> openers;
        for (int mode : {SECMEM_READ, SECMEM_WRITE})
          openers.emplace_back([&, mode] {
            while (!stop.load()) {
              void *p = published.load();
              if (p != nullptr && secmem_access_begin(p, mode) == 0) secmem_access_end(p, mode);
            }
          });
        constexpr size_t kBytes = 9000;
        bool reused = false;
        for (auto start = std::chrono::steady_clock::now();
             std::chrono::steady_clock::now() - start < std::chrono::seconds(3);) {
          void *sealed = secmem_sealed_alloc(kBytes);
          published.store(sealed);
          secmem_free(sealed);
          auto *plain = static_cast<volatile unsigned char *>(secmem_malloc(kBytes));
          reused = reused || plain == sealed;
          for (size_t i = 0; i < kBytes; i += 256) plain[i] = 0x5a;
          for (size_t i = 0; i < kBytes; i += 256) plain[i] = 0x5b;
          secmem_free(const_cast<unsigned char *>(plain));
        }
        stop.store(true);
        for (auto &thread : openers) thread.join();
        _exit(reused ? 0 : 2);
      },
      testing::ExitedWithCode(0), "");
}

TEST(Sealed, ForkChildKeepsTheSecretSealedAndPrivate) {
  auto *key = static_cast<unsigned char *>(secmem_sealed_alloc(32));
  ASSERT_EQ(secmem_access_begin(key, SECMEM_WRITE), 0);
  memset(key, 0x42, 32);
  ASSERT_EQ(secmem_access_end(key, SECMEM_WRITE), 0);
  auto *guarded = static_cast<char *>(secmem_malloc(20000));
  // In the child: still sealed, readable in a scope, and its writes stay its own.
  EXPECT_TRUE(faults([&] { return peek(key, 0) == 0x42; }));
  EXPECT_TRUE(faults([&] { return peek(guarded, -1) == 0; }));
  EXPECT_EQ(run_in_child([&] {
              if (secmem_access_begin(key, SECMEM_WRITE) != 0 || key[0] != 0x42) return false;
              key[0] = 1;
              return secmem_access_end(key, SECMEM_WRITE) == 0;
            }),
            0);
  ASSERT_EQ(secmem_access_begin(key, SECMEM_READ), 0);
  EXPECT_EQ(key[0], 0x42);
  ASSERT_EQ(secmem_access_end(key, SECMEM_READ), 0);
  secmem_free(guarded);
  secmem_free(key);
}

TEST(Sealed, CxxGuards) {
  using Key = std::array<unsigned char, 32>;
  secmem::sealed<Key> key;
  EXPECT_TRUE(faults([&] { return peek(key.address(), 0) == 0; }));
  {
    auto w = key.write();
    w->fill(0x11);
    (*w)[31] = 0x22;
  }
  {
    auto r = key.read();
    EXPECT_EQ((*r)[0], 0x11);
    EXPECT_EQ(r->at(31), 0x22);
    EXPECT_TRUE(faults([&] {
      poke(const_cast<unsigned char *>(r->data()), 0, 1);
      return true;
    }));
  }
  EXPECT_TRUE(faults([&] { return peek(key.address(), 0) == 0x11; }));
  secmem::sealed<Key> constructed(Key{1, 2, 3});
  EXPECT_EQ(constructed.read()->at(2), 3);
  secmem::sealed<Key> moved(std::move(constructed));
  EXPECT_EQ(constructed.address(), nullptr);
  EXPECT_EQ(moved.read()->at(1), 2);
  struct Pod {
    uint64_t a;
    unsigned char b[100];
  };
  secmem::sealed<Pod> pod;
  EXPECT_EQ(pod.read()->a, 0u); // value-initialised
  // A T with member initialisers or a default constructor of its own gets
  // them, as T() would (they were left at the heap's zero).
  struct WithDefaults {
    int x = 5;
  };
  struct Filled {
    unsigned char bytes[16];
    Filled() { memset(bytes, 0xff, sizeof bytes); }
  };
  EXPECT_EQ(secmem::sealed<WithDefaults>{}.read()->x, 5);
  EXPECT_EQ(secmem::sealed<Filled>{}.read()->bytes[15], 0xff);
  static_assert(!std::is_copy_constructible_v<secmem::sealed<Key>>);
}

// ---- the configuration ---------------------------------------------------------------

// Written at start-up, then sealed: a stray write cannot change the
// configuration, the canary key or the cache sizes.
TEST(Configuration, IsReadOnlyOnceTheHeapHasStarted) {
  void *p = secmem_malloc(64);
  ASSERT_NE(p, nullptr);
  const auto *config = reinterpret_cast<const unsigned char *>(&secmem::heap::g_ro);
  Mapping mapping;
  ASSERT_TRUE(find_mapping(config, &mapping));
  EXPECT_EQ(mapping.perms.substr(0, 2), "r-") << mapping.perms;
  EXPECT_NE(secmem::heap::g_ro.canary_key, 0u); // written before the seal
  EXPECT_TRUE(faults([config] {
    poke(const_cast<unsigned char *>(config), offsetof(secmem::heap::ReadOnly, canary_key), 1);
    return true;
  }));
  secmem_free(p);
}

extern "C" char _end[]; // the linker's: the end of the executable's writable segment

// After everything else the segment holds (.lbss): sealed in the middle of
// .bss, the page split its anonymous mapping in three, a mapping more that
// every fork copied and every child's exit tore down.
TEST(Configuration, IsTheLastPageOfTheWritableSegment) {
  const char *start = reinterpret_cast<const char *>(&secmem::heap::g_ro);
  const char *end = start + sizeof secmem::heap::g_ro;
  EXPECT_EQ(sizeof secmem::heap::g_ro, size_t(getpagesize()));
  EXPECT_LE(end, _end);
  EXPECT_LT(_end - end, getpagesize()) << "the configuration page is not last: " << static_cast<const void *>(end)
                                       << " against the segment's end " << static_cast<const void *>(_end);
}

// ---- SECMEM_NODUMP ------------------------------------------------------------------

TEST(NoDump, FollowsTheSetting) {
  void *p = secmem_malloc(64); // the first chunk is placed: the setting acts
  ASSERT_NE(p, nullptr);
  const char *setting = getenv("SECMEM_NODUMP");
  std::string nodump = setting == nullptr ? "fallback" : setting; // the default
  bool fallback_used = std::string(secmem_backend_name()) != "memfd_secret";
  bool expect_undumpable = nodump == "always" || (nodump == "fallback" && fallback_used);
  EXPECT_EQ(prctl(PR_GET_DUMPABLE), expect_undumpable ? 0 : 1)
      << "SECMEM_NODUMP=" << nodump << " backend " << secmem_backend_name();
  secmem_free(p);
}
