// System calls made without libc: the kernel's result as it is (-errno on
// failure), errno left alone, and (on x86-64 and arm64, the `syscall` and
// `svc` instructions inline; elsewhere libc's syscall(2), errno restored)
// no libc code run. A fork child runs its
// handlers on pages it has not yet mapped (the kernel copies no page-table
// entries for a library's code at fork): each libc function on its own
// 64 KiB of libc (syscall(2), __errno_location, mmap were three) is one more
// page fault in every child, 2-3 us each here. Used for what the fork
// handlers reach, the os:: calls that change the heap's mappings among them
// (release_to_reserve, reserve_at, map_fd_fixed, protect), wherever they are
// called. ThreadSanitizer and AddressSanitizer do not see these mappings
// change (their shadow of the range stays as it was, as across a fork);
// the suite's runs under both pass.
#pragma once

#include <cerrno>
#include <sys/syscall.h>
#include <type_traits>
#include <unistd.h>

// The same holds for secmem's own code: a child takes one page fault for
// each 64 KiB of libsecmem's text its handler runs (the kernel maps the
// cached pages of a 64 KiB window at once, "fault-around"). The functions a
// fork child runs in secmem's child handler, on the staged and the mlock
// tier, are gathered in one section, which GNU ld places at the start of
// .text (the default linker script's `.text.hot.*`); spread over the
// library's 77 KiB they were two windows, two faults in every child.
#define SECMEM_FORK_CHILD_TEXT [[gnu::section(".text.hot.secmem_fork_child")]]

namespace secmem::os {

#if defined(__x86_64__)
inline long raw_syscall(long number, long a = 0, long b = 0, long c = 0, long d = 0, long e = 0, long f = 0) {
  long result;
  register long r10 asm("r10") = d;
  register long r8 asm("r8") = e;
  register long r9 asm("r9") = f;
  asm volatile("syscall"
               : "=a"(result)
               : "a"(number), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
               : "rcx", "r11", "memory");
  return result;
}
#elif defined(__aarch64__)
inline long raw_syscall(long number, long a = 0, long b = 0, long c = 0, long d = 0, long e = 0, long f = 0) {
  register long x8 asm("x8") = number;
  register long x0 asm("x0") = a;
  register long x1 asm("x1") = b;
  register long x2 asm("x2") = c;
  register long x3 asm("x3") = d;
  register long x4 asm("x4") = e;
  register long x5 asm("x5") = f;
  asm volatile("svc 0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4), "r"(x5) : "memory");
  return x0;
}
#else
inline long raw_syscall(long number, long a = 0, long b = 0, long c = 0, long d = 0, long e = 0, long f = 0) {
  int saved = errno;
  long result = syscall(number, a, b, c, d, e, f);
  if (result == -1) result = -errno; // (mmap's results below -4096 are addresses: never -1)
  errno = saved;
  return result;
}
#endif

// Pointers and integers alike.
template <typename T> long syscall_arg(T value) {
  if constexpr (std::is_null_pointer_v<T>)
    return 0;
  else if constexpr (std::is_pointer_v<T>)
    return reinterpret_cast<long>(value);
  else
    return static_cast<long>(value);
}
template <typename... Args> long raw_call(long number, Args... args) {
  return raw_syscall(number, syscall_arg(args)...);
}

// The same, EINTR retried at most kEintrRetries times in a row: the fork
// handlers run with every signal blocked, where an EINTR can only be a
// seccomp filter's errno, which would come back for ever.
inline constexpr int kEintrRetries = 64;
template <typename... Args> long raw_call_retrying(long number, Args... args) {
  long result;
  int tries = 0;
  do result = raw_call(number, args...);
  while (result == -EINTR && ++tries < kEintrRetries);
  return result;
}

inline int process_id() { return static_cast<int>(raw_syscall(SYS_getpid)); }
inline int parent_process_id() { return static_cast<int>(raw_syscall(SYS_getppid)); }
inline int process_group_id() { return static_cast<int>(raw_syscall(SYS_getpgid, 0)); }

} // namespace secmem::os
