// Under RLIMIT_AS (ulimit -v) the secret heap reserves a bounded share of
// the address space left, so the program's own large allocations still fit
// and secrets still work under a tight limit. Not built with sanitizers
// (their shadow memory needs terabytes of address space).
#include <gtest/gtest.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <sys/resource.h>

#include "platform/linux_facts.h"
#include "secmem/secmem.h"
#include "test_support.h"

using namespace secmem;
using namespace secmem::test;

namespace {

// Limits this process to what it maps now plus extra bytes.
bool limit_address_space(size_t extra) {
  size_t used = linux_facts::status_kib_field_bytes("VmSize");
  rlimit lim{used + extra, used + extra};
  return used != 0 && setrlimit(RLIMIT_AS, &lim) == 0;
}

bool secret_works() {
  auto *p = static_cast<char *>(secmem_malloc(64));
  if (p == nullptr) return false;
  strcpy(p, "secret");
  bool ok = strcmp(p, "secret") == 0 && secmem_owns(p);
  secmem_free(p);
  return ok;
}

} // namespace

// ulimit -v 3G: after one secret, malloc(1.5 GiB) still succeeds (the old
// 64 GiB-down-by-halves reservation took 2 GiB of the 3).
TEST(AddressSpace, ALargeMallocStillFitsBesideTheSecretHeap) {
  int status = run_in_child([] {
    if (!limit_address_space(size_t{3} << 30) || !secret_works()) return false;
    void *big = malloc(size_t{3} << 29); // 1.5 GiB
    bool ok = big != nullptr;
    free(big);
    return ok;
  });
  EXPECT_EQ(status, 0);
}

// A tight limit (40 MiB left): secrets still work, and so does a 16 MiB malloc.
TEST(AddressSpace, SecretsWorkUnderATightLimit) {
  int status = run_in_child([] {
    if (!limit_address_space(size_t{40} << 20) || !secret_works()) return false;
    void *big = malloc(size_t{16} << 20);
    bool ok = big != nullptr;
    free(big);
    uintptr_t base = 0;
    size_t size = 0;
    secmem_reserved_range(&base, &size);
    return ok && size <= (size_t{8} << 20);
  });
  EXPECT_EQ(status, 0);
}

// A block larger than the range a tight limit gave the heap at start-up:
// the range grows in place (it used to fail with ENOMEM), and the program's
// own allocations still fit beside it. Past what the limit leaves, the
// allocation fails with ENOMEM (no crash).
TEST(AddressSpace, TheRangeGrowsForABlockLargerThanItsStart) {
  int status = run_in_child([] {
    if (!limit_address_space(size_t{200} << 20) || !secret_works()) return false;
    uintptr_t base = 0;
    size_t before = 0, after = 0;
    secmem_reserved_range(&base, &before);
    size_t big = size_t{24} << 20;
    if (before > big) return false; // the test needs a range smaller than the block
    auto *p = static_cast<unsigned char *>(secmem_malloc(big));
    if (p == nullptr) return false;
    memset(p, 0x5A, big);
    bool ok = secmem_owns(p) && p[big - 1] == 0x5A;
    secmem_reserved_range(&base, &after);
    secmem_free(p);
    void *ordinary = malloc(size_t{16} << 20);
    ok = ok && ordinary != nullptr && after > before && secret_works();
    free(ordinary);
    errno = 0;
    void *too_big = secmem_malloc(size_t{400} << 20);
    return ok && too_big == nullptr && errno == ENOMEM;
  });
  EXPECT_EQ(status, 0);
}
