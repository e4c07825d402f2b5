// Under RLIMIT_AS (ulimit -v) the secret heap reserves a bounded share of
// the address space left, so the program's own large allocations still fit
// and secrets still work under a tight limit. Not built with sanitizers
// (their shadow memory needs terabytes of address space).
#include <gtest/gtest.h>

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
