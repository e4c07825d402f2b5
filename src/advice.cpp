// What `secmem probe` tells the user to change, from what it found, and the
// words for limits and errnos. Kept apart (in the tool library, with no JSON)
// so that every kernel and errno case is tested without that kernel.
#include <cerrno>
#include <cstdio>
#include <string>
#include <vector>

#include "output.h"

namespace secmem::tool {

namespace {

// "6.1.0-28-amd64" -> 6 * 1000 + 1; 0 when unreadable.
int kernel_version(const std::string &release) {
  int major = 0, minor = 0;
  if (sscanf(release.c_str(), "%d.%d", &major, &minor) != 2) return 0;
  return major * 1000 + minor;
}

} // namespace

std::string limit_text(rlim_t value) { return value == RLIM_INFINITY ? "unlimited" : std::to_string(value) + " bytes"; }

std::string errno_text(int err) {
  std::string name = linux_facts::errno_name(err);
  return name == "errno" ? "errno " + std::to_string(err) : name;
}

std::vector<std::string> probe_advice(const ProbeReport &probe) {
  std::vector<std::string> advice;
  int version = kernel_version(probe.kernel);
  switch (probe.secret_errno) {
  case 0: break;
  case ENOSYS:
    if (probe.seccomp_mode == 2)
      advice.push_back("memfd_secret answered ENOSYS under a seccomp filter: the filter may be what refuses it "
                       "(syscall " +
                       std::to_string(linux_facts::kSysMemfdSecret) + " on x86_64)");
    if (version != 0 && version < 5014)
      advice.push_back("Linux " + probe.kernel + " has no memfd_secret: it came in Linux 5.14");
    else if (version != 0 && version < 6005)
      advice.push_back("Linux " + probe.kernel + " keeps memfd_secret off unless booted with secretmem.enable=1 " +
                       "(Debian 12's 6.1 kernel has it built in): add it to GRUB_CMDLINE_LINUX in " +
                       "/etc/default/grub, run update-grub and reboot");
    else
      advice.push_back(std::string(probe.seccomp_mode == 2 ? "if not the filter, " : "") +
                       "this kernel has no memfd_secret: it needs CONFIG_SECRETMEM (and, on 5.14 to 6.4, "
                       "secretmem.enable=1 on the kernel command line)");
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
    if (probe.cap_ipc_lock) {
      advice.push_back("memfd_secret failed with " + errno_text(probe.secret_errno) + " at " + probe.secret_step +
                       " although RLIMIT_MEMLOCK does not apply here (CAP_IPC_LOCK): the machine is short of "
                       "memory" +
                       (probe.seccomp_mode == 2 ? ", or the seccomp filter answers so" : ""));
      break;
    }
    advice.push_back("the RLIMIT_MEMLOCK budget is spent: raise it (ulimit -l; LimitMEMLOCK=48M in a systemd unit, "
                     "which `secmem systemd UNIT` prints; --ulimit memlock= for docker) or grant CAP_IPC_LOCK");
    break;
  default: advice.push_back("memfd_secret failed at " + probe.secret_step + " with " + errno_text(probe.secret_errno));
  }
  if (probe.secret_errno == 0 && !probe.cap_ipc_lock && probe.memlock.rlim_cur != RLIM_INFINITY &&
      probe.memlock.rlim_cur < (rlim_t{8} << 20))
    advice.push_back("RLIMIT_MEMLOCK is small (" + limit_text(probe.memlock.rlim_cur) +
                     "): every secret byte counts against it; secmem falls back (or fails, with "
                     "SECMEM_ON_EXHAUSTION=fail) once it is spent; for a service, LimitMEMLOCK=48M holds a 16M "
                     "secret heap and its fork copies (`secmem systemd UNIT` prints the drop-in)");
  return advice;
}

std::vector<std::string> probe_notes(const ProbeReport &probe) {
  std::vector<std::string> notes;
  if (probe.secret_errno == 0)
    notes.push_back("while any process holds secret memory the kernel refuses to hibernate (suspend to disk; "
                    "suspend to RAM is not affected)");
  return notes;
}

} // namespace secmem::tool
