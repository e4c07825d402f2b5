// Diagnostics: one-line messages to stderr that start with "secmem: ", and
// the fatal path (write, then abort). Never allocates; safe in any state.
#pragma once

#include <cstddef>
#include <cstdint>

namespace secmem::diag {

// A fixed-size line builder: formatting without printf (which may allocate).
class Line {
public:
  Line() { add("secmem: "); }
  Line &add(const char *text);
  Line &dec(uint64_t value);
  Line &hex(uintptr_t value);
  Line &err(int errnum); // "EPERM" style name
  void emit();           // writes the line and a newline to stderr
  const char *text() const { return buf_; }

private:
  char buf_[256];
  size_t len_ = 0;
};

// Symbolic name of an errno value ("EPERM"), or "errno" for unknown ones.
const char *errno_name(int errnum);

[[noreturn]] void fatal(const char *what);
[[noreturn]] void fatal_errno(const char *what, int errnum);
// "secmem: <what> <ptr>": misuse reports (double free, invalid free, ...).
[[noreturn]] void fatal_pointer(const char *what, const void *ptr, const char *detail);

} // namespace secmem::diag
