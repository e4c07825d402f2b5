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
                       "memory (MADV_DONTDUMP; it can be swapped) (set SECMEM_ON_EXHAUSTION=fail to refuse "
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
