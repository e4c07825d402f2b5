// Facts about Linux that the library, the tool, the benchmarks and the tests
// all need, written once. Header-only, no allocation, no exceptions: the
// allocator core includes it too.
#pragma once

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <fcntl.h>
#include <linux/capability.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "platform/raw_syscall.h"

namespace secmem::linux_facts {

// memfd_secret(2): 447 on x86_64 and arm64; glibc 2.36 has no wrapper.
#ifdef SYS_memfd_secret
inline constexpr long kSysMemfdSecret = SYS_memfd_secret;
#else
inline constexpr long kSysMemfdSecret = 447;
#endif

// CAP_IPC_LOCK's bit in the capability sets (RLIMIT_MEMLOCK does not apply with it).
inline constexpr int kCapIpcLock = CAP_IPC_LOCK;

// A memfd_secret file descriptor (O_CLOEXEC), or -1 with errno set.
inline int memfd_secret_fd() { return static_cast<int>(syscall(kSysMemfdSecret, O_CLOEXEC)); }

// Whether this process has CAP_IPC_LOCK in its effective set.
inline bool has_cap_ipc_lock() {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2]{};
  if (syscall(SYS_capget, &header, data) != 0) return false;
  return (data[kCapIpcLock / 32].effective & (1u << (kCapIpcLock % 32))) != 0;
}

// Symbolic name of an errno value that memory and file calls return ("EPERM"), or "errno".
inline const char *errno_name(int errnum) {
  switch (errnum) {
  case ENOSYS: return "ENOSYS";
  case EPERM: return "EPERM";
  case EACCES: return "EACCES";
  case EAGAIN: return "EAGAIN";
  case ENOMEM: return "ENOMEM";
  case EMFILE: return "EMFILE";
  case ENFILE: return "ENFILE";
  case EFAULT: return "EFAULT";
  case EINVAL: return "EINVAL";
  case EIO: return "EIO";
  case EFBIG: return "EFBIG";
  case ENOENT: return "ENOENT";
  case ESRCH: return "ESRCH";
  case EBADF: return "EBADF";
  case ENODEV: return "ENODEV";
  case EEXIST: return "EEXIST";
  case ENOSPC: return "ENOSPC";
  case EISDIR: return "EISDIR";
  case ENXIO: return "ENXIO";
  case EROFS: return "EROFS";
  case ENOTDIR: return "ENOTDIR";
  case EDQUOT: return "EDQUOT";
  case EPIPE: return "EPIPE";
  default: return "errno";
  }
}

// Up to len bytes of a small file (a /proc file: read in one call) into buf:
// the bytes read, or -1. Raw open/read/close system calls: safe inside
// malloc and in fork handlers, and not cancellation points.
inline long read_small_file(const char *file, char *buf, size_t len) {
  int fd = static_cast<int>(syscall(SYS_openat, AT_FDCWD, file, O_RDONLY | O_CLOEXEC));
  if (fd < 0) return -1;
  long n;
  int tries = 0; // bounded as os::raw_call_retrying; libc's call: the static analyzer sees it fill buf
  do n = syscall(SYS_read, fd, buf, len);
  while (n < 0 && errno == EINTR && ++tries < os::kEintrRetries);
  syscall(SYS_close, fd);
  return n;
}

// Numeric fields of a status file in one read ("VmLck:" in kB, "Seccomp:"...):
// values[i] for names[i]. Returns a bit per field found (bit i: names[i]),
// or -1 when the file cannot be read. Raw open/read/close system calls: safe
// inside malloc, and not cancellation points (a thread cancelled here would
// leave the heap or start-up lock it holds taken for good).
inline int status_numbers(const char *file, const char *const names[], size_t values[], int count) {
  char buf[4096];
  long n = read_small_file(file, buf, sizeof buf - 1);
  if (n <= 0) return -1;
  buf[n] = '\0';
  int found = 0;
  for (const char *line = buf; *line != '\0';) {
    for (int k = 0; k < count; ++k) {
      const char *name = names[k];
      size_t len = 0;
      while (name[len] != '\0' && line[len] == name[len]) ++len;
      if (name[len] != '\0' || line[len] != ':') continue;
      const char *v = line + len + 1;
      while (*v == ' ' || *v == '\t') ++v;
      size_t number = 0;
      while (*v >= '0' && *v <= '9') number = number * 10 + static_cast<size_t>(*v++ - '0');
      values[k] = number;
      found |= 1 << k;
    }
    while (*line != '\0' && *line != '\n') ++line;
    if (*line == '\n') ++line;
  }
  return found;
}

// One numeric field of /proc/self/status; false when it cannot be read.
inline bool status_number(const char *name, size_t *value) {
  int found = status_numbers("/proc/self/status", &name, value, 1);
  return found > 0;
}

// A "Name:   <number> kB" field of /proc/self/status in bytes; 0 when it cannot be read.
inline size_t status_kib_field_bytes(const char *name) {
  size_t kib = 0;
  return status_number(name, &kib) ? kib * 1024 : 0;
}

// Bytes this process has locked (VmLck), which RLIMIT_MEMLOCK counts.
inline size_t vmlck_bytes() { return status_kib_field_bytes("VmLck"); }

// The seccomp filters in force on the calling thread (filters are per
// thread): Seccomp: 2 and their count, from /proc/thread-self/status.
struct SeccompState {
  bool known = false;           // /proc/self/status was readable
  bool filtered = false;        // Seccomp: 2 (filter mode) or 1 (strict)
  size_t filters = 0;           // Seccomp_filters:
  bool filters_counted = false; // the kernel has that line (5.9 and later); else filters is 1 under any filter
  // Not known for want of a descriptor or memory (EMFILE, ENFILE, ENOMEM):
  // nothing is learned either way, and nothing changed that says a sandbox.
  bool for_now = false;
};
inline SeccompState seccomp_state() {
  SeccompState state;
  const char *const names[] = {"Seccomp", "Seccomp_filters"};
  size_t values[] = {0, 0};
  errno = 0;
  int found = status_numbers("/proc/thread-self/status", names, values, 2);
  state.for_now = found < 0 && (errno == EMFILE || errno == ENFILE || errno == ENOMEM);
  state.known = found > 0 && (found & 1) != 0;
  state.filtered = state.known && values[0] != 0;
  state.filters_counted = found > 0 && (found & 2) != 0;
  state.filters = state.filters_counted ? values[1] : state.filtered ? 1 : 0;
  return state;
}

// membarrier(2) commands (linux/membarrier.h): a full barrier on every
// running thread of the process, after registering once.
inline constexpr int kMembarrierPrivateExpedited = 1 << 3;
inline constexpr int kMembarrierRegisterPrivateExpedited = 1 << 4;

// mlock2(2)'s MLOCK_ONFAULT (linux/mman.h): lock pages as they are faulted
// in, and those in memory now, without populating the range.
inline constexpr unsigned kMlockOnFault = 1;

// System calls a seccomp filter may kill on, tried in a short-lived child.
enum class ProbeCall { kMemfdSecret, kMlock, kMembarrier, kDumpable, kWaitid, kMlockOnFault };
inline constexpr int kProbeCalls = static_cast<int>(ProbeCall::kMlockOnFault) + 1;
enum class ProbeOutcome {
  kWorked,  // the call succeeded
  kRefused, // it failed with an errno (a filter's SECCOMP_RET_ERRNO, or the kernel)
  kKilled,  // the child died of it: a filter kills on it (SIGSYS, or any other signal)
  kNoChild, // no child could be had or waited for: nothing is known
};

// Makes call in a child (a raw clone: no fork handlers run, the child makes
// raw system calls only, and it sends no SIGCHLD, so the program's own
// handler and waitpid(-1) never see it) and reports how it ended.
inline ProbeOutcome probe_in_child(ProbeCall call) {
  long pid = syscall(SYS_clone, 0, 0, 0, 0, 0);
  if (pid < 0) return ProbeOutcome::kNoChild;
  if (pid == 0) {
    long result = 0;
    if (call == ProbeCall::kMemfdSecret) {
      result = syscall(kSysMemfdSecret, O_CLOEXEC);
    } else if (call == ProbeCall::kMembarrier) {
      result = syscall(SYS_membarrier, kMembarrierRegisterPrivateExpedited, 0, 0);
    } else if (call == ProbeCall::kDumpable) {
      result = syscall(SYS_prctl, PR_SET_DUMPABLE, 0, 0, 0, 0);
    } else if (call == ProbeCall::kMlockOnFault) {
      alignas(4096) static char page[4096];
      result = syscall(SYS_mlock2, page, sizeof page, kMlockOnFault);
    } else if (call == ProbeCall::kWaitid) {
      siginfo_t info{};
      result = syscall(SYS_waitid, P_ALL, 0, &info, WEXITED | WNOHANG, nullptr);
      if (result < 0 && errno == ECHILD) result = 0; // no child of its own: the call went through
    } else {
      alignas(4096) static char page[4096];
      result = syscall(SYS_mlock, page, sizeof page);
    }
    syscall(SYS_exit_group, result < 0 ? 1 : 0);
  }
  int status = 0;
  long waited;
  do waited = syscall(SYS_wait4, pid, &status, __WCLONE, nullptr);
  while (waited < 0 && errno == EINTR);
  if (waited < 0) return ProbeOutcome::kNoChild;
  if (WIFSIGNALED(status)) return ProbeOutcome::kKilled;
  return WEXITSTATUS(status) == 0 ? ProbeOutcome::kWorked : ProbeOutcome::kRefused;
}

// The mapping name the kernel gives memfd_secret pages in /proc/PID/maps.
inline constexpr const char *kSecretMapName = "/secretmem (deleted)";

} // namespace secmem::linux_facts
