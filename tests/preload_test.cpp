// The preload shim with real programs: openssl, python3's ssl module, and
// shim_probe (ours). Secret-heap use is asserted from outside the process:
// the shim's SECMEM_REPORT line and the secretmem mappings in /proc/PID/maps.
#include <gtest/gtest.h>

#include <sys/stat.h>

#include <sys/un.h>

#include <regex>

#include <arpa/inet.h>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <map>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <sstream>
#include <string>
#include <sys/socket.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include "test_support.h"

using namespace secmem::test;

namespace {

const std::string kShim = SECMEM_PRELOAD_PATH;
const std::string kProbe = SECMEM_PROBE_PATH;
const std::string kPython = "/usr/bin/python3";
const std::string kJemalloc = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"; // Debian's libjemalloc2
const std::string kTlsScript = SECMEM_SOURCE_DIR "/tests/tls_handshake.py";

class Preload : public testing::Test {
protected:
  static void SetUpTestSuite() {
    char pattern[] = "/tmp/secmem-preload-XXXXXX";
    dir_ = mkdtemp(pattern);
    ASSERT_EQ(
        run({"openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", key("rsa")}).status,
        0);
    ASSERT_EQ(run({"openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key("ec")})
                  .status,
              0);
    ASSERT_EQ(run({"openssl", "genpkey", "-algorithm", "ED25519", "-out", key("ed25519")}).status, 0);
    ASSERT_EQ(run({"openssl", "req", "-x509", "-key", key("ec"), "-subj", "/CN=localhost", "-addext",
                   "subjectAltName=DNS:localhost", "-days", "2", "-out", dir_ + "/cert.pem"})
                  .status,
              0);
  }
  static void TearDownTestSuite() { (void)!system(("rm -rf " + dir_).c_str()); }

  static std::string key(const std::string &name) { return dir_ + "/" + name + ".pem"; }
  static std::string cert() { return dir_ + "/cert.pem"; }

  void SetUp() override {
    SECMEM_REQUIRE_SECRETMEM();
    report_ = dir_ + "/report-" + testing::UnitTest::GetInstance()->current_test_info()->name();
    unlink(report_.c_str());
  }

  std::vector<std::string> shim_env() const { return {"LD_PRELOAD=" + kShim, "SECMEM_REPORT=" + report_}; }

  // The report lines of every process that ran under the shim in this test.
  std::vector<std::string> reports() const {
    std::vector<std::string> lines;
    std::istringstream text(read_file(report_));
    for (std::string line; std::getline(text, line);) lines.push_back(line);
    return lines;
  }

  // Secret allocations made through OpenSSL's secure heap, from one report line.
  static long openssl_allocations(const std::string &line) {
    size_t at = line.find("secret allocations openssl ");
    return at == std::string::npos ? -1 : atol(line.c_str() + at + 27);
  }

  static inline std::string dir_;
  std::string report_;
};

} // namespace

TEST_F(Preload, OpensslGenpkeyKeepsKeysInSecretMemory) {
  for (const char *algorithm : {"RSA", "EC", "ED25519"}) {
    std::vector<std::string> argv = {"openssl", "genpkey", "-algorithm", algorithm, "-out", dir_ + "/gen.pem"};
    if (std::string(algorithm) == "RSA") argv.insert(argv.end(), {"-pkeyopt", "rsa_keygen_bits:2048"});
    if (std::string(algorithm) == "EC") argv.insert(argv.end(), {"-pkeyopt", "ec_paramgen_curve:P-256"});
    Result result = run(argv, shim_env());
    EXPECT_EQ(result.status, 0) << algorithm << ": " << result.err;
    // The key it wrote is a good one.
    EXPECT_EQ(run({"openssl", "pkey", "-in", dir_ + "/gen.pem", "-noout"}).status, 0) << algorithm;
  }
  std::vector<std::string> lines = reports();
  ASSERT_EQ(lines.size(), 3u);
  for (const std::string &line : lines) {
    EXPECT_NE(line.find("(openssl): backend memfd_secret"), std::string::npos) << line;
    EXPECT_GT(openssl_allocations(line), 0) << line;
  }
}

TEST_F(Preload, OpensslReqSignsUnderTheShim) {
  Result result = run({"openssl", "req", "-x509", "-key", key("rsa"), "-subj", "/CN=shim", "-days", "1", "-out",
                       dir_ + "/shim-cert.pem"},
                      shim_env());
  ASSERT_EQ(result.status, 0) << result.err;
  EXPECT_EQ(run({"openssl", "verify", "-CAfile", dir_ + "/shim-cert.pem", dir_ + "/shim-cert.pem"}).status, 0);
  ASSERT_EQ(reports().size(), 1u);
  EXPECT_GT(openssl_allocations(reports()[0]), 0) << reports()[0];
}

TEST_F(Preload, OpensslTlsHandshake) {
  // A free port on loopback.
  int probe = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  ASSERT_EQ(bind(probe, reinterpret_cast<sockaddr *>(&addr), sizeof addr), 0);
  ASSERT_EQ(getsockname(probe, reinterpret_cast<sockaddr *>(&addr), &len), 0);
  std::string port = std::to_string(ntohs(addr.sin_port));
  close(probe);

  Child server =
      start({"openssl", "s_server", "-accept", "127.0.0.1:" + port, "-cert", cert(), "-key", key("ec"), "-quiet"},
            shim_env());
  // Wait until it listens (bounded), then look at its mappings from outside.
  bool listening = false;
  for (int i = 0; i < 100 && !listening; ++i) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    listening = connect(s, reinterpret_cast<sockaddr *>(&addr), sizeof addr) == 0;
    close(s);
    if (!listening) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_TRUE(listening);
  size_t secret_mappings = 0;
  for (const Mapping &m : read_mappings(server.pid))
    if (m.secret()) ++secret_mappings;
  EXPECT_GE(secret_mappings, 1u) << "the server's key is not in a secretmem mapping";

  Result client = run({"openssl", "s_client", "-connect", "127.0.0.1:" + port, "-CAfile", cert(), "-brief",
                       "-verify_return_error", "-servername", "localhost"},
                      shim_env(), "Q\n");
  EXPECT_EQ(client.status, 0) << client.err;
  EXPECT_NE(client.err.find("CONNECTION ESTABLISHED"), std::string::npos) << client.err;
  EXPECT_NE(client.err.find("Verification: OK"), std::string::npos) << client.err;
  kill(server.pid, SIGTERM);
  finish(server);
  std::vector<std::string> lines = reports();
  EXPECT_GE(lines.size(), 1u);
  for (const std::string &line : lines) EXPECT_GT(openssl_allocations(line), 0) << line;
}

TEST_F(Preload, PythonSslHandshakeWithLibcryptoLoadedLate) {
  Result result = run({kPython, kTlsScript, cert(), key("ec")}, shim_env());
  ASSERT_EQ(result.status, 0) << result.out << result.err;
  EXPECT_NE(result.out.find("handshake ok"), std::string::npos) << result.out;
  ASSERT_EQ(reports().size(), 1u);
  EXPECT_NE(reports()[0].find("(python3): backend memfd_secret"), std::string::npos) << reports()[0];
  EXPECT_GT(openssl_allocations(reports()[0]), 0) << reports()[0];
}

// The private BIGNUMs of a PEM key are in the secret heap: the EC key's, and
// the RSA key's d as EVP_PKEY_get0_RSA gives it (a legacy copy OpenSSL 3 builds
// from the provider key through OSSL_PARAM_get_BN, made secure by the shim).
TEST_F(Preload, PemKeysPrivateComponentsAreSecret) {
  Result with = run({kProbe, "owned", key("ec"), key("rsa")}, shim_env());
  EXPECT_EQ(with.status, 0) << with.out;
  EXPECT_EQ(with.out, key("ec") + ": secret\n" + key("rsa") + ": secret\n");
  // Control: without the shim they are in ordinary memory.
  Result without = run({kProbe, "owned", key("ec"), key("rsa")});
  EXPECT_EQ(without.out, key("ec") + ": ordinary\n" + key("rsa") + ": ordinary\n");
}

// Debian's python3.11 is a non-PIE executable that takes free's address: its
// canonical PLT entry for free is no allocator of its own. No warning, and tags
// work in Python (through ctypes).
TEST_F(Preload, PythonIsNotTakenForAnotherAllocator) {
  Result result = run({kPython, "-c",
                       "import ctypes\n"
                       "c = ctypes.CDLL(None)\n"
                       "c.malloc.restype = ctypes.c_void_p\n"
                       "c.secmem_tag_begin()\n"
                       "p = c.malloc(64)\n"
                       "c.secmem_tag_end()\n"
                       "q = c.malloc(64)\n"
                       "print(c.secmem_owns(ctypes.c_void_p(p)), c.secmem_owns(ctypes.c_void_p(q)))\n"
                       "c.free(ctypes.c_void_p(p)); c.free(ctypes.c_void_p(q))\n"},
                      shim_env());
  EXPECT_EQ(result.status, 0) << result.err;
  EXPECT_EQ(result.out, "1 0\n") << result.err;
  EXPECT_EQ(result.err.find("another allocator"), std::string::npos) << result.err;
  // An allocator really first in LD_PRELOAD is still said.
  Result jemalloc = run({kPython, "-c", "pass"}, {"LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 " + kShim});
  EXPECT_NE(jemalloc.err.find("another allocator comes before libsecmem_preload.so"), std::string::npos)
      << jemalloc.err;
}

// A server's worker that drops privileges after fork still appends its line
// to a report file only root may open, and its line names the executable,
// not the title it wrote over its argv.
TEST_F(Preload, ReportLinesOfWorkersThatDropPrivileges) {
  SECMEM_REQUIRE_SECRETMEM();
  Result result = run({kProbe, "dropchild"}, shim_env());
  EXPECT_EQ(result.status, 0) << result.err;
  std::vector<std::string> lines = reports();
  ASSERT_EQ(lines.size(), 2u) << read_file(report_);
  for (const std::string &line : lines) EXPECT_NE(line.find("(shim_probe): backend "), std::string::npos) << line;
  EXPECT_NE(lines[0].find("backend memfd_secret; secret allocations openssl 1 (64 bytes)"), std::string::npos)
      << "the worker's line comes first: " << lines[0];
}

// A program started under another argv[0] (`exec -a`, as servers and
// shells do) is named by its executable in its line (the line said "nginx:
// worker process").
TEST_F(Preload, ReportLinesNameTheExecutableNotArgv0) {
  Result result = run(
      {"bash", "-c", "exec -a 'nginx: worker process' openssl genpkey -algorithm ED25519 -out /dev/null"}, shim_env());
  EXPECT_EQ(result.status, 0) << result.err;
  std::vector<std::string> lines = reports();
  ASSERT_EQ(lines.size(), 1u) << read_file(report_);
  EXPECT_NE(lines[0].find(" (openssl): backend "), std::string::npos) << lines[0];
}

// A program started through a descriptor (fexecve: AT_EXECFN is /dev/fd/N)
// is named by its argv[0], not by the descriptor's number (it was "3").
TEST_F(Preload, ReportLinesOfProgramsStartedByDescriptorNameTheProgram) {
  Result result =
      run({kProbe, "fexecve", "openssl", "genpkey", "-algorithm", "ED25519", "-out", "/dev/null"}, shim_env());
  EXPECT_EQ(result.status, 0) << result.err;
  // By its name in a directory's descriptor (execveat: /dev/fd/N/openssl),
  // by that name, not argv[0].
  Result named =
      run({kProbe, "execveat", "openssl", "genpkey", "-algorithm", "ED25519", "-out", "/dev/null"}, shim_env());
  EXPECT_EQ(named.status, 0) << named.err;
  std::vector<std::string> lines = reports();
  ASSERT_EQ(lines.size(), 2u) << read_file(report_);
  for (const std::string &line : lines) EXPECT_NE(line.find(" (openssl): backend "), std::string::npos) << line;
}

// A process that changed its user and then started a program (runuser,
// setpriv, pg_ctlcluster) cannot open a report file root made: its line is
// said to be lost, with what to do; made beforehand, writable by that user,
// the file takes its line.
TEST_F(Preload, ReportAfterAChangeOfUserAndExec) {
  std::vector<std::string> argv = {"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--",       "openssl",
                                   "genpkey", "-algorithm",    "ED25519",       "-out",           "/dev/null"};
  Result closed = run(argv, shim_env()); // the directory is root's, 0700: said so
  EXPECT_NE(closed.err.find("open: EACCES (a directory on its path is closed to this user)"), std::string::npos)
      << closed.err;
  ASSERT_EQ(chmod(dir_.c_str(), 0711), 0);
  ASSERT_EQ(unlink(report_.c_str()), 0);
  Result lost = run(argv, shim_env()); // root's file, 0600: said so, with what to do
  EXPECT_EQ(lost.status, 0) << lost.err;
  EXPECT_NE(lost.err.find("open: EACCES (the file is another user's: make it beforehand, writable by each user the "
                          "program runs as)"),
            std::string::npos)
      << lost.err;
  EXPECT_TRUE(reports().empty()) << read_file(report_);
  ASSERT_EQ(unlink(report_.c_str()), 0);
  int fd = open(report_.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(fchmod(fd, 0666), 0);
  close(fd);
  Result kept = run(argv, shim_env());
  EXPECT_EQ(kept.status, 0) << kept.err;
  std::vector<std::string> lines = reports();
  ASSERT_EQ(lines.size(), 1u) << read_file(report_) << kept.err;
  EXPECT_NE(lines[0].find(" (openssl): backend memfd_secret"), std::string::npos) << lines[0];
}

// A report that cannot be written is said to be lost, with why (it was
// lost without a word): a full device, a directory, a FIFO no one reads,
// RLIMIT_FSIZE.
TEST_F(Preload, AReportThatCannotBeWrittenIsSaidToBeLost) {
  std::string fifo = dir_ + "/report.fifo";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  struct Case {
    std::string target, line;
    std::vector<std::string> prefix;
  };
  for (const Case &c : std::vector<Case>{
           {"/dev/full", "write: ENOSPC", {}},
           {dir_, "open: EISDIR", {}},
           {fifo, "open: ENXIO", {}},
           {dir_ + "/limited.txt", "write: EFBIG (RLIMIT_FSIZE)", {"prlimit", "--fsize=0"}},
       }) {
    std::vector<std::string> argv = c.prefix;
    argv.insert(argv.end(), {kProbe, "tag"});
    Result r = run(argv, {"LD_PRELOAD=" + kShim, "SECMEM_REPORT=" + c.target});
    EXPECT_EQ(r.status, 0) << c.target << r.err;
    EXPECT_NE(r.err.find("secmem: cannot write the report to SECMEM_REPORT=" + c.target + ": " + c.line + "\n"),
              std::string::npos)
        << c.target << ": " << r.err;
  }
}

// SECMEM_REPORT=stderr with stderr a pipe whose reader has gone (a
// program's output piped to `head`): the line is lost, not the process's
// exit status (SIGPIPE made it 141; found by the adversarial review).
TEST_F(Preload, AReportIntoAClosedPipeDoesNotKill) {
  Result r = run({"bash", "-c",
                  "{ sleep 0.5; exec env LD_PRELOAD=" + kShim + " SECMEM_REPORT=stderr " + kProbe +
                      " tag; } 2>&1 >/dev/null | true; exit ${PIPESTATUS[0]}"});
  EXPECT_EQ(r.status, 0) << r.err;
}

TEST_F(Preload, TagsRouteMallocOnlyUnderTheShim) {
  Result with = run({kProbe, "tag"}, shim_env());
  EXPECT_EQ(with.status, 0) << with.out;
  EXPECT_EQ(with.out, "tagged malloc: secret, tagged calloc: secret, plain malloc: ordinary\n");
  ASSERT_EQ(reports().size(), 1u);
  EXPECT_NE(reports()[0].find("tag 2 (128 bytes)"), std::string::npos) << reports()[0];
  Result without = run({kProbe, "tag"});
  EXPECT_EQ(without.out, "tagged malloc: ordinary, tagged calloc: ordinary, plain malloc: ordinary\n");
}

// After a call to i2d_PrivateKey that only asks the length, the thread's
// next allocation of that length (or up to 64 bytes more: a std::string
// sized to it takes one more) among its next 8 is secret (a caller's own
// buffer for the key's encoding): not one of another size, not a second
// one, not one after 8 others or after a call that writes; tags keep their
// depth and their scopes meanwhile.
TEST_F(Preload, TheBufferAskedForAKeysDerEncodingIsSecret) {
  Result with = run({kProbe, "der-routing", key("ec")}, shim_env());
  EXPECT_EQ(with.status, 0) << with.out << with.err;
  EXPECT_EQ(with.out,
            "other size ordinary, one byte less ordinary, the length secret, the length again ordinary, a "
            "string of the length secret, the length after 8 others ordinary, glibc's own of the length ordinary, "
            "calloc secret, the length "
            "after a write ordinary, tagged while waiting secret, the length after them secret, plain "
            "ordinary; depth 0, 0 while waiting, 0 after\n");
  Result without = run({kProbe, "der-routing", key("ec")});
  EXPECT_EQ(without.status, 0) << without.out << without.err;
  EXPECT_EQ(without.out.find("secret"), std::string::npos) << without.out;
}

// The shim's own tag scopes (around OpenSSL calls that make key material)
// leave glibc's allocations ordinary: a thread's block of thread-specific
// data made there went to the secret heap, and a fork child's glibc, which
// zeroes other threads' blocks before any fork handler runs, zeroed the
// parent's (found by the adversarial review).
TEST_F(Preload, GlibcsOwnBlocksInTheShimsScopesStayOrdinary) {
  Result with = run({kProbe, "tsd-fork"}, shim_env());
  EXPECT_EQ(with.status, 0) << with.out << with.err;
  EXPECT_EQ(with.out, "thread-specific data after the fork: 0x1234\n");
}

TEST_F(Preload, ThreadedAndMallocHeavyProgramsRunUnchanged) {
  Result threads = run({kProbe, "threads"}, shim_env());
  EXPECT_EQ(threads.status, 0) << threads.out << threads.err;
  EXPECT_EQ(threads.out, "threads: 0 corrupted blocks\n");
  Result python = run({kPython, "-c",
                       "d = {str(i): [i] * 8 for i in range(300000)}; "
                       "print(sum(len(v) for v in d.values()))"},
                      shim_env());
  EXPECT_EQ(python.status, 0) << python.err;
  EXPECT_EQ(python.out, "2400000\n");
  Result sort = run({"sh", "-c", "seq 200000 | sort -rn | head -1"}, shim_env());
  EXPECT_EQ(sort.out, "200000\n");
}

// The report's counters are shared out between threads (one pair for the
// process cost two threads' secret allocations 5-8 times their time): every
// thread's allocations are in the total, with more threads than shards.
TEST_F(Preload, TheReportCountsEveryThreadsSecretAllocations) {
  Result result = run({kProbe, "secure-threads"}, shim_env());
  ASSERT_EQ(result.status, 0) << result.out << result.err;
  EXPECT_EQ(result.out, "secure-threads: 100000 allocations (6000000 bytes), 0 failed\n");
  ASSERT_EQ(reports().size(), 1u) << read_file(report_);
  EXPECT_NE(reports()[0].find("secret allocations openssl 100000 (6000000 bytes)"), std::string::npos) << reports()[0];
}

// Counted before libc has an environment to read (a program's
// .preinit_array), and not counted, saying so, where the program set
// SECMEM_REPORT only after its first secret allocation (a line of zeros
// would be false).
TEST_F(Preload, TheReportCountsFromTheFirstSecretAllocationOrSaysItDidNot) {
  std::vector<std::string> env = shim_env();
  env.push_back("SHIM_PROBE_PREINIT=1");
  Result early = run({kProbe, "preinit"}, env);
  ASSERT_EQ(early.status, 0) << early.err;
  ASSERT_EQ(reports().size(), 1u) << read_file(report_);
  EXPECT_NE(reports()[0].find("secret allocations openssl 4 (64 bytes)"), std::string::npos) << reports()[0];
  unlink(report_.c_str());
  Result late = run({kProbe, "report-late"}, shim_env());
  ASSERT_EQ(late.status, 0) << late.err;
  ASSERT_EQ(reports().size(), 1u) << read_file(report_);
  EXPECT_NE(reports()[0].find("secret allocations not counted (SECMEM_REPORT was not set at the first); peak held"),
            std::string::npos)
      << reports()[0];
}

TEST_F(Preload, ForkHeavyProgramKeepsEveryKeyWorking) {
  Result result = run({kProbe, "forkgen", key("ec"), "8"}, shim_env());
  EXPECT_EQ(result.status, 0) << result.out << result.err;
  EXPECT_EQ(result.out, "children failed: 0, parent key intact\n");
  std::vector<std::string> lines = reports(); // the children leave with _exit: no report
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_NE(lines[0].find("(shim_probe): backend memfd_secret"), std::string::npos) << lines[0];
}

// The wait calls say which fork children are gone (preload/reaping.cpp): the
// staging file of a child the program reaped serves its next child without
// a /proc read or waitid, and a live child's file is never given away.
TEST_F(Preload, ChildrenTheProgramReapsGiveTheirStagingFilesBack) {
  // Under a filter added after start-up that refuses memfd_secret and
  // waitid, the heap can neither ask the kernel nor make a new file: only
  // the program's reaping says a file is free.
  Result shim = run({"timeout", "-s", "KILL", "60", SECMEM_FORK_EDGES_PATH, "reaped-reuse"}, {"LD_PRELOAD=" + kShim});
  EXPECT_EQ(shim.status, 0) << shim.out << shim.err;
  Result alone = run({"timeout", "-s", "KILL", "60", SECMEM_FORK_EDGES_PATH, "reaped-reuse"});
  EXPECT_EQ(alone.status, 2) << "the library alone, no word of the reaping: " << alone.out << alone.err;
  // Reaped children among children that live on (closing their descriptors,
  // exec'ing, or whose forking thread leaves) and children that leave
  // secrets behind for the next one.
  // And a process that shares the program's memory (CLONE_VM) in a pid
  // namespace of its own (as root), reaping a child numbered as a live one.
  ASSERT_EQ(geteuid(), 0u) << "a pid namespace and ns_last_pid need root (the suite runs as root)";
  const std::vector<std::vector<std::string>> modes = {{"live-children"},    {"thread-left"},
                                                       {"thread-left", "1"}, {"staging-reuse", "40"},
                                                       {"foreign-reaper"},   {"foreign-reaper", "nested"},
                                                       {"forged-message"}};
  for (const std::vector<std::string> &mode : modes) {
    std::vector<std::string> argv = {"timeout", "-s", "KILL", "120", SECMEM_FORK_EDGES_PATH};
    argv.insert(argv.end(), mode.begin(), mode.end());
    Result r = run(argv, {"LD_PRELOAD=" + kShim});
    EXPECT_EQ(r.status, 0) << mode[0] << ": " << r.out << r.err;
  }
  // The program as pid 1 of its namespace (a container's init): the other
  // process is pid 1 of its own, and its reaping used to count as ours.
  Result init = run({"timeout", "-s", "KILL", "120", "unshare", "--pid", "--fork", "--mount-proc", "env",
                     "LD_PRELOAD=" + kShim, SECMEM_FORK_EDGES_PATH, "foreign-reaper"});
  EXPECT_EQ(init.status, 0) << "as pid 1: " << init.out << init.err;
  // The program as a child of pid 1 (a service under systemd): the nested
  // reaper's parent is pid 1 of its namespace, as the program's is (its
  // process group, made outside, tells it apart).
  Result under_init =
      run({"timeout", "-s", "KILL", "120", "unshare", "--pid", "--fork", "--mount-proc", "sh", "-c",
           "env LD_PRELOAD=" + kShim + " " + SECMEM_FORK_EDGES_PATH + " foreign-reaper nested; exit $?"});
  EXPECT_EQ(under_init.status, 0) << "under pid 1: " << under_init.out << under_init.err;
}

// A lookup the shim keeps (libcrypto's CRYPTO_get_mem_functions, asked at
// each OPENSSL_free in a program with memory functions of its own) must not
// outlive the library it points into when the library is unloaded without
// the shim's dlclose wrapper (libc's own symbol; a library loaded with
// RTLD_DEEPBIND): it jumped into the unmapped page.
TEST_F(Preload, KeptLookupsFollowAnUnloadTheShimDidNotSee) {
  Result r = run({SECMEM_STALE_LOOKUP_PATH, SECMEM_FAKECRYPTO_PATH}, {"LD_PRELOAD=" + kShim});
  EXPECT_EQ(r.status, 0) << r.out << r.err;
  EXPECT_EQ(r.out, "own free: 1, then 1 (a page at the old place: yes)\n") << r.err;
}

// The wait calls under the shim return what glibc's return: statuses, a
// NULL status, WNOHANG with nothing to reap, WNOWAIT, stopped children, errno
// (EFAULT for a siginfo that cannot be written: the wrapper used to write it
// first, and crashed).
TEST_F(Preload, WaitCallsBehaveAsGlibcs) {
  const char *script = R"(
import os, signal, sys
def child(code):
    pid = os.fork()
    if pid == 0: os._exit(code)
    return pid
p = child(3); assert os.waitpid(p, 0) == (p, 3 << 8)
p = child(4); q, st = os.wait(); assert (q, os.waitstatus_to_exitcode(st)) == (p, 4)
p = child(5); q, st, ru = os.wait3(0); assert (q, st >> 8) == (p, 5) and ru.ru_maxrss >= 0
p = child(6); q, st, ru = os.wait4(p, 0); assert (q, st >> 8) == (p, 6)
p = child(7); info = os.waitid(os.P_PID, p, os.WEXITED | os.WNOWAIT); assert info.si_pid == p and info.si_status == 7
info = os.waitid(os.P_PID, p, os.WEXITED); assert info.si_pid == p and info.si_status == 7
r, w = os.pipe()
p = os.fork()
if p == 0:
    os.read(r, 1); os._exit(0)
assert os.waitpid(p, os.WNOHANG) == (0, 0)
assert os.waitid(os.P_PID, p, os.WEXITED | os.WNOHANG) is None
os.kill(p, signal.SIGSTOP); q, st = os.waitpid(p, os.WUNTRACED); assert q == p and os.WIFSTOPPED(st)
os.kill(p, signal.SIGCONT); os.write(w, b"x"); assert os.waitpid(p, 0) == (p, 0)
try:
    os.waitpid(-1, 0); sys.exit("no ECHILD")
except ChildProcessError:
    pass
p = os.fork()
if p == 0:
    os.kill(os.getpid(), signal.SIGKILL)
q, st = os.waitpid(p, 0); assert os.WIFSIGNALED(st) and os.WTERMSIG(st) == signal.SIGKILL
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
read_only = libc.mmap(None, 4096, 1, 0x22, -1, 0)  # PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS
p = child(9)
rc = libc.waitid(1, p, ctypes.c_void_p(read_only), 4)  # P_PID, WEXITED: the siginfo cannot be written
assert rc == -1 and ctypes.get_errno() == 14, (rc, ctypes.get_errno())  # EFAULT
print("ok")
)";
  for (bool shim : {false, true}) {
    Result r = run({kPython, "-c", script},
                   shim ? std::vector<std::string>{"LD_PRELOAD=" + kShim} : std::vector<std::string>{});
    EXPECT_EQ(r.status, 0) << (shim ? "under the shim: " : "plain: ") << r.out << r.err;
    EXPECT_EQ(r.out, "ok\n") << (shim ? "under the shim" : "plain");
  }
}

TEST_F(Preload, ProgramsThatNeverTouchOpensslAreUnaffected) {
  Result result = run({"sh", "-c", "echo hello | tr a-z A-Z"}, shim_env());
  EXPECT_EQ(result.status, 0);
  EXPECT_EQ(result.out, "HELLO\n");
  for (const std::string &line : reports()) EXPECT_NE(line.find("backend none"), std::string::npos) << line;
}

TEST_F(Preload, SodiumMallocGoesToSecretMemory) {
  Result with = run({kProbe, "sodium"}, shim_env());
  EXPECT_EQ(with.status, 0) << with.out << with.err;
  EXPECT_EQ(with.out, "sodium_malloc: secret, sodium_allocarray: secret, secretbox: ok, mprotect: ok\n");
  ASSERT_EQ(reports().size(), 1u);
  EXPECT_NE(reports()[0].find("sodium 2 (160 bytes)"), std::string::npos) << reports()[0];
  Result without = run({kProbe, "sodium"});
  EXPECT_EQ(without.out, "sodium_malloc: ordinary, sodium_allocarray: ordinary, secretbox: ok, mprotect: ok\n");
}

// With jemalloc preloaded after the shim, untagged allocations go to
// jemalloc (its statistics prove it) and everything secret to secmem.
TEST_F(Preload, JemallocAfterTheShim) {
  std::vector<std::string> env = {"LD_PRELOAD=" + kShim + ":" + kJemalloc, "SECMEM_REPORT=" + report_,
                                  "MALLOC_CONF=stats_print:true"};
  Result tag = run({kProbe, "tag"}, env);
  EXPECT_EQ(tag.status, 0) << tag.out;
  EXPECT_EQ(tag.out, "tagged malloc: secret, tagged calloc: secret, plain malloc: ordinary\n");
  EXPECT_NE(tag.err.find("Begin jemalloc statistics"), std::string::npos);
  Result genpkey = run({"openssl", "genpkey", "-algorithm", "ED25519"}, env);
  EXPECT_EQ(genpkey.status, 0);
  Result threads = run({kProbe, "threads"}, env);
  EXPECT_EQ(threads.out, "threads: 0 corrupted blocks\n");
  std::vector<std::string> lines = reports();
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_NE(lines[0].find("tag 2 (128 bytes)"), std::string::npos) << lines[0];
  EXPECT_GT(openssl_allocations(lines[1]), 0) << lines[1];
  EXPECT_NE(lines[2].find("backend none"), std::string::npos) << "threads allocate nothing secret: " << lines[2];
}

// With jemalloc first, the shim never sees plain malloc: OpenSSL's secure
// heap still goes to secret memory, tags are off, and the shim says so.
TEST_F(Preload, JemallocBeforeTheShim) {
  std::vector<std::string> env = {"LD_PRELOAD=" + kJemalloc + ":" + kShim, "SECMEM_REPORT=" + report_};
  Result genpkey = run({"openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"}, env);
  EXPECT_EQ(genpkey.status, 0) << genpkey.err;
  EXPECT_NE(genpkey.err.find("secmem: preload: another allocator comes before libsecmem_preload.so in LD_PRELOAD; "
                             "secmem_tag_begin() is off (put libsecmem_preload.so first to use it)\n"),
            std::string::npos)
      << genpkey.err;
  ASSERT_EQ(reports().size(), 1u);
  EXPECT_GT(openssl_allocations(reports()[0]), 0) << reports()[0];
  Result tag = run({kProbe, "tag"}, env);
  EXPECT_EQ(tag.out, "tagged malloc: ordinary, tagged calloc: ordinary, plain malloc: ordinary\n");
}

TEST_F(Preload, TagCallersRoutesAllocationsMadeInsideAListedLibrary) {
  const std::string library = SECMEM_TAGME_PATH;
  std::vector<std::string> env = shim_env();
  env.push_back("SECMEM_TAG_CALLERS=libfoo.so,libtagme.so");
  Result with = run({kProbe, "callers", library}, env);
  EXPECT_EQ(with.status, 0) << with.err;
  EXPECT_EQ(with.out, "from the library: secret, secret; from here: ordinary\n");
  ASSERT_EQ(reports().size(), 1u);
  EXPECT_NE(reports()[0].find("callers 2 (128 bytes)"), std::string::npos) << reports()[0];
  Result without = run({kProbe, "callers", library}, shim_env());
  EXPECT_EQ(without.out, "from the library: ordinary, ordinary; from here: ordinary\n");
  // Eight names at most: a ninth is said to be ignored (it was dropped without a word).
  env = shim_env();
  env.push_back("SECMEM_TAG_CALLERS=a,b,c,d,e,f,g,h,libtagme.so,i");
  Result ninth = run({kProbe, "callers", library}, env);
  EXPECT_EQ(ninth.status, 0) << ninth.err;
  EXPECT_EQ(ninth.out, "from the library: ordinary, ordinary; from here: ordinary\n");
  EXPECT_EQ(ninth.err, "secmem: preload: SECMEM_TAG_CALLERS: more than 8 names; from libtagme.so on, ignored\n");
}

// A listed library loaded at the addresses of an unloaded one that was not
// (and the reverse): each one's allocations go where its own name says.
TEST_F(Preload, TagCallersForgetsUnloadedLibraries) {
  const std::string listed = SECMEM_TAGME_PATH, unlisted = SECMEM_UNTAGGED_PATH;
  std::vector<std::string> env = shim_env();
  env.push_back("SECMEM_TAG_CALLERS=libtagme.so");
  Result forward = run({kProbe, "callers-reuse", unlisted, listed}, env);
  EXPECT_EQ(forward.status, 0) << forward.err;
  EXPECT_EQ(forward.out, "ordinary, secret; same address\n") << forward.err;
  Result reverse = run({kProbe, "callers-reuse", listed, unlisted}, env);
  EXPECT_EQ(reverse.status, 0) << reverse.err;
  EXPECT_EQ(reverse.out, "secret, ordinary; same address\n") << reverse.err;
}

// The same while the unload runs: the unloaded library's destructor
// allocates, and a SCHED_FIFO thread on the same CPU loads the other library
// where it was as soon as the unmap is done, before dlclose returns (the
// verdict of the destructor's call was the old library's). 5 rounds each way.
TEST_F(Preload, TagCallersCachesNothingDuringAnUnload) {
  std::vector<std::string> env = shim_env();
  env.push_back("SECMEM_TAG_CALLERS=libtagrace.so");
  for (int round = 0; round < 5; ++round) {
    Result forward = run({kProbe, "callers-unload-race", SECMEM_PLAINRACE_PATH, SECMEM_TAGRACE_PATH}, env);
    EXPECT_EQ(forward.status, 0) << forward.out << forward.err;
    EXPECT_EQ(forward.out, "constructor's block secret, allocation secret; same address\n") << forward.err;
    Result reverse = run({kProbe, "callers-unload-race", SECMEM_TAGRACE_PATH, SECMEM_PLAINRACE_PATH}, env);
    EXPECT_EQ(reverse.status, 0) << reverse.out << reverse.err;
    EXPECT_EQ(reverse.out, "constructor's block ordinary, allocation ordinary; same address\n") << reverse.err;
  }
}

// As OpenSSH's pre-auth child: keys made, then a kill-by-default allow-list
// (open and stat refused, no memfd_secret, no mlock), then signatures, ECDH,
// X25519 and a new chunk of secure heap. The heap made no call the filter
// kills on: the chunk made under the filter is unlocked anonymous memory,
// said once (the mlock tier was never checked before the filter, and the
// status file it would be checked with is refused).
TEST_F(Preload, StrictSandboxAfterStartUpLikeOpenSshPreauth) {
  Result r = run({SECMEM_PREAUTH_PATH}, {"LD_PRELOAD=" + kShim});
  EXPECT_EQ(r.status, 0) << "128 + 31 is SIGSYS: " << r.out << r.err;
  EXPECT_EQ(r.out, "ok\n");
  EXPECT_NE(
      r.err.find("secmem: memfd_secret unavailable (SIGSYS: a seccomp filter installed after start-up may kill on "
                 "it, so it is not tried again)"),
      std::string::npos)
      << r.err;
  // SECMEM_NODUMP=fallback wants prctl(PR_SET_DUMPABLE) when the chunk lands
  // outside memfd_secret; the filter may kill on it: not made, said once.
  Result nodump = run({SECMEM_PREAUTH_PATH}, {"LD_PRELOAD=" + kShim, "SECMEM_NODUMP=fallback"});
  EXPECT_EQ(nodump.status, 0) << "128 + 31 is SIGSYS: " << nodump.out << nodump.err;
  EXPECT_NE(nodump.err.find(", but the process could not be made non-dumpable (SECMEM_NODUMP=fallback: "
                            "prctl(PR_SET_DUMPABLE, 0) not made (SIGSYS: "),
            std::string::npos)
      << nodump.err;
  EXPECT_EQ(nodump.err.find("made non-dumpable so that"), std::string::npos) << nodump.err;
}

namespace {
// A syslog of the test's own: a datagram socket that a program run by
// run_logged finds at /dev/log (a private mount namespace whose /dev holds
// null and that socket only).
struct Syslog {
  std::string dir, path;
  int fd = -1;
  explicit Syslog(const std::string &parent) : dir(parent + "/syslog"), path(dir + "/log") {
    mkdir(dir.c_str(), 0755);
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
    unlink(path.c_str());
    EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr *>(&addr), sizeof addr), 0) << strerror(errno);
  }
  ~Syslog() { close(fd); }
  std::string messages() const {
    std::string all;
    char buf[4096];
    for (ssize_t n; (n = recv(fd, buf, sizeof buf, MSG_DONTWAIT)) > 0;) all += std::string(buf, n) + "\n";
    return all;
  }
  // argv with its stderr as given to sh ("" leaves it as run's pipe).
  Result run_logged(const std::vector<std::string> &argv, const std::vector<std::string> &env,
                    const std::string &stderr_redirect = "") const {
    std::string script = "mkdir -p " + dir + "/dev && mount -t tmpfs none " + dir + "/dev && touch " + dir +
                         "/dev/null && mount --bind /dev/null " + dir + "/dev/null && ln -s " + path + " " + dir +
                         "/dev/log && mount --rbind " + dir + "/dev /dev && exec \"$0\" \"$@\" " + stderr_redirect;
    std::vector<std::string> full = {"unshare", "-m", "--propagation", "private", "sh", "-c", script, "env"};
    full.insert(full.end(), env.begin(), env.end()); // the program's only, not the mounts'
    full.insert(full.end(), argv.begin(), argv.end());
    return run(full);
  }
};
} // namespace

// SECMEM_REPORT=stderr in a program that closed stderr and opened a data
// file, which took fd 2: the report line stays out of the data, and goes to
// syslog instead; so it does when the program closed stderr, or pointed it
// at /dev/null (as daemons do), or was started with stderr closed and opened
// a log (which took fd 2). A program started with stderr on /dev/null
// chose that: nothing goes to syslog.
TEST_F(Preload, TheReportGoesToSyslogWhenStderrIsGone) {
  ASSERT_EQ(geteuid(), 0u) << "a private mount namespace needs root (the suite runs as root)";
  Syslog log(dir_);
  std::vector<std::string> env = {"LD_PRELOAD=" + kShim, "SECMEM_REPORT=stderr"};
  std::string data = dir_ + "/data.bin";
  Result r = log.run_logged({SECMEM_FORK_EDGES_PATH, "data-stderr", data}, env);
  EXPECT_EQ(r.status, 0) << r.out << r.err;
  EXPECT_EQ(read_file(data), "DATA");
  std::regex report("<12>secmem\\[[0-9]+\\]: secmem report: pid [0-9]+ \\(fork_edges\\): backend [a-z_]+; [^\n]*\n");
  EXPECT_TRUE(std::regex_match(log.messages(), report)) << "data-stderr";
  for (const char *mode : {"closed-stderr", "null-stderr"}) {
    r = log.run_logged({SECMEM_FORK_EDGES_PATH, mode}, env);
    EXPECT_EQ(r.status, 0) << mode << r.out << r.err;
    EXPECT_EQ(r.err, "") << mode;
    EXPECT_TRUE(std::regex_match(log.messages(), report)) << mode;
  }
  // Started with stderr closed, a log the program opens for appending takes
  // fd 2: it is the program's file, not stderr (the line was written into it).
  std::string app_log = dir_ + "/app.log";
  r = log.run_logged({SECMEM_FORK_EDGES_PATH, "log-on-fd2", app_log}, env, "2>&-");
  EXPECT_EQ(r.status, 0) << r.out << r.err;
  EXPECT_EQ(read_file(app_log), "LOG\n");
  EXPECT_TRUE(std::regex_match(log.messages(), report)) << "log-on-fd2";
  // Started with stderr closed, and another library's constructor, run
  // before libsecmem's, opened a data file of its own read-write (it took fd
  // 2): not a stderr either (the line went over the file's header).
  std::string db = dir_ + "/app.db";
  std::vector<std::string> data_env = {"LD_PRELOAD=" + kShim + ":" + SECMEM_OPENDATA_PATH, "SECMEM_REPORT=stderr",
                                       "OPENDATA_FILE=" + db};
  r = log.run_logged({kProbe, "tag"}, data_env, "2>&-");
  EXPECT_EQ(r.status, 0) << r.out << r.err;
  EXPECT_EQ(read_file(db), "DATABASE-HEADER\n");
  EXPECT_NE(log.messages().find("secmem report: pid"), std::string::npos) << "opendata";
  // stderr on /dev/null from the start (and still): the user's choice.
  r = log.run_logged({SECMEM_FORK_EDGES_PATH, "null-stderr"}, env, "2>/dev/null");
  EXPECT_EQ(r.status, 0) << r.out << r.err;
  EXPECT_EQ(log.messages(), "");
  // Under a kill-by-default seccomp filter (socket not allowed), stderr
  // closed: the report is lost, not the process.
  r = log.run_logged({SECMEM_PREAUTH_PATH}, env, "2>&-");
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_EQ(r.out, "ok\n");
  EXPECT_EQ(log.messages(), "");
  // stderr left as it was: the report is there, and not in syslog.
  r = log.run_logged({SECMEM_FORK_EDGES_PATH, "range-grow"}, env);
  EXPECT_NE(r.err.find("secmem report: pid"), std::string::npos) << r.err;
  EXPECT_EQ(log.messages(), "");
}

// memalign, aligned_alloc and posix_memalign in a tag scope answer as glibc
// does outside one, alignment by alignment (0, odd ones, ones that are not a
// power of two, past 2 MiB, up to SIZE_MAX): the same success, EINVAL or
// ENOMEM, and a secret block aligned as glibc aligns. memalign(48, n) used to
// fail and alignments over 2 MiB returned ENOMEM.
TEST_F(Preload, AlignedAllocationsInATagScopeFollowGlibcsRules) {
  Result r = run({kProbe, "align"}, {"LD_PRELOAD=" + kShim});
  ASSERT_EQ(r.status, 0) << r.err;
  std::regex line("(memalign|aligned_alloc|posix_memalign) ([0-9]+): plain (ok|EINVAL|ENOMEM), tagged "
                  "(ok|EINVAL|ENOMEM)( aligned secret)?");
  int lines = 0, ok = 0;
  std::istringstream out(r.out);
  for (std::string text; std::getline(out, text); ++lines) {
    std::smatch m;
    ASSERT_TRUE(std::regex_match(text, m, line)) << text;
    EXPECT_EQ(m[3], m[4]) << text;
    EXPECT_EQ(m[4] == "ok", m[5].matched) << text;
    ok += m[4] == "ok";
  }
  EXPECT_EQ(lines, 57);
  EXPECT_GE(ok, 30);
}

// OpenSSL's memory functions changed behind the shim's back (a dlsym'ed
// CRYPTO_set_mem_functions, or a set and a reset, or a set after a
// CRYPTO_free that came before OpenSSL's first allocation, with the shim
// alone and with jemalloc before or after it): OPENSSL_free goes to the
// free function libcrypto uses, never to glibc with the program's pointers
// ("free(): invalid size", abort), and never to the program's free with glibc's.
TEST_F(Preload, OpensslFreeFollowsTheMemoryFunctionsLibcryptoUses) {
  Result custom = run({kProbe, "memfns", "dlsym"}, {"LD_PRELOAD=" + kShim});
  EXPECT_EQ(custom.status, 0) << custom.err;
  EXPECT_EQ(custom.out, "dlsym: program's mallocs some, frees some\n");
  Result reset = run({kProbe, "memfns", "reset"}, {"LD_PRELOAD=" + kShim});
  EXPECT_EQ(reset.status, 0) << reset.err;
  EXPECT_EQ(reset.out, "reset: program's mallocs none, frees none\n");
  for (const std::string &preload : {kShim, kJemalloc + ":" + kShim, kShim + ":" + kJemalloc}) {
    Result first = run({kProbe, "memfns", "freefirst"}, {"LD_PRELOAD=" + preload});
    EXPECT_EQ(first.status, 0) << preload << ": " << first.err;
    EXPECT_EQ(first.out, "freefirst: program's mallocs some, frees some\n") << preload;
  }
}

// OPENSSL_free cleanses ordinary memory under the shim, until the process
// calls exit: its exit handlers' frees (OPENSSL_cleanup's, a forked server
// child's at every connection) are not cleansed; a child forked by a
// handler cleanses on. exit itself is passed through: the status, the
// handlers, stdio flushed. After a vfork child's exit the parent cleanses
// on; the child's exit handlers ran in the parent's memory, where glibc
// dropped the parent's fork handlers: its next fork child writes the
// parent's secret block, with and without the shim (README.md's limit).
TEST_F(Preload, OpensslFreeCleansesUntilExit) {
  Result plain = run({kProbe, "exit-cleanse"}, {});
  EXPECT_EQ(plain.status, 7) << plain.err;
  // The probe sees what OpenSSL leaves.
  EXPECT_EQ(plain.out, "before: kept\nchild forked in exit: kept\nexit: kept\n");
  Result shim = run({kProbe, "exit-cleanse"}, {"LD_PRELOAD=" + kShim});
  EXPECT_EQ(shim.status, 7) << shim.err;
  EXPECT_EQ(shim.out, "before: cleansed\nchild forked in exit: cleansed\nexit: kept\n") << shim.err;
  Result vfork_plain = run({kProbe, "exit-cleanse", "vfork"}, {});
  EXPECT_EQ(vfork_plain.status, 0) << vfork_plain.err;
  EXPECT_EQ(vfork_plain.out, "after a vfork child's exit: kept, a fork child's write shared\n");
  Result vfork_shim = run({kProbe, "exit-cleanse", "vfork"}, {"LD_PRELOAD=" + kShim});
  EXPECT_EQ(vfork_shim.status, 0) << vfork_shim.err;
  EXPECT_EQ(vfork_shim.out, "after a vfork child's exit: cleansed, a fork child's write shared\n") << vfork_shim.err;
}

// The reserved range grows (downwards) for a tagged block larger than it:
// the shim used to keep the range it read first, and handed the grown
// part's blocks to glibc (a realloc of one crashed).
TEST_F(Preload, TaggedBlocksInTheGrownRangeStaySecret) {
  Result r = run({SECMEM_FORK_EDGES_PATH, "range-grow"}, {"LD_PRELOAD=" + kShim});
  EXPECT_EQ(r.status, 0) << r.out << r.err;
}

// The kernel cannot pin memfd_secret pages: an O_DIRECT read into a secret
// buffer and a vmsplice of one fail with EFAULT. The shim leaves the result
// alone and says why, once per call.
TEST_F(Preload, RefusedIoOnSecretBuffersIsExplainedOnce) {
  SECMEM_REQUIRE_SECRETMEM();
  char pattern[] = "/var/tmp/secmem-direct-XXXXXX"; // O_DIRECT needs a disk file system
  std::string dir = mkdtemp(pattern);
  Result r = run({kProbe, "direct", dir}, {"LD_PRELOAD=" + kShim});
  (void)!system(("rm -rf " + dir).c_str());
  EXPECT_EQ(r.status, 0) << r.err;
  // The last two: vmsplice with a NULL and an unmapped iovec array (the wrapper used to read it and crash).
  EXPECT_EQ(r.out, "pread -1 EFAULT\npread -1 EFAULT\nvmsplice -1 EFAULT\nvmsplice -1 EFAULT\nvmsplice -1 EFAULT\n");
  std::regex expected(
      "secmem: pread into secret memory at 0x[0-9a-f]+\n"
      "secmem:   failed with EFAULT: the file is open with O_DIRECT, which pins the buffer's pages, and memfd_secret "
      "pages cannot be pinned; use an ordinary buffer for direct I/O and copy the bytes\n"
      "secmem: vmsplice from secret memory at 0x[0-9a-f]+\n"
      "secmem:   failed with EFAULT: vmsplice pins the pages, and memfd_secret pages cannot be pinned; use "
      "write\\(\\)\n");
  EXPECT_TRUE(std::regex_match(r.err, expected)) << r.err;
}
