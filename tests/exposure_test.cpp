// No readable key: a child loads an RSA, EC P-256 or Ed25519 key through
// OpenSSL's PEM API (shim_probe hold); this process then reads every readable
// region of the child through /proc/PID/mem and counts copies of the private
// scalar in both byte orders, with and without the preload shim. The table in
// README.md ("Exposure") is this test's output.
#include <gtest/gtest.h>

#include <cstring>
#include <fcntl.h>
#include <map>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <string>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

#include "test_support.h"

using namespace secmem::test;

namespace {

const std::string kShim = SECMEM_PRELOAD_PATH;
const std::string kProbe = SECMEM_PROBE_PATH;

std::vector<unsigned char> private_scalar(const std::string &path) {
  FILE *file = fopen(path.c_str(), "r");
  EVP_PKEY *key = file != nullptr ? PEM_read_PrivateKey(file, nullptr, nullptr, nullptr) : nullptr;
  if (file != nullptr) fclose(file);
  std::vector<unsigned char> out;
  if (key == nullptr) return out;
  BIGNUM *bn = nullptr;
  if (EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_RSA_D, &bn) == 1 ||
      EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_PRIV_KEY, &bn) == 1) {
    out.resize(BN_num_bytes(bn));
    BN_bn2bin(bn, out.data());
    BN_clear_free(bn);
  } else {
    size_t len = 0;
    EVP_PKEY_get_raw_private_key(key, nullptr, &len);
    out.resize(len);
    EVP_PKEY_get_raw_private_key(key, out.data(), &len);
  }
  EVP_PKEY_free(key);
  return out;
}

std::string label(const Mapping &m) {
  if (m.path.empty()) return "anonymous";
  if (m.path == "/secretmem (deleted)") return "secretmem";
  if (m.path[0] == '[') return m.path;
  return "file " + m.path.substr(m.path.rfind('/') + 1);
}

// Copies of needle (either byte order) per region label; secretmem regions
// that cannot be read are counted under "secretmem (unreadable)".
std::map<std::string, int> count_copies(pid_t pid, const std::vector<unsigned char> &needle) {
  const std::vector<unsigned char> reversed(needle.rbegin(), needle.rend());
  std::map<std::string, int> copies;
  int mem = open(("/proc/" + std::to_string(pid) + "/mem").c_str(), O_RDONLY);
  if (mem < 0) return copies;
  std::vector<unsigned char> buf(1 << 20);
  for (const Mapping &m : read_mappings(pid)) {
    if (m.perms[0] != 'r' || m.path == "[vvar]" || m.path == "[vsyscall]") continue;
    std::string where = label(m);
    for (uintptr_t at = m.start; at < m.end;) {
      size_t want = std::min<uintptr_t>(buf.size(), m.end - at);
      ssize_t got = pread(mem, buf.data(), want, static_cast<off_t>(at));
      if (got <= 0) {
        if (where == "secretmem") copies["secretmem (unreadable)"] += 0; // listed, never counted
        break;
      }
      for (const auto *pattern : {&needle, &reversed}) {
        const unsigned char *from = buf.data(), *end = buf.data() + got;
        while (const void *hit = memmem(from, static_cast<size_t>(end - from), pattern->data(), pattern->size())) {
          copies[where]++;
          from = static_cast<const unsigned char *>(hit) + 1;
        }
      }
      // Step back so that a copy straddling two reads is still seen.
      at += static_cast<uintptr_t>(got) > needle.size() && static_cast<size_t>(got) == want && at + got < m.end
                ? static_cast<uintptr_t>(got) - needle.size()
                : static_cast<uintptr_t>(got);
    }
  }
  close(mem);
  return copies;
}

// Runs shim_probe hold KEY (under the shim or not), scans it, lets it go.
std::map<std::string, int> scan_holder(const std::string &key, bool shim) {
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
  std::map<std::string, int> copies = count_copies(pid, private_scalar(key));
  (void)!write(to_child[1], "x", 1);
  close(to_child[1]);
  close(from_child[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  return copies;
}

std::string describe(const std::map<std::string, int> &copies) {
  std::string text;
  for (const auto &[where, n] : copies) {
    if (n == 0) continue;
    text += (text.empty() ? "" : ", ") + std::to_string(n) + " in " + where;
  }
  return text.empty() ? "none" : text;
}

int total(const std::map<std::string, int> &copies) {
  int sum = 0;
  for (const auto &entry : copies) sum += entry.second;
  return sum;
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
  ASSERT_GE(private_scalar(key).size(), 32u);
  std::map<std::string, int> plain = scan_holder(key, false);
  std::map<std::string, int> shimmed = scan_holder(key, true);
  std::printf("| %s | %d (%s) | %d (%s) |\n", GetParam(), total(plain), describe(plain).c_str(), total(shimmed),
              describe(shimmed).c_str());
  RecordProperty("without_shim", describe(plain));
  RecordProperty("with_shim", describe(shimmed));
  EXPECT_GT(total(plain), 0) << "the scan finds the key where nothing protects it";
  EXPECT_EQ(shimmed["[heap]"], 0) << describe(shimmed);
  EXPECT_EQ(shimmed["anonymous"], 0) << describe(shimmed);
  EXPECT_EQ(total(shimmed), 0) << describe(shimmed);
}

INSTANTIATE_TEST_SUITE_P(Keys, Exposure, testing::Values("RSA", "EC", "Ed25519"),
                         [](const testing::TestParamInfo<const char *> &info) { return std::string(info.param); });
