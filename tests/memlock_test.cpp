// RLIMIT_MEMLOCK as an ordinary process meets it. meson runs this binary
// under `setpriv --inh-caps=-ipc_lock --bounding-set=-ipc_lock prlimit
// --memlock=1048576`, once per SECMEM_ON_EXHAUSTION policy and backend; the
// first test fails if that wrapper is missing, so nothing passes vacuously.
#include <gtest/gtest.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <sys/resource.h>
#include <vector>

#include "block_model.h"
#include "platform/linux_facts.h"
#include "secmem/secmem.h"
#include "test_support.h"

using namespace secmem::test;

namespace {

constexpr size_t kLimit = 1 << 20;

struct Held {
  unsigned char *p;
  size_t size;
  uint64_t seed;
};

bool intact(const Held &h) { return holds_pattern(h.p, h.size, h.seed); }

} // namespace

TEST(Memlock, RunsWithoutCapIpcLockUnderASmallLimit) {
  rlimit limit{};
  ASSERT_EQ(getrlimit(RLIMIT_MEMLOCK, &limit), 0);
  ASSERT_EQ(limit.rlim_cur, kLimit) << "run me under prlimit --memlock=" << kLimit;
  ASSERT_FALSE(secmem::linux_facts::has_cap_ipc_lock())
      << "run me under setpriv --inh-caps=-ipc_lock --bounding-set=-ipc_lock";
}

// With no budget left in the parent for a second memfd_secret copy, the
// child makes its private copy itself, charged to its own budget: it stays in
// memfd_secret (nothing lands in the parent's readable memory), and nothing
// crosses.
TEST(Memlock, ForkWithoutBudgetForASecretCopy) {
  if (!running_on_mlock_backend()) SECMEM_REQUIRE_SECRETMEM();
  auto *secret = static_cast<char *>(secmem_malloc(64));
  ASSERT_NE(secret, nullptr);
  strcpy(secret, "parent");
  int status = run_in_child([&] {
    secmem_stats s{};
    secmem_get_stats(&s);
    bool ok = strcmp(secret, "parent") == 0;
    if (running_on_mlock_backend())
      ok = ok && std::string(s.backend) == "mlock" && s.in_use_locked >= 64;
    else
      ok = ok && std::string(s.backend) == "memfd_secret" && s.in_use_secret >= 64 && s.fork_privatisations >= 1;
    strcpy(secret, "child");
    return ok;
  });
  EXPECT_EQ(status, 0);
  EXPECT_STREQ(secret, "parent");
  secmem_free(secret);
}

TEST(Memlock, ExhaustionFollowsThePolicyAndLosesNothing) {
  if (!running_on_mlock_backend()) SECMEM_REQUIRE_SECRETMEM();
  const std::string top = expected_backend();
  std::vector<Held> held;
  int refused_errno = 0;
  std::string err = stderr_of([&] {
    // Three times the limit, in 4 KiB secrets.
    for (size_t i = 0; i < 3 * kLimit / 4096; ++i) {
      auto *p = static_cast<unsigned char *>(secmem_malloc(4096));
      if (p == nullptr) {
        refused_errno = errno;
        break;
      }
      fill_pattern(p, 4096, i);
      held.push_back({p, 4096, i});
    }
  });
  secmem_stats s{};
  secmem_get_stats(&s);
  EXPECT_LE(s.memlock_charged, kLimit) << "the heap charged more than the limit";
  EXPECT_GT(s.memlock_charged, kLimit / 2) << "chunks are sized to the budget";
  EXPECT_GE(s.fallbacks_memlock + s.failed_chunks, 1u);
  if (exhaustion_policy_fail()) {
    EXPECT_EQ(refused_errno, ENOMEM);
    EXPECT_LT(held.size(), 3 * kLimit / 4096);
    EXPECT_EQ(s.in_use_unlocked, 0u);
    EXPECT_EQ(err, "secmem: out of secret memory (EAGAIN: RLIMIT_MEMLOCK budget spent); allocations return NULL "
                   "with ENOMEM (SECMEM_ON_EXHAUSTION=fail)\n");
  } else {
    EXPECT_EQ(refused_errno, 0);
    EXPECT_EQ(held.size(), 3 * kLimit / 4096);
    EXPECT_GT(s.in_use_unlocked, 0u);
    EXPECT_EQ(std::string(s.backend), "unlocked");
    EXPECT_EQ(err, "secmem: " + top +
                       " unavailable (EAGAIN: RLIMIT_MEMLOCK budget spent); falling back to unlocked anonymous "
                       "memory (MADV_DONTDUMP; it can be swapped), and the process is made non-dumpable so that its "
                       "user cannot read it (SECMEM_NODUMP=fallback) (set SECMEM_ON_EXHAUSTION=fail to refuse "
                       "instead)\n");
  }
  for (const Held &h : held) ASSERT_TRUE(intact(h));
  // Freed memory is reused: after freeing, the same amount fits again.
  size_t count = held.size();
  for (const Held &h : held) secmem_free(h.p);
  held.clear();
  for (size_t i = 0; i < count; ++i) {
    auto *p = static_cast<unsigned char *>(secmem_malloc(4096));
    ASSERT_NE(p, nullptr) << i;
    held.push_back({p, 0, 0});
  }
  for (const Held &h : held) secmem_free(h.p);
}

size_t mem_total() {
  FILE *f = fopen("/proc/meminfo", "r");
  size_t kib = 0;
  if (f != nullptr) {
    if (fscanf(f, "MemTotal: %zu kB", &kib) != 1) kib = 0;
    fclose(f);
  }
  return kib << 10;
}

// Blocks of 4 GiB and more, up to the documented 1 TiB, past the budget: on
// the unlocked tier (fallback policy: mapped, never touched but for a byte at
// each end, so they cost no RAM) or NULL with ENOMEM. Each keeps its size
// (a 32-bit block size used to wrap: secmem_malloc(4 GiB) segfaulted, and
// free zeroed size mod 4 GiB bytes), and free does not fault in pages that
// were never touched. Each case in a fresh child.
TEST(Memlock, BlocksOfFourGibAndMoreWorkOrReturnEnomem) {
  constexpr size_t kGib = size_t{1} << 30;
  for (size_t size :
       {4 * kGib - 1, 4 * kGib, 4 * kGib + 1, 5 * kGib + 123, 17 * kGib, size_t{1} << 40, (size_t{1} << 40) + 1}) {
    std::string err;
    int status = run_in_child(
        [size] {
          errno = 0;
          auto *p = static_cast<unsigned char *>(secmem_malloc(size));
          // Past the budget: the fail policy refuses; the fallback policy must
          // give blocks that the machine's memory could hold (the kernel's
          // overcommit check may refuse larger ones).
          if (p == nullptr)
            return errno == ENOMEM && (exhaustion_policy_fail() || size > (size_t{1} << 40) || size > mem_total() / 2);
          if (exhaustion_policy_fail()) return false;
          p[0] = 'a';
          p[size - 1] = 'z';
          bool ok = secmem_owns(p) && secmem_owns(p + size - 1) && secmem_usable_size(p) == size;
          size_t rss_before = secmem::linux_facts::status_kib_field_bytes("VmRSS");
          secmem_free(p);
          size_t rss_after = secmem::linux_facts::status_kib_field_bytes("VmRSS");
          ok = ok && rss_after < rss_before + (64u << 20); // free touched no page it had not
          // The range is free again: the next block of the same size fits.
          p = static_cast<unsigned char *>(secmem_malloc(size));
          ok = ok && p != nullptr && p[size / 2] == 0;
          secmem_free(p);
          return ok;
        },
        &err);
    EXPECT_EQ(status, 0) << size << " bytes: " << err;
  }
}

// A second free of a huge block (over 1 MiB: a chunk of its own, gone once
// freed) is the documented double free, not "no block starts here".
TEST(Memlock, DoubleFreeOfAHugeBlockIsCalledThat) {
  for (size_t size : {size_t{3} << 20, size_t{5} << 30}) {
    std::string err;
    int status = run_in_child(
        [size] {
          void *p = secmem_malloc(size);
          if (p == nullptr) return exhaustion_policy_fail();
          secmem_free(p);
          secmem_free(p);
          return false;
        },
        &err);
    if (err.empty() && status == 0) continue; // refused under the fail policy
    EXPECT_NE(err.find("secmem: double free of 0x"), std::string::npos) << size << ": " << err;
  }
}
