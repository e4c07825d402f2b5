// No readable key: a child loads an RSA, EC P-256 or Ed25519 key through
// OpenSSL's PEM API (shim_probe hold); this process then reads every readable
// region of the child through /proc/PID/mem (with `secmem scan`'s scanner)
// and counts copies of the private scalar in both byte orders, with and
// without the preload shim. The table in README.md ("Exposure") is this
// test's output.
#include <gtest/gtest.h>

#include <string>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

#include "keys.h"
#include "proc.h"
#include "test_support.h"

using namespace secmem::test;
using secmem::tool::private_scalar_patterns;
using secmem::tool::scan;
using secmem::tool::ScanResult;
using secmem::tool::describe_copies;

namespace {

const std::string kShim = SECMEM_PRELOAD_PATH;
const std::string kProbe = SECMEM_PROBE_PATH;

// Runs shim_probe hold KEY (under the shim or not), scans it with the
// secmem command's scanner, lets it go.
ScanResult scan_holder(const std::string &key, bool shim) {
  int to_child[2], from_child[2];
  EXPECT_EQ(pipe(to_child), 0);
  EXPECT_EQ(pipe(from_child), 0);
  pid_t pid = fork();
  if (pid == 0) {
    dup2(to_child[0], 0);
    dup2(from_child[1], 1);
    for (int fd : {to_child[0], to_child[1], from_child[0], from_child[1]}) close(fd);
    if (shim) setenv("LD_PRELOAD", kShim.c_str(), 1);
    execl(kProbe.c_str(), kProbe.c_str(), "hold", key.c_str(), nullptr);
    _exit(127);
  }
  close(to_child[0]);
  close(from_child[1]);
  char ready[6] = {};
  EXPECT_EQ(read(from_child[0], ready, 6), 6);
  ScanResult copies = scan(pid, private_scalar_patterns(key));
  (void)!write(to_child[1], "x", 1);
  close(to_child[1]);
  close(from_child[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  return copies;
}

class Exposure : public testing::TestWithParam<const char *> {
protected:
  static void SetUpTestSuite() {
    char pattern[] = "/tmp/secmem-exposure-XXXXXX";
    dir_ = mkdtemp(pattern);
    auto gen = [](const std::string &args) {
      return system(("openssl genpkey " + args + " 2>/dev/null").c_str());
    };
    ASSERT_EQ(gen("-algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out " + dir_ + "/RSA.pem"), 0);
    ASSERT_EQ(gen("-algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out " + dir_ + "/EC.pem"), 0);
    ASSERT_EQ(gen("-algorithm ED25519 -out " + dir_ + "/Ed25519.pem"), 0);
  }
  static void TearDownTestSuite() { (void)!system(("rm -rf " + dir_).c_str()); }
  static inline std::string dir_;
};

} // namespace

TEST_P(Exposure, ShimLeavesNoReadableHeapCopy) {
  SECMEM_REQUIRE_SECRETMEM();
  std::string key = dir_ + "/" + GetParam() + ".pem";
  ASSERT_GE(private_scalar_patterns(key)[0].size(), 24u); // an EC scalar can have leading zero bytes
  ScanResult plain = scan_holder(key, false);
  ScanResult shimmed = scan_holder(key, true);
  std::printf("| %s | %d (%s) | %d (%s) |\n", GetParam(), plain.total(), describe_copies(plain).c_str(),
              shimmed.total(), describe_copies(shimmed).c_str());
  RecordProperty("without_shim", describe_copies(plain));
  RecordProperty("with_shim", describe_copies(shimmed));
  EXPECT_GT(plain.total(), 0) << "the scan finds the key where nothing protects it";
  EXPECT_EQ(shimmed.copies["[heap]"], 0) << describe_copies(shimmed);
  EXPECT_EQ(shimmed.copies["anonymous"], 0) << describe_copies(shimmed);
  EXPECT_EQ(shimmed.total(), 0) << describe_copies(shimmed);
  EXPECT_EQ(shimmed.unreadable_secret.size(), 1u) << "the key's secretmem chunk is there, and unreadable";
}

INSTANTIATE_TEST_SUITE_P(Keys, Exposure, testing::Values("RSA", "EC", "Ed25519"),
                         [](const testing::TestParamInfo<const char *> &info) { return std::string(info.param); });
