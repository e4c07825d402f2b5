#include "platform/diag.h"

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <pthread.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <unistd.h>

#include "platform/linux_facts.h"

namespace secmem::diag {

Line &Line::add(const char *text) {
  while (*text != '\0' && len_ + 1 < sizeof buf_) buf_[len_++] = *text++;
  buf_[len_] = '\0';
  return *this;
}

Line &Line::dec(uint64_t value) {
  char digits[24];
  int n = 0;
  do {
    digits[n++] = static_cast<char>('0' + value % 10);
    value /= 10;
  } while (value != 0);
  char text[24];
  for (int i = 0; i < n; ++i) text[i] = digits[n - 1 - i];
  text[n] = '\0';
  return add(text);
}

Line &Line::hex(uintptr_t value) {
  char text[2 + 2 * sizeof value + 1] = {'0', 'x'};
  int n = 2;
  bool started = false;
  for (int shift = 8 * sizeof value - 4; shift >= 0; shift -= 4) {
    unsigned nibble = (value >> shift) & 0xf;
    if (nibble == 0 && !started && shift != 0) continue;
    started = true;
    text[n++] = "0123456789abcdef"[nibble];
  }
  text[n] = '\0';
  return add(text);
}

Line &Line::err(int errnum) { return add(linux_facts::errno_name(errnum)); }

Line &Line::value(const char *text, size_t max) {
  size_t i = 0, written = 0;
  for (; text[i] != '\0'; ++i) {
    auto byte = static_cast<unsigned char>(text[i]);
    bool plain = byte >= 0x20 && byte < 0x7f && byte != '\\';
    if (written + (plain ? 1 : 4) > max) break;
    char out[5] = {static_cast<char>(byte), '\0'};
    if (!plain) {
      out[0] = '\\';
      out[1] = 'x';
      out[2] = "0123456789abcdef"[byte >> 4];
      out[3] = "0123456789abcdef"[byte & 0xf];
      out[4] = '\0';
    }
    add(out);
    written += plain ? 1 : 4;
  }
  if (text[i] != '\0') add("...");
  return *this;
}

namespace {

// Where the regular file behind fd stands against RLIMIT_FSIZE, past which
// write(2) raises SIGXFSZ, which kills (OpenSSH's sandboxed child sets the
// limit to 0). Pipes, terminals and sockets have no such limit; a pipe or
// socket raises SIGPIPE instead once its reader is gone.
struct FileLimit {
  bool limited = false; // a regular file under a finite limit
  bool over = false;    // len more bytes would pass it now
  bool pipe = false;    // a pipe or socket
};
FileLimit file_size_limit(int fd, size_t len) {
  struct stat st;
  if (fstat(fd, &st) != 0) return {};
  if (!S_ISREG(st.st_mode)) return {false, false, S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode)};
  rlimit lim{};
  if (getrlimit(RLIMIT_FSIZE, &lim) != 0 || lim.rlim_cur == RLIM_INFINITY) return {};
  int flags = fcntl(fd, F_GETFL);
  off_t at = flags >= 0 && (flags & O_APPEND) != 0 ? st.st_size : lseek(fd, 0, SEEK_CUR);
  return {true, at < 0 || static_cast<uint64_t>(at) + len > lim.rlim_cur, false};
}

// Another writer (a process appending to the same log or report) may take
// the file past the limit between the check and the write: SIGXFSZ is blocked
// in this thread for the write, and a SIGXFSZ the write raised is taken back
// (rt_sigtimedwait, not where a seccomp filter is in force: it may kill on
// it; the check alone stands there). So is SIGPIPE for a pipe or socket
// whose reader is gone (a program's output piped to `head`: the report line
// at exit killed it, exit status 141; found by the adversarial review).
class WriteSignalGuard {
public:
  WriteSignalGuard(bool limited, bool pipe) {
    if (!limited && !pipe) return;
    linux_facts::SeccompState sandbox = linux_facts::seccomp_state();
    if (!sandbox.known || sandbox.filtered) return;
    sigset_t pending;
    sigemptyset(&blocked_);
    if (limited) sigaddset(&blocked_, SIGXFSZ);
    if (pipe) sigaddset(&blocked_, SIGPIPE);
    if (sigpending(&pending) != 0 || pthread_sigmask(SIG_BLOCK, &blocked_, &old_) != 0) return;
    // One already pending is the program's (a second one merges with it).
    take_back_xfsz_ = limited && sigismember(&pending, SIGXFSZ) == 0;
    take_back_pipe_ = pipe && sigismember(&pending, SIGPIPE) == 0;
    active_ = true;
  }
  ~WriteSignalGuard() {
    if (!active_) return;
    take_back(raised_xfsz_ && take_back_xfsz_, SIGXFSZ);
    take_back(raised_pipe_ && take_back_pipe_, SIGPIPE);
    // The mask as it was, exactly: pthread_sigmask would leave glibc's
    // SIGCANCEL and SIGSETXID out of it, unblocking them if the program had
    // blocked them (as SignalsBlocked, platform/signals.h).
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, &old_, nullptr, kKernelSigsetBytes);
  }
  WriteSignalGuard(const WriteSignalGuard &) = delete;
  WriteSignalGuard &operator=(const WriteSignalGuard &) = delete;
  void wrote(long result, int err) {
    raised_xfsz_ = raised_xfsz_ || (result < 0 && err == EFBIG);
    raised_pipe_ = raised_pipe_ || (result < 0 && err == EPIPE);
  }

private:
  static constexpr size_t kKernelSigsetBytes = 8; // _NSIG / 8 on Linux
  static void take_back(bool raised, int sig) {
    if (!raised) return;
    sigset_t one;
    sigemptyset(&one);
    sigaddset(&one, sig);
    timespec now{};
    syscall(SYS_rt_sigtimedwait, &one, nullptr, &now, kKernelSigsetBytes);
  }
  bool active_ = false, take_back_xfsz_ = false, take_back_pipe_ = false, raised_xfsz_ = false, raised_pipe_ = false;
  sigset_t blocked_{}, old_{};
};

// fd 2 as it was when this object was loaded: lines go to a regular file
// only if it is that file, or one opened for appending (a log). A program
// that closed stderr and opened a data file (which takes fd 2), or bound fd 2
// to a file it writes at offsets, gets nothing written into it. Nor does a
// program started with stderr closed: whatever takes fd 2 later is a file
// of its own (its log, a socket), not a stderr.
struct StartupStderr {
  bool open = false;
  bool closed = false;
  dev_t dev = 0;
  ino_t ino = 0;
};
StartupStderr g_startup_stderr;

// Another library's constructor may run first and open a file of its own
// on fd 2 (a program started with stderr closed): a regular file open for
// reading and writing is taken for such a file, not a stderr (shells open
// `2>file` and `2>>file` write-only; found by the adversarial review: the
// report line went over a database file's header). A log opened so, write-
// only for appending, cannot be told from `2>>log`.
__attribute__((constructor(101))) void note_startup_stderr() {
  struct stat st;
  if (fstat(STDERR_FILENO, &st) != 0) {
    g_startup_stderr.closed = errno == EBADF;
    return;
  }
  int flags = fcntl(STDERR_FILENO, F_GETFL);
  if (S_ISREG(st.st_mode) && flags >= 0 && (flags & O_ACCMODE) == O_RDWR) {
    g_startup_stderr.closed = true;
    return;
  }
  g_startup_stderr = {true, false, st.st_dev, st.st_ino};
}

bool is_dev_null(const struct stat &st) {
  return S_ISCHR(st.st_mode) && major(st.st_rdev) == 1 && minor(st.st_rdev) == 3;
}

} // namespace

bool stderr_takes_lines() {
  struct stat st;
  // Closed: nothing to write to (syslog instead). fstat refused (OpenSSH's
  // sandbox answers EACCES): fd 2 cannot be checked, and is written as it always was.
  if (fstat(STDERR_FILENO, &st) != 0) return errno != EBADF;
  if (g_startup_stderr.closed) return false;
  // Where it was at start-up, even /dev/null: the place the user chose.
  if (g_startup_stderr.open && st.st_dev == g_startup_stderr.dev && st.st_ino == g_startup_stderr.ino) return true;
  if (is_dev_null(st)) return false;     // discarded since start-up (a daemon's): syslog instead
  if (!S_ISREG(st.st_mode)) return true; // a terminal, pipe or socket: a reader of diagnostics
  int flags = fcntl(STDERR_FILENO, F_GETFL);
  return flags >= 0 && (flags & O_APPEND) != 0;
}

bool to_syslog(const char *text, size_t len) {
  int saved = errno;
  // A socket and a send are calls a sandbox's filter may kill on: none where
  // a filter is in force, or where that cannot be known.
  linux_facts::SeccompState sandbox = linux_facts::seccomp_state();
  bool sent = false;
  if (sandbox.known && !sandbox.filtered) {
    constexpr const char kPrefix[] = "secmem: ";
    if (len >= sizeof kPrefix - 1 && memcmp(text, kPrefix, sizeof kPrefix - 1) == 0) {
      text += sizeof kPrefix - 1;
      len -= sizeof kPrefix - 1;
    }
    Line message("<12>secmem["); // facility user, severity warning
    message.dec(static_cast<uint64_t>(syscall(SYS_getpid))).add("]: ");
    size_t head = message.length();
    char out[sizeof(Line) + 32];
    size_t n = 0;
    for (; n < head; ++n) out[n] = message.text()[n];
    for (size_t i = 0; i < len && n < sizeof out; ++i) out[n++] = text[i];
    long fd = syscall(SYS_socket, AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd >= 0) {
      sockaddr_un addr{};
      addr.sun_family = AF_UNIX;
      memcpy(addr.sun_path, kSyslogSocket, sizeof kSyslogSocket);
      // Never waits: a stuck log daemon costs this line, not the program.
      sent = syscall(SYS_sendto, fd, out, n, MSG_DONTWAIT | MSG_NOSIGNAL, &addr, sizeof addr) == static_cast<long>(n);
      syscall(SYS_close, fd);
    }
  }
  errno = saved;
  return sent;
}

bool write_all(int fd, const char *text, size_t len, int *err) {
  int saved = errno;
  FileLimit limit = file_size_limit(fd, len);
  if (limit.over) {
    errno = saved;
    if (err != nullptr) *err = EFBIG;
    return false;
  }
  WriteSignalGuard guard(limit.limited, limit.pipe);
  int failed = 0;
  while (len > 0) {
    long n = syscall(SYS_write, fd, text, len);
    guard.wrote(n, errno);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      failed = n < 0 ? errno : EIO;
      break;
    }
    text += n;
    len -= static_cast<size_t>(n);
  }
  errno = saved;
  if (err != nullptr) *err = failed;
  return len == 0;
}

bool Line::emit_to(int fd, int *err) const {
  char out[sizeof buf_ + 1];
  for (size_t i = 0; i < len_; ++i) out[i] = buf_[i];
  out[len_] = '\n';
  return write_all(fd, out, len_ + 1, err);
}

void Line::emit() const {
  int saved = errno;
  bool takes = stderr_takes_lines();
  errno = saved;
  if (takes)
    emit_to(STDERR_FILENO);
  else
    to_syslog(buf_, len_);
}

void fatal(const char *what) {
  Line().add(what).emit();
  abort();
}

void fatal_errno(const char *what, int errnum) {
  Line().add(what).add(" (").err(errnum).add(")").emit();
  abort();
}

void fatal_pointer(const char *what, const void *ptr, const char *detail) {
  Line line;
  line.add(what).add(" ").hex(reinterpret_cast<uintptr_t>(ptr));
  if (detail != nullptr) line.add(": ").add(detail);
  line.emit();
  abort();
}

void say_once(std::atomic<bool> &said, const char *text) {
  if (!said.exchange(true, std::memory_order_relaxed)) Line().add(text).emit();
}

} // namespace secmem::diag
