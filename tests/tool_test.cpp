// The secmem command against real processes: one holding a key under the
// shim, one without; probe under a seccomp filter and under a small memlock
// limit without CAP_IPC_LOCK; bad arguments; the demo's table.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdlib>
#include <dirent.h>
#include <fstream>
#include <functional>
#include <iterator>
#include <openssl/evp.h>
#include <sstream>
#include <string>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include <seccomp.h>

#include "commands.h"
#include "keys.h"
#include "platform/linux_facts.h"
#include "test_support.h"

using namespace secmem;
using namespace secmem::test;

namespace {

const std::string kTool = SECMEM_TOOL_PATH;
const std::string kProbe = SECMEM_PROBE_PATH;
const std::string kStatic = SECMEM_STATIC_PATH;
const std::string kOwnOpenssl = SECMEM_OWN_OPENSSL_PATH;
const std::string kOwnOpensslUser = SECMEM_OWN_OPENSSL_USER_PATH;
const std::string kOwnOpensslLib = SECMEM_OWN_OPENSSL_LIB_PATH;

// A writer started on a FIFO (`echo x > fifo`) is still waiting for a
// reader 200 ms after the command under test looked at the FIFO: nothing
// opened it. The writer is killed and reaped, its descriptors closed.
void expect_fifo_unopened(Child &writer) {
  usleep(200000);
  EXPECT_EQ(waitpid(writer.pid, nullptr, WNOHANG), 0) << "the FIFO was opened for reading";
  kill(writer.pid, SIGKILL);
  waitpid(writer.pid, nullptr, 0);
  for (int fd : {writer.in, writer.out, writer.err}) close(fd);
}

// A shim_probe holding a key until destroyed, with or without the shim.
class Holder {
public:
  Holder(const std::string &key, bool shim) {
    std::vector<std::string> argv = {kProbe, "hold", key};
    if (shim) argv.insert(argv.begin(), {kTool, "run", "--"});
    child_ = start(argv);
    std::string line;
    char c;
    while (read(child_.out, &c, 1) == 1 && c != '\n') line += c;
    EXPECT_EQ(line, "ready");
  }
  ~Holder() { EXPECT_EQ(finish(child_, "x").status, 0); }
  std::string pid() const { return std::to_string(child_.pid); }

private:
  Child child_;
};

class Tool : public testing::Test {
protected:
  static void SetUpTestSuite() {
    char pattern[] = "/tmp/secmem-tool-XXXXXX";
    dir_ = mkdtemp(pattern);
    ASSERT_EQ(
        run({"openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key()}).status,
        0);
    ASSERT_EQ(run({"openssl", "pkey", "-in", key(), "-pubout", "-out", dir_ + "/public.pem"}).status, 0);
  }
  static void TearDownTestSuite() { (void)!system(("rm -rf " + dir_).c_str()); }
  static std::string key() { return dir_ + "/key.pem"; }
  static inline std::string dir_;
};

bool contains(const std::string &text, const std::string &part) { return text.find(part) != std::string::npos; }

} // namespace

TEST_F(Tool, ProbeSaysMemfdSecretWorks) {
  SECMEM_REQUIRE_SECRETMEM();
  Result text = run({kTool, "probe"});
  EXPECT_EQ(text.status, 0) << text.out << text.err;
  EXPECT_TRUE(contains(text.out, "memfd_secret:      works")) << text.out;
  EXPECT_TRUE(contains(text.out, "auto backend:      memfd_secret")) << text.out;
  EXPECT_TRUE(contains(text.out, "note:              while any process holds secret memory the kernel refuses to "
                                 "hibernate"))
      << text.out;
  Result json = run({kTool, "probe", "--json"});
  EXPECT_EQ(json.status, 0);
  EXPECT_TRUE(contains(json.out, "\"memfd_secret\": true")) << json.out;
  EXPECT_TRUE(contains(json.out, "\"auto_backend\": \"memfd_secret\"")) << json.out;
}

// A seccomp filter (as container runtimes install) is inherited across exec.
TEST_F(Tool, ProbeReportsASeccompRefusal) {
  Result probe = finish(start({kTool, "probe"}, {}, [] {
    if (!refuse_memfd_secret(EPERM)) _exit(99);
  }));
  const std::string &out = probe.out;
  EXPECT_EQ(probe.status, 1) << out;
  EXPECT_TRUE(contains(out, "memfd_secret:      refused at memfd_secret (EPERM)")) << out;
  EXPECT_TRUE(contains(out, "seccomp:           a filter is active")) << out;
  EXPECT_TRUE(contains(out, "auto backend:      mlock")) << out;
  EXPECT_TRUE(contains(out, "advice:            a seccomp filter refuses memfd_secret")) << out;
  // ENOSYS, as a kernel without it would answer: the filter is named as the likely cause.
  Result enosys = finish(start({kTool, "probe"}, {}, [] {
    if (!refuse_memfd_secret(ENOSYS)) _exit(99);
  }));
  EXPECT_EQ(enosys.status, 1) << enosys.out;
  EXPECT_TRUE(contains(enosys.out, "advice:            memfd_secret answered ENOSYS under a seccomp filter"))
      << enosys.out;
}

// A filter that kills on memfd_secret (systemd's SystemCallFilter= without
// SystemCallErrorNumber=) must not kill the probe: it tries in a child.
TEST_F(Tool, ProbeSurvivesAFilterThatKillsOnMemfdSecret) {
  Result probe = finish(start({kTool, "probe", "--json"}, {}, [] {
    if (!filter_syscalls(SCMP_ACT_KILL_PROCESS, {linux_facts::kSysMemfdSecret})) _exit(99);
  }));
  EXPECT_EQ(probe.status, 1) << probe.out << probe.err;
  EXPECT_TRUE(contains(probe.out, "\"memfd_secret_killed_by_seccomp\": true")) << probe.out;
  EXPECT_TRUE(contains(probe.out, "a seccomp filter here kills on memfd_secret (syscall 447")) << probe.out;
  Result text = finish(start({kTool, "probe"}, {}, [] {
    if (!filter_syscalls(SCMP_ACT_KILL_PROCESS, {linux_facts::kSysMemfdSecret})) _exit(99);
  }));
  EXPECT_TRUE(contains(text.out, "memfd_secret:      a seccomp filter here kills on memfd_secret (tried in a child)"))
      << text.out;
}

// What probe advises on each kernel: Debian 12's 6.1 keeps memfd_secret off
// unless booted with secretmem.enable=1; before 5.14 there is none; from 6.5
// on only a kernel built without it refuses. Where it works: hibernation.
TEST(ProbeAdvice, TheKernelDecidesWhatToSay) {
  tool::ProbeReport probe;
  probe.memlock = {RLIM_INFINITY, RLIM_INFINITY};
  probe.secret_errno = ENOSYS;
  probe.kernel = "6.1.0-28-amd64";
  ASSERT_EQ(tool::probe_advice(probe).size(), 1u);
  EXPECT_EQ(tool::probe_advice(probe)[0],
            "Linux 6.1.0-28-amd64 keeps memfd_secret off unless booted with secretmem.enable=1 (Debian 12's 6.1 "
            "kernel has it built in): add it to GRUB_CMDLINE_LINUX in /etc/default/grub, run update-grub and reboot");
  probe.kernel = "5.10.0-33-amd64";
  EXPECT_EQ(tool::probe_advice(probe)[0], "Linux 5.10.0-33-amd64 has no memfd_secret: it came in Linux 5.14");
  probe.kernel = "6.8.0";
  EXPECT_EQ(tool::probe_advice(probe)[0], "this kernel has no memfd_secret: it needs CONFIG_SECRETMEM (and, on 5.14 "
                                          "to 6.4, secretmem.enable=1 on the kernel command line)");
  probe.seccomp_mode = 2; // ENOSYS from a filter looks the same
  EXPECT_EQ(tool::probe_advice(probe).size(), 2u);
  EXPECT_TRUE(contains(tool::probe_advice(probe)[0], "memfd_secret answered ENOSYS under a seccomp filter"));
  probe = {};
  probe.kernel = "6.1.0-28-amd64";
  probe.memlock = {8 << 20, 8 << 20};
  EXPECT_TRUE(tool::probe_advice(probe).empty());
  std::vector<std::string> notes = tool::probe_notes(probe);
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_EQ(notes[0], "while any process holds secret memory the kernel refuses to hibernate (suspend to disk; "
                      "suspend to RAM is not affected)");
  probe.memlock = {1 << 20, 1 << 20};
  EXPECT_TRUE(contains(tool::probe_advice(probe)[0], "for a service, LimitMEMLOCK=48M holds a 16M secret heap"));
  probe.secret_errno = EAGAIN;
  EXPECT_TRUE(contains(tool::probe_advice(probe)[0], "LimitMEMLOCK=48M in a systemd unit, which `secmem systemd "
                                                     "UNIT` prints"));
}

TEST_F(Tool, ProbeUnderASmallMemlockLimitWithoutCapIpcLock) {
  SECMEM_REQUIRE_SECRETMEM();
  Result result = run(
      {"setpriv", "--inh-caps=-ipc_lock", "--bounding-set=-ipc_lock", "prlimit", "--memlock=1048576", kTool, "probe"});
  EXPECT_EQ(result.status, 0) << result.out << result.err;
  EXPECT_TRUE(contains(result.out, "CAP_IPC_LOCK:      no")) << result.out;
  EXPECT_TRUE(contains(result.out, "RLIMIT_MEMLOCK:    1048576 bytes")) << result.out;
  EXPECT_TRUE(contains(result.out, "advice:            RLIMIT_MEMLOCK is small (1048576 bytes)")) << result.out;
  Result spent =
      run({"setpriv", "--inh-caps=-ipc_lock", "--bounding-set=-ipc_lock", "prlimit", "--memlock=0", kTool, "probe"});
  EXPECT_EQ(spent.status, 1) << spent.out;
  EXPECT_TRUE(contains(spent.out, "refused at mmap (EAGAIN)")) << spent.out;
  EXPECT_TRUE(contains(spent.out, "auto backend:      unlocked")) << spent.out;
}

TEST_F(Tool, StatAndScanAProcessUnderTheShim) {
  SECMEM_REQUIRE_SECRETMEM();
  Holder holder(key(), true);
  Result stat = run({kTool, "stat", holder.pid()});
  EXPECT_EQ(stat.status, 0) << stat.out << stat.err;
  EXPECT_TRUE(contains(stat.out, "secret mappings:   1 (")) << stat.out;
  EXPECT_TRUE(contains(stat.out, "secmem preload:    loaded")) << stat.out;
  EXPECT_TRUE(contains(stat.out, "/mem: 1 of 1")) << stat.out;
  Result scan = run({kTool, "scan", holder.pid(), "--key-file", key()});
  EXPECT_EQ(scan.status, 0) << scan.out << scan.err;
  EXPECT_TRUE(contains(scan.out, "readable copies:   0")) << scan.out;
  Result json = run({kTool, "scan", holder.pid(), "--key-file", key(), "--json"});
  EXPECT_TRUE(contains(json.out, "\"readable_copies\": 0")) << json.out;
  EXPECT_TRUE(contains(json.out, "\"unreadable_secret_mappings\": 1")) << json.out;
}

// Secrets on the mlock tier (SECMEM_BACKEND=mlock) and on the unlocked tier
// (no CAP_IPC_LOCK, no memlock budget) are readable through /proc/PID/mem:
// stat says where they are and exits 1 (it used to say "0 of 0", exit 0).
TEST_F(Tool, StatOfSecretsOutsideMemfdSecretIsNegative) {
  for (bool unlocked : {false, true}) {
    SCOPED_TRACE(unlocked ? "unlocked tier" : "mlock tier");
    std::vector<std::string> argv = {kTool, "run", "--backend", "mlock", "--", kProbe, "hold", key()};
    if (unlocked)
      argv.insert(argv.begin(),
                  {"setpriv", "--inh-caps=-ipc_lock", "--bounding-set=-ipc_lock", "prlimit", "--memlock=0"});
    Child child = start(argv);
    std::string line;
    char c;
    while (read(child.out, &c, 1) == 1 && c != '\n') line += c;
    ASSERT_EQ(line, "ready");
    Result stat = run({kTool, "stat", std::to_string(child.pid)});
    Result json = run({kTool, "stat", std::to_string(child.pid), "--json"});
    EXPECT_EQ(finish(child, "x").status, 0);
    EXPECT_EQ(stat.status, 1) << stat.out << stat.err;
    EXPECT_TRUE(contains(stat.out, "not memfd_secret: ")) << stat.out;
    EXPECT_TRUE(contains(stat.out, "secrets on the mlock or unlocked tier, readable through /proc/")) << stat.out;
    EXPECT_TRUE(contains(stat.out, "/mem: 0 of ")) << stat.out;
    EXPECT_FALSE(contains(stat.out, "/mem: 0 of 0")) << stat.out;
    EXPECT_EQ(json.status, 1);
    EXPECT_FALSE(contains(json.out, "\"outside_secret_mappings\": 0,")) << json.out;
    // Locked pages on the mlock tier; none without a memlock budget.
    EXPECT_EQ(contains(json.out, "\"outside_locked_bytes\": 0,"), unlocked) << json.out;
  }
}

TEST_F(Tool, StatAndScanAProcessWithoutIt) {
  Holder holder(key(), false);
  Result stat = run({kTool, "stat", holder.pid(), "--json"});
  EXPECT_EQ(stat.status, 0) << stat.err;
  EXPECT_TRUE(contains(stat.out, "\"secret_mappings\": 0")) << stat.out;
  EXPECT_TRUE(contains(stat.out, "\"preload_loaded\": false")) << stat.out;
  Result scan = run({kTool, "scan", holder.pid(), "--key-file", key()});
  EXPECT_EQ(scan.status, 1) << scan.out << scan.err;
  EXPECT_TRUE(contains(scan.out, "in [heap]")) << scan.out;
  EXPECT_FALSE(contains(scan.out, "readable copies:   0")) << scan.out;
}

// Every private component, each counted apart, in a process that used an RSA
// key (signed with it) without the shim, and under it.
TEST_F(Tool, ScanCountsEveryComponentOfAnRsaKey) {
  SECMEM_REQUIRE_SECRETMEM();
  std::string rsa = dir_ + "/rsa.pem";
  ASSERT_EQ(run({"openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", rsa}).status,
            0);
  for (bool shim : {false, true}) {
    std::vector<std::string> argv = {kProbe, "use", rsa};
    if (shim) argv.insert(argv.begin(), {kTool, "run", "--"});
    Child child = start(argv);
    char ready[6] = {};
    ASSERT_EQ(read(child.out, ready, 6), 6);
    Result scan = run({kTool, "scan", std::to_string(child.pid), "--key-file", rsa});
    EXPECT_EQ(scan.status, shim ? 0 : 1) << scan.out << scan.err;
    EXPECT_TRUE(contains(scan.out, "looked for:        RSA key (PEM): d, p, q, dP, dQ, qInv, in " + rsa)) << scan.out;
    for (const char *name : {"RSA d", "RSA p", "RSA q", "RSA dP", "RSA dQ", "RSA qInv"})
      EXPECT_EQ(contains(scan.out, std::string(name) + ": 0\n"), shim) << name << "\n" << scan.out;
    Result json = run({kTool, "scan", std::to_string(child.pid), "--key-file", rsa, "--json"});
    EXPECT_TRUE(contains(json.out, "\"RSA qInv\": {\"copies\": ")) << json.out;
    EXPECT_EQ(finish(child, "x").status, 0);
  }
}

// A program that loads, at start, a library with its own OpenSSL (a bundled
// Python's libpython): run names the library, as the loader finds it (here
// by the program's RUNPATH). Only the executable was read, and nothing said.
TEST_F(Tool, RunNamesALibraryWithItsOwnOpensslLoadedAtStart) {
  Result done = run({kTool, "run", "--", kOwnOpensslUser});
  EXPECT_EQ(done.status, 0) << done.err;
  EXPECT_TRUE(contains(done.err, "secmem: run: " + kOwnOpensslUser + " loads " + kOwnOpensslLib +
                                     " at start, which carries its own OpenSSL"))
      << done.err;
  // Programs that use the shared libcrypto, and a script, are not named.
  for (const std::string &command : {std::string("openssl"), std::string("/bin/true"), kProbe}) {
    Result quiet = run({kTool, "run", "--", command, "version"});
    EXPECT_FALSE(contains(quiet.err, "own OpenSSL")) << command << ": " << quiet.err;
  }
  // A script is followed to the program that runs it (a virtualenv's entry point, a wrapper).
  char pattern[] = "/tmp/secmem-script-XXXXXX";
  std::string dir = mkdtemp(pattern);
  std::string script = dir + "/entry";
  FILE *out = fopen(script.c_str(), "w");
  ASSERT_NE(out, nullptr);
  fputs(("#!" + kOwnOpensslUser + " -x\n").c_str(), out);
  ASSERT_EQ(fclose(out), 0);
  ASSERT_EQ(chmod(script.c_str(), 0755), 0);
  Result through = run({kTool, "run", "--", script});
  EXPECT_TRUE(contains(through.err, "secmem: run: " + script + " (through " + kOwnOpensslUser + ") loads " +
                                        kOwnOpensslLib + " at start, which carries its own OpenSSL"))
      << through.err;
  (void)!system(("rm -rf " + dir).c_str());
}

// The libraries are looked for where glibc's loader looks (third review):
// $ORIGIN of a library reached through a symlink is the symlink's directory;
// a script through `#!/usr/bin/env NAME` runs NAME found on PATH; and
// inputs that hung or exhausted the tool end at once: a directory named
// "$ORIGIN" (expanded again and again), a script whose interpreter is a FIFO
// or /dev/zero (read without end).
TEST_F(Tool, RunFindsLibrariesWhereTheLoaderDoes) {
  // (Without meson's LD_LIBRARY_PATH, which names the build's copy of the library.)
  char pattern[] = "/tmp/secmem-loader-XXXXXX";
  std::string dir = mkdtemp(pattern);
  std::string lib = kOwnOpensslLib.substr(kOwnOpensslLib.rfind('/') + 1); // libown_openssl_lib.so
  std::string build = "set -e; cd " + dir + "; mkdir -p bin lib real '$ORIGIN'; cp " + kOwnOpensslLib +
                      " lib/; echo 'int own_openssl_lib_ready(void); int wrap(void) { return "
                      "own_openssl_lib_ready(); }' > wrap.c; echo 'int wrap(void); int main(void) { return !wrap(); }' "
                      "> app.c; cc -shared -fPIC -o real/libwrap.so wrap.c -Llib -l:" +
                      lib +
                      " -Wl,-rpath,'$ORIGIN'; ln -s ../real/libwrap.so lib/libwrap.so; cc -o bin/app app.c -Lreal "
                      "-lwrap -Wl,-rpath,'$ORIGIN/../lib'; cp bin/app '$ORIGIN/app'";
  ASSERT_EQ(run({"sh", "-c", build}).status, 0) << build;
  Result linked = run({"env", "-u", "LD_LIBRARY_PATH", "timeout", "20", kTool, "run", "--", dir + "/bin/app"});
  EXPECT_EQ(linked.status, 0) << linked.err;
  // (Only lib/ holds it: found there through the symlink's own directory.)
  EXPECT_TRUE(contains(linked.err, "/lib/" + lib + " at start, which carries its own OpenSSL")) << linked.err;
  // Through env, on PATH.
  ASSERT_EQ(run({"sh", "-c", "printf '#!/usr/bin/env app\\n' > " + dir + "/tool && chmod 755 " + dir + "/tool"}).status,
            0);
  Result env = run({"env", "-u", "LD_LIBRARY_PATH", "PATH=" + dir + "/bin:/usr/bin:/bin", "timeout", "20", kTool, "run",
                    "--", dir + "/tool"});
  EXPECT_TRUE(contains(env.err, dir + "/tool (through " + dir + "/bin/app) loads ")) << env.err;
  // A directory named $ORIGIN: found, and no end less expansion.
  Result origin = run({"timeout", "20", kTool, "run", "--", dir + "/$ORIGIN/app"});
  EXPECT_NE(origin.status, 124) << "secmem run did not end";
  // Interpreters that are not files: said by the kernel at once, read by nothing.
  ASSERT_EQ(run({"sh", "-c",
                 "cd " + dir + " && mkfifo fifo && printf '#!" + dir +
                     "/fifo\\n' > by-fifo && printf '#!/dev/zero\\n' > by-zero && chmod 755 by-fifo by-zero"})
                .status,
            0);
  // And a kernel file that calls itself regular but blocks when read (its
  // size is 0): as the command, and as a script's interpreter (both hung).
  ASSERT_EQ(run({"sh", "-c", "cd " + dir + " && printf '#!/proc/kmsg\\n' > by-kmsg && chmod 755 by-kmsg"}).status, 0);
  Result kmsg = run({"timeout", "20", kTool, "run", "--", "/proc/kmsg"});
  EXPECT_NE(kmsg.status, 124) << "secmem run -- /proc/kmsg did not end";
  for (const char *script : {"/by-fifo", "/by-zero", "/by-kmsg"}) {
    Result refused = run({"timeout", "20", kTool, "run", "--", dir + script});
    EXPECT_NE(refused.status, 124) << script << ": secmem run did not end";
    EXPECT_NE(refused.status, 0) << script;
  }
  // What is not a regular file is not even opened (opening a device can act:
  // /dev/watchdog arms the watchdog): a writer waiting for a reader of the
  // FIFO is still waiting after secmem run looked at a script it interprets.
  Child writer = start({"sh", "-c", "echo x > " + dir + "/fifo"});
  Result looked = run({"timeout", "20", kTool, "run", "--", dir + "/by-fifo"});
  EXPECT_NE(looked.status, 124);
  expect_fifo_unopened(writer);
  (void)!system(("rm -rf " + dir).c_str());
}

// Nothing the program names is run to list its libraries: they are read from
// its files. (They were listed by running its PT_INTERP with --list, as ldd
// does, and a program whose interpreter was a script had the script run, as
// the user of `secmem systemd`, root: found by the second review.)
TEST_F(Tool, ListingAProgramsLibrariesRunsNothingItNames) {
  char pattern[] = "/tmp/smpwnXXXXXX"; // short enough to stand in PT_INTERP's place
  int fd = mkstemp(pattern);
  ASSERT_GE(fd, 0);
  std::string script = pattern, marker = script + ".ran";
  std::string text = "#!/bin/sh\ntouch " + marker + "\n";
  ASSERT_EQ(write(fd, text.data(), text.size()), static_cast<ssize_t>(text.size()));
  close(fd);
  ASSERT_EQ(chmod(script.c_str(), 0755), 0);
  // /bin/true with its interpreter's path replaced by the script's.
  std::string program = read_file("/bin/true");
  const std::string loader = "/lib64/ld-linux-x86-64.so.2";
  size_t at = program.find(loader + '\0');
  ASSERT_NE(at, std::string::npos);
  ASSERT_LT(script.size(), loader.size());
  program.replace(at, loader.size(), script + std::string(loader.size() - script.size(), '\0'));
  std::string patched = script + ".prog";
  FILE *out = fopen(patched.c_str(), "w");
  ASSERT_NE(out, nullptr);
  ASSERT_EQ(fwrite(program.data(), 1, program.size(), out), program.size());
  ASSERT_EQ(fclose(out), 0);
  ASSERT_EQ(chmod(patched.c_str(), 0755), 0);
  Result ran = run({kTool, "run", "--", patched});
  EXPECT_NE(ran.status, 0) << "the kernel refuses a script as an ELF interpreter";
  EXPECT_NE(access(marker.c_str(), F_OK), 0) << "the program's interpreter was run";
  unlink(marker.c_str());
  unlink(patched.c_str());
  unlink(script.c_str());
}

// A program with its own OpenSSL linked in: run, stat and the exit report say
// that the shim cannot reach it (and the scan shows its key is readable); a
// program that uses the shared libcrypto is not named.
TEST_F(Tool, AProgramWithItsOwnOpensslIsNamed) {
  SECMEM_REQUIRE_SECRETMEM();
  Child own = start({kTool, "run", "--report", "stderr", "--", kOwnOpenssl, key()});
  std::string line;
  char c;
  while (read(own.out, &c, 1) == 1 && c != '\n') line += c;
  ASSERT_EQ(line, "ready");
  Result stat = run({kTool, "stat", std::to_string(own.pid)});
  // (Its version text is not linked in: own_openssl never asks OpenSSL_version.)
  EXPECT_TRUE(contains(stat.out, "own OpenSSL:       " + kOwnOpenssl + ": linked in, out of the shim's reach"))
      << stat.out;
  Result json = run({kTool, "stat", std::to_string(own.pid), "--json"});
  EXPECT_TRUE(contains(json.out, "\"own_openssl\": [{\"path\": \"" + kOwnOpenssl + "\"")) << json.out;
  Result scan = run({kTool, "scan", std::to_string(own.pid), "--key-file", key()});
  EXPECT_EQ(scan.status, 1) << "its key is in its own OpenSSL's ordinary heap: " << scan.out;
  Result done = finish(own, "x");
  EXPECT_EQ(done.status, 0) << done.err;
  EXPECT_TRUE(contains(done.err, "secmem: run: " + kOwnOpenssl + " carries its own OpenSSL, linked in")) << done.err;
  EXPECT_TRUE(contains(done.err, "; own OpenSSL, not reached by the shim: own_openssl\n")) << done.err;
  // The control: shim_probe uses the shared libcrypto.
  Holder holder(key(), true);
  Result plain = run({kTool, "stat", holder.pid()});
  EXPECT_TRUE(contains(plain.out, "own OpenSSL:       none")) << plain.out;
  Result report = run({kTool, "run", "--report", "stderr", "--", kProbe, "owned", key()});
  EXPECT_EQ(report.status, 0) << report.err;
  EXPECT_TRUE(contains(report.err, "secmem report: pid ")) << report.err;
  EXPECT_FALSE(contains(report.err, "own OpenSSL")) << report.err;
}

TEST_F(Tool, ScanFindsAHexPattern) {
  // shim_probe's "ready" line is in its stdout buffer, and its own name in memory.
  Holder holder(key(), false);
  Result found = run({kTool, "scan", holder.pid(), "--hex", "73 68 69 6d 5f 70 72 6f 62 65"}); // "shim_probe"
  EXPECT_EQ(found.status, 1) << found.out << found.err;
  Result absent = run({kTool, "scan", holder.pid(), "--hex", "f00dfacef00dfacef00dfacef00d1234"});
  EXPECT_EQ(absent.status, 0) << absent.out;
  EXPECT_TRUE(contains(absent.out, "readable copies:   0")) << absent.out;
}

// A page that cannot be read in the middle of a mapping does not end the
// scan of that mapping: the copy after it is found, and the unread part said.
TEST_F(Tool, ScanReadsPastAnUnreadablePage) {
  Child hole = start({kProbe, "hole"});
  std::string pattern;
  char c;
  while (read(hole.out, &c, 1) == 1 && c != '\n') pattern += c;
  ASSERT_EQ(pattern.size(), 64u);
  Result scan = run({kTool, "scan", std::to_string(hole.pid), "--hex", pattern});
  EXPECT_EQ(scan.status, 1) << scan.out << scan.err;
  EXPECT_TRUE(contains(scan.out, "                   2 in anonymous\n")) << scan.out; // (the compiler's constant too)
  EXPECT_TRUE(contains(scan.out, "not read:          4 KiB in 1 other regions refused the read")) << scan.out;
  Result json = run({kTool, "scan", std::to_string(hole.pid), "--hex", pattern, "--json"});
  EXPECT_TRUE(contains(json.out, "\"not_read_regions\": 1, \"not_read_bytes\": 4096")) << json.out;
  EXPECT_TRUE(contains(json.out, "\"complete\": false")) << json.out;
  // Nothing found, but a page was not read: not clean (it used to exit 0).
  Result absent = run({kTool, "scan", std::to_string(hole.pid), "--hex", "5ec3e7a1b2c4d6f8091a2b3c4d5e6f70"});
  EXPECT_EQ(absent.status, 3) << absent.out << absent.err;
  EXPECT_TRUE(contains(absent.out, "readable copies:   0 in what could be read: NOT a clean result")) << absent.out;
  EXPECT_EQ(finish(hole, "x").status, 0);
}

// /proc/PID/mem reads PROT_NONE pages, and so does the scan (it skipped
// them: a sealed block on the mlock tier, a key libsodium made noaccess,
// "0 copies", exit 0); a copy that begins in one mapping and ends in the
// next is found (it was not); a reservation that holds no page is not read
// (reading it would make the kernel map pages for it).
// Inputs found by the adversarial review: a kernel thread (no user memory:
// "No such process", exit 3, and stat answered as if it held nothing); a
// process named with a terminal escape (printed raw); a key file that is a
// FIFO no one writes (the command hung for ever), and one whose writer
// comes later; an unknown subcommand ("A subcommand is required").
TEST_F(Tool, OddProcessesAndInputsAreSaid) {
  int kernel_thread = 0;
  if (DIR *proc = opendir("/proc")) {
    while (dirent *entry = readdir(proc)) {
      if (std::string(entry->d_name).find_first_not_of("0123456789") != std::string::npos) continue;
      std::string stat = read_file(std::string("/proc/") + entry->d_name + "/stat");
      size_t paren = stat.rfind(')');
      unsigned long flags = 0;
      if (kernel_thread == 0 && paren != std::string::npos &&
          sscanf(stat.c_str() + paren + 1, " %*c %*d %*d %*d %*d %*d %lu", &flags) == 1 && (flags & 0x00200000) != 0)
        kernel_thread = atoi(entry->d_name);
    }
    closedir(proc);
  }
  ASSERT_GT(kernel_thread, 0) << "no kernel thread in /proc";
  std::string name = secmem::tool::process_name(kernel_thread);
  for (const char *command : {"scan", "stat"}) {
    std::vector<std::string> argv = {kTool, command, std::to_string(kernel_thread)};
    if (std::string(command) == "scan") argv.insert(argv.end(), {"--hex", "41424344"});
    Result r = run(argv);
    EXPECT_EQ(r.status, 2) << command << r.out << r.err;
    EXPECT_EQ(r.err, "secmem: process " + std::to_string(kernel_thread) + " (" + name +
                         ") is a kernel thread: it has no user memory to look at\n")
        << command;
  }
  std::string escaped = dir_ + "/\x1b[7mX";
  ASSERT_EQ(system(("cp /bin/sleep '" + escaped + "'").c_str()), 0);
  Child sleeper = start({escaped, "30"});
  usleep(200000);
  Result stat = run({kTool, "stat", std::to_string(sleeper.pid)});
  EXPECT_TRUE(contains(stat.out, "process:           " + std::to_string(sleeper.pid) + " (\\x1b[7mX)\n")) << stat.out;
  EXPECT_EQ(stat.out.find('\x1b'), std::string::npos);
  kill(sleeper.pid, SIGKILL);
  finish(sleeper);
  std::string fifo = dir_ + "/key.fifo";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  Result unwritten = run({kTool, "scan", std::to_string(getpid()), "--key-file", fifo});
  EXPECT_EQ(unwritten.status, 2);
  EXPECT_EQ(unwritten.err,
            "secmem: key file " + fifo + ": not read to its end within 10 s (a pipe whose writer is still there)\n");
  Result later = run({"sh", "-c",
                      "(sleep 1; cat " + key() + " > " + fifo + ") & exec " + std::string(kTool) + " scan " +
                          std::to_string(getpid()) + " --key-file " + fifo});
  EXPECT_EQ(later.status, 0) << later.err;
  EXPECT_TRUE(contains(later.out, "EC key (PEM): private scalar")) << later.out;
  // A writer that keeps it open after the key: the same (it hung until the writer left).
  std::string held_fifo = dir_ + "/held.fifo";
  ASSERT_EQ(mkfifo(held_fifo.c_str(), 0600), 0);
  Result held = run({"sh", "-c",
                     "(cat " + key() + "; sleep 12) > " + held_fifo + " 2>/dev/null & exec " + std::string(kTool) +
                         " scan " + std::to_string(getpid()) + " --key-file " + held_fifo});
  EXPECT_EQ(held.status, 2) << held.err;
  EXPECT_EQ(held.err, "secmem: key file " + held_fifo +
                          ": not read to its end within 10 s (a pipe whose writer is still there)\n");
  Result unknown = run({kTool, "bo\x1bgus"});
  EXPECT_EQ(unknown.status, 2);
  EXPECT_EQ(unknown.err,
            "secmem: unknown subcommand 'bo\\x1bgus' (run, probe, stat, scan, demo or systemd; secmem --help)\n");
}

TEST_F(Tool, ScanReadsClosedPagesAndCopiesAcrossMappings) {
  Child probe = start({kProbe, "closed"});
  std::vector<std::string> lines(6);
  for (std::string &line : lines) {
    char c;
    while (read(probe.out, &c, 1) == 1 && c != '\n') line += c;
  }
  ASSERT_EQ(lines[0].size(), 64u);
  ASSERT_EQ(lines[1].size(), 64u);
  ASSERT_EQ(lines[3].size(), 64u);
  ASSERT_EQ(lines[4].size(), 8600u);
  ASSERT_EQ(lines[5], "ready");
  // The closed page, across two mappings, in untouched shared memory (found
  // by the second round: not read), across three (a tail of one mapping's
  // bytes only: not counted).
  for (const auto &[pattern, where] :
       std::vector<std::pair<std::string, std::string>>{{lines[0], "1 in anonymous"},
                                                        {lines[1], "1 in anonymous"},
                                                        {lines[3], "1 in file memfd:k (deleted)"},
                                                        {lines[4], "1 in anonymous"}}) {
    Result scan = run({kTool, "scan", std::to_string(probe.pid), "--hex", pattern});
    EXPECT_EQ(scan.status, 1) << scan.out << scan.err;
    EXPECT_TRUE(contains(scan.out, "readable copies:   1\n")) << scan.out;
    EXPECT_TRUE(contains(scan.out, where)) << scan.out;
  }
  std::string smaps = read_file("/proc/" + std::to_string(probe.pid) + "/smaps");
  size_t at = smaps.find(lines[2] + "-");
  ASSERT_NE(at, std::string::npos) << smaps;
  size_t rss = smaps.find("\nRss:", at);
  ASSERT_NE(rss, std::string::npos);
  EXPECT_EQ(smaps.substr(rss + 1, smaps.find('\n', rss + 1) - rss - 1).find_first_of("123456789"), std::string::npos)
      << "the empty reservation was read: " << smaps.substr(rss + 1, 40);
  EXPECT_EQ(finish(probe, "x").status, 0);
}

// A process whose main thread has exited while another thread runs on: its
// leader is a zombie with empty maps, and stat and scan read it through the
// live thread (both called it "exited", exit 3).
TEST_F(Tool, StatAndScanReadAProcessWhoseMainThreadExited) {
  SECMEM_REQUIRE_SECRETMEM();
  Child probe = start({kProbe, "leaderless"});
  std::string pattern;
  char c;
  while (read(probe.out, &c, 1) == 1 && c != '\n') pattern += c;
  ASSERT_EQ(pattern.size(), 64u);
  std::string pid = std::to_string(probe.pid);
  bool leader_exited = false;
  for (int i = 0; i < 500 && !leader_exited; ++i, usleep(10000)) {
    std::ifstream stat("/proc/" + pid + "/stat");
    std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
    leader_exited = text.find(") Z ") != std::string::npos;
  }
  ASSERT_TRUE(leader_exited);
  Result stat = run({kTool, "stat", pid});
  EXPECT_EQ(stat.status, 0) << stat.out << stat.err;
  EXPECT_TRUE(contains(stat.out, "process:           " + pid + " (shim_probe)\nsecret mappings:   1 (")) << stat.out;
  EXPECT_TRUE(contains(stat.out, "libsecmem:         loaded\n")) << stat.out;
  EXPECT_TRUE(contains(stat.out, "secret ranges unreadable through /proc/" + pid + "/mem: 1 of 1\n")) << stat.out;
  Result scan = run({kTool, "scan", pid, "--hex", pattern});
  EXPECT_EQ(scan.status, 1) << scan.out << scan.err;
  EXPECT_TRUE(contains(scan.out, "                   1 in [heap]\n")) << scan.out;
  EXPECT_TRUE(contains(scan.out, "secret mappings:   1 (")) << scan.out;
  EXPECT_EQ(finish(probe, "x").status, 0);
}

// A process that has left (a zombie: no memory) or leaves during the scan
// was not read: exit 3 and say so, never "0 copies" (or stat's empty answer), exit 0.
TEST_F(Tool, ScanOrStatOfAProcessThatLeftIsNotClean) {
  pid_t zombie = fork();
  if (zombie == 0) _exit(0);
  usleep(100000);
  Result scan = run({kTool, "scan", std::to_string(zombie), "--hex", "5ec3e7a1b2c4d6f8"});
  // stat as well: it answered with an empty VmLck, "not loaded" and 0 of 0 ranges, exit 0.
  Result stat = run({kTool, "stat", std::to_string(zombie)});
  Result stat_json = run({kTool, "stat", std::to_string(zombie), "--json"});
  waitpid(zombie, nullptr, 0);
  std::string left = "secmem: process " + std::to_string(zombie) +
                     " has exited (gone, or a zombie its parent has not reaped): there is no memory to look at\n";
  EXPECT_EQ(stat.status, 3) << stat.out << stat.err;
  EXPECT_EQ(stat.out, "");
  EXPECT_EQ(stat.err, left);
  EXPECT_EQ(stat_json.status, 3) << stat_json.out << stat_json.err;
  EXPECT_EQ(stat_json.err, left);
  EXPECT_EQ(scan.status, 3) << scan.out << scan.err;
  EXPECT_EQ(scan.out, "");
  EXPECT_EQ(scan.err, left); // it said "cannot open /proc/PID/mem: No such process"
  // A clean scan says complete.
  Holder holder(key(), false);
  Result clean = run({kTool, "scan", holder.pid(), "--hex", "5ec3e7a1b2c4d6f8091a2b3c4d5e6f70", "--json"});
  EXPECT_EQ(clean.status, 0) << clean.out << clean.err;
  EXPECT_TRUE(contains(clean.out, "\"complete\": true, \"process_left\": false")) << clean.out;
}

// The readers behind stat and scan, called on a process that left after
// the command's own check (a zombie, then reaped, as a race with the
// command would leave it): "has exited", exit 3. Before, scan said "cannot
// open /proc/PID/mem: No such process", and a reaped process was "no
// process with PID" with exit 2, bad input, for a PID that was good.
TEST_F(Tool, ReadersOfAProcessThatLeftMeanwhileSayItExited) {
  pid_t child = fork();
  if (child == 0) _exit(0);
  usleep(100000); // a zombie now
  std::string left = "process " + std::to_string(child) +
                     " has exited (gone, or a zombie its parent has not reaped): there is no memory to look at";
  auto error_of = [](const std::function<void()> &fn) {
    try {
      fn();
    } catch (const tool::ToolError &error) {
      return error;
    }
    return tool::ToolError{0, "no error"};
  };
  const std::vector<tool::Pattern> patterns = {{"pattern", {0x5e, 0xc3, 0xe7, 0xa1}}};
  tool::ToolError zombie_scan = error_of([&] { tool::scan(child, patterns); });
  EXPECT_EQ(zombie_scan.exit_code, 3);
  EXPECT_EQ(zombie_scan.message, left);
  EXPECT_TRUE(tool::process_gone(child));
  waitpid(child, nullptr, 0);
  std::vector<std::pair<const char *, std::function<void()>>> readers = {
      {"scan", [&] { tool::scan(child, patterns); }},
      {"read_regions", [&] { tool::read_regions(child); }},
      {"read_status", [&] { tool::read_status(child); }},
      {"mapped_objects", [&] { tool::mapped_objects(child); }},
  };
  for (const auto &[name, reader] : readers) {
    tool::ToolError reaped = error_of(reader);
    EXPECT_EQ(reaped.exit_code, 3) << name << ": " << reaped.message;
    EXPECT_EQ(reaped.message, left) << name;
  }
  EXPECT_TRUE(tool::process_gone(child));
}

TEST_F(Tool, BadArgumentsGetClearErrors) {
  Holder holder(key(), false);
  // An OpenSSH public key (a .pub file): said to be a public key, as a PEM one is.
  FILE *pub = fopen((dir_ + "/id.pub").c_str(), "w");
  ASSERT_NE(pub, nullptr);
  fputs("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl x@y\n", pub);
  ASSERT_EQ(fclose(pub), 0);
  // A line that only looks like one (its blob does not name its type) is not.
  FILE *lookalike = fopen((dir_ + "/hello.pub").c_str(), "w");
  ASSERT_NE(lookalike, nullptr);
  fputs("ssh-hello AAAAAAAA\n", lookalike);
  ASSERT_EQ(fclose(lookalike), 0);
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  std::vector<Case> cases = {
      {{"scan", "99999999999", "--hex", "00112233"}, "secmem: '99999999999' is not a PID"},
      {{"scan", "4194000", "--hex", "00112233"}, "secmem: no process with PID 4194000"},
      {{"scan", holder.pid(), "--hex", "00zz"}, "secmem: --hex: 'z' is not a hex digit"},
      {{"scan", holder.pid(), "--hex", "abc"}, "secmem: --hex needs an even, non-zero number of hex digits"},
      {{"scan", holder.pid(), "--hex", "aabb"}, "secmem: --hex: give at least 4 bytes, or every process matches"},
      {{"scan", holder.pid()}, "secmem: scan needs exactly one of --hex or --key-file"},
      {{"scan", holder.pid(), "--key-file", dir_ + "/public.pem"},
       "secmem: " + dir_ + "/public.pem holds a public key: scan needs the private key to know what to look for"},
      {{"scan", holder.pid(), "--key-file", dir_ + "/id.pub"},
       "secmem: " + dir_ + "/id.pub holds a public key: scan needs the private key to know what to look for"},
      {{"scan", holder.pid(), "--key-file", dir_ + "/hello.pub"},
       "secmem: " + dir_ + "/hello.pub is not a PEM, DER or OpenSSH private key"},
      {{"scan", holder.pid(), "--key-file", dir_ + "/missing.pem"},
       "secmem: cannot open key file " + dir_ + "/missing.pem: No such file or directory"},
      {{"scan", holder.pid(), "--hex", "00112233", "--passphrase-file", key()},
       "secmem: --passphrase-file goes with --key-file"},
      {{"stat", "abc"}, "secmem: 'abc' is not a PID"},
      {{"stat", " 1"}, "secmem: ' 1' is not a PID"},
      {{"stat", "+1"}, "secmem: '+1' is not a PID"},
      {{"scan", "0", "--hex", "00112233"}, "secmem: '0' is not a PID"},
      {{"scan", "1x", "--hex", "00112233"}, "secmem: '1x' is not a PID"},
  };
  for (const Case &c : cases) {
    std::vector<std::string> argv = {kTool};
    argv.insert(argv.end(), c.args.begin(), c.args.end());
    Result result = run(argv);
    EXPECT_EQ(result.status, 2) << c.message;
    EXPECT_EQ(result.err, c.message + "\n");
  }
  EXPECT_EQ(run({kTool, "frobnicate"}).status, 2);
  EXPECT_EQ(run({kTool}).status, 2);
  for (const char *sub : {"run", "probe", "stat", "scan", "demo", "systemd"}) {
    Result help = run({kTool, sub, "--help"});
    EXPECT_EQ(help.status, 0) << sub;
    EXPECT_TRUE(contains(help.out, "Usage:")) << sub;
  }
}

TEST_F(Tool, ScanOfAnUnreadableProcessSaysWhy) {
  Holder holder(key(), false); // runs as root
  Result result = run({"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", kTool, "scan", holder.pid(),
                       "--hex", "00112233"});
  EXPECT_EQ(result.status, 3) << result.out << result.err;
  EXPECT_EQ(result.err, "secmem: cannot read /proc/" + holder.pid() +
                            "/maps: Permission denied (reading another process needs ptrace rights: run as its user "
                            "or as root)\n");
}

TEST_F(Tool, RunPreloadsTheShimAndMapsOptions) {
  SECMEM_REQUIRE_SECRETMEM();
  Result tag = run({kTool, "run", "--report", "stderr", "--", kProbe, "tag"});
  EXPECT_EQ(tag.status, 0) << tag.out << tag.err;
  EXPECT_EQ(tag.out, "tagged malloc: secret, tagged calloc: secret, plain malloc: ordinary\n");
  EXPECT_TRUE(contains(tag.err, "secmem report: pid ")) << tag.err;
  Result mlock = run({kTool, "run", "--backend", "mlock", "--report", "stderr", "--", kProbe, "tag"});
  EXPECT_TRUE(contains(mlock.err, "backend mlock")) << mlock.err;
  // An existing sanitizer runtime stays first; another allocator goes after the shim, with a warning.
  Result order = run({kTool, "run", "--", "sh", "-c", "echo $LD_PRELOAD"},
                     {"LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"});
  EXPECT_EQ(order.status, 0) << order.err;
  EXPECT_TRUE(contains(order.out, "libsecmem_preload.so:/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")) << order.out;
  EXPECT_TRUE(contains(order.err, "libjemalloc.so.2 is also preloaded")) << order.err;
  Result missing = run({kTool, "run", "--", "no-such-command-here"});
  EXPECT_EQ(missing.status, 127);
  EXPECT_EQ(missing.err, "secmem: run: no-such-command-here: command not found\n");
  EXPECT_EQ(run({kTool, "run", "--backend", "bogus", "--", "true"}).status, 2);
  EXPECT_EQ(run({kTool, "run", "--", "sh", "-c", "exit 7"}).status, 7);
}

TEST_F(Tool, RunWarnsAboutStaticAndSetuidCommands) {
  Result result = run({kTool, "run", "--", kStatic});
  EXPECT_EQ(result.status, 0);
  EXPECT_TRUE(contains(result.err, "is statically linked: LD_PRELOAD cannot reach it")) << result.err;
  std::string setuid_copy = dir_ + "/setuid-true";
  ASSERT_EQ(run({"cp", "/bin/true", setuid_copy}).status, 0);
  ASSERT_EQ(chmod(setuid_copy.c_str(), 04755), 0);
  Result setuid = run({kTool, "run", "--", setuid_copy});
  EXPECT_TRUE(contains(setuid.err, "is setuid/setgid: the loader ignores LD_PRELOAD for it")) << setuid.err;
}

TEST_F(Tool, DemoPrintsTheSideBySideTable) {
  SECMEM_REQUIRE_SECRETMEM();
  Result demo = run({kTool, "demo"});
  ASSERT_EQ(demo.status, 0) << demo.out << demo.err;
  EXPECT_TRUE(contains(demo.out, "  signature made and verified          yes                        yes\n"))
      << demo.out;
  EXPECT_TRUE(contains(demo.out, "  secretmem mappings                   0                          1 (")) << demo.out;
  EXPECT_TRUE(contains(demo.out, "  where the key's secure memory was    ordinary heap              memfd_secret\n"))
      << demo.out;
  // Some readable copies without secmem, none with it.
  size_t row = demo.out.find("  readable copies of the private key   ");
  ASSERT_NE(row, std::string::npos) << demo.out;
  std::string line = demo.out.substr(row, demo.out.find('\n', row) - row);
  EXPECT_NE(line.substr(39, 1), "0") << line;
  EXPECT_EQ(line.substr(line.size() - 1), "0") << line;
  EXPECT_TRUE(contains(demo.out, "Under secmem no readable copy of the key is left")) << demo.out;
  EXPECT_TRUE(contains(demo.err, "==> running it again under secmem's preload")) << demo.err;
}

// On the mlock tier the signer makes itself non-dumpable (SECMEM_NODUMP's
// default): the demo, reading as a process of the same user, gets nothing.
// With SECMEM_NODUMP=0 it reads the key there.
TEST_F(Tool, DemoTellsTheTruthWithoutMemfdSecret) {
  Result demo = run({kTool, "demo"}, {"SECMEM_BACKEND=mlock"});
  ASSERT_EQ(demo.status, 0) << demo.out << demo.err;
  EXPECT_TRUE(contains(demo.out, "ordinary heap              mlock\n")) << demo.out;
  EXPECT_TRUE(contains(demo.out, "  readable copies of the private key   ")) << demo.out;
  EXPECT_TRUE(contains(demo.out, "none: reading refused\n")) << demo.out;
  EXPECT_TRUE(contains(demo.out, "so the program made itself non-dumpable (SECMEM_NODUMP=fallback), and this\n"
                                 "reader, of the same user, got nothing."))
      << demo.out;
  Result dumpable = run({kTool, "demo"}, {"SECMEM_BACKEND=mlock", "SECMEM_NODUMP=0"});
  ASSERT_EQ(dumpable.status, 0) << dumpable.out << dumpable.err;
  EXPECT_FALSE(contains(dumpable.out, "no readable copy of the key is left")) << dumpable.out;
  EXPECT_TRUE(contains(dumpable.out, "readable copy remains") || contains(dumpable.out, "readable copies remain"))
      << dumpable.out;
}

// Closed standard descriptors do not confuse the demo (its pipes took fd 0,
// and the plain run read as "refused"); an interrupted demo leaves nothing
// in its directory (TMPDIR), the key least of all.
TEST_F(Tool, DemoWithClosedDescriptorsAndInterrupted) {
  SECMEM_REQUIRE_SECRETMEM();
  Result closed = run({"sh", "-c", std::string(kTool) + " demo <&- 2>/dev/null"});
  EXPECT_EQ(closed.status, 0) << closed.out;
  EXPECT_TRUE(contains(closed.out, "Under secmem no readable copy of the key is left")) << closed.out;
  EXPECT_FALSE(contains(closed.out, "reading refused")) << closed.out;
  char pattern[] = "/tmp/secmem-demo-tmp-XXXXXX";
  std::string tmp = mkdtemp(pattern);
  ASSERT_EQ(chmod(tmp.c_str(), 0755), 0);
  for (int round = 0; round < 3; ++round) {
    Child demo = start({kTool, "demo"}, {"TMPDIR=" + tmp});
    std::string err;
    char c;
    while (!contains(err, "==> running") && read(demo.err, &c, 1) == 1) err += c;
    ASSERT_TRUE(contains(err, "==> running")) << err;
    // Stopped at once, so that the interrupt lands while it runs: a demo of
    // 20 ms (the whole test took 87 ms in a CI run) finished while the
    // directory was being listed, and exited 0.
    ASSERT_EQ(kill(demo.pid, SIGSTOP), 0);
    int stopped = 0;
    ASSERT_EQ(waitpid(demo.pid, &stopped, WUNTRACED), demo.pid);
    ASSERT_TRUE(WIFSTOPPED(stopped)) << "the demo ended before it was stopped: status " << stopped;
    EXPECT_EQ(run({"sh", "-c", "ls " + tmp + " | wc -l"}).out, "1\n") << "the demo's directory is there";
    kill(demo.pid, SIGINT);
    kill(demo.pid, SIGCONT);
    Result r = finish(demo);
    EXPECT_EQ(r.status, 128 + SIGINT) << r.out << r.err;
    EXPECT_EQ(run({"sh", "-c", "ls -A " + tmp}).out, "") << "left behind after SIGINT";
  }
  (void)!system(("rm -rf " + tmp).c_str());
}

// ---- key files: every format a key comes in gives the same components ----------------

namespace {

class KeyFiles : public testing::TestWithParam<const char *> {
protected:
  static void SetUpTestSuite() {
    char pattern[] = "/tmp/secmem-keys-XXXXXX";
    dir_ = mkdtemp(pattern);
    ASSERT_TRUE(write_text(pass(), "correct horse battery\n"));
    ASSERT_TRUE(write_text(dir_ + "/wrong", "incorrect\n"));
  }
  static void TearDownTestSuite() { (void)!system(("rm -rf " + dir_).c_str()); }
  static bool write_text(const std::string &path, const std::string &text) {
    FILE *out = fopen(path.c_str(), "w");
    bool ok = out != nullptr && fputs(text.c_str(), out) >= 0;
    return out != nullptr && fclose(out) == 0 && ok;
  }
  static std::string pass() { return dir_ + "/pass"; }
  static void sh(const std::string &command) { ASSERT_EQ(run({"sh", "-ec", command}).status, 0) << command; }
  static inline std::string dir_;
};

std::vector<std::pair<std::string, std::vector<unsigned char>>> parts(const tool::KeyMaterial &key) {
  std::vector<std::pair<std::string, std::vector<unsigned char>>> out;
  for (const auto &component : key.components) out.emplace_back(component.name, component.bytes);
  return out;
}

std::string load_error(const std::string &path, const std::string &pass = "") {
  try {
    tool::load_key_material(path, pass);
  } catch (const tool::ToolError &error) {
    return error.message;
  }
  return "";
}

} // namespace

TEST_P(KeyFiles, EveryFormatGivesTheSameComponents) {
  std::string type = GetParam(), d = dir_ + "/" + type;
  ASSERT_EQ(mkdir(d.c_str(), 0700), 0);
  ASSERT_NO_FATAL_FAILURE(sh("cd " + d + "; openssl genpkey " + genpkey_args(type) + " -out pkcs8.pem 2>/dev/null"));
  tool::KeyMaterial original = tool::load_key_material(d + "/pkcs8.pem");
  size_t expected = type == "RSA" ? 6 : 1;
  ASSERT_EQ(original.components.size(), expected);
  std::string pass_arg = "file:" + pass();
  ASSERT_NO_FATAL_FAILURE(sh("cd " + d +
                             "; openssl pkey -in pkcs8.pem -outform DER -out key.der"
                             "; openssl pkcs8 -topk8 -in pkcs8.pem -v2 aes-256-cbc -passout " +
                             pass_arg +
                             " -out encrypted.pem"
                             "; openssl pkcs8 -topk8 -in pkcs8.pem -v2 aes-256-cbc -passout " +
                             pass_arg +
                             " -outform DER -out encrypted.der"
                             "; openssl req -x509 -key pkcs8.pem -subj /CN=bundle -days 1 -out bundle.pem 2>/dev/null; "
                             "cat pkcs8.pem >> bundle.pem"));
  std::vector<std::pair<std::string, std::string>> files = {
      {"key.der", ""}, {"encrypted.pem", pass()}, {"encrypted.der", pass()}, {"bundle.pem", ""}};
  if (type != "Ed25519") {
    // Traditional PEM ("RSA PRIVATE KEY", "EC PRIVATE KEY"), also encrypted ("Proc-Type: 4,ENCRYPTED"), and the
    // key in OpenSSH's format, plain and encrypted. (Neither exists for an Ed25519 key.)
    ASSERT_NO_FATAL_FAILURE(
        sh("cd " + d + "; openssl pkey -in pkcs8.pem -traditional -out traditional.pem" +
           "; openssl pkey -in pkcs8.pem -traditional -aes256 -passout " + pass_arg + " -out proc-type.pem" +
           "; cp pkcs8.pem openssh; chmod 600 openssh; ssh-keygen -q -p -P '' -N '' -f openssh >/dev/null" +
           "; cp openssh openssh-encrypted; ssh-keygen -q -p -P '' -N 'correct horse battery' -f openssh-encrypted "
           ">/dev/null"));
    ASSERT_TRUE(contains(read_file(d + "/proc-type.pem"), "Proc-Type: 4,ENCRYPTED"));
    ASSERT_TRUE(contains(read_file(d + "/openssh-encrypted"), "BEGIN OPENSSH PRIVATE KEY"));
    files.insert(files.end(),
                 {{"traditional.pem", ""}, {"proc-type.pem", pass()}, {"openssh", ""}, {"openssh-encrypted", pass()}});
  }
  for (const auto &[file, passphrase] : files) {
    SCOPED_TRACE(file);
    tool::KeyMaterial key = tool::load_key_material(d + "/" + file, passphrase);
    EXPECT_EQ(parts(key), parts(original));
    EXPECT_EQ(key.type, original.type);
  }
  // Encrypted, without the passphrase or with a wrong one: said so.
  for (const char *file : {"encrypted.pem", "encrypted.der", "proc-type.pem", "openssh-encrypted"}) {
    if (type == "Ed25519" && std::string(file) != "encrypted.pem" && std::string(file) != "encrypted.der") continue;
    std::string path = d + "/" + file;
    EXPECT_EQ(load_error(path), path + " is encrypted: give its passphrase with --passphrase-file FILE");
    EXPECT_EQ(load_error(path, dir_ + "/wrong"),
              "cannot decrypt " + path + " with the passphrase in " + dir_ + "/wrong");
  }
  EXPECT_EQ(load_error(d + "/pkcs8.pem", dir_ + "/absent"),
            "cannot open passphrase file " + dir_ + "/absent: No such file or directory");
  // A certificate alone is no key; nothing is left behind by the OpenSSH decryption.
  ASSERT_NO_FATAL_FAILURE(sh("cd " + d + "; openssl x509 -in bundle.pem -out cert.pem"));
  EXPECT_EQ(load_error(d + "/cert.pem"), d + "/cert.pem is not a PEM, DER or OpenSSH private key");
  EXPECT_EQ(run({"sh", "-c", "ls -d /dev/shm/secmem-scan-* /tmp/secmem-scan-* 2>/dev/null"}).out, "");
}

// An encrypted OpenSSH-format key: its passphrase may come through a pipe
// (it is read once); and a scan interrupted while ssh-keygen decrypts leaves
// no decrypted copy and no ssh-keygen behind.
TEST_F(KeyFiles, DecryptingAnOpensshKeyLeavesNothingBehind) {
  std::string key = dir_ + "/slow_ed25519";
  // 200 bcrypt rounds: about 2 s to decrypt.
  ASSERT_NO_FATAL_FAILURE(sh("ssh-keygen -q -t ed25519 -a 200 -N 'correct horse battery' -C slow -f " + key));
  // Private directories and live ssh-keygen processes of scans: those this
  // test leaves are the ones that were not there before it.
  auto traces = [] {
    std::vector<std::string> found;
    for (const char *base : {"/dev/shm", "/tmp"})
      if (DIR *dir = opendir(base)) {
        while (dirent *entry = readdir(dir))
          if (strncmp(entry->d_name, "secmem-scan-", 12) == 0) found.push_back(std::string(base) + "/" + entry->d_name);
        closedir(dir);
      }
    if (DIR *proc = opendir("/proc")) {
      while (dirent *entry = readdir(proc)) {
        std::string pid = entry->d_name;
        if (pid.find_first_not_of("0123456789") != std::string::npos) continue;
        std::string stat = read_file("/proc/" + pid + "/stat");
        if (stat.find("(ssh-keygen) ") != std::string::npos && stat.find("(ssh-keygen) Z") == std::string::npos)
          found.push_back("ssh-keygen " + pid);
      }
      closedir(proc);
    }
    std::sort(found.begin(), found.end());
    return found;
  };
  auto left_since = [&](const std::vector<std::string> &before) {
    std::vector<std::string> now = traces(), left;
    std::set_difference(now.begin(), now.end(), before.begin(), before.end(), std::back_inserter(left));
    std::string text;
    for (const std::string &item : left) text += item + "\n";
    return text;
  };
  std::vector<std::string> before = traces();
  Result piped = run({kTool, "scan", std::to_string(getpid()), "--key-file", key, "--passphrase-file", "/dev/stdin"},
                     {}, "correct horse battery\n");
  EXPECT_EQ(piped.status, 0) << piped.out << piped.err;
  EXPECT_TRUE(contains(piped.out, "Ed25519 key (OpenSSH): private key")) << piped.out;
  for (int sig : {SIGTERM, SIGINT}) {
    Child scan = start({kTool, "scan", std::to_string(getpid()), "--key-file", key, "--passphrase-file", pass()});
    usleep(500000); // ssh-keygen is at work
    kill(scan.pid, sig);
    Result done = finish(scan);
    EXPECT_EQ(done.status, 128 + sig) << done.err;
    // ssh-keygen is gone with the scan; the askpass child it may have forked
    // just then (still named ssh-keygen until its exec) ends by itself: a
    // loaded machine may take more than 100 ms to run it (seen once in a
    // full suite).
    std::string left;
    for (int tries = 0; tries < 30 && !(left = left_since(before)).empty(); ++tries) usleep(100000);
    EXPECT_EQ(left, "") << "after signal " << sig;
  }
  // What ssh-keygen starts goes with it (its process group): a stand-in that
  // starts a program and waits (the program was left running).
  std::string fake = dir_ + "/fakebin", grandchild = dir_ + "/grandchild.pid";
  ASSERT_NO_FATAL_FAILURE(sh("mkdir -p " + fake + " && printf '#!/bin/sh\\nsleep 101 &\\necho $! > " + grandchild +
                             "\\nwait\\n' > " + fake + "/ssh-keygen && chmod 755 " + fake + "/ssh-keygen"));
  Child stand_in = start({kTool, "scan", std::to_string(getpid()), "--key-file", key, "--passphrase-file", pass()},
                         {"PATH=" + fake + ":" + std::string(getenv("PATH"))});
  for (int tries = 0; tries < 50 && read_file(grandchild).empty(); ++tries) usleep(100000);
  int sleeper = atoi(read_file(grandchild).c_str());
  ASSERT_GT(sleeper, 0);
  kill(stand_in.pid, SIGTERM);
  EXPECT_EQ(finish(stand_in).status, 128 + SIGTERM);
  bool sleeping = true;
  for (int tries = 0; tries < 30 && sleeping; ++tries) {
    std::string stat = read_file("/proc/" + std::to_string(sleeper) + "/stat");
    sleeping = !stat.empty() && stat.find(") Z") == std::string::npos;
    if (sleeping) usleep(100000);
  }
  EXPECT_FALSE(sleeping) << "ssh-keygen's own child " << sleeper << " outlived the scan";
  Child killed = start({kTool, "scan", std::to_string(getpid()), "--key-file", key, "--passphrase-file", pass()});
  usleep(500000);
  kill(killed.pid, SIGKILL); // nothing can clean up: ssh-keygen dies with it all the same
  finish(killed);
  usleep(100000);
  std::string left = left_since(before);
  EXPECT_EQ(left.find("ssh-keygen"), std::string::npos) << left;
  for (const std::string &item : traces())
    if (item.rfind("/", 0) == 0 && std::find(before.begin(), before.end(), item) == before.end())
      (void)!system(("rm -rf " + item).c_str()); // the directory a SIGKILL left (on tmpfs)
}

// An Ed25519 key made by ssh-keygen (it cannot convert one from PEM): the
// seed read from the file gives the public key that ssh-keygen prints.
TEST_F(KeyFiles, AnOpensshEd25519KeyGivesItsSeed) {
  std::string key = dir_ + "/id_ed25519";
  ASSERT_NO_FATAL_FAILURE(sh("ssh-keygen -q -t ed25519 -N '' -C test -f " + key));
  tool::KeyMaterial material = tool::load_key_material(key);
  ASSERT_EQ(material.components.size(), 1u);
  EXPECT_EQ(material.type, "Ed25519");
  EXPECT_EQ(material.components[0].name, "Ed25519 private key");
  ASSERT_EQ(material.components[0].bytes.size(), 32u);
  EVP_PKEY *pkey = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nullptr, material.components[0].bytes.data(), 32);
  ASSERT_NE(pkey, nullptr);
  unsigned char pub[32];
  size_t len = sizeof pub;
  ASSERT_EQ(EVP_PKEY_get_raw_public_key(pkey, pub, &len), 1);
  EVP_PKEY_free(pkey);
  // ssh-keygen -y: "ssh-ed25519 BASE64 comment"; the blob ends with the 32-byte key.
  std::string line = run({"ssh-keygen", "-y", "-f", key}).out;
  std::string b64 = line.substr(12, line.find(' ', 12) - 12);
  std::vector<unsigned char> blob(b64.size());
  int n =
      EVP_DecodeBlock(blob.data(), reinterpret_cast<const unsigned char *>(b64.data()), static_cast<int>(b64.size()));
  ASSERT_GE(n, 32);
  size_t padding = std::count(b64.begin(), b64.end(), '=');
  std::vector<unsigned char> tail(blob.begin() + n - static_cast<long>(padding) - 32,
                                  blob.begin() + n - static_cast<long>(padding));
  EXPECT_EQ(tail, std::vector<unsigned char>(pub, pub + 32));
}

INSTANTIATE_TEST_SUITE_P(Types, KeyFiles, testing::Values("RSA", "EC", "Ed25519"),
                         [](const testing::TestParamInfo<const char *> &info) { return std::string(info.param); });

// An encrypted PKCS#8 file whose key derivation asks for more than careful
// tools use (2^31 - 1 PBKDF2 rounds would hold the scan for an hour; scrypt
// with a huge p; PKCS#12's PBE): refused before the passphrase is even read,
// in a bundle and in DER too. The same structure with one round is tried
// (and its made-up ciphertext does not decrypt). The files are built field
// by field with `openssl asn1parse -genconf`.
TEST(KeyFileCost, AKeyDerivationAskingForTooMuchIsRefusedBeforeItRuns) {
  char pattern[] = "/tmp/secmem-kdf-XXXXXX";
  std::string d = mkdtemp(pattern);
  auto make = [&](const std::string &name, const std::string &alg_sections) {
    std::string conf = d + "/" + name + ".conf";
    FILE *out = fopen(conf.c_str(), "w");
    ASSERT_NE(out, nullptr);
    fprintf(out,
            "asn1 = SEQUENCE:epki\n[epki]\nalg = SEQUENCE:alg\n"
            "data = FORMAT:HEX,OCTETSTRING:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n%s",
            alg_sections.c_str());
    ASSERT_EQ(fclose(out), 0);
    ASSERT_EQ(run({"sh", "-ec",
                   "cd " + d + "; openssl asn1parse -genconf " + name + ".conf -out " + name +
                       ".der >/dev/null; { echo '-----BEGIN ENCRYPTED PRIVATE KEY-----'; base64 -w 64 " + name +
                       ".der; echo '-----END ENCRYPTED PRIVATE KEY-----'; } > " + name + ".pem"})
                  .status,
              0);
  };
  auto pbkdf2 = [](const std::string &rounds) {
    return "[alg]\noid = OID:PBES2\nparams = SEQUENCE:pbes2\n[pbes2]\nkdf = SEQUENCE:kdf\nenc = SEQUENCE:enc\n"
           "[kdf]\noid = OID:PBKDF2\nparams = SEQUENCE:pbkdf2\n"
           "[pbkdf2]\nsalt = FORMAT:HEX,OCTETSTRING:0102030405060708\niter = INTEGER:" +
           rounds +
           "\nprf = SEQUENCE:prf\n[prf]\noid = OID:hmacWithSHA256\nnull = NULL\n"
           "[enc]\noid = OID:aes-128-cbc\niv = FORMAT:HEX,OCTETSTRING:000102030405060708090a0b0c0d0e0f\n";
  };
  ASSERT_NO_FATAL_FAILURE(make("pbkdf2-huge", pbkdf2("2147483647")));
  ASSERT_NO_FATAL_FAILURE(make("pbkdf2-one", pbkdf2("1")));
  ASSERT_NO_FATAL_FAILURE(make(
      "scrypt-huge", "[alg]\noid = OID:PBES2\nparams = SEQUENCE:pbes2\n[pbes2]\nkdf = SEQUENCE:kdf\n"
                     "enc = SEQUENCE:enc\n[kdf]\noid = OID:id-scrypt\nparams = SEQUENCE:scrypt\n"
                     "[scrypt]\nsalt = FORMAT:HEX,OCTETSTRING:0102030405060708\nn = INTEGER:16384\n"
                     "r = INTEGER:8\np = INTEGER:1048576\n"
                     "[enc]\noid = OID:aes-128-cbc\niv = FORMAT:HEX,OCTETSTRING:000102030405060708090a0b0c0d0e0f\n"));
  ASSERT_NO_FATAL_FAILURE(make("pkcs12-huge", "[alg]\noid = OID:pbeWithSHA1And3-KeyTripleDES-CBC\n"
                                              "params = SEQUENCE:pbe\n[pbe]\n"
                                              "salt = FORMAT:HEX,OCTETSTRING:0102030405060708\n"
                                              "iter = INTEGER:2147483647\n"));
  ASSERT_EQ(
      run({"sh", "-ec",
           "cd " + d + "; printf 'secret\\n' > pass; openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 " +
               "-out ec.pem; openssl req -x509 -key ec.pem -subj /CN=b -days 1 -out bundle.pem 2>/dev/null; " +
               "cat pbkdf2-huge.pem >> bundle.pem"})
          .status,
      0);
  // OpenSSL's decoder skips blocks it cannot read and tries the next: a key
  // block of garbage, or a block that is not base64, before the costly key;
  // and the costly key inside traditional PEM encryption (one MD5 round).
  ASSERT_EQ(
      run({"sh", "-ec",
           "cd " + d +
               "; printf -- '-----BEGIN PRIVATE KEY-----\\nAAAA\\n-----END PRIVATE KEY-----\\n' > garbage-first.pem"
               "; cat pbkdf2-huge.pem >> garbage-first.pem"
               "; printf -- '-----BEGIN CERTIFICATE-----\\n!!!!\\n-----END CERTIFICATE-----\\n' > bad-first.pem"
               "; cat pbkdf2-huge.pem >> bad-first.pem"
               "; key=$(openssl enc -aes-128-cbc -md md5 -S 0011223344556677 -pass pass:secret -P | "
               "sed -n 's/^key=//p')"
               "; { echo '-----BEGIN ENCRYPTED PRIVATE KEY-----'; echo 'Proc-Type: 4,ENCRYPTED'"
               "; echo 'DEK-Info: AES-128-CBC,00112233445566778899AABBCCDDEEFF'; echo"
               "; openssl enc -aes-128-cbc -K $key -iv 00112233445566778899AABBCCDDEEFF -in pbkdf2-huge.der | "
               "base64 -w 64; echo '-----END ENCRYPTED PRIVATE KEY-----'; } > dek-info.pem"})
          .status,
      0);
  const std::string pass = d + "/pass";
  const std::string pbkdf2_huge = "a key derivation of 2147483647 rounds (past 10000000), more than secmem decrypts: "
                                  "decrypt it first (openssl pkcs8)";
  for (const char *file :
       {"pbkdf2-huge.pem", "pbkdf2-huge.der", "bundle.pem", "garbage-first.pem", "bad-first.pem", "dek-info.pem"}) {
    std::string path = d + "/" + file;
    EXPECT_EQ(load_error(path, pass), path + " is encrypted with " + pbkdf2_huge);
    // Without a passphrase nothing is derived: the usual message.
    EXPECT_EQ(load_error(path), path + " is encrypted: give its passphrase with --passphrase-file FILE");
  }
  EXPECT_EQ(load_error(d + "/pkcs12-huge.pem", pass), d + "/pkcs12-huge.pem is encrypted with " + pbkdf2_huge);
  EXPECT_EQ(
      load_error(d + "/scrypt-huge.der", pass),
      d + "/scrypt-huge.der is encrypted with a key derivation of scrypt with N = 16384, r = 8, p = 1048576 (N * r "
          "* p past 16777216), more than secmem decrypts: decrypt it first (openssl pkcs8)");
  EXPECT_EQ(load_error(d + "/pbkdf2-one.pem", pass),
            "cannot decrypt " + d + "/pbkdf2-one.pem with the passphrase in " + pass);
  // The command says it too, exit status 2.
  Result scan =
      run({kTool, "scan", std::to_string(getpid()), "--key-file", d + "/pbkdf2-huge.pem", "--passphrase-file", pass});
  EXPECT_EQ(scan.status, 2);
  EXPECT_EQ(scan.err, "secmem: " + d + "/pbkdf2-huge.pem is encrypted with " + pbkdf2_huge + "\n");
  (void)!system(("rm -rf " + d).c_str());
}

// ---- secmem systemd: a drop-in for a service ------------------------------------

namespace {

class SystemdDropIn : public testing::Test {
protected:
  void SetUp() override {
    char pattern[] = "/tmp/secmem-units-XXXXXX";
    dir_ = mkdtemp(pattern);
  }
  void TearDown() override { (void)!system(("rm -rf " + dir_).c_str()); }
  void write(const std::string &relative, const std::string &text) {
    std::string path = dir_ + "/" + relative;
    ASSERT_EQ(system(("mkdir -p " + path.substr(0, path.rfind('/'))).c_str()), 0);
    FILE *out = fopen(path.c_str(), "w");
    ASSERT_NE(out, nullptr);
    fputs(text.c_str(), out);
    ASSERT_EQ(fclose(out), 0);
  }
  // secmem systemd ARGS with the unit search path set to the test's directory.
  Result systemd(std::vector<std::string> args) {
    args.insert(args.begin(), {"env", "SYSTEMD_UNIT_PATH=" + dir_, kTool, "systemd"});
    return run(args);
  }
  static std::string shim() {
    char *real = realpath(SECMEM_PRELOAD_PATH, nullptr);
    std::string path = real != nullptr ? real : "";
    free(real);
    return path;
  }
  // The drop-in's settings, without its comments.
  static std::string settings(const std::string &dropin) {
    std::istringstream in(dropin);
    std::string out;
    for (std::string line; std::getline(in, line);)
      if (!line.empty() && line[0] != '#') out += line + "\n";
    return out;
  }
  std::string dir_;
};

} // namespace

TEST_F(SystemdDropIn, APlainServiceGetsThePreloadAndTheMemlockBudget) {
  ASSERT_NO_FATAL_FAILURE(write("web.service", "[Unit]\nDescription=web\n[Service]\nExecStart=/bin/true\n"));
  Result r = systemd({"web"});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.err, "");
  EXPECT_EQ(settings(r.out), "[Service]\nEnvironment=\"LD_PRELOAD=" + shim() + "\"\nLimitMEMLOCK=48M\n");
  EXPECT_TRUE(contains(r.out, "# secmem for web.service (" + dir_ + "/web.service)")) << r.out;
  EXPECT_TRUE(contains(r.out, "#   secmem systemd web > /etc/systemd/system/web.service.d/secmem.conf")) << r.out;
  Result bigger = systemd({"web.service", "--heap", "64M"});
  EXPECT_EQ(settings(bigger.out), "[Service]\nEnvironment=\"LD_PRELOAD=" + shim() + "\"\nLimitMEMLOCK=192M\n");
}

// What the unit says already, in its file, its drop-ins, its template's drop-ins
// and an EnvironmentFile=: another preloaded library stays (after the shim, with
// a warning for an allocator), a large enough LimitMEMLOCK= is kept, and a
// SystemCallFilter= gets memfd_secret.
TEST_F(SystemdDropIn, WhatTheUnitSaysAlreadyIsKeptOrExtended) {
  ASSERT_NO_FATAL_FAILURE(write("db@.service", "[Service]\nExecStart=-/bin/true %i\nSystemCallFilter=@system-service\n"
                                               "LimitMEMLOCK=8M\n"));
  ASSERT_NO_FATAL_FAILURE(write("db@.service.d/10-preload.conf",
                                "[Service]\nEnvironment=\"LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2\" "
                                "OTHER=1\n"));
  ASSERT_NO_FATAL_FAILURE(write("db@main.service.d/20-limit.conf", "[Service]\nLimitMEMLOCK=infinity\n"));
  ASSERT_NO_FATAL_FAILURE(write("db@main.service.d/secmem.conf", "[Service]\nEnvironment=LD_PRELOAD=/old/secmem.so\n"));
  Result r = systemd({"db@main"});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(settings(r.out), "[Service]\nEnvironment=\"LD_PRELOAD=" + shim() +
                                 ":/usr/lib/x86_64-linux-gnu/libjemalloc.so.2\"\nSystemCallFilter=memfd_secret\n");
  EXPECT_TRUE(contains(r.out, "# LimitMEMLOCK=infinity (the unit's) holds a secret heap of 16M")) << r.out;
  EXPECT_EQ(r.err, "secmem: systemd: /usr/lib/x86_64-linux-gnu/libjemalloc.so.2 is also preloaded; secmem's shim "
                   "goes before it, so untagged allocations still go to it\n");
  // A filter reset by an empty assignment is no filter; LD_PRELOAD from an EnvironmentFile=.
  ASSERT_NO_FATAL_FAILURE(write("env", "# comment\nLD_PRELOAD=\"/opt/lib/libaudit.so\"\n"));
  ASSERT_NO_FATAL_FAILURE(write("app.service", "[Service]\nExecStart=/bin/true\nSystemCallFilter=@system-service\n"
                                               "SystemCallFilter=\nEnvironmentFile=-" +
                                                   dir_ + "/env\nEnvironmentFile=-/nonexistent\nLimitMEMLOCK=1G\n"));
  Result app = systemd({"app"});
  EXPECT_EQ(app.status, 0) << app.err;
  // An EnvironmentFile= overrides Environment=: the drop-in cannot set
  // LD_PRELOAD over it, and says where the shim must go.
  EXPECT_EQ(settings(app.out), "[Service]\nEnvironment=\"LD_PRELOAD=" + shim() + "\"\n");
  EXPECT_EQ(app.err, "secmem: systemd: app.service's EnvironmentFile= sets LD_PRELOAD, which overrides Environment=: "
                     "put the shim first in that file's LD_PRELOAD (" +
                         shim() + ")\n");
}

// The drop-in, in place next to its unit, is one systemd reads without a word.
TEST_F(SystemdDropIn, SystemdAnalyzeVerifyAcceptsIt) {
  ASSERT_NO_FATAL_FAILURE(write("svc.service", "[Unit]\nDescription=svc\n[Service]\nExecStart=/bin/true\n"
                                               "SystemCallFilter=@system-service\n[Install]\n"
                                               "WantedBy=multi-user.target\n"));
  Result r = systemd({dir_ + "/svc.service"});
  ASSERT_EQ(r.status, 0) << r.err;
  ASSERT_NO_FATAL_FAILURE(write("svc.service.d/secmem.conf", r.out));
  Result verify = run({"systemd-analyze", "verify", dir_ + "/svc.service"});
  EXPECT_EQ(verify.status, 0) << verify.err;
  EXPECT_FALSE(contains(verify.err, "secmem.conf")) << verify.err;
  EXPECT_FALSE(contains(verify.err, "Unknown")) << verify.err;
  // The control: verify does read the drop-in, and says so when a line is wrong.
  ASSERT_NO_FATAL_FAILURE(write("svc.service.d/secmem.conf", r.out + "LimitMEMLOCK=lots\n"));
  Result broken = run({"systemd-analyze", "verify", dir_ + "/svc.service"});
  EXPECT_TRUE(contains(broken.err, "secmem.conf")) << broken.err;
}

// A service whose program the shim cannot reach is named, as `secmem run` names it.
TEST_F(SystemdDropIn, AStaticProgramIsNamed) {
  ASSERT_NO_FATAL_FAILURE(write("static.service", "[Service]\nExecStart=@" SECMEM_STATIC_PATH " static-true\n"));
  Result r = systemd({"static"});
  EXPECT_EQ(r.status, 0);
  EXPECT_EQ(r.err, "secmem: systemd: " SECMEM_STATIC_PATH " is statically linked: LD_PRELOAD cannot reach it, so "
                   "its secrets stay where it puts them\n");
}

// A library with its own OpenSSL that the unit's program finds through the
// unit's own LD_LIBRARY_PATH is named (the tool's environment was used); the
// shell's LD_LIBRARY_PATH does not count for a unit.
TEST_F(SystemdDropIn, ALibraryWithItsOwnOpensslIsFoundThroughTheUnitsLibraryPath) {
  // Copies: the build's RUNPATH ($ORIGIN/) does not reach the library from here.
  ASSERT_EQ(system(("mkdir -p " + dir_ + "/bin " + dir_ + "/lib && cp " SECMEM_OWN_OPENSSL_USER_PATH " " + dir_ +
                    "/bin/user && cp " SECMEM_OWN_OPENSSL_LIB_PATH " " + dir_ + "/lib/")
                       .c_str()),
            0);
  std::string lib = std::string(SECMEM_OWN_OPENSSL_LIB_PATH);
  std::string named = dir_ + "/lib/" + lib.substr(lib.rfind('/') + 1);
  ASSERT_NO_FATAL_FAILURE(write("bundled.service", "[Service]\nEnvironment=LD_LIBRARY_PATH=" + dir_ +
                                                       "/lib\nExecStart=" + dir_ + "/bin/user\n"));
  Result r = systemd({"bundled"});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "loads " + named + " at start, which carries its own OpenSSL")) << r.err;
  ASSERT_NO_FATAL_FAILURE(write("plain.service", "[Service]\nExecStart=" + dir_ + "/bin/user\n"));
  Result shell =
      run({"env", "LD_LIBRARY_PATH=" + dir_ + "/lib", "SYSTEMD_UNIT_PATH=" + dir_, kTool, "systemd", "plain"});
  EXPECT_FALSE(contains(shell.err, "own OpenSSL")) << shell.err;
}

// A library's file is read for OpenSSL up to a bound (256 MiB of a file, 1
// GiB in all, the program's and its libraries' together), and what was cut
// short or not read is named: a sparse file of 20 GB whose first bytes were a
// library took the tool 46 s to read through (found by review); libraries
// past the budget were then said to be "larger" (the second review).
TEST_F(SystemdDropIn, HugeLibrariesAreReadInPartAndSaidSo) {
  std::string build = "set -e; cd " + dir_ +
                      "; echo 'int main(void) { return 0; }' > app.c; libs=; for i in 1 2 3 4 5; do "
                      "echo \"int huge$i(void) { return 0; }\" > h$i.c; cc -shared -fPIC -o libh$i.so h$i.c; "
                      "libs=\"$libs " +
                      dir_ +
                      "/libh$i.so\"; done; cc -o app app.c -Wl,--no-as-needed $libs; "
                      "for i in 1 2 3 4; do truncate -s 300M libh$i.so; done; truncate -s 20G libh5.so";
  ASSERT_EQ(run({"sh", "-c", build}).status, 0) << build;
  ASSERT_NO_FATAL_FAILURE(write("huge.service", "[Service]\nExecStart=" + dir_ + "/app\n"));
  Result r = run({"timeout", "20", "env", "SYSTEMD_UNIT_PATH=" + dir_, kTool, "systemd", "huge"});
  EXPECT_EQ(r.status, 0) << "124: it read for 20 s\n" << r.err;
  for (const char *part : {"/libh1.so", "/libh2.so", "/libh3.so", "/libh4.so"})
    EXPECT_TRUE(contains(r.err, dir_ + part +
                                    " is larger than secmem reads of a file (256 MiB): only its start was searched for "
                                    "a copy of OpenSSL of its own"))
        << part << "\n"
        << r.err;
  EXPECT_TRUE(contains(r.err, dir_ + "/libh5.so was not searched for a copy of OpenSSL of its own: secmem reads "
                                     "1024 MiB in all, and the files before it took that"))
      << r.err;
}

// secmem stat, likewise: an object it maps that is larger than a file's
// bound is named as searched in part (it said "none", and an OpenSSL past
// 256 MiB went unseen: the second review).
TEST_F(Tool, StatNamesAnObjectItSearchedInPart) {
  char pattern[] = "/tmp/secmem-huge-XXXXXX";
  int fd = mkstemp(pattern);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(ftruncate(fd, off_t{300} << 20), 0);
  close(fd);
  std::string huge = pattern;
  Child mapper = start({"python3", "-c",
                        "import mmap, os, sys; f = os.open(sys.argv[1], os.O_RDONLY); m = mmap.mmap(f, 0, "
                        "prot=mmap.PROT_READ | mmap.PROT_EXEC); print('ready', flush=True); sys.stdin.read()",
                        huge});
  std::string line;
  char c;
  while (read(mapper.out, &c, 1) == 1 && c != '\n') line += c;
  ASSERT_EQ(line, "ready");
  Result stat = run({kTool, "stat", std::to_string(mapper.pid)});
  EXPECT_TRUE(contains(stat.out, "none found in what was searched (below)")) << stat.out;
  EXPECT_TRUE(contains(stat.out, huge + ": larger than secmem reads of a file (256 MiB), only its start searched"))
      << stat.out;
  Result json = run({kTool, "stat", std::to_string(mapper.pid), "--json"});
  EXPECT_TRUE(contains(json.out, "\"own_openssl_read_in_part\": [\"" + huge + "\"]")) << json.out;
  finish(mapper, "");
  unlink(huge.c_str());
}

// Only a regular file is ever opened, whatever the path names by the time
// of the open: a symlink swapped between a library and a FIFO while the tool
// looked released a writer waiting on the FIFO within a few runs (the path
// was looked at, then opened; found by review: with /dev/watchdog in the
// FIFO's place, an open that arms the watchdog, as root).
TEST_F(SystemdDropIn, ALibrarySwappedForAFifoIsNeverOpened) {
  std::string build = "set -e; cd " + dir_ +
                      "; echo 'int swapped(void) { return 0; }' > lib.c; echo 'int swapped(void); int main(void) "
                      "{ return swapped(); }' > app.c; cc -shared -fPIC -o real.so lib.c; ln -s real.so lnk; "
                      "cc -o app app.c " +
                      dir_ + "/lnk; mkfifo fifo; ln -s real.so to-real; ln -s fifo to-fifo";
  ASSERT_EQ(run({"sh", "-c", build}).status, 0) << build;
  ASSERT_NO_FATAL_FAILURE(write("swap.service", "[Service]\nExecStart=" + dir_ + "/app\n"));
  Child writer = start({"sh", "-c", "echo x > " + dir_ + "/fifo"});
  std::atomic<bool> stop{false};
  std::thread swapper([&] {
    std::string lnk = dir_ + "/lnk", spare = dir_ + "/spare";
    while (!stop.load()) {
      for (const char *target : {"/to-real", "/to-fifo"}) {
        (void)!link((dir_ + target).c_str(), spare.c_str()); // a hard link to the symlink, renamed over lnk
        (void)!rename(spare.c_str(), lnk.c_str());
      }
    }
  });
  for (int i = 0; i < 40; ++i) {
    Result r = run({"timeout", "20", "env", "SYSTEMD_UNIT_PATH=" + dir_, kTool, "systemd", "swap"});
    EXPECT_NE(r.status, 124) << r.err;
  }
  stop = true;
  swapper.join();
  expect_fifo_unopened(writer);
}

// The capability subdirectories are the ones this machine's loader tries,
// in its order (glibc 2.36's legacy ones depend on the processor: haswell/
// only on Intel's, tls/x86_64/x86_64/ on this AMD one): a library in the
// first legacy subdirectory the loader names is found, and one in a
// subdirectory it does not try is not (d/haswell/'s copy was taken on an AMD
// processor: found by review).
TEST_F(SystemdDropIn, LibrariesAreFoundInTheSubdirectoriesTheLoaderTries) {
  Result debug = run({"env", "-i", "LD_DEBUG=libs", "LD_LIBRARY_PATH=/nonexistent-secmem",
                      "/lib64/ld-linux-x86-64.so.2", "--list", "/bin/true"});
  std::string prefix = "/nonexistent-secmem/";
  std::vector<std::string> tried;
  size_t at = debug.err.find("search path=" + prefix);
  ASSERT_NE(at, std::string::npos) << debug.err;
  std::istringstream path(debug.err.substr(at + 12, debug.err.find_first_of("\t\n", at) - at - 12));
  for (std::string dir; std::getline(path, dir, ':');)
    if (dir.rfind(prefix, 0) == 0) tried.push_back(dir.substr(prefix.size()) + "/");
  std::string first_legacy, untried;
  for (const std::string &sub : tried)
    if (first_legacy.empty() && sub.rfind("glibc-hwcaps/", 0) != 0) first_legacy = sub;
  for (const char *candidate : {"haswell/", "xeon_phi/", "avx512_1/", "i686/"})
    if (untried.empty() && std::find(tried.begin(), tried.end(), candidate) == tried.end()) untried = candidate;
  ASSERT_FALSE(first_legacy.empty()) << debug.err;
  std::string lib = std::string(SECMEM_OWN_OPENSSL_LIB_PATH);
  std::string name = lib.substr(lib.rfind('/') + 1);
  ASSERT_EQ(system(("set -e; mkdir -p " + dir_ + "/bin " + dir_ + "/lib/" + first_legacy + " " + dir_ + "/lib/" +
                    untried + "; cp " SECMEM_OWN_OPENSSL_USER_PATH " " + dir_ + "/bin/user; cp " + lib + " " + dir_ +
                    "/lib/" + first_legacy + "; cp " + lib + " " + dir_ + "/lib/" + untried)
                       .c_str()),
            0);
  ASSERT_NO_FATAL_FAILURE(write("sub.service", "[Service]\nEnvironment=LD_LIBRARY_PATH=" + dir_ +
                                                   "/lib\nExecStart=" + dir_ + "/bin/user\n"));
  Result r = systemd({"sub"});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "loads " + dir_ + "/lib/" + first_legacy + name + " at start")) << r.err;
  EXPECT_FALSE(contains(r.err, dir_ + "/lib/" + untried)) << r.err;
}

// A drop-in or an EnvironmentFile= that is not a regular file is not even
// opened (they were opened, then refused: a FIFO's waiting writer was let go,
// /dev/zero opened, as root; the second review), and said so.
TEST_F(SystemdDropIn, UnitFilesThatAreNotRegularAreNeverOpened) {
  ASSERT_EQ(mkfifo((dir_ + "/env-fifo").c_str(), 0600), 0);
  ASSERT_NO_FATAL_FAILURE(
      write("envf.service", "[Service]\nExecStart=/bin/true\nEnvironmentFile=" + dir_ + "/env-fifo\n"));
  Child writer = start({"sh", "-c", "echo A=1 > " + dir_ + "/env-fifo"});
  Result env = run({"timeout", "20", "env", "SYSTEMD_UNIT_PATH=" + dir_, kTool, "systemd", "envf"});
  EXPECT_NE(env.status, 124);
  EXPECT_TRUE(contains(env.err, dir_ + "/env-fifo: not a regular file")) << env.err;
  ASSERT_NO_FATAL_FAILURE(write("dropf.service", "[Service]\nExecStart=/bin/true\n"));
  ASSERT_EQ(system(("mkdir -p " + dir_ + "/dropf.service.d && ln -s " + dir_ + "/env-fifo " + dir_ +
                    "/dropf.service.d/x.conf")
                       .c_str()),
            0);
  Result drop = run({"timeout", "20", "env", "SYSTEMD_UNIT_PATH=" + dir_, kTool, "systemd", "dropf"});
  EXPECT_EQ(drop.status, 2) << drop.err;
  EXPECT_TRUE(contains(drop.err, "cannot read " + dir_ + "/dropf.service.d/x.conf: not a regular file")) << drop.err;
  expect_fifo_unopened(writer);
}

TEST_F(SystemdDropIn, BadInputIsSaid) {
  Result missing = systemd({"nothere"});
  EXPECT_EQ(missing.status, 2);
  EXPECT_EQ(missing.err, "secmem: no unit file for nothere.service in " + dir_ + "\n");
  Result socket = systemd({"web.socket"});
  EXPECT_EQ(socket.status, 2);
  EXPECT_EQ(socket.err, "secmem: web.socket is not a service: only services run programs to preload\n");
  // Given by path, the same (a socket's file and any other file were taken for services).
  ASSERT_NO_FATAL_FAILURE(write("web.socket", "[Socket]\nListenStream=8080\n"));
  Result socket_file = systemd({dir_ + "/web.socket"});
  EXPECT_EQ(socket_file.status, 2);
  EXPECT_EQ(socket_file.err,
            "secmem: " + dir_ + "/web.socket is not a service: only services run programs to preload\n");
  Result passwd = systemd({"/etc/passwd"});
  EXPECT_EQ(passwd.status, 2);
  EXPECT_EQ(passwd.err, "secmem: /etc/passwd is not a service's unit file (its name does not end in .service)\n");
  EXPECT_EQ(passwd.out, "");
  // A service's name that links to another file, or names a FIFO: the same.
  ASSERT_EQ(symlink("/etc/passwd", (dir_ + "/x.service").c_str()), 0);
  ASSERT_EQ(symlink((dir_ + "/web.socket").c_str(), (dir_ + "/y.service").c_str()), 0);
  ASSERT_EQ(mkfifo((dir_ + "/f.service").c_str(), 0600), 0);
  Result to_passwd = systemd({"x"});
  EXPECT_EQ(to_passwd.status, 2);
  EXPECT_EQ(to_passwd.err, "secmem: " + dir_ + "/x.service links to /etc/passwd, which is not a service's unit file\n");
  Result to_socket = systemd({"y"});
  EXPECT_EQ(to_socket.status, 2);
  EXPECT_EQ(to_socket.err,
            "secmem: " + dir_ + "/y.service links to " + dir_ + "/web.socket, which is not a service's unit file\n");
  Result fifo = systemd({"f"});
  EXPECT_EQ(fifo.status, 2);
  EXPECT_EQ(fifo.err, "secmem: " + dir_ + "/f.service is not a regular file: not a unit file\n");
  ASSERT_NO_FATAL_FAILURE(write("web.service", "[Service]\nExecStart=/bin/true\nUnsetEnvironment=LD_PRELOAD\n"));
  Result heap = systemd({"web", "--heap", "lots"});
  EXPECT_EQ(heap.status, 2);
  EXPECT_EQ(heap.err, "secmem: --heap lots is not a size (16M, 512K, 1G; at most 1P)\n");
  for (const char *bad : {"-5", "16Mfoo", "0", "6E", "16 M"}) {
    Result r = systemd({"web", "--heap", bad});
    EXPECT_EQ(r.status, 2) << bad;
  }
  Result unset = systemd({"web"});
  EXPECT_EQ(unset.status, 0);
  EXPECT_EQ(unset.err, "secmem: systemd: web.service has UnsetEnvironment=LD_PRELOAD: it removes the shim again; "
                       "take that out\n");
  Result file = systemd({dir_ + "/absent.service"});
  EXPECT_EQ(file.status, 2);
  EXPECT_EQ(file.err, "secmem: no unit file " + dir_ + "/absent.service\n");
}

// The unit's files as systemd reads them (each case found by an adversarial
// pass): the drop-ins of all services, of a dash prefix and of the unit an
// alias points to; continuation lines with a comment inside, and a line that
// ends in an escaped backslash; escapes and specifiers in LD_PRELOAD; the
// forms of LimitMEMLOCK=; deny-lists; a masked unit; a FIFO as an
// EnvironmentFile=; a name with a dot.
TEST_F(SystemdDropIn, TheUnitIsReadAsSystemdReadsIt) {
  auto filter_line = [](const Result &r) { return contains(r.out, "\nSystemCallFilter=memfd_secret\n"); };
  ASSERT_NO_FATAL_FAILURE(write("foo-bar.service", "[Service]\nExecStart=/bin/true\n"));
  ASSERT_NO_FATAL_FAILURE(write("service.d/10-all.conf", "[Service]\nSystemCallFilter=@system-service\n"));
  EXPECT_TRUE(filter_line(systemd({"foo-bar"}))) << "service.d/";
  ASSERT_EQ(system(("rm -r " + dir_ + "/service.d").c_str()), 0);
  ASSERT_NO_FATAL_FAILURE(write("foo-.service.d/10.conf", "[Service]\nSystemCallFilter=@system-service\n"));
  EXPECT_TRUE(filter_line(systemd({"foo-bar"}))) << "foo-.service.d/";
  ASSERT_NO_FATAL_FAILURE(write("real.service", "[Service]\nExecStart=/bin/true\n"));
  ASSERT_NO_FATAL_FAILURE(write("real.service.d/10.conf", "[Service]\nSystemCallFilter=@system-service\n"));
  ASSERT_EQ(symlink((dir_ + "/real.service").c_str(), (dir_ + "/alias.service").c_str()), 0);
  EXPECT_TRUE(filter_line(systemd({"alias"}))) << "the aliased unit's drop-ins";

  ASSERT_NO_FATAL_FAILURE(write("cont.service", "[Service]\nExecStart=/bin/true\nEnvironment=\"A=1\" \\\n"
                                                "# a comment inside\n \"LD_PRELOAD=/opt/c.so\"\n"
                                                "Environment=B=x\\\\\nSystemCallFilter=@system-service\n"));
  Result cont = systemd({"cont"});
  EXPECT_TRUE(contains(cont.out, ":/opt/c.so\"\n")) << cont.out;
  EXPECT_TRUE(filter_line(cont)) << cont.out;

  ASSERT_NO_FATAL_FAILURE(write("esc@.service", "[Service]\nExecStart=/bin/true\n"
                                                "Environment=\"LD_PRELOAD=/opt/%i/lib.so /opt/a.so\\n[Service]\\n"
                                                "ExecStartPre=/bin/touch /tmp/x /opt/\\x41.so\"\n"));
  Result esc = systemd({"esc@one"});
  EXPECT_EQ(esc.status, 0) << esc.err;
  EXPECT_EQ(settings(esc.out),
            "[Service]\nEnvironment=\"LD_PRELOAD=" + shim() + ":/opt/%i/lib.so:/tmp/x:/opt/A.so\"\nLimitMEMLOCK=48M\n");
  EXPECT_TRUE(contains(esc.err,
                       "holds an entry with a control character (/opt/a.so?[Service]?ExecStartPre=/bin/touch): "
                       "left out"))
      << esc.err;

  for (const auto &[limit, expected] :
       std::vector<std::pair<std::string, std::string>>{{"-1", "LimitMEMLOCK=48M"},
                                                        {"64m", "LimitMEMLOCK=48M"},
                                                        {"16M:infinity", "LimitMEMLOCK=48M:infinity"},
                                                        {"1.5G", ""},
                                                        {"64M:128M", ""}}) {
    ASSERT_NO_FATAL_FAILURE(write("lim.service", "[Service]\nExecStart=/bin/true\nLimitMEMLOCK=" + limit + "\n"));
    Result r = systemd({"lim"});
    std::string line = expected.empty() ? "" : expected + "\n";
    EXPECT_EQ(settings(r.out), "[Service]\nEnvironment=\"LD_PRELOAD=" + shim() + "\"\n" + line) << limit;
  }
  ASSERT_NO_FATAL_FAILURE(write("lim.service", "[Service]\nExecStart=/bin/true\n"));
  Result small = systemd({"lim", "--heap", "1M"}); // never below the default: none needed
  EXPECT_FALSE(contains(small.out, "\nLimitMEMLOCK=")) << small.out;
  EXPECT_TRUE(contains(small.out, "# The default LimitMEMLOCK=8M holds a secret heap of 1M")) << small.out;

  ASSERT_NO_FATAL_FAILURE(write("deny.service", "[Service]\nExecStart=/bin/true\nSystemCallFilter=@system-service\n"
                                                "SystemCallFilter=~memfd_secret mlock\n"));
  Result deny = systemd({"deny"});
  EXPECT_FALSE(filter_line(deny)) << deny.out;
  EXPECT_TRUE(contains(deny.err, "denies memfd_secret in its SystemCallFilter=")) << deny.err;
  ASSERT_NO_FATAL_FAILURE(write("denyother.service", "[Service]\nExecStart=/bin/true\nSystemCallFilter=~@mount\n"));
  EXPECT_FALSE(filter_line(systemd({"denyother"})));

  ASSERT_EQ(symlink("/dev/null", (dir_ + "/masked.service").c_str()), 0);
  Result masked = systemd({"masked"});
  EXPECT_EQ(masked.status, 2);
  EXPECT_EQ(masked.err, "secmem: masked.service is masked (" + dir_ + "/masked.service is /dev/null)\n");

  ASSERT_NO_FATAL_FAILURE(write("unset.service", "[Service]\nExecStart=/bin/true\nUnsetEnvironment=LD_PRELOAD\n"
                                                 "UnsetEnvironment=\n"));
  EXPECT_EQ(systemd({"unset"}).err, "");

  ASSERT_EQ(mkfifo((dir_ + "/fifo").c_str(), 0600), 0);
  ASSERT_NO_FATAL_FAILURE(
      write("fifo.service", "[Service]\nExecStart=/bin/true\nEnvironmentFile=-" + dir_ + "/fifo\n"));
  Result fifo = run({"timeout", "10", "env", "SYSTEMD_UNIT_PATH=" + dir_, kTool, "systemd", "fifo"});
  EXPECT_EQ(fifo.status, 0) << "124: it waited on the FIFO";
  EXPECT_TRUE(contains(fifo.err, "fifo: not a regular file: what it says is not taken into account")) << fifo.err;

  ASSERT_NO_FATAL_FAILURE(write("foo.bar.service", "[Service]\nExecStart=/bin/true\n"));
  EXPECT_EQ(systemd({"foo.bar"}).status, 0);
}

// Debian 12's own units for the servers the README names.
TEST(SystemdDropInDebian, TheServersUnitsGiveTheirDropIns) {
  for (const char *unit : {"nginx", "apache2", "haproxy", "postgresql@15-main", "ssh"}) {
    SCOPED_TRACE(unit);
    Result r = run({kTool, "systemd", unit});
    EXPECT_EQ(r.status, 0) << r.err;
    EXPECT_TRUE(contains(r.out, "Environment=\"LD_PRELOAD=")) << r.out;
    EXPECT_TRUE(contains(r.out, "LimitMEMLOCK=48M")) << r.out;
    if (std::string(unit) == "postgresql@15-main") {
      EXPECT_TRUE(contains(r.err, "postgresql@15-main.service starts PostgreSQL through pg_ctlcluster, which clears "
                                  "the environment: add LD_PRELOAD = '"))
          << r.err;
      EXPECT_TRUE(contains(r.err, "' to /etc/postgresql/15/main/environment\n")) << r.err;
      EXPECT_TRUE(contains(r.out, "# pg_ctlcluster starts the server with only what "
                                  "/etc/postgresql/15/main/environment sets: add\n"))
          << r.out;
    } else {
      EXPECT_EQ(r.err, "");
    }
  }
}
