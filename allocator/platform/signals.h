// Every signal blocked for a scope: for the heap's fork handlers
// (heap/fork_gate.h) and for the making of a chunk (chunks/chunk_pool.cpp).
#pragma once

#include <cerrno>
#include <cstdint>
#include <initializer_list>
#include <signal.h>
#include <sys/syscall.h>

#include "platform/raw_syscall.h"

namespace secmem {

// Every signal blocked while it lives (glibc keeps its own two, for thread
// cancellation and set*id, open). Secmem's fork handlers run so: a signal handler that
// forks on the forking thread then lands before, between or after them,
// where the lock, the gate and fork_handlers_running say which fork is in
// progress, and never where they disagree. (In the few instructions from
// taking the lock to raising fork_handlers_running, or from lowering it to
// letting the lock go, such a fork took the lock for one that an
// interrupted operation held and overwrote lock_was_mine: the outer fork
// never let the lock go, and the next allocation waited for ever.)
// The system call itself (platform/raw_syscall.h), with the kernel's 8-byte
// set, as pthread_sigmask makes it: a fork child's first touch of a libc
// page is a page fault, and sigfillset's, pthread_sigmask's, syscall's and
// __errno_location's code were four of them.
// errno too is as it was when it ends: glibc's fork leaves errno alone, and
// the handlers' calls through libc set it (ECHILD from waitid, ENOENT from
// a /proc read), in parent and child. Reached through its address as
// this thread last asked libc for it (the same in a fork child), and stored
// only if changed: errno is on a page that every fork makes copy-on-write.
// kErrnoAsSet leaves errno as the scope set it (a call that answers with
// errno, such as the making of a chunk). kAsynchronous leaves the signals
// the kernel raises for the thread's own instruction or system call open
// (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP, SIGSYS): one that comes while
// blocked kills the process, its handler reset (a seccomp filter's
// SECCOMP_RET_TRAP, whose handler a sandbox's broker answers). The fork
// handlers keep every signal blocked, so a trapped call of theirs still
// kills the process: with SIGSYS open there (tried), a SIGSYS handler that
// used the secret heap ran inside them, in the middle of the staging or of
// the child's copy: the parent's staged copy outgrew its plan (SIGSEGV in
// fill_staging), and a child's block was written in the parent's pages,
// which the parent's secmem_calloc then handed out.
class SignalsBlocked {
public:
  enum Errno { kErrnoRestored, kErrnoAsSet };
  enum Which { kAll, kAsynchronous };
  explicit SignalsBlocked(Errno mode = kErrnoRestored, Which which = kAll)
      : errno_at_(mode == kErrnoRestored ? errno_address() : nullptr), errno_(errno_at_ != nullptr ? *errno_at_ : 0) {
    // Signal n is bit n - 1; glibc's SIGCANCEL and SIGSETXID are 32 and 33.
    uint64_t all = ~(uint64_t{1} << 31 | uint64_t{1} << 32);
    if (which == kAsynchronous)
      for (int sig : {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP, SIGSYS}) all &= ~(uint64_t{1} << (sig - 1));
    blocked_ = os::raw_call(SYS_rt_sigprocmask, SIG_BLOCK, &all, &old_, sizeof all) == 0;
  }
  ~SignalsBlocked() {
    if (blocked_) os::raw_call(SYS_rt_sigprocmask, SIG_SETMASK, &old_, nullptr, sizeof old_);
    if (errno_at_ != nullptr && *errno_at_ != errno_) *errno_at_ = errno_;
  }
  SignalsBlocked(const SignalsBlocked &) = delete;
  SignalsBlocked &operator=(const SignalsBlocked &) = delete;

private:
  static int *errno_address() {
    static __attribute__((tls_model("initial-exec"))) thread_local int *address = nullptr;
    if (__builtin_expect(address == nullptr, 0)) address = &errno;
    return address;
  }
  uint64_t old_ = 0;
  int *errno_at_;
  int errno_;
  bool blocked_;
};

} // namespace secmem
