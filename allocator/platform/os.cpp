// Linux system calls, and what each of their errors means to the heap.
//
// | call                  | errno                    | meaning for the heap                         |
// |-----------------------|--------------------------|----------------------------------------------|
// | memfd_secret          | ENOSYS, EPERM, EACCES    | tier refused for good: fall back (policy)     |
// | memfd_secret          | EMFILE, ENFILE, ENOMEM   | this chunk fails: fall back for this chunk    |
// | ftruncate (secret fd) | any                      | this chunk fails                              |
// | (RLIMIT_FSIZE < len)  | EFBIG, before ftruncate  | this chunk fails (ftruncate would SIGXFSZ)    |
// | mmap (secret, FIXED)  | EAGAIN                   | RLIMIT_MEMLOCK budget spent (pre-7.3 kernels) |
// | mmap (secret, FIXED)  | ENOMEM, others           | this chunk fails                              |
// | mmap (anon, FIXED)    | any                      | allocation fails: NULL/ENOMEM                 |
// | mlock                 | any                      | locked budget spent: unlocked tier (policy)   |
// | read(/dev/zero) touch | EFAULT                   | page refused at first touch (7.3+ kernels)    |
// | mmap PROT_NONE FIXED  | ENOMEM (map count)       | mprotect PROT_NONE (pages held); child: unmap |
// | munmap                | unexpected               | fatal in fork paths (see heap.cpp)            |
// | mprotect              | ENOMEM                   | mapping count limit: no guard / seal fails    |
#include "platform/os.h"

#include <atomic>

#include <cerrno>
#include <climits>
#include <csignal>
#include <cstring>
#include <ctime>
#include <dlfcn.h>
#include <fcntl.h>
#include <link.h>
#include <poll.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "platform/checkers.h"
#include "platform/diag.h"
#include "platform/linux_facts.h"
#include "platform/raw_syscall.h"

namespace secmem::os {

void *reserve(size_t len) {
  void *p = mmap(nullptr, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  return p == MAP_FAILED ? nullptr : p;
}

// The calls a fork child makes on its heap (release_to_reserve, reserve_at,
// map_fd_fixed, protect) are raw system calls (raw_syscall.h): libc's mmap,
// munmap and mprotect were one more page fault in every child.
namespace {
long raw_mmap(void *addr, size_t len, int prot, int flags, int fd, size_t offset) {
#if defined(__x86_64__) || defined(__aarch64__)
  return raw_call(SYS_mmap, addr, len, prot, flags, fd, offset);
#else // SYS_mmap takes other arguments there (s390x, i386) or is missing (32-bit arm): libc's
  void *p = mmap(addr, len, prot, flags, fd, static_cast<off_t>(offset));
  return p == MAP_FAILED ? -errno : reinterpret_cast<long>(p);
#endif
}
bool raw_failed(long result) { return result < 0 && result > -4096; } // -errno, not an address
} // namespace

bool reserve_at(void *addr, size_t len) {
  long p = raw_mmap(addr, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0);
  if (raw_failed(p)) return false;
  if (reinterpret_cast<void *>(p) == addr) return true;
  raw_call(SYS_munmap, p, len); // a kernel before 4.17 takes the flag as a hint
  return false;
}

SECMEM_FORK_CHILD_TEXT Released release_to_reserve(void *addr, size_t len, bool may_unmap) {
  long p = raw_mmap(addr, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0);
  if (!raw_failed(p)) return Released::kReserved;
  if (!may_unmap) return protect(addr, len, PROT_NONE) == 0 ? Released::kProtected : Released::kUnchanged;
  if (raw_call(SYS_munmap, addr, len) != 0) return Released::kUnchanged;
  return reserve_at(addr, len) ? Released::kReserved : Released::kHole;
}

// ftruncate past RLIMIT_FSIZE raises SIGXFSZ, which kills: OpenSSH's
// sandboxed child sets the limit to 0. Such a file is refused with EFBIG first.
static bool within_file_size_limit(size_t len) {
  rlimit lim{};
  return getrlimit(RLIMIT_FSIZE, &lim) != 0 || lim.rlim_cur == RLIM_INFINITY || lim.rlim_cur >= len;
}

static int secret_fd(size_t len, int *out_fd) {
  if (!within_file_size_limit(len)) return EFBIG;
  int fd = linux_facts::memfd_secret_fd();
  if (fd < 0) return errno;
  if (ftruncate(fd, static_cast<off_t>(len)) != 0) {
    int err = errno;
    syscall(SYS_close, fd);
    return err;
  }
  *out_fd = fd;
  return 0;
}

static int map_secret(void *hint, size_t len, int flags, void **out, int *keep_fd = nullptr) {
  int fd = -1;
  if (int err = secret_fd(len, &fd)) return err;
  void *p = mmap(hint, len, PROT_READ | PROT_WRITE, MAP_SHARED | flags, fd, 0);
  int err = p == MAP_FAILED ? errno : 0;
  if (err == 0 && keep_fd != nullptr) {
    *keep_fd = fd;
  } else {
    syscall(SYS_close, fd);
  }
  if (err == 0) *out = p;
  return err;
}

int map_secret_fixed(void *addr, size_t len) {
  void *p = nullptr;
  return map_secret(addr, len, MAP_FIXED, &p);
}

int map_secret_anywhere_with_fd(size_t len, void **out, int *fd) { return map_secret(nullptr, len, 0, out, fd); }

SECMEM_FORK_CHILD_TEXT int map_fd_fixed(int fd, void *addr, size_t len, size_t offset) {
  long p = raw_mmap(addr, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, offset);
  return raw_failed(p) ? static_cast<int>(-p) : 0;
}

int map_anon_fixed(void *addr, size_t len) {
  void *p = mmap(addr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
  if (p == MAP_FAILED) return ENOMEM;
  madvise(p, len, MADV_DONTDUMP);
  return 0;
}

// The raw syscall: sanitizer runtimes intercept mlock() and make it a no-op.
int lock_range(void *addr, size_t len) { return syscall(SYS_mlock, addr, len) == 0 ? 0 : errno; }

SECMEM_FORK_CHILD_TEXT int lock_range_on_fault(void *addr, size_t len) {
  return syscall(SYS_mlock2, addr, len, linux_facts::kMlockOnFault) == 0 ? 0 : errno;
}

namespace {
int touch_through_kernel(void *addr, size_t len, int zero_fd) {
  if (zero_fd < 0) {
    // No /dev (a bare chroot): touch from user space. Only kernels that charge
    // at first touch can then raise SIGBUS, and only past the memlock budget.
    std::memset(addr, 0, len);
    return 0;
  }
  char *p = static_cast<char *>(addr);
  while (len > 0) {
    ssize_t n = syscall(SYS_read, zero_fd, p, len); // raw: sanitizers must not check the (poisoned) target
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return n < 0 ? errno : EIO;
    p += n;
    len -= static_cast<size_t>(n);
  }
  return 0;
}

} // namespace

ZeroSource::~ZeroSource() {
  if (fd_ >= 0) syscall(SYS_close, fd_);
}

int ZeroSource::touch(void *addr, size_t len) {
  if (fd_ == -2) fd_ = static_cast<int>(syscall(SYS_openat, AT_FDCWD, "/dev/zero", O_RDONLY | O_CLOEXEC));
  return touch_through_kernel(addr, len, fd_);
}

int touch_through_kernel(void *addr, size_t len) {
  ZeroSource zero;
  return zero.touch(addr, len);
}

void unmap(void *addr, size_t len) { munmap(addr, len); }

void sleep_us(long us) {
  timespec ts{0, us * 1000};
  syscall(SYS_nanosleep, &ts, nullptr);
}

int register_thread_barrier() {
  return syscall(SYS_membarrier, linux_facts::kMembarrierRegisterPrivateExpedited, 0, 0) == 0 ? 0 : errno;
}

void barrier_all_threads() {
  if (syscall(SYS_membarrier, linux_facts::kMembarrierPrivateExpedited, 0, 0) == 0) return;
  // Lowering the protection of a present page flushes it from every CPU that
  // runs this process, by interrupt on x86: each such CPU is serialised.
  alignas(kPageSize) static char page[kPageSize];
  mprotect(page, kPageSize, PROT_READ | PROT_WRITE);
  *static_cast<volatile char *>(page) = 1;
  mprotect(page, kPageSize, PROT_READ);
}

int secret_file(size_t len, int *fd) { return secret_fd(len, fd); }

int map_fd_not_inherited(int fd, size_t len, void **out) {
  void *p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return errno;
  if (madvise(p, len, MADV_DONTFORK) != 0) {
    int err = errno;
    munmap(p, len);
    return err;
  }
  *out = p;
  return 0;
}

int pages_in_memory(void *addr, size_t len, unsigned char *vec) { return mincore(addr, len, vec) == 0 ? 0 : errno; }

ChildState child_state(int pid) {
  siginfo_t info{};
  long rc;
  do rc = syscall(SYS_waitid, P_PID, pid, &info, WEXITED | WNOHANG | WNOWAIT, nullptr);
  while (rc < 0 && errno == EINTR);
  if (rc != 0) return errno == ECHILD ? ChildState::kGone : ChildState::kUnknown;
  return info.si_pid == pid ? ChildState::kGone : ChildState::kRunning;
}

SECMEM_FORK_CHILD_TEXT FileId file_id(int fd) {
  struct stat st {};
  // newfstatat, as fstat(3) makes it, with the empty path on the stack: a
  // fork child calls this, and each page of libc it reads for the first
  // time (fstat's code, its "" in libc's read-only data) is a page fault in
  // the child (raw_syscall.h).
  char empty_path[1] = {'\0'};
  if (fd < 0 || raw_call(SYS_newfstatat, fd, empty_path, &st, AT_EMPTY_PATH) != 0) return FileId{};
  return FileId{static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino)};
}

int make_pipe(int fds[2]) { return syscall(SYS_pipe2, fds, O_CLOEXEC) == 0 ? 0 : errno; }

int make_message_pipe(int fds[2]) { return syscall(SYS_pipe2, fds, O_CLOEXEC | O_NONBLOCK) == 0 ? 0 : errno; }

uint64_t pid_namespace_id() {
  struct stat st {};
  char path[] = "/proc/self/ns/pid";
  if (raw_call(SYS_newfstatat, AT_FDCWD, path, &st, 0) != 0) return 0;
  return static_cast<uint64_t>(st.st_ino);
}

int make_message_socket(int fds[2]) {
  return syscall(SYS_socketpair, AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) == 0 ? 0 : errno;
}

namespace {
// A fork child's write to its parent: where the parent has closed its end
// (it could not wait: keep_unwaited, chunks/fork.cpp), the write's SIGPIPE,
// pending while the handlers block every signal, is taken back instead of
// killing the child once they end. A child's pending signals start empty,
// so one pending now is the write's. (A filter that kills on
// rt_sigtimedwait kills the child, as the signal would have.)
SECMEM_FORK_CHILD_TEXT void write_to_parent(int fd, const void *data, size_t len) {
  if (raw_call_retrying(SYS_write, fd, data, len) != -EPIPE) return;
  uint64_t pipe_signal = uint64_t{1} << (SIGPIPE - 1);
  timespec now{};
  raw_call(SYS_rt_sigtimedwait, &pipe_signal, nullptr, &now, sizeof pipe_signal);
}
} // namespace

SECMEM_FORK_CHILD_TEXT void send_message(int fd, const void *msg, size_t len) { write_to_parent(fd, msg, len); }

size_t take_messages(int fd, void *buf, size_t len) {
  long n = raw_call_retrying(SYS_read, fd, buf, len);
  return n > 0 ? static_cast<size_t>(n) : 0;
}

void send_byte(int fd) {
  char byte = 1;
  write_to_parent(fd, &byte, 1);
}

bool await_byte(int fd) {
  char byte = 0;
  if (raw_call_retrying(SYS_read, fd, &byte, 1) >= 0) return true;
  pollfd watch{fd, POLLIN, 0};
  return raw_call_retrying(SYS_ppoll, &watch, 1, nullptr, nullptr, size_t{8}) > 0;
}

Awaited await_byte_for(int fd, int ms) {
  timespec end{};
  clock_gettime(CLOCK_MONOTONIC, &end);
  end.tv_sec += ms / 1000;
  end.tv_nsec += static_cast<long>(ms % 1000) * 1000000;
  if (end.tv_nsec >= 1000000000) end.tv_sec++, end.tv_nsec -= 1000000000;
  for (;;) {
    timespec now{}, left{};
    clock_gettime(CLOCK_MONOTONIC, &now);
    left.tv_sec = end.tv_sec - now.tv_sec;
    left.tv_nsec = end.tv_nsec - now.tv_nsec;
    if (left.tv_nsec < 0) left.tv_sec--, left.tv_nsec += 1000000000;
    if (left.tv_sec < 0) return Awaited::kNothing;
    pollfd watch{fd, POLLIN, 0};
    long ready = syscall(SYS_ppoll, &watch, 1, &left, nullptr, size_t{8});
    if (ready > 0) {
      char byte = 0;
      long got;
      do got = syscall(SYS_read, fd, &byte, 1);
      while (got < 0 && errno == EINTR);
      return got == 1 ? Awaited::kByte : Awaited::kEnd;
    }
    if (ready == 0 || errno != EINTR) return Awaited::kNothing;
  }
}

SECMEM_FORK_CHILD_TEXT void close_fd(int fd) { raw_call(SYS_close, fd); }

int protect(void *addr, size_t len, int prot) { return static_cast<int>(-raw_call(SYS_mprotect, addr, len, prot)); }

// Copies that no checker sees: one string instruction on x86-64 (`rep
// movsb`/`stosb`: as fast as memcpy for whole pages, and a fork copies up to
// megabytes with the heap frozen), elsewhere word copies with a compiler
// barrier in the loop, so that they never become calls to memcpy (which ASan
// intercepts and checks). Not seen by TSan either: the fork copy reads blocks
// that other threads may be writing, and a write racing with fork() reaches
// the child or not, as it would without secmem.
__attribute__((no_sanitize("address", "undefined", "thread"))) void copy_unchecked(void *to, const void *from,
                                                                                   size_t len) {
  VALGRIND_DISABLE_ERROR_REPORTING;
#if defined(__x86_64__)
  asm volatile("rep movsb" : "+D"(to), "+S"(from), "+c"(len) : : "memory");
#else
  auto *d = static_cast<uint64_t *>(to);
  auto *s = static_cast<const uint64_t *>(from);
  for (size_t i = 0; i < len / 8; ++i) {
    d[i] = s[i];
    asm volatile("" : : : "memory");
  }
#endif
  VALGRIND_ENABLE_ERROR_REPORTING;
}

__attribute__((no_sanitize("address", "undefined", "thread"))) void zero_unchecked(void *to, size_t len) {
  VALGRIND_DISABLE_ERROR_REPORTING;
#if defined(__x86_64__)
  asm volatile("rep stosb" : "+D"(to), "+c"(len) : "a"(0) : "memory");
#else
  auto *d = static_cast<uint64_t *>(to);
  for (size_t i = 0; i < len / 8; ++i) {
    d[i] = 0;
    asm volatile("" : : : "memory");
  }
#endif
  VALGRIND_ENABLE_ERROR_REPORTING;
}

bool random_bytes(void *out, size_t len) {
  auto *p = static_cast<char *>(out);
  while (len > 0) {
    long n = syscall(SYS_getrandom, p, len, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n;
    len -= static_cast<size_t>(n);
  }
  return true;
}

int seal_readonly(void *addr, size_t len) { return protect(addr, len, PROT_READ); }

int make_undumpable() { return prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0 ? 0 : errno; }

// Unloaded with a plugin, the heap (a 2 MiB chunk charged to RLIMIT_MEMLOCK,
// the address-space reservation, the staging files) had no owner left and
// stayed mapped, and every load of the plugin made another (found by the
// adversarial review: an unprivileged process's fourth load got unlocked
// memory). Not linked -z nodelete, which holds in every namespace: a copy
// loaded by dlmopen into a new one then kept that namespace's libc and its
// static TLS, and the seventh dlmopen of any library failed (found by the
// second review). glibc's handles are its link maps.
// Weak: a static program has no dynamic section (libsecmem.a linked with -static).
#pragma weak _DYNAMIC

namespace {
// Whether this code is libsecmem.so (its own object's DT_SONAME begins
// "libsecmem", under whatever file name it was loaded: a symlink, a vendored
// copy renamed libsecmem-<hash>.so), not libsecmem.a inside a program or a
// plugin (whose own name it then reads, or none). By the file's name, a copy
// loaded under another was not pinned, and each load cycle left a heap
// behind (found by the third review).
bool is_libsecmem_so() {
  const char *strtab = nullptr;
  ElfW(Xword) soname = 0;
  bool has_soname = false;
  for (const ElfW(Dyn) *dyn = _DYNAMIC; dyn != nullptr && dyn->d_tag != DT_NULL; ++dyn) {
    if (dyn->d_tag == DT_STRTAB) strtab = reinterpret_cast<const char *>(dyn->d_un.d_ptr); // relocated by ld.so
    if (dyn->d_tag == DT_SONAME) {
      soname = dyn->d_un.d_val;
      has_soname = true;
    }
  }
  return strtab != nullptr && has_soname && strncmp(strtab + soname, "libsecmem", 9) == 0;
}
} // namespace

void pin_shared_library() {
  if (!is_libsecmem_so()) return; // libsecmem.a, in the program or a plugin
  Dl_info info{};
  link_map *map = nullptr;
  if (dladdr1(reinterpret_cast<void *>(&pin_shared_library), &info, reinterpret_cast<void **>(&map), RTLD_DL_LINKMAP) ==
          0 ||
      map == nullptr || info.dli_fname == nullptr)
    return;
  // Loaded with the program (before the dynamic linker, found by its load
  // address, in the chain of objects, which the loader lock held by a
  // dlopen in progress, or start-up, keeps still): never unloaded, and the
  // dlopen below would cost every process started under the shim about
  // 29,000 instructions. Objects that came with the program after the
  // dynamic linker are pinned all the same.
  if (uintptr_t rtld = getauxval(AT_BASE); rtld != 0)
    for (const link_map *later = map->l_next; later != nullptr; later = later->l_next)
      if (later->l_addr == rtld) return;
  Lmid_t space = -1;
  if (dlinfo(map, RTLD_DI_LMID, &space) != 0 || space != LM_ID_BASE) return;
  (void)dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE); // a reference never given back
}

// Refused, once said: every secret allocation that needs more bookkeeping
// then fails (found by the adversarial review: NULL and ENOMEM without a
// word, on the mlock tier at the mapping limit).
void *map_metadata(size_t len) {
  void *p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p != MAP_FAILED) return p;
  int err = errno;
  static std::atomic<bool> said{false};
  if (!said.exchange(true, std::memory_order_relaxed))
    diag::Line()
        .add("cannot map memory for the heap's own bookkeeping (")
        .err(err)
        .add(err == ENOMEM ? ": vm.max_map_count reached, or RLIMIT_AS" : "")
        .add("); allocations that need more return NULL with ENOMEM")
        .emit();
  errno = err;
  return nullptr;
}

void *map_anon_anywhere(size_t len) {
  void *p = map_metadata(len);
  if (p != nullptr) madvise(p, len, MADV_DONTDUMP);
  return p;
}

size_t address_space_left() {
  rlimit lim{};
  if (getrlimit(RLIMIT_AS, &lim) != 0 || lim.rlim_cur == RLIM_INFINITY) return SIZE_MAX;
  size_t used = linux_facts::status_kib_field_bytes("VmSize");
  return lim.rlim_cur > used ? static_cast<size_t>(lim.rlim_cur - used) : 0;
}

size_t memlock_budget() {
  if (linux_facts::has_cap_ipc_lock()) return SIZE_MAX;
  rlimit lim{};
  if (getrlimit(RLIMIT_MEMLOCK, &lim) != 0 || lim.rlim_cur == RLIM_INFINITY) return SIZE_MAX;
  size_t used = linux_facts::vmlck_bytes();
  return lim.rlim_cur > used ? static_cast<size_t>(lim.rlim_cur - used) : 0;
}

} // namespace secmem::os
