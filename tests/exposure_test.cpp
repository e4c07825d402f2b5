// No readable key: a child loads an RSA, EC P-256 or Ed25519 key through
// OpenSSL's PEM API and holds it (shim_probe hold), or signs with it first
// (shim_probe use: OpenSSL then keeps Montgomery contexts of RSA's p and q),
// or also through the legacy RSA API (use legacy: EVP_PKEY_get1_RSA, as
// libcurl and python3-cryptography 38 do), or keeps its DER encoding (use
// der: i2d_PrivateKey, as Apache's mod_ssl does). This process then reads every
// readable region of the child through /proc/PID/mem (with `secmem scan`'s
// scanner) and counts copies of every private component (RSA d, p, q, dP,
// dQ, qInv; the EC scalar; the Ed25519 key) in both byte orders, with and
// without the preload shim. The table in README.md ("Exposure") is this
// test's output.
#include <gtest/gtest.h>

#include <csignal>
#include <fstream>
#include <grp.h>
#include <netinet/in.h>
#include <poll.h>
#include <string>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

#include "keys.h"
#include "proc.h"
#include "test_support.h"

using namespace secmem::test;
using secmem::tool::describe_copies;
using secmem::tool::key_patterns;
using secmem::tool::KeyMaterial;
using secmem::tool::load_key_material;
using secmem::tool::scan;
using secmem::tool::ScanResult;

namespace {

const std::string kShim = SECMEM_PRELOAD_PATH;
const std::string kProbe = SECMEM_PROBE_PATH;

// shim_probe MODE KEY [ARGS] with env, once it has said the key is loaded
// (core: with RLIMIT_CORE unlimited, through prlimit).
Child start_holder(const std::string &key, const std::vector<std::string> &env, bool core = false,
                   const std::vector<std::string> &mode = {"hold"}) {
  std::vector<std::string> argv = {kProbe, mode[0], key};
  argv.insert(argv.end(), mode.begin() + 1, mode.end());
  if (core) argv.insert(argv.begin(), {"prlimit", "--core=unlimited"});
  Child child = start(argv, env);
  char ready[6] = {};
  EXPECT_EQ(read(child.out, ready, 6), 6);
  return child;
}

// Runs shim_probe on KEY (under the shim or not), scans it with the secmem
// command's scanner for every private component, lets it go.
ScanResult scan_holder(const std::string &key, bool shim, const std::vector<std::string> &mode) {
  Child child = start_holder(key, shim ? std::vector<std::string>{"LD_PRELOAD=" + kShim} : std::vector<std::string>{},
                             false, mode);
  ScanResult copies = scan(child.pid, key_patterns(load_key_material(key)));
  EXPECT_EQ(finish(child, "x").status, 0);
  return copies;
}

// "d 2 (2 in [heap]), p 0, ..." for the table.
std::string per_component(const ScanResult &result) {
  std::string text;
  for (const std::string &name : result.components) {
    int n = result.of(name);
    text += (text.empty() ? "" : ", ") + name + " " + std::to_string(n) +
            (n == 0 ? "" : " (" + describe_copies(result, name) + ")");
  }
  return text;
}

class Exposure : public testing::TestWithParam<const char *> {
protected:
  static void SetUpTestSuite() {
    char pattern[] = "/tmp/secmem-exposure-XXXXXX";
    dir_ = mkdtemp(pattern);
    auto gen = [](const std::string &args) { return system(("openssl genpkey " + args + " 2>/dev/null").c_str()); };
    ASSERT_EQ(gen("-algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out " + dir_ + "/RSA.pem"), 0);
    ASSERT_EQ(gen("-algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out " + dir_ + "/EC.pem"), 0);
    ASSERT_EQ(gen("-algorithm ED25519 -out " + dir_ + "/Ed25519.pem"), 0);
  }
  static void TearDownTestSuite() { (void)!system(("rm -rf " + dir_).c_str()); }
  static inline std::string dir_;
};

} // namespace

// Every private component, in each way of using the key: none readable under
// the shim; without it the scan finds the key (so the scan is known to work).
TEST_P(Exposure, ShimLeavesNoReadableCopyOfAnyComponent) {
  SECMEM_REQUIRE_SECRETMEM();
  std::string key = dir_ + "/" + GetParam() + ".pem";
  KeyMaterial material = load_key_material(key);
  size_t expected = std::string(GetParam()) == "RSA" ? 6 : 1; // d, p, q, dP, dQ, qInv
  ASSERT_EQ(material.components.size(), expected);
  std::vector<std::vector<std::string>> modes = {{"hold"}, {"use"}, {"use", "der"}};
  if (std::string(GetParam()) == "RSA") modes.push_back({"use", "legacy"});
  for (const auto &mode : modes) {
    std::string how = mode.size() > 1 ? "use " + mode[1] : mode[0];
    SCOPED_TRACE(how);
    ScanResult plain = scan_holder(key, false, mode);
    ScanResult shimmed = scan_holder(key, true, mode);
    std::printf("| %s | %s | %d: %s | %d: %s |\n", GetParam(), how.c_str(), plain.total(), per_component(plain).c_str(),
                shimmed.total(), per_component(shimmed).c_str());
    RecordProperty("without_shim_" + how, per_component(plain));
    RecordProperty("with_shim_" + how, per_component(shimmed));
    EXPECT_GT(plain.total(), 0) << "the scan finds the key where nothing protects it";
    for (const std::string &name : shimmed.components)
      EXPECT_EQ(shimmed.of(name), 0) << name << ": " << describe_copies(shimmed, name);
    EXPECT_EQ(shimmed.unreadable_secret.size(), 1u) << "the key's secretmem chunk is there, and unreadable";
  }
}

// ---- core dumps ----------------------------------------------------------------------

namespace {

const char kCorePattern[] = "/proc/sys/kernel/core_pattern";

bool write_file(const std::string &path, const std::string &text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  out.close();
  return out.good();
}

// Occurrences of any of the patterns in data.
int count_copies(const std::string &data, const std::vector<std::vector<unsigned char>> &patterns) {
  int copies = 0;
  for (const auto &pattern : patterns) {
    std::string needle(pattern.begin(), pattern.end());
    for (size_t at = data.find(needle); at != std::string::npos; at = data.find(needle, at + 1)) ++copies;
  }
  return copies;
}

// shim_probe hold KEY, with env, made to dump core once the key is loaded.
// Returns the core file's bytes ("" if it wrote none).
std::string core_of_holder(const std::string &key, const std::string &dir, const std::vector<std::string> &env) {
  Child child = start_holder(key, env, true);
  kill(child.pid, SIGABRT);
  EXPECT_EQ(finish(child).status, 128 + SIGABRT);
  std::string path = dir + "/core." + std::to_string(child.pid);
  std::string core = read_file(path);
  unlink(path.c_str());
  return core;
}

} // namespace

// A process holding a key dumps core: without the shim the core file holds
// the private scalar; under it, on either backend, it does not (memfd_secret
// mappings are never dumped; the fallback's are MADV_DONTDUMP). The kernel's
// core_pattern is pointed at a temporary directory for the test, then put back.
TEST_P(Exposure, CoreDumpHoldsNoKey) {
  SECMEM_REQUIRE_SECRETMEM();
  std::string key = dir_ + "/" + GetParam() + ".pem";
  std::string saved = read_file(kCorePattern);
  ASSERT_FALSE(saved.empty());
  ASSERT_TRUE(write_file(kCorePattern, dir_ + "/core.%p")) << "cannot set " << kCorePattern << " (root is needed)";
  std::string plain = core_of_holder(key, dir_, {});
  std::string shimmed = core_of_holder(key, dir_, {"LD_PRELOAD=" + kShim});
  // On the mlock tier: MADV_DONTDUMP alone (SECMEM_NODUMP=0), and by default
  // (SECMEM_NODUMP=fallback) no core at all where fs.suid_dumpable is 0.
  std::string fallback = core_of_holder(key, dir_, {"LD_PRELOAD=" + kShim, "SECMEM_BACKEND=mlock", "SECMEM_NODUMP=0"});
  std::string undumpable = core_of_holder(key, dir_, {"LD_PRELOAD=" + kShim, "SECMEM_BACKEND=mlock"});
  EXPECT_TRUE(write_file(kCorePattern, saved));
  std::vector<std::vector<unsigned char>> patterns;
  for (const auto &pattern : key_patterns(load_key_material(key))) patterns.push_back(pattern.bytes);
  ASSERT_GT(plain.size(), 100000u) << "no core file was written";
  ASSERT_GT(shimmed.size(), 100000u);
  ASSERT_GT(fallback.size(), 100000u);
  if (read_file("/proc/sys/fs/suid_dumpable") == "0\n") {
    EXPECT_EQ(undumpable.size(), 0u);
  }
  int in_plain = count_copies(plain, patterns), in_shimmed = count_copies(shimmed, patterns),
      in_fallback = count_copies(fallback, patterns);
  std::printf("core dump, %s: %d copies plain, %d under the shim, %d under the shim on the mlock tier "
              "(SECMEM_NODUMP=0; by default no core: %zu bytes)\n",
              GetParam(), in_plain, in_shimmed, in_fallback, undumpable.size());
  EXPECT_GT(in_plain, 0) << "the core of an unprotected process holds the key";
  EXPECT_EQ(in_shimmed, 0);
  EXPECT_EQ(in_fallback, 0);
  EXPECT_EQ(count_copies(undumpable, patterns), 0);
}

// On the fallback tiers (a Debian 12 kernel without secretmem.enable=1) a
// process of the same user can read the key through /proc/PID/mem. By default
// (SECMEM_NODUMP=fallback) the key holder makes itself non-dumpable and that
// reader gets nothing: not even the list of its mappings. The reader is the
// holder's parent (as Yama's ptrace_scope=1 allows), running as nobody, with
// no capability. With SECMEM_NODUMP=0 it finds the key, every component.
TEST_P(Exposure, ASameUserReaderGetsNothingOnTheFallbackTier) {
  char pattern[] = "/tmp/secmem-sameuser-XXXXXX";
  std::string dir = mkdtemp(pattern), key = dir + "/key.pem";
  ASSERT_EQ(
      system(
          ("cp " + dir_ + "/" + GetParam() + ".pem " + key + " && chmod 755 " + dir + " && chmod 644 " + key).c_str()),
      0);
  std::vector<secmem::tool::Pattern> patterns = key_patterns(load_key_material(key));
  for (bool nodump : {true, false}) {
    SCOPED_TRACE(nodump ? "SECMEM_NODUMP unset (fallback)" : "SECMEM_NODUMP=0");
    pid_t reader = fork();
    ASSERT_GE(reader, 0);
    if (reader == 0) {
      if (setgroups(0, nullptr) != 0 || setresgid(65534, 65534, 65534) != 0 || setresuid(65534, 65534, 65534) != 0)
        _exit(10);
      std::vector<std::string> env = {"LD_PRELOAD=" + kShim, "SECMEM_BACKEND=mlock"};
      if (!nodump) env.push_back("SECMEM_NODUMP=0");
      Child holder = start({kProbe, "hold", key}, env);
      char ready[6] = {};
      if (read(holder.out, ready, 6) != 6) _exit(11);
      int outcome = 0;
      try {
        ScanResult result = scan(holder.pid, patterns);
        bool every = !result.components.empty();
        for (const std::string &component : result.components) every = every && result.of(component) > 0;
        outcome = every ? 1 : result.total() > 0 ? 3 : 0;
      } catch (const secmem::tool::ToolError &) {
        outcome = 2; // refused
      }
      if (finish(holder, "x").status != 0) _exit(12);
      _exit(outcome);
    }
    int status = 0;
    ASSERT_EQ(waitpid(reader, &status, 0), reader);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), nodump ? 2 : 1)
        << "2: the reader was refused; 1: it read every component; 3: some; 0: none";
  }
  (void)!system(("rm -rf " + dir).c_str());
}

// ---- real programs ---------------------------------------------------------------------
//
// Each with an RSA-2048, EC P-256 and Ed25519 key (and its self-signed
// certificate), run plainly and under the shim, scanned once the key has
// been used: under the shim no component is readable and the key holder has
// a secretmem mapping; without it the scan finds the key.

namespace {

const std::string kPython = "/usr/bin/python3";
const std::string kKeyUser = SECMEM_SOURCE_DIR "/tests/key_user.py";

class Programs : public testing::TestWithParam<const char *> {
protected:
  static void SetUpTestSuite() {
    char pattern[] = "/tmp/secmem-programs-XXXXXX";
    dir_ = mkdtemp(pattern);
    for (const std::string type : {"RSA", "EC", "Ed25519"})
      ASSERT_TRUE(make_key_and_cert(type, dir_ + "/" + type + ".pem", dir_ + "/" + type + ".crt"));
  }
  static void TearDownTestSuite() { (void)!system(("rm -rf " + dir_).c_str()); }
  static std::string key() { return dir_ + "/" + GetParam() + ".pem"; }
  static std::string cert() { return dir_ + "/" + GetParam() + ".crt"; }
  static std::vector<std::string> env(bool shim) {
    return shim ? std::vector<std::string>{"LD_PRELOAD=" + kShim} : std::vector<std::string>{};
  }

  // Scans pid for every component of the key; under the shim, checks that
  // none is readable and that a secretmem mapping is there.
  static void check(int pid, bool shim, const std::string &what, int *plain_total) {
    ScanResult result = scan(pid, key_patterns(load_key_material(key())));
    std::printf("| %s | %s | %s | %d: %s |\n", what.c_str(), GetParam(), shim ? "shim" : "plain", result.total(),
                per_component(result).c_str());
    if (!shim) {
      *plain_total = result.total();
      return;
    }
    for (const std::string &name : result.components)
      EXPECT_EQ(result.of(name), 0) << what << ", " << name << ": " << describe_copies(result, name);
    EXPECT_GE(result.unreadable_secret.size(), 1u) << what << ": no secretmem mapping in the key holder";
  }

  static void check_key_user(const std::vector<std::string> &args, const std::string &what);

  static inline std::string dir_;
};

// A line of text from fd (up to the newline), or "" after 20 s.
std::string read_line(int fd) {
  std::string line;
  char c;
  for (int waited = 0; waited < 2000;) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 10) <= 0) {
      ++waited;
      continue;
    }
    if (read(fd, &c, 1) != 1 || c == '\n') break;
    line += c;
  }
  return line;
}

// Lines of fd until one contains text (true), or 20 s pass or the stream ends.
bool wait_for_text(int fd, const std::string &text) {
  for (int lines = 0; lines < 500; ++lines) {
    std::string line = read_line(fd);
    if (line.find(text) != std::string::npos) return true;
    if (line.empty()) return false;
  }
  return false;
}

} // namespace

// openssl s_server after three handshakes (its key signed each).
TEST_P(Programs, OpensslServer) {
  SECMEM_REQUIRE_SECRETMEM();
  int plain = 0;
  for (bool shim : {false, true}) {
    sockaddr_in addr{};
    std::string port = free_loopback_port(&addr);
    ASSERT_NE(port, "");
    Child server =
        start({"openssl", "s_server", "-accept", "127.0.0.1:" + port, "-cert", cert(), "-key", key(), "-www", "-quiet"},
              env(shim));
    ASSERT_TRUE(wait_listening(addr, 10));
    for (int i = 0; i < 3; ++i) {
      Result client = run({"openssl", "s_client", "-connect", "127.0.0.1:" + port, "-CAfile", cert(), "-servername",
                           "localhost", "-verify_return_error", "-quiet"},
                          {}, "GET / HTTP/1.0\r\n\r\n");
      EXPECT_EQ(client.status, 0) << client.err;
      EXPECT_NE(client.out.find("HTTP/1.0 200 ok"), std::string::npos) << client.out;
    }
    check(server.pid, shim, "openssl s_server", &plain);
    kill(server.pid, SIGTERM);
    finish(server);
  }
  EXPECT_GT(plain, 0) << "the scan finds the key where nothing protects it";
}

// tests/key_user.py MODE ARGS (plainly, then under the shim), scanned once it says it used the key.
void Programs::check_key_user(const std::vector<std::string> &args, const std::string &what) {
  int plain = 0;
  for (bool shim : {false, true}) {
    std::vector<std::string> argv = {kPython, kKeyUser};
    argv.insert(argv.end(), args.begin(), args.end());
    Child user = start(argv, env(shim));
    ASSERT_EQ(read_line(user.out), "ready");
    check(user.pid, shim, what, &plain);
    EXPECT_EQ(finish(user, "x\n").status, 0);
  }
  EXPECT_GT(plain, 0) << "the scan finds the key where nothing protects it";
}

// Python's ssl module: a server context that has made a handshake.
TEST_P(Programs, PythonSsl) {
  SECMEM_REQUIRE_SECRETMEM();
  check_key_user({"ssl", cert(), key()}, "python3 ssl");
}

// python3-cryptography loads the key and signs (version 38 reaches an RSA
// key through the legacy EVP_PKEY_get1_RSA).
TEST_P(Programs, PythonCryptography) {
  SECMEM_REQUIRE_SECRETMEM();
  check_key_user({"cryptography", key()}, "python3-cryptography");
}

// curl with a client certificate and key, held in a TLS connection to a
// server that asks for it and then says nothing.
TEST_P(Programs, CurlWithAClientKey) {
  SECMEM_REQUIRE_SECRETMEM();
  int plain = 0;
  sockaddr_in addr{};
  std::string port = free_loopback_port(&addr);
  ASSERT_NE(port, "");
  // The server: an EC key of its own; it verifies the client against the client's self-signed certificate.
  std::string server_key = dir_ + "/EC.pem", server_cert = dir_ + "/EC.crt";
  Child server = start({"openssl", "s_server", "-accept", "127.0.0.1:" + port, "-cert", server_cert, "-key", server_key,
                        "-Verify", "1", "-CAfile", cert(), "-quiet"});
  ASSERT_TRUE(wait_listening(addr, 10));
  for (bool shim : {false, true}) {
    std::vector<std::string> argv = {"curl",
                                     "-sv",
                                     "--max-time",
                                     "30",
                                     "--cacert",
                                     server_cert,
                                     "--cert",
                                     cert(),
                                     "--key",
                                     key(),
                                     "https://localhost:" + port + "/",
                                     "--resolve",
                                     "localhost:" + port + ":127.0.0.1"};
    Child curl = start(argv, env(shim));
    ASSERT_TRUE(wait_for_text(curl.err, "SSL connection using")) << "curl made no TLS connection";
    usleep(100000); // the request is sent; curl waits for an answer that does not come
    check(curl.pid, shim, "curl --key", &plain);
    kill(curl.pid, SIGTERM);
    finish(curl);
  }
  kill(server.pid, SIGTERM);
  finish(server);
  EXPECT_GT(plain, 0) << "the scan finds the key where nothing protects it";
}

INSTANTIATE_TEST_SUITE_P(Keys, Programs, testing::Values("RSA", "EC", "Ed25519"),
                         [](const testing::TestParamInfo<const char *> &info) { return std::string(info.param); });

INSTANTIATE_TEST_SUITE_P(Keys, Exposure, testing::Values("RSA", "EC", "Ed25519"),
                         [](const testing::TestParamInfo<const char *> &info) { return std::string(info.param); });
