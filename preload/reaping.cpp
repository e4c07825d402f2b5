// The wait calls. A fork child maps one of its parent's staging files until
// it is gone (allocator/README.md, fork), and only the kernel can say when:
// without word from here the heap asks it after every fork (a /proc read for
// a late seccomp filter, then waitid). A program that reaps its children
// says it itself: each wrapper reads the heap's fork count before the call
// and hands each child it reaped over with it after
// (secmem/internal/interpose.h). Async-signal-safe (SIGCHLD handlers reap),
// and errno is the call's.
#include <cerrno>
#include <csignal>

#include "shim.h"

namespace {

void note(pid_t pid, bool gone, unsigned long long forks_done_before) {
  if (pid <= 0 || !gone) return;
  int saved = errno;
  secmem_interpose_child_reaped(pid, forks_done_before);
  // Stored only if changed: errno is on a thread-local page that every fork
  // makes copy-on-write, and a store of the same value costs a page fault.
  if (errno != saved) errno = saved;
}

// A status that says the child is gone (not stopped, not continued).
bool ended(int status) { return WIFEXITED(status) || WIFSIGNALED(status); }

// The calls that return a pid and a status: call(status) with a status of
// its own when the caller gave none, and the child it reaped noted.
template <typename Call> pid_t reaping(int *status, Call call) {
  unsigned long long before = secmem_interpose_forks_done();
  int mine = 0;
  int *out = status != nullptr ? status : &mine;
  pid_t pid = call(out);
  note(pid, pid > 0 && ended(*out), before);
  return pid;
}

} // namespace

SHIM_API pid_t wait(int *status) {
  using namespace secmem::shim;
  auto real = next_fn(g_next.wait, "wait");
  return reaping(status, [real](int *out) { return real(out); });
}

SHIM_API pid_t waitpid(pid_t which, int *status, int options) {
  using namespace secmem::shim;
  auto real = next_fn(g_next.waitpid, "waitpid");
  return reaping(status, [=](int *out) { return real(which, out, options); });
}

SHIM_API pid_t wait3(int *status, int options, struct rusage *usage) {
  using namespace secmem::shim;
  auto real = next_fn(g_next.wait3, "wait3");
  return reaping(status, [=](int *out) { return real(out, options, usage); });
}

SHIM_API pid_t wait4(pid_t which, int *status, int options, struct rusage *usage) {
  using namespace secmem::shim;
  auto real = next_fn(g_next.wait4, "wait4");
  return reaping(status, [=](int *out) { return real(which, out, options, usage); });
}

// WNOWAIT leaves the child waitable: not reaped. The kernel fills the whole
// siginfo whenever it returns 0 (si_pid 0 with WNOHANG and no child ready);
// the caller's is not written here (it may not be writable: EFAULT, as
// glibc's).
SHIM_API int waitid(idtype_t type, id_t id, siginfo_t *info, int options) {
  using namespace secmem::shim;
  auto real = next_fn(g_next.waitid, "waitid");
  unsigned long long before = secmem_interpose_forks_done();
  siginfo_t mine{};
  siginfo_t *out = info != nullptr ? info : &mine;
  int rc = real(type, id, out, options);
  bool gone = rc == 0 && (options & WNOWAIT) == 0 &&
              (out->si_code == CLD_EXITED || out->si_code == CLD_KILLED || out->si_code == CLD_DUMPED);
  note(rc == 0 ? out->si_pid : 0, gone, before);
  return rc;
}
