// Facts about Linux that the library, the tool, the benchmarks and the tests
// all need, written once. Header-only, no allocation, no exceptions: the
// allocator core includes it too.
#pragma once

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <fcntl.h>
#include <linux/capability.h>
#include <sys/syscall.h>
#include <unistd.h>

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
  case ENOENT: return "ENOENT";
  case ESRCH: return "ESRCH";
  default: return "errno";
  }
}

// A "Name:   <number> kB" field of /proc/self/status in bytes (VmLck, VmRSS...);
// 0 when it cannot be read. Reads with open/read only: safe inside malloc.
inline size_t status_kib_field_bytes(const char *name) {
  int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  char buf[4096];
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return 0;
  buf[n] = '\0';
  size_t name_len = 0;
  while (name[name_len] != '\0') ++name_len;
  for (const char *line = buf; *line != '\0';) {
    bool match = true;
    for (size_t i = 0; i < name_len && match; ++i) match = line[i] == name[i];
    if (match && line[name_len] == ':') {
      const char *v = line + name_len + 1;
      while (*v == ' ' || *v == '\t') ++v;
      size_t kib = 0;
      while (*v >= '0' && *v <= '9') kib = kib * 10 + static_cast<size_t>(*v++ - '0');
      return kib * 1024;
    }
    while (*line != '\0' && *line != '\n') ++line;
    if (*line == '\n') ++line;
  }
  return 0;
}

// Bytes this process has locked (VmLck), which RLIMIT_MEMLOCK counts.
inline size_t vmlck_bytes() { return status_kib_field_bytes("VmLck"); }

// The mapping name the kernel gives memfd_secret pages in /proc/PID/maps.
inline constexpr const char *kSecretMapName = "/secretmem (deleted)";

} // namespace secmem::linux_facts
