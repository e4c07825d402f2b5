// I/O on secret buffers: clear errors. The kernel refuses to pin memfd_secret
// pages, so calls that pin their user buffer (O_DIRECT reads and writes,
// vmsplice, MSG_ZEROCOPY sends) fail with EFAULT, "Bad address", on a
// perfectly good address. These wrappers pass every call through unchanged;
// only when one fails with EFAULT on a secret buffer do they say why, once
// per call name, and leave errno as it was. Their next functions are resolved
// at start-up (next.cpp), never at a first call from a signal handler.
#include <cerrno>
#include <climits>
#include <fcntl.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include "platform/diag.h"
#include "shim.h"

using namespace secmem;
using namespace secmem::shim;

namespace {

enum IoCall { kRead, kWrite, kVmsplice, kSend, kNumIoCalls };
std::atomic<bool> g_io_explained[kNumIoCalls];

const char *why_refused(IoCall call, int fd) {
  switch (call) {
  case kRead:
  case kWrite: {
    int flags = fcntl(fd, F_GETFL);
    if (flags >= 0 && (flags & O_DIRECT) != 0)
      return "failed with EFAULT: the file is open with O_DIRECT, which pins the buffer's pages, and memfd_secret "
             "pages cannot be pinned; use an ordinary buffer for direct I/O and copy the bytes";
    return "failed with EFAULT (the kernel could not pin or reach the secret pages)";
  }
  case kVmsplice:
    return "failed with EFAULT: vmsplice pins the pages, and memfd_secret pages cannot be pinned; use write()";
  case kSend:
  case kNumIoCalls: break;
  }
  return "failed with EFAULT: MSG_ZEROCOPY pins the pages, and memfd_secret pages cannot be pinned; send without "
         "MSG_ZEROCOPY";
}

[[gnu::noinline]] void explain(IoCall call, const char *name, int fd, const void *buf) {
  int saved = errno;
  if (!g_io_explained[call].exchange(true)) {
    diag::Line()
        .add(name)
        .add(call == kRead ? " into secret memory at " : " from secret memory at ")
        .hex(reinterpret_cast<uintptr_t>(buf))
        .emit();
    diag::Line("secmem:   ").add(why_refused(call, fd)).emit();
  }
  errno = saved;
}

inline ssize_t explained(ssize_t result, IoCall call, const char *name, int fd, const void *buf) {
  if (__builtin_expect(result < 0, 0) && errno == EFAULT && is_secret(buf)) explain(call, name, fd, buf);
  return result;
}

} // namespace

SHIM_API ssize_t read(int fd, void *buf, size_t n) {
  return explained(next_fn(g_next.read, "read")(fd, buf, n), kRead, "read", fd, buf);
}

SHIM_API ssize_t write(int fd, const void *buf, size_t n) {
  return explained(next_fn(g_next.write, "write")(fd, buf, n), kWrite, "write", fd, buf);
}

SHIM_API ssize_t pread64(int fd, void *buf, size_t n, off_t offset) {
  return explained(next_fn(g_next.pread64, "pread64")(fd, buf, n, offset), kRead, "pread", fd, buf);
}

SHIM_API ssize_t pwrite64(int fd, const void *buf, size_t n, off_t offset) {
  return explained(next_fn(g_next.pwrite64, "pwrite64")(fd, buf, n, offset), kWrite, "pwrite", fd, buf);
}

// The same under their other names (off_t is 64-bit on the 64-bit targets we
// build for; this file's own headers map pread to pread64, hence asm labels).
SHIM_API ssize_t shim_pread(int fd, void *buf, size_t n, off_t offset) __asm__("pread");
SHIM_API ssize_t shim_pwrite(int fd, const void *buf, size_t n, off_t offset) __asm__("pwrite");
ssize_t shim_pread(int fd, void *buf, size_t n, off_t offset) { return pread64(fd, buf, n, offset); }
ssize_t shim_pwrite(int fd, const void *buf, size_t n, off_t offset) { return pwrite64(fd, buf, n, offset); }

// The EFAULT may be the iovec array's own (NULL, unmapped): its entries are
// read through the kernel (process_vm_readv of this process), which fails
// where a load would fault, a few at a time.
SHIM_API ssize_t vmsplice(int fd, const struct iovec *iov, unsigned long count, unsigned int flags) {
  ssize_t result = next_fn(g_next.vmsplice, "vmsplice")(fd, iov, count, flags);
  if (__builtin_expect(result >= 0 || errno != EFAULT, 1)) return result;
  int saved = errno;
  pid_t self = static_cast<pid_t>(syscall(SYS_getpid));
  for (unsigned long done = 0; done < count && count <= IOV_MAX;) {
    struct iovec entries[16];
    unsigned long n = count - done < 16 ? count - done : 16;
    struct iovec local = {entries, n * sizeof(struct iovec)};
    struct iovec remote = {const_cast<struct iovec *>(iov + done), n * sizeof(struct iovec)};
    if (syscall(SYS_process_vm_readv, self, &local, 1, &remote, 1, 0) != static_cast<long>(local.iov_len)) break;
    bool found = false;
    for (unsigned long i = 0; i < n && !found; ++i)
      if (is_secret(entries[i].iov_base)) {
        explain(kVmsplice, "vmsplice", fd, entries[i].iov_base);
        found = true;
      }
    if (found) break;
    done += n;
  }
  errno = saved;
  return result;
}

SHIM_API ssize_t send(int fd, const void *buf, size_t n, int flags) {
  return explained(next_fn(g_next.send, "send")(fd, buf, n, flags), kSend, "send", fd, buf);
}
