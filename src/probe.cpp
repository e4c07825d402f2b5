// secmem probe: whether memfd_secret works for this process, what stands in its way, and the lock budget.
#include <cerrno>
#include <cstdlib>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "commands.h"
#include "output.h"
#include "platform/linux_facts.h"

namespace secmem::tool {

namespace {

// Tries what the heap does for one page: memfd_secret, ftruncate, mmap, first
// touch. Under a seccomp filter memfd_secret is first tried in a short-lived
// child: a filter that kills on it must not kill the probe.
int try_secret_page(std::string *step, bool *killed) {
  *step = "memfd_secret";
  if (linux_facts::seccomp_state().filtered &&
      linux_facts::probe_in_child(linux_facts::ProbeCall::kMemfdSecret) == linux_facts::ProbeOutcome::kKilled) {
    *killed = true;
    return EPERM;
  }
  int fd = linux_facts::memfd_secret_fd();
  if (fd < 0) return errno;
  int err = 0;
  *step = "ftruncate";
  if (ftruncate(fd, 4096) != 0) err = errno;
  void *page = MAP_FAILED;
  if (err == 0) {
    *step = "mmap";
    page = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (page == MAP_FAILED) err = errno;
  }
  if (err == 0) {
    *step = "first touch";
    int zero = open("/dev/zero", O_RDONLY | O_CLOEXEC);
    if (zero >= 0 && read(zero, page, 4096) != 4096) err = errno;
    if (zero >= 0) close(zero);
  }
  if (page != MAP_FAILED) munmap(page, 4096);
  close(fd);
  return err;
}

std::vector<std::string> advice_for(const ProbeReport &probe) {
  std::vector<std::string> advice;
  switch (probe.secret_errno) {
  case 0: break;
  case ENOSYS:
    advice.push_back("this kernel has no memfd_secret: it needs Linux 5.14 or later built with CONFIG_SECRETMEM "
                     "(and, on 5.14 to 6.4, secretmem.enable=1 on the kernel command line)");
    break;
  case EPERM:
  case EACCES:
    if (probe.secret_killed)
      advice.push_back("a seccomp filter here kills on memfd_secret (syscall " +
                       std::to_string(linux_facts::kSysMemfdSecret) +
                       " on x86_64, SIGSYS): secmem does not call it and falls back; allow it in the filter "
                       "(systemd: SystemCallFilter=memfd_secret, or SystemCallErrorNumber=EPERM)");
    else if (probe.seccomp_mode == 2)
      advice.push_back("a seccomp filter refuses memfd_secret (syscall " +
                       std::to_string(linux_facts::kSysMemfdSecret) +
                       " on x86_64), as many container runtimes' default profiles do: allow it in the profile "
                       "(docker/podman: --security-opt seccomp=FILE)");
    else
      advice.push_back("memfd_secret was refused (EPERM) without a seccomp filter here: check LSM policies "
                       "(SELinux, AppArmor)");
    break;
  case EAGAIN:
  case ENOMEM:
  case EFAULT:
    advice.push_back("the RLIMIT_MEMLOCK budget is spent: raise it (ulimit -l, LimitMEMLOCK= in a systemd unit, "
                     "--ulimit memlock= for docker) or grant CAP_IPC_LOCK");
    break;
  default: advice.push_back("memfd_secret failed at " + probe.secret_step + " with " + errno_text(probe.secret_errno));
  }
  if (probe.secret_errno == 0 && !probe.cap_ipc_lock && probe.memlock.rlim_cur != RLIM_INFINITY &&
      probe.memlock.rlim_cur < (rlim_t{8} << 20))
    advice.push_back("RLIMIT_MEMLOCK is small (" + limit_text(probe.memlock.rlim_cur) +
                     "): every secret byte counts against it; secmem falls back (or fails, with "
                     "SECMEM_ON_EXHAUSTION=fail) once it is spent");
  return advice;
}

} // namespace

ProbeReport run_probe() {
  ProbeReport probe;
  utsname name{};
  uname(&name);
  probe.kernel = name.release;
  probe.secret_errno = try_secret_page(&probe.secret_step, &probe.secret_killed);
  probe.seccomp_mode = atoi(read_status(getpid())["Seccomp"].c_str());
  probe.locked_now = linux_facts::vmlck_bytes();
  probe.cap_ipc_lock = linux_facts::has_cap_ipc_lock();
  getrlimit(RLIMIT_MEMLOCK, &probe.memlock);
  bool budget = probe.cap_ipc_lock || probe.memlock.rlim_cur == RLIM_INFINITY ||
                probe.memlock.rlim_cur >= probe.locked_now + 4096;
  probe.auto_backend = probe.secret_errno == 0 ? "memfd_secret" : budget ? "mlock" : "unlocked";
  probe.advice = advice_for(probe);
  return probe;
}

int cmd_probe(bool json) {
  ProbeReport probe = run_probe();
  print_probe(probe, json);
  return probe.secret_errno == 0 ? 0 : 1;
}

} // namespace secmem::tool
