// Seccomp sandboxes that kill instead of refusing (systemd's
// SystemCallFilter= without SystemCallErrorNumber=, OpenSSH's pre-auth child):
// secmem never makes a call such a filter may kill on. A filter in force
// before the first allocation is probed in a short-lived child; one installed
// later is never tested, and the heap degrades with one message. Every case
// runs in a child of its own (filters cannot be removed) that must exit 0.
#include <gtest/gtest.h>
#include <seccomp.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <set>
#include <sstream>
#include <string>
#include <sys/resource.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include "platform/linux_facts.h"
#include "secmem/secmem.h"
#include "test_support.h"

using namespace secmem::test;

namespace {

struct Action {
  const char *name;
  uint32_t action;
};
const Action kActions[] = {{"kill_process", SCMP_ACT_KILL_PROCESS},
                           {"kill_thread", SCMP_ACT_KILL_THREAD},
                           {"trap", SCMP_ACT_TRAP},
                           {"errno", SCMP_ACT_ERRNO(EPERM)}};

// A secret that holds its bytes.
bool secret_works(size_t size) {
  auto *p = static_cast<unsigned char *>(secmem_malloc(size));
  if (p == nullptr) return false;
  memset(p, 0x5a, size);
  bool ok = p[0] == 0x5a && p[size - 1] == 0x5a && secmem_owns(p);
  secmem_free(p);
  return ok;
}

const long kMemfdSecret = secmem::linux_facts::kSysMemfdSecret;

class SandboxTest : public testing::TestWithParam<Action> {};

} // namespace

// The first allocation, under a filter installed before it: the heap lands in
// the mlock tier, with the reason, and the process lives.
TEST_P(SandboxTest, FilterBeforeTheFirstAllocationIsProbedNotHit) {
  const Action action = GetParam();
  std::string err;
  int status = run_in_child(
      [&] {
        if (!filter_syscalls(action.action, {kMemfdSecret})) return false;
        return secret_works(64) && strcmp(secmem_backend_name(), "mlock") == 0;
      },
      &err);
  EXPECT_EQ(status, 0) << err;
  const char *reason = action.action == SCMP_ACT_ERRNO(EPERM) ? "(EPERM: refused, as by a seccomp filter)"
                                                              : "(SIGSYS: a seccomp filter here kills on it)";
  EXPECT_EQ(err, std::string("secmem: memfd_secret unavailable ") + reason +
                     "; falling back to mlock'ed anonymous memory (MADV_DONTDUMP), and the process is made "
                     "non-dumpable so that its user cannot read it (SECMEM_NODUMP=fallback) (set "
                     "SECMEM_ON_EXHAUSTION=fail to refuse instead)\n");
}

// SECMEM_BACKEND=mlock under a filter that kills on mlock: unlocked memory, one message.
TEST_P(SandboxTest, FilterOnMlockSendsTheLockedTierDown) {
  const Action action = GetParam();
  std::string err;
  int status = run_in_child(
      [&] {
        setenv("SECMEM_BACKEND", "mlock", 1);
        if (!filter_syscalls(action.action, {SCMP_SYS(mlock)})) return false;
        return secret_works(64) && strcmp(secmem_backend_name(), "unlocked") == 0;
      },
      &err);
  EXPECT_EQ(status, 0) << err;
  // An ERRNO filter makes mlock fail like a spent budget does.
  std::string reason = action.action == SCMP_ACT_ERRNO(EPERM) ? "(EPERM: RLIMIT_MEMLOCK budget spent)"
                                                              : "(SIGSYS: a seccomp filter here kills on it)";
  EXPECT_NE(err.find("secmem: mlock unavailable " + reason + "; falling back to unlocked anonymous memory"),
            std::string::npos)
      << err;
}

// A filter installed after the heap started (as OpenSSH's pre-auth child
// does): existing chunks serve, a new chunk never calls memfd_secret, nor
// mlock, never checked before the filter (a trial in a child is a clone,
// which such a filter may kill: a filter on memfd_secret, mlock and clone
// that came after the first secret killed the process at its next chunk),
// and a fork (whose copy would create a secret file) survives too.
TEST_P(SandboxTest, FilterInstalledLaterIsNeverTested) {
  const Action action = GetParam();
  std::string err;
  int status = run_in_child(
      [&] {
        if (!secret_works(64) || strcmp(secmem_backend_name(), "memfd_secret") != 0) return false;
        void *kept = secmem_malloc(64); // the memfd_secret chunk stays in use
        if (!filter_syscalls(action.action, {kMemfdSecret})) return false;
        if (!secret_works(64)) return false;              // from the existing chunk
        if (!secret_works(size_t{3} << 20)) return false; // a chunk of its own: a new one
        pid_t pid = fork();
        if (pid == 0) _exit(secret_works(128) ? 0 : 1);
        int child = -1;
        waitpid(pid, &child, 0);
        secmem_free(kept);
        return WIFEXITED(child) && WEXITSTATUS(child) == 0;
      },
      &err);
  EXPECT_EQ(status, 0) << err;
  EXPECT_NE(err.find("secmem: memfd_secret unavailable (SIGSYS: a seccomp filter installed after start-up may kill "
                     "on it, so it is not tried again); falling back to unlocked anonymous memory (MADV_DONTDUMP; it "
                     "can be swapped) (mlock not made: SIGSYS: a seccomp filter installed after start-up may kill on "
                     "it, so it is not tried again)"),
            std::string::npos)
      << err;
}

// The same with a filter that kills on clone too: the heap makes no trial
// in a child (it died of one).
TEST_P(SandboxTest, FilterOnCloneInstalledLaterKillsNoTrial) {
  const Action action = GetParam();
  std::string err;
  int status = run_in_child(
      [&] {
        if (!secret_works(64) || strcmp(secmem_backend_name(), "memfd_secret") != 0) return false;
        void *kept = secmem_malloc(64);
        if (!filter_syscalls(action.action,
                             {kMemfdSecret, SCMP_SYS(mlock), SCMP_SYS(mlock2), SCMP_SYS(clone), SCMP_SYS(clone3)}))
          return false;
        auto *big = static_cast<unsigned char *>(secmem_malloc(size_t{3} << 20)); // a new chunk
        bool ok = big != nullptr && strcmp(secmem_backend_name(), "unlocked") == 0;
        if (ok) memset(big, 0x5a, size_t{3} << 20);
        secmem_free(big);
        secmem_free(kept);
        return ok;
      },
      &err);
  EXPECT_EQ(status, 0) << err;
}

// The mlock tier's fork child locks its copy again (locks are not
// inherited). Under a filter on mlock installed after the heap started, the
// child must not call it: the verdict is asked in the parent before the
// fork (the child has the forking thread's filters). The child lives,
// unlocked, and says why.
TEST_P(SandboxTest, FilterOnMlockInstalledLaterSparesTheForkChild) {
  const Action action = GetParam();
  std::string err;
  int status = run_in_child(
      [&] {
        setenv("SECMEM_BACKEND", "mlock", 1);
        if (!secret_works(64) || strcmp(secmem_backend_name(), "mlock") != 0) return false;
        void *kept = secmem_malloc(64); // the locked chunk stays in use
        if (!filter_syscalls(action.action, {SCMP_SYS(mlock), SCMP_SYS(mlock2)})) return false;
        pid_t pid = fork();
        if (pid == 0) _exit(secret_works(128) && strcmp(secmem_backend_name(), "unlocked") == 0 ? 0 : 1);
        int child = -1;
        waitpid(pid, &child, 0);
        secmem_free(kept);
        return WIFEXITED(child) && WEXITSTATUS(child) == 0 && strcmp(secmem_backend_name(), "mlock") == 0;
      },
      &err);
  EXPECT_EQ(status, 0) << err;
  // mlock2, never checked before the filter, is not tried (not even in a
  // child: whatever the filter's action).
  std::string reason = "(SIGSYS: a seccomp filter installed after start-up may kill on it, so it is not tried again)";
  EXPECT_NE(err.find("secmem: mlock unavailable " + reason + "; falling back to unlocked anonymous memory"),
            std::string::npos)
      << err;
}

// A thread whose own filter (one, killing on mlock and clone) is fewer than
// the process's first status read found (two, from before the first secret,
// on the thread that made it) needs mlock, never checked: it is not tried
// in a child there (the trial's clone killed the process), and the thread's
// chunk goes to unlocked memory.
TEST_P(SandboxTest, FewerFiltersThanAtStartUpMakeNoTrial) {
  const Action action = GetParam();
  std::string err;
  int status = run_in_child(
      [&] {
        std::atomic<int> step{0};
        bool unlocked = false;
        std::thread other([&] { // made before the main thread's filters: it has none of them
          while (step.load() != 1) std::this_thread::yield();
          if (filter_syscalls(action.action, {SCMP_SYS(mlock), SCMP_SYS(mlock2), SCMP_SYS(clone), SCMP_SYS(clone3)})) {
            void *big = secmem_malloc(size_t{3} << 20); // a chunk of its own, mapped on this thread
            unlocked = big != nullptr && strcmp(secmem_backend_name(), "unlocked") == 0;
            secmem_free(big);
          }
          step.store(2);
        });
        bool started = filter_syscalls(SCMP_ACT_ERRNO(EPERM), {SCMP_SYS(acct)}) &&
                       filter_syscalls(SCMP_ACT_ERRNO(EPERM), {SCMP_SYS(acct)}) && secret_works(64) &&
                       strcmp(secmem_backend_name(), "memfd_secret") == 0;
        void *kept = secmem_malloc(64);
        step.store(1);
        other.join();
        secmem_free(kept);
        return started && unlocked;
      },
      &err);
  EXPECT_EQ(status, 0) << err;
  EXPECT_NE(err.find("(mlock not made: SIGSYS: this thread's seccomp filters are not those in force at start-up"),
            std::string::npos)
      << err;
}

// A filter that kills on clone, then a full descriptor table, then the
// first secret (the heap starts there): no status to read, so nothing is
// tried in a child, the fork gate's membarrier included (its trial killed
// the process at start-up); each operation fences instead, and the chunk is
// unlocked memory.
TEST_P(SandboxTest, FullDescriptorTableAtStartUpUnderAFilterMakesNoTrial) {
  const Action action = GetParam();
  std::string err;
  int status = run_in_child(
      [&] {
        rlimit lim{};
        if (getrlimit(RLIMIT_NOFILE, &lim) != 0) return false;
        lim.rlim_cur = 32;
        if (setrlimit(RLIMIT_NOFILE, &lim) != 0) return false;
        if (!filter_syscalls(action.action,
                             {kMemfdSecret, SCMP_SYS(mlock), SCMP_SYS(mlock2), SCMP_SYS(clone), SCMP_SYS(clone3)}))
          return false;
        while (open("/dev/null", O_RDONLY | O_CLOEXEC) >= 0) {}
        auto *p = static_cast<unsigned char *>(secmem_malloc(64));
        bool ok = p != nullptr && strcmp(secmem_backend_name(), "unlocked") == 0;
        if (ok) memset(p, 0x5a, 64);
        secmem_free(p);
        return ok;
      },
      &err);
  EXPECT_EQ(status, 0) << err;
}

// Filters are per thread: the heap's verdict on mlock was taken on a thread
// with two harmless filters; another thread with one filter that kills on
// mlock then maps a chunk. It compared the counts (1 is not more than 2)
// and called mlock there: the process died.
TEST_P(SandboxTest, AnotherThreadsFewerFiltersAreNotTakenForTheSame) {
  const Action action = GetParam();
  std::string err;
  int status = run_in_child(
      [&] {
        setenv("SECMEM_BACKEND", "mlock", 1);
        bool started = false;
        std::thread other([&] {
          started = filter_syscalls(SCMP_ACT_ERRNO(EPERM), {SCMP_SYS(acct)}) &&
                    filter_syscalls(SCMP_ACT_ERRNO(EPERM), {SCMP_SYS(acct)}) && secret_works(64) &&
                    strcmp(secmem_backend_name(), "mlock") == 0;
        });
        other.join();
        if (!started || !filter_syscalls(action.action, {SCMP_SYS(mlock)})) return false;
        void *big = secmem_malloc(size_t{3} << 20); // a chunk of its own, mapped on this thread
        bool unlocked = big != nullptr && strcmp(secmem_backend_name(), "unlocked") == 0;
        secmem_free(big);
        return unlocked && secret_works(64);
      },
      &err);
  EXPECT_EQ(status, 0) << err;
  EXPECT_NE(err.find("secmem: mlock unavailable (SIGSYS: this thread's seccomp filters are not those it was tried "
                     "under (filters are per thread) and may kill on it, so it is not made here); falling back to "
                     "unlocked anonymous memory"),
            std::string::npos)
      << err;
}

// A thread without a filter cannot be killed: another thread whose filter
// (allowing everything) came after the heap started had its chunk sent down
// (to unlocked memory: mlock was never checked before that filter), and
// memfd_secret then stayed off for every thread of the process.
TEST(Sandbox, AThreadWithoutFiltersKeepsMemfdSecret) {
  std::string err;
  int status = run_in_child(
      [&] {
        if (!secret_works(64) || strcmp(secmem_backend_name(), "memfd_secret") != 0) return false;
        void *kept = secmem_malloc(64);
        bool worker = false;
        std::thread other([&] {
          void *big = nullptr;
          worker = filter_syscalls(SCMP_ACT_ERRNO(EPERM), {SCMP_SYS(acct)}) &&
                   (big = secmem_malloc(size_t{3} << 20)) != nullptr && strcmp(secmem_backend_name(), "unlocked") == 0;
          secmem_free(big);
        });
        other.join();
        void *mine = secmem_malloc(size_t{3} << 20); // a chunk of its own, mapped on this thread
        bool secret = mine != nullptr && strcmp(secmem_backend_name(), "memfd_secret") == 0;
        secmem_free(mine);
        secmem_free(kept);
        return worker && secret;
      },
      &err);
  EXPECT_EQ(status, 0) << err;
}

// A filter that refuses mprotect (an errno) after a guarded large block was
// made: once it is freed, its guard pages cannot be opened again, and the
// run they are in was tried first for every allocation, which failed with
// ENOMEM (100 bytes too). Those pages now stay out of use, and the heap
// serves from the rest.
TEST(Sandbox, AFilterThatRefusesMprotectLeavesTheHeapServing) {
  std::string err;
  int status = run_in_child(
      [&] {
        void *large = secmem_malloc(70000);
        if (large == nullptr) return false;
        memset(large, 1, 70000);
        if (!filter_syscalls(SCMP_ACT_ERRNO(EPERM), {SCMP_SYS(mprotect)})) return false;
        secmem_free(large);
        std::vector<void *> kept;
        bool ok = true;
        for (size_t size : {size_t{100}, size_t{4096}, size_t{20000}, size_t{70000}, size_t{100}}) {
          ok = ok && secret_works(size);
          for (int i = 0; i < 8 && ok; ++i) {
            auto *p = static_cast<unsigned char *>(secmem_malloc(size));
            ok = p != nullptr;
            if (p != nullptr) memset(p, 0x33, size);
            kept.push_back(p);
          }
        }
        for (void *p : kept) secmem_free(p);
        return ok;
      },
      &err);
  EXPECT_EQ(status, 0) << err;
}

// A filter that refuses read (an errno, not a kill) after the heap started,
// with a sealed block: each fork child copies its heap for itself while the
// parent waits for its byte on a pipe. With read refused the parent waits
// with ppoll; with ppoll refused too it cannot wait, says so once and keeps
// the pipe's read end open. Every child died of SIGPIPE before (its byte
// written to a pipe whose reader the parent had closed without waiting).
TEST(Sandbox, AFilterThatRefusesReadKillsNoForkChild) {
  SECMEM_REQUIRE_SECRETMEM(); // (the mlock tier's children copy through no pipe)
  // ppoll refused with EPERM, then with EINTR (every signal is blocked
  // there: a filter's EINTR came back for ever, and the parent spun).
  for (int ppoll_refused : {0, EPERM, EINTR}) {
    bool ppoll_too = ppoll_refused != 0;
    std::string err;
    int status = run_in_child(
        [&] {
          auto *sealed = static_cast<unsigned char *>(secmem_sealed_alloc(100));
          auto *kept = static_cast<unsigned char *>(secmem_malloc(64));
          if (sealed == nullptr || kept == nullptr) return false;
          memset(kept, 7, 64);
          bool filtered = filter_syscalls(SCMP_ACT_ERRNO(EPERM), {SCMP_SYS(read)}) &&
                          (!ppoll_too || filter_syscalls(SCMP_ACT_ERRNO(ppoll_refused), {SCMP_SYS(ppoll)}));
          if (!filtered) return false;
          auto child_checks = [&] { _exit(kept[0] == 7 && kept[63] == 7 && secret_works(50) ? 0 : 1); };
          auto lived = [](pid_t pid) {
            int child = -1;
            return pid > 0 && waitpid(pid, &child, 0) == pid && WIFEXITED(child) && WEXITSTATUS(child) == 0;
          };
          for (int round = 0; round < 3; ++round) {
            pid_t pid = fork();
            if (pid == 0) child_checks();
            if (!lived(pid)) return false;
          }
          // Forks one after another, then the waits: a child still copying
          // (2 MiB more to copy) when the next fork closes the pipe kept for
          // it, where the parent could not wait.
          void *more = secmem_malloc(size_t{2} << 20);
          if (more == nullptr) return false;
          memset(more, 5, size_t{2} << 20);
          pid_t pids[8];
          for (pid_t &pid : pids) {
            pid = fork();
            if (pid == 0) child_checks();
          }
          bool all = true;
          for (pid_t pid : pids) all = lived(pid) && all;
          secmem_free(more);
          return all && kept[0] == 7 && secret_works(70);
        },
        &err);
    EXPECT_EQ(status, 0) << "read refused, ppoll " << ppoll_refused << ": " << err;
    size_t said = 0;
    for (size_t at = err.find("cannot wait for the child's copy"); at != std::string::npos;
         at = err.find("cannot wait for the child's copy", at + 1))
      ++said;
    EXPECT_EQ(said, ppoll_too ? 1u : 0u) << err;
  }
}

// A filter before the first allocation that also refuses open, so that the
// status file saying whether a filter is in force was never readable: the
// heap took that for "no filter" and died of its first memfd_secret.
TEST(Sandbox, NoStatusToReadIsNotTakenForNoFilter) {
  // (LeakSanitizer reads /proc at exit, which this filter refuses.)
  Result r = run({"timeout", "-s", "KILL", "60", SECMEM_FORK_EDGES_PATH, "no-status"}, {"ASAN_OPTIONS=detect_leaks=0"});
  EXPECT_EQ(r.status, 0) << r.out << r.err;
  EXPECT_EQ(r.out, "no-status: alive on mlock\n") << r.err;
}

// SECMEM_ON_EXHAUSTION=fail under a killing filter: NULL with ENOMEM, one message, no death.
TEST(Sandbox, FailPolicyRefusesInsteadOfDying) {
  std::string err;
  int status = run_in_child(
      [&] {
        setenv("SECMEM_ON_EXHAUSTION", "fail", 1);
        if (!filter_syscalls(SCMP_ACT_KILL_PROCESS, {kMemfdSecret})) return false;
        errno = 0;
        return secmem_malloc(64) == nullptr && errno == ENOMEM;
      },
      &err);
  EXPECT_EQ(status, 0) << err;
  EXPECT_EQ(err, "secmem: out of secret memory (SIGSYS: a seccomp filter here kills on it); allocations return NULL "
                 "with ENOMEM (SECMEM_ON_EXHAUSTION=fail)\n");
}

INSTANTIATE_TEST_SUITE_P(Actions, SandboxTest, testing::ValuesIn(kActions),
                         [](const testing::TestParamInfo<Action> &info) { return std::string(info.param.name); });

namespace {
// The system calls of a systemd group, nested groups expanded, as
// `systemd-analyze syscall-filter` lists them on this machine.
void systemd_group(const std::string &group, std::set<std::string> *calls, std::set<std::string> *seen) {
  if (!seen->insert(group).second) return;
  Result listing = run({"systemd-analyze", "syscall-filter", group});
  std::istringstream lines(listing.out);
  for (std::string line; std::getline(lines, line);) {
    size_t start = line.find_first_not_of(" \t");
    if (start == std::string::npos || line[start] == '#' || start == 0) continue; // the group's own name is unindented
    std::string name = line.substr(start);
    if (name[0] == '@')
      systemd_group(name, calls, seen);
    else
      calls->insert(name);
  }
}
} // namespace

// A unit with SystemCallFilter=@system-service and no SystemCallErrorNumber=:
// an allow-list from systemd's own listing (Debian 12's systemd 252 leaves
// memfd_secret out) with the kill default, installed before the first
// allocation. The process lives through secrets small and large, a sealed
// block, a thread and a fork, on the tier the list allows.
TEST(Sandbox, SystemdSystemServiceAllowListWithTheKillDefault) {
  std::set<std::string> calls, seen;
  systemd_group("@system-service", &calls, &seen);
  ASSERT_GT(calls.size(), 200u) << "systemd-analyze syscall-filter (package systemd) lists the groups";
  bool lists_memfd_secret = calls.count("memfd_secret") != 0;
  std::string err;
  int status = run_in_child(
      [&] {
        scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_KILL_PROCESS);
        if (ctx == nullptr) return false;
        for (const std::string &name : calls) {
          int nr = seccomp_syscall_resolve_name(name.c_str());
          if (nr >= 0 && seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0) != 0) return false;
        }
        // systemd answers clone3 with ENOSYS when the list lacks it, so that glibc uses clone.
        if (calls.count("clone3") == 0) seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
        bool loaded = seccomp_load(ctx) == 0;
        seccomp_release(ctx);
        if (!loaded) return false;
        bool ok = secret_works(64) && secret_works(300000);
        void *sealed = secmem_sealed_alloc(100);
        ok = ok && sealed != nullptr;
        secmem_free(sealed);
        std::thread thread([&] { ok = ok && secret_works(5000); });
        thread.join();
        pid_t pid = fork();
        if (pid == 0) _exit(secret_works(64) ? 0 : 1);
        int child_status = -1;
        waitpid(pid, &child_status, 0);
        ok = ok && WIFEXITED(child_status) && WEXITSTATUS(child_status) == 0;
        return ok && strcmp(secmem_backend_name(), lists_memfd_secret ? "memfd_secret" : "mlock") == 0;
      },
      &err);
  EXPECT_EQ(status, 0) << "128 + 31 is SIGSYS: " << err;
  if (!lists_memfd_secret) {
    EXPECT_NE(err.find("(SIGSYS: a seccomp filter here kills on it)"), std::string::npos) << err;
  }
}
