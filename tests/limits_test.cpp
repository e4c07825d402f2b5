// Process limits a program may set: under RLIMIT_FSIZE neither a memfd_secret
// file (sized with ftruncate) nor a diagnostic raises SIGXFSZ, which kills.
#include <gtest/gtest.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fcntl.h>
#include <pthread.h>
#include <seccomp.h>
#include <string>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

#include "platform/linux_facts.h"
#include "secmem/secmem.h"
#include "test_support.h"

using namespace secmem::test;

namespace {

struct ChildRun {
  int status = -1;
  std::string stderr_text;
};

// A child with stderr on a log file (opened for appending) and RLIMIT_FSIZE at limit, and a diagnostic
// at start-up (a bad SECMEM_BACKEND), makes one secret. It succeeds when the
// secret landed in the mlock tier: a 2 MiB memfd_secret file would pass the limit.
ChildRun secret_with_stderr_under_file_size_limit(rlim_t limit) {
  ChildRun child;
  char path[] = "/tmp/secmem-fsize-XXXXXX";
  int file = mkstemp(path);
  if (file < 0) return child;
  fcntl(file, F_SETFL, O_APPEND);
  child.status = run_in_child([&] {
    dup2(file, STDERR_FILENO);
    rlimit lim{limit, limit};
    if (setrlimit(RLIMIT_FSIZE, &lim) != 0) return false;
    setenv("SECMEM_BACKEND", "no-such-backend", 1);
    void *p = secmem_malloc(32);
    bool mlock = std::string(secmem_backend_name()) == "mlock";
    secmem_free(p);
    return p != nullptr && mlock;
  });
  child.stderr_text = read_file(path);
  close(file);
  unlink(path);
  return child;
}

} // namespace

// RLIMIT_FSIZE 0 (as OpenSSH's sandboxed child has it): the diagnostics are
// dropped instead of killing the process with SIGXFSZ.
TEST(FileSizeLimit, ADiagnosticOnAFullStderrFileDoesNotKill) {
  ChildRun child = secret_with_stderr_under_file_size_limit(0);
  EXPECT_EQ(child.status, 0) << "128 + 25 is SIGXFSZ";
  EXPECT_EQ(child.stderr_text, "");
}

// Below the limit the lines are written as usual; the chunk falls back, with the reason.
TEST(FileSizeLimit, AChunkFallsBackAndDiagnosticsWithinTheLimitAreWritten) {
  ChildRun child = secret_with_stderr_under_file_size_limit(4096);
  EXPECT_EQ(child.status, 0);
  EXPECT_EQ(child.stderr_text,
            "secmem: SECMEM_BACKEND=no-such-backend is not one of auto|memfd_secret|mlock; using the default\n"
            "secmem: memfd_secret unavailable (EFBIG: RLIMIT_FSIZE is below the size of a memfd_secret file); "
            "falling back to mlock'ed anonymous memory (MADV_DONTDUMP), and the process is made non-dumpable so "
            "that its user cannot read it (SECMEM_NODUMP=fallback) (set SECMEM_ON_EXHAUSTION=fail to refuse "
            "instead)\n");
}

// A diagnostic under the limit blocks SIGXFSZ for its write and puts the
// thread's mask back exactly: glibc's two internal signals (32, 33) and a
// real-time one that the program blocked stay blocked (pthread_sigmask,
// which leaves those two out of a mask it sets, unblocked them).
TEST(FileSizeLimit, ADiagnosticLeavesTheSignalMaskAsItWas) {
  char path[] = "/tmp/secmem-fsize-mask-XXXXXX";
  int file = mkstemp(path);
  ASSERT_GE(file, 0);
  fcntl(file, F_SETFL, O_APPEND); // a log, as the tests above
  int status = run_in_child([&] {
    dup2(file, STDERR_FILENO);
    rlimit lim{1 << 20, 1 << 20};
    if (setrlimit(RLIMIT_FSIZE, &lim) != 0) return false;
    uint64_t blocked = uint64_t{1} << 31 | uint64_t{1} << 32 | uint64_t{1} << 63, now = 0;
    if (syscall(SYS_rt_sigprocmask, SIG_SETMASK, &blocked, nullptr, sizeof blocked) != 0) return false;
    setenv("SECMEM_BACKEND", "no-such-backend", 1); // a line at start-up
    void *p = secmem_malloc(32);
    secmem_free(p);
    syscall(SYS_rt_sigprocmask, SIG_BLOCK, nullptr, &now, sizeof now);
    return p != nullptr && now == blocked;
  });
  std::string text = read_file(path);
  close(file);
  unlink(path);
  EXPECT_EQ(status, 0) << text;
  EXPECT_NE(text.find("SECMEM_BACKEND=no-such-backend"), std::string::npos) << text;
}

// Another writer appends to the log between secmem's check of the file
// against RLIMIT_FSIZE and its write (the test, as a ptrace tracer, at the
// write's entry): the write fails with EFBIG and raises SIGXFSZ, which secmem
// blocks and takes back. The process lives; the line is dropped.
#if defined(__x86_64__)
TEST(FileSizeLimit, ALogThatGrowsPastTheLimitDuringTheWriteDoesNotKill) {
  constexpr rlim_t kLimit = 8192;
  char path[] = "/tmp/secmem-fsize-race-XXXXXX";
  int file = mkstemp(path);
  ASSERT_GE(file, 0);
  std::string filler(kLimit - 400, 'x'); // room for the line, as the check sees it
  ASSERT_EQ(write(file, filler.data(), filler.size()), static_cast<ssize_t>(filler.size()));
  fcntl(file, F_SETFL, O_APPEND);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    dup2(file, STDERR_FILENO);
    rlimit lim{kLimit, kLimit};
    if (setrlimit(RLIMIT_FSIZE, &lim) != 0 || ptrace(PTRACE_TRACEME, 0, nullptr, nullptr) != 0) _exit(3);
    setenv("SECMEM_BACKEND", "no-such-backend", 1); // a line at start-up
    raise(SIGSTOP);
    void *p = secmem_malloc(32);
    secmem_free(p);
    _exit(p != nullptr ? 0 : 4);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSTOPPED(status));
  ASSERT_EQ(ptrace(PTRACE_SETOPTIONS, pid, nullptr, PTRACE_O_TRACESYSGOOD | PTRACE_O_EXITKILL), 0);
  bool entering = true, grown = false;
  int deliver = 0;
  for (;;) {
    ASSERT_EQ(ptrace(PTRACE_SYSCALL, pid, nullptr, deliver), 0);
    deliver = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    if (WIFEXITED(status) || WIFSIGNALED(status)) break;
    if (WSTOPSIG(status) != (SIGTRAP | 0x80)) {
      deliver = WSTOPSIG(status); // a signal for the child: on its way
      continue;
    }
    if (entering && !grown) {
      user_regs_struct regs{};
      ASSERT_EQ(ptrace(PTRACE_GETREGS, pid, nullptr, &regs), 0);
      if (regs.orig_rax == SYS_write && regs.rdi == STDERR_FILENO) {
        std::string other(600, 'y'); // the other writer, unlimited
        ASSERT_EQ(write(file, other.data(), other.size()), static_cast<ssize_t>(other.size()));
        grown = true;
      }
    }
    entering = !entering;
  }
  close(file);
  std::string text = read_file(path);
  unlink(path);
  EXPECT_TRUE(grown) << "no write to fd 2 was seen";
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
      << (WIFSIGNALED(status) ? "killed by signal " + std::to_string(WTERMSIG(status)) + " (25 is SIGXFSZ)"
                              : "exit status " + std::to_string(WEXITSTATUS(status)));
  EXPECT_EQ(text, filler + std::string(600, 'y')); // no line past the limit, nor a part of one
}
#endif

// A program that closed stderr and opened a data file, which took fd 2: a
// diagnostic (here the line before an abort) never lands inside the data.
// A log opened for appending in fd 2's place, or a pipe, still gets it.
TEST(Stderr, ADataFileInFdTwosPlaceGetsNoLines) {
  for (bool append : {false, true}) {
    char path[] = "/tmp/secmem-data-XXXXXX";
    int made = mkstemp(path);
    ASSERT_GE(made, 0);
    close(made);
    int status = run_in_child([&] {
      close(STDERR_FILENO);
      int data = open(path, O_WRONLY | (append ? O_APPEND : 0));
      if (data != STDERR_FILENO) return false;
      if (write(data, "DATA", 4) != 4) return false;
      int on_stack = 0;
      secmem_free(&on_stack); // "invalid free", then abort
      return true;
    });
    EXPECT_EQ(status, 128 + SIGABRT);
    std::string text = read_file(path);
    unlink(path);
    if (append)
      EXPECT_EQ(text, "DATA" + std::string("secmem: invalid free of ") + text.substr(text.find("0x"))) << text;
    else
      EXPECT_EQ(text, "DATA");
  }
  EXPECT_SECMEM_DEATH(
      {
        int on_stack = 0;
        secmem_free(&on_stack);
      },
      "^secmem: invalid free of 0x[0-9a-f]+: not allocated by secmem\n$");
}

// Large blocks, each between guard pages (two mappings more apiece), until
// their guards would take half of vm.max_map_count; then freed; sealed
// ones made, opened and freed until refused (tests/fork_edges.c
// guard-budget): the heap's guards and sealed blocks take at most a
// quarter of the count, said once, and the program can still make a thread. 32,000 live blocks of 9000 bytes left
// pthread_create none, and so did as many sealed ones once freed (found by the adversarial review).
TEST(MapCount, TheHeapsGuardsLeaveTheProgramItsMappings) {
  for (const char *backend : {"SECMEM_BACKEND=auto", "SECMEM_BACKEND=mlock"}) {
    Result r = run({SECMEM_FORK_EDGES_PATH, "guard-budget"}, {backend});
    EXPECT_EQ(r.status, 0) << backend << r.out << r.err;
    // One line (std::regex here trips GCC 12's -Wmaybe-uninitialized in the sanitizer builds).
    const std::string head = "secmem: the heap's guard pages and sealed blocks split its memory into ",
                      tail = " mappings more, a quarter of what vm.max_map_count allows the process: while that "
                             "lasts, large blocks go without guard pages, and new sealed blocks and access scopes "
                             "that would open one are refused (ENOMEM)\n";
    EXPECT_TRUE(r.err.rfind(head, 0) == 0 && r.err.size() > head.size() + tail.size() &&
                r.err.compare(r.err.size() - tail.size(), tail.size(), tail) == 0 &&
                r.err.find('\n') == r.err.size() - 1)
        << backend << r.err;
  }
}

// A process that used up its PTHREAD_KEYS_MAX keys: the heap runs without
// thread caches (every operation takes the lock), says so once, and works.
TEST(ThreadKeys, NoKeyLeftMeansNoThreadCachesAndOneMessage) {
  std::string err;
  int status = run_in_child(
      [] {
        pthread_key_t key;
        while (pthread_key_create(&key, nullptr) == 0) {}
        bool ok = true;
        for (int i = 0; i < 1000 && ok; ++i) {
          auto *p = static_cast<char *>(secmem_malloc(32));
          ok = p != nullptr && secmem_owns(p);
          if (ok) p[31] = 1;
          secmem_free(p);
        }
        return ok;
      },
      &err);
  EXPECT_EQ(status, 0) << err;
  EXPECT_EQ(err, "secmem: cannot create a thread key for the thread caches (EAGAIN); every operation takes the heap "
                 "lock (slower)\n");
}

// mprotect refused from the start (a seccomp filter answering EPERM): the
// heap still starts, with its configuration unsealed and one message, and
// its blocks work. (With the configuration page in the library's RELRO
// segment, read-only until start-up made it writable, the first write to
// it faulted.)
TEST(Mprotect, RefusedAtStartUpLeavesTheConfigurationUnsealedAndTheHeapWorking) {
  std::string err;
  int status = run_in_child(
      [] {
        if (!filter_syscalls(SCMP_ACT_ERRNO(EPERM), {SYS_mprotect})) return false;
        auto *p = static_cast<unsigned char *>(secmem_malloc(32));
        bool ok = p != nullptr && secmem_owns(p) != 0;
        if (ok) p[31] = 1;
        secmem_free(p);
        return ok;
      },
      &err);
  EXPECT_EQ(status, 0) << err;
  EXPECT_NE(err.find("secmem: cannot make the configuration read-only (EPERM)\n"), std::string::npos) << err;
}

// RLIMIT_DATA spent before the first secret: the heap's tables cannot be
// mapped, and it says so and fails (NULL, ENOMEM) instead of faulting.
TEST(DataLimit, SpentBeforeStartUpFailsWithNullAndOneMessage) {
  std::string err;
  int status = run_in_child(
      [] {
        size_t data = secmem::linux_facts::status_kib_field_bytes("VmData");
        if (data == 0) return false;
        rlimit lim{data, data};
        if (setrlimit(RLIMIT_DATA, &lim) != 0) return false;
        errno = 0;
        void *p = secmem_malloc(32);
        return p == nullptr && errno == ENOMEM;
      },
      &err);
  EXPECT_EQ(status, 0) << err;
  EXPECT_NE(err.find("every allocation will return NULL"), std::string::npos) << err;
}
