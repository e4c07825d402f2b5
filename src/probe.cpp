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
  probe.advice = probe_advice(probe);
  probe.notes = probe_notes(probe);
  return probe;
}

int cmd_probe(bool json) {
  ProbeReport probe = run_probe();
  print_probe(probe, json);
  return probe.secret_errno == 0 ? 0 : 1;
}

} // namespace secmem::tool
