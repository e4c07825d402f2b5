// Diagnostics: one-line messages to stderr that start with "secmem: ", and
// the fatal path (write, then abort). Never allocates; safe in any state.
// Lines go out through the raw write system call, never through a write()
// that an interposer (the preload shim's own) may have replaced.
//
// diag.cpp is compiled into libsecmem and into the preload shim alike (a
// small static library), so both build their lines the same way.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace secmem::diag {

// A fixed-size line builder: formatting without printf (which may allocate).
// Text past the capacity is cut.
class Line {
public:
  Line() : Line("secmem: ") {}
  explicit Line(const char *start) { add(start); }
  Line &add(const char *text);
  Line &dec(uint64_t value);
  Line &hex(uintptr_t value);
  Line &err(int errnum); // "EPERM" style name
  // Text from outside (an environment value, a file name): control bytes and
  // others outside printable ASCII as \xNN, so that no value can end the
  // line or forge another; past max bytes written, cut with "...", so
  // that the rest of the line still fits.
  Line &value(const char *text, size_t max = 256);
  // The line and a newline to stderr, when fd 2 is still a place for
  // diagnostics: what it was at start-up, or a terminal, pipe or socket, or
  // a file opened for appending (never a data file that took fd 2's place).
  // Otherwise (fd 2 closed since, a data file, /dev/null since start-up: a
  // daemon's) the line goes to syslog, so that nothing is lost.
  void emit() const;
  // The line and a newline to fd in one write; false if it did not all go
  // out, with why in *err when asked (EFBIG: RLIMIT_FSIZE; errno untouched).
  bool emit_to(int fd, int *err = nullptr) const;
  const char *text() const { return buf_; }
  size_t length() const { return len_; }

private:
  char buf_[1024]; // a SECMEM_REPORT line with a long program name fits
  size_t len_ = 0;
};

// "secmem: " and text, emitted by the first caller that sets said; later
// callers with the same flag say nothing (a degradation said once).
void say_once(std::atomic<bool> &said, const char *text);

// Whether fd 2 is still a place for diagnostics (see Line::emit).
bool stderr_takes_lines();

// The syslog socket, and a line sent to it ("<12>secmem[PID]: " and the text
// without its "secmem: ") with raw system calls and without waiting; not
// where a seccomp filter is in force (socket and sendto may kill there).
// False when it did not go out.
inline constexpr char kSyslogSocket[] = "/dev/log";
bool to_syslog(const char *text, size_t len);

// Writes len bytes to fd with the raw system call, retrying on EINTR; keeps
// errno. Writes nothing to a regular file that RLIMIT_FSIZE would let them
// overflow (the write would raise SIGXFSZ and kill the process); when another
// writer takes the file past the limit meanwhile, the SIGXFSZ is blocked for
// the write and taken back (not under a seccomp filter).
bool write_all(int fd, const char *text, size_t len, int *err = nullptr);

[[noreturn]] void fatal(const char *what);
[[noreturn]] void fatal_errno(const char *what, int errnum);
// "secmem: <what> <ptr>": misuse reports (double free, invalid free, ...).
[[noreturn]] void fatal_pointer(const char *what, const void *ptr, const char *detail);

} // namespace secmem::diag
