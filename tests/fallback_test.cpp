// memfd_secret refused by a seccomp filter (libseccomp), as container
// runtimes do: the heap follows SECMEM_BACKEND / SECMEM_ON_EXHAUSTION and
// says so in one line. Each case runs in a fresh child whose heap has not
// started yet; this process itself never allocates from secmem.
#include <gtest/gtest.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <string>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <vector>

#include "block_model.h"
#include "secmem/secmem.h"
#include "test_support.h"

using namespace secmem::test;

namespace {

// Fills n blocks of size bytes and checks them; false on any failure.
bool fill_and_check(size_t n, size_t size) {
  std::vector<unsigned char *> blocks;
  for (size_t i = 0; i < n; ++i) {
    auto *p = static_cast<unsigned char *>(secmem_malloc(size));
    if (p == nullptr) return false;
    fill_pattern(p, size, i);
    blocks.push_back(p);
  }
  for (size_t i = 0; i < n; ++i)
    if (!holds_pattern(blocks[i], size, i)) return false;
  for (unsigned char *p : blocks) secmem_free(p);
  return true;
}

std::string fallback_line(const char *err) {
  return std::string("secmem: memfd_secret unavailable (") + err +
         "); falling back to mlock'ed anonymous memory (MADV_DONTDUMP), and the process is made non-dumpable so "
         "that its user cannot read it (SECMEM_NODUMP=fallback) (set SECMEM_ON_EXHAUSTION=fail to refuse instead)\n";
}

} // namespace

class Refused : public testing::TestWithParam<int> {};

TEST_P(Refused, FallsBackToLockedMemoryAndSaysSoOnce) {
  int err = GetParam();
  std::string stderr_text;
  int status = run_in_child(
      [err] {
        if (!refuse_memfd_secret(err)) return false;
        if (!fill_and_check(20000, 200)) return false; // several chunks
        void *p = secmem_malloc(64);
        secmem_stats s{};
        secmem_get_stats(&s);
        Mapping m;
        bool ok = find_mapping(p, &m, true) && m.path.empty() && m.has_vm_flag("lo") && m.has_vm_flag("dd") &&
                  std::string(s.backend) == "mlock" && s.mapped_secret == 0 && s.chunks >= 2 &&
                  (err == EPERM ? s.fallbacks_eperm : s.fallbacks_enosys) == s.chunks;
        secmem_free(p);
        return ok;
      },
      &stderr_text);
  EXPECT_EQ(status, 0);
  EXPECT_EQ(stderr_text, fallback_line(err == EPERM ? "EPERM: refused, as by a seccomp filter"
                                                    : "ENOSYS: no kernel support, or secretmem.enable=0"));
}

INSTANTIATE_TEST_SUITE_P(Errors, Refused, testing::Values(EPERM, ENOSYS), [](const testing::TestParamInfo<int> &info) {
  return std::string(info.param == EPERM ? "EPERM" : "ENOSYS");
});

TEST(Refused, FailPolicyReturnsNullWithEnomem) {
  std::string stderr_text;
  int status = run_in_child(
      [] {
        setenv("SECMEM_ON_EXHAUSTION", "fail", 1);
        if (!refuse_memfd_secret(EPERM)) return false;
        errno = 0;
        bool ok = secmem_malloc(32) == nullptr && errno == ENOMEM;
        ok = ok && secmem_malloc(100000) == nullptr && secmem_calloc(2, 8) == nullptr;
        secmem_stats s{};
        secmem_get_stats(&s);
        return ok && s.chunks == 0 && s.failed_chunks >= 3 && std::string(s.backend) == "none";
      },
      &stderr_text);
  EXPECT_EQ(status, 0);
  EXPECT_EQ(stderr_text, "secmem: out of secret memory (EPERM: refused, as by a seccomp filter); allocations "
                         "return NULL with ENOMEM (SECMEM_ON_EXHAUSTION=fail)\n");
}

TEST(Refused, ExplicitMemfdSecretBackendNeverFallsBack) {
  std::string stderr_text;
  int status = run_in_child(
      [] {
        setenv("SECMEM_BACKEND", "memfd_secret", 1);
        if (!refuse_memfd_secret(ENOSYS)) return false;
        errno = 0;
        return secmem_malloc(32) == nullptr && errno == ENOMEM;
      },
      &stderr_text);
  EXPECT_EQ(status, 0);
  EXPECT_EQ(stderr_text, "secmem: out of secret memory (ENOSYS: no kernel support, or secretmem.enable=0); "
                         "allocations return NULL with ENOMEM (SECMEM_BACKEND=memfd_secret never falls back)\n");
}

// Refused half-way through (a filter installed while the heap is in use):
// what is already in secret memory stays there and intact; new chunks fall
// back. A filter that appears after start-up is never tested (it might kill
// on the call: tests/sandbox_test.cpp), so the message says that, for
// memfd_secret and for mlock (never checked before it): unlocked memory.
TEST(Refused, HalfWayKeepsExistingSecrets) {
  SECMEM_REQUIRE_SECRETMEM();
  std::string stderr_text;
  int status = run_in_child(
      [] {
        auto *early = static_cast<char *>(secmem_malloc(64));
        strcpy(early, "early secret");
        Mapping before;
        if (!find_mapping(early, &before) || !before.secret()) return false;
        if (!refuse_memfd_secret(EPERM)) return false;
        if (!fill_and_check(30000, 300)) return false; // needs new chunks
        secmem_stats s{};
        secmem_get_stats(&s);
        Mapping after;
        return find_mapping(early, &after) && after.secret() && strcmp(early, "early secret") == 0 &&
               s.mapped_secret > 0 && s.mapped_unlocked > 0 && s.fallbacks_eperm >= 1 &&
               std::string(s.backend) == "unlocked";
      },
      &stderr_text);
  EXPECT_EQ(status, 0);
  const std::string later =
      "SIGSYS: a seccomp filter installed after start-up may kill on it, so it is not tried again";
  EXPECT_EQ(stderr_text, "secmem: memfd_secret unavailable (" + later +
                             "); falling back to unlocked anonymous memory (MADV_DONTDUMP; it can be swapped) (mlock "
                             "not made: " +
                             later +
                             "), but the process could not be made non-dumpable (SECMEM_NODUMP=fallback: "
                             "prctl(PR_SET_DUMPABLE, 0) not made (" +
                             later + ")), so its user can read it (set SECMEM_ON_EXHAUSTION=fail to refuse instead)\n");
}

// SECMEM_VERBOSE=1 says what was chosen: the configuration, then each chunk.
TEST(FreshHeap, VerbosePrintsTheConfigurationAndEachChunk) {
  SECMEM_REQUIRE_SECRETMEM();
  std::string stderr_text;
  int status = run_in_child(
      [] {
        setenv("SECMEM_VERBOSE", "1", 1);
        setenv("SECMEM_BACKEND", "auto", 1);
        return secmem_malloc(16) != nullptr;
      },
      &stderr_text);
  EXPECT_EQ(status, 0);
  EXPECT_TRUE(testing::internal::RE::FullMatch(
      stderr_text, testing::internal::RE("secmem: config SECMEM_BACKEND=auto SECMEM_ON_EXHAUSTION=fallback "
                                         "SECMEM_RELEASE=never SECMEM_NODUMP=fallback SECMEM_VERBOSE=1\n"
                                         "secmem: mapped chunk 0x[0-9a-f]+ \\(2044 KiB, memfd_secret\\)\n")))
      << stderr_text;
}

namespace {
// Opens descriptors until the table (RLIMIT_NOFILE at limit) is full.
bool fill_descriptor_table(rlim_t limit) {
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) != 0 || lim.rlim_max < 64) return false;
  lim.rlim_cur = limit; // the hard limit stays: raising it back needs CAP_SYS_RESOURCE
  if (setrlimit(RLIMIT_NOFILE, &lim) != 0) return false;
  while (open("/dev/null", O_RDONLY | O_CLOEXEC) >= 0) {}
  return errno == EMFILE;
}

// Five blocks of 1.5 MB (a chunk each), written and checked, then the
// heap's weakest tier while they live.
std::string tier_of_five_big_blocks() {
  std::vector<unsigned char *> blocks;
  for (size_t i = 0; i < 5; ++i) {
    auto *p = static_cast<unsigned char *>(secmem_malloc(1500000));
    if (p == nullptr) return "NULL";
    fill_pattern(p, 1500000, i);
    blocks.push_back(p);
  }
  bool whole = true;
  for (size_t i = 0; i < blocks.size(); ++i) whole = whole && holds_pattern(blocks[i], 1500000, i);
  secmem_stats s{};
  secmem_get_stats(&s);
  for (unsigned char *p : blocks) secmem_free(p);
  return whole ? std::string(s.backend) : "damaged";
}

// A full descriptor table: no memfd_secret file can be made, nor the
// seccomp status read, so calls never checked are not made (a filter that
// kills on them may be in force: OpenSSH's pre-auth child installs one, then
// sets RLIMIT_NOFILE to 0; one that kills on clone would kill a trial in a
// child too): unlocked memory, the process dumpable. The one line says
// both, and not that the process was made non-dumpable (it used to, and
// then said the opposite at every chunk). Once descriptors are free again,
// the next chunk makes it non-dumpable, and says so.
std::string descriptor_table_full_then_free(bool secret_first) {
  std::string stderr_text;
  int status = run_in_child(
      [secret_first] {
        void *first = secret_first ? secmem_malloc(32) : nullptr; // reads the status: no filter
        if ((secret_first && first == nullptr) || !fill_descriptor_table(32)) return false;
        bool unlocked = tier_of_five_big_blocks() == "unlocked" && prctl(PR_GET_DUMPABLE) == 1;
        rlimit more{};
        getrlimit(RLIMIT_NOFILE, &more);
        more.rlim_cur = 64;
        if (setrlimit(RLIMIT_NOFILE, &more) != 0) return false;
        void *p = secmem_malloc(3000000); // a new chunk (the freed ones serve 1.5 MB blocks again)
        bool again = p != nullptr && prctl(PR_GET_DUMPABLE) == 0;
        secmem_free(p);
        secmem_free(first);
        return unlocked && again;
      },
      &stderr_text);
  return status == 0 ? stderr_text : "failed: " + stderr_text;
}

const char *const kFullTableLine =
    "secmem: memfd_secret unavailable (EMFILE: the descriptor table is full); falling back to unlocked anonymous "
    "memory (MADV_DONTDUMP; it can be swapped) (mlock not made: EMFILE: no descriptor free to read the seccomp status "
    "with, and a filter that kills on it may be in force), but the process could not be made non-dumpable "
    "(SECMEM_NODUMP=fallback: prctl(PR_SET_DUMPABLE, 0) not made (EMFILE: no descriptor free to read the seccomp "
    "status with, and a filter that kills on it may be in force)), so its user can read it (set "
    "SECMEM_ON_EXHAUSTION=fail to "
    "refuse instead)\nsecmem: SECMEM_NODUMP: the process is non-dumpable now\n";

} // namespace

TEST(DescriptorTableFull, BeforeTheFirstSecretUnlockedSaidOnceThenNonDumpable) {
  EXPECT_EQ(descriptor_table_full_then_free(false), kFullTableLine);
}

TEST(DescriptorTableFull, AfterTheStatusWasReadUnlockedSaidOnceThenNonDumpable) {
  EXPECT_EQ(descriptor_table_full_then_free(true), kFullTableLine);
}
