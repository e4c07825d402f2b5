// The OS seam: every system call the allocator makes goes through here.
//
// Failure policy, decided once per call (see os.cpp for the errno table):
// functions that can fail for reasons the heap must act on return 0 or a
// positive errno; anything that means our own bookkeeping is wrong is fatal.
// Nothing here allocates from the libc heap.
#pragma once

#include <cstddef>
#include <cstdint>

namespace secmem::os {

inline constexpr size_t kPageSize = 4096;

// Anonymous PROT_NONE address space with MAP_NORESERVE: costs no memory and
// no locked-memory budget. Returns nullptr on failure.
void *reserve(size_t len);
// The same at addr, only where nothing is mapped (MAP_FIXED_NOREPLACE). True if reserved.
bool reserve_at(void *addr, size_t len);

// Puts [addr, addr+len) back to reserved PROT_NONE (drops its pages). At
// vm.max_map_count the kernel refuses every mmap, one that would merge
// mappings too (ENOMEM). Then, with may_unmap (a fork child, where no other
// thread can map anything meanwhile), the range is unmapped and reserved
// again with MAP_FIXED_NOREPLACE (kHole if that is refused: not to be mapped
// over); else (another thread's mmap could take an unmapped range, and
// then the heap's address checks would claim its blocks) it is made
// PROT_NONE where that needs no new mapping (kProtected: covered, its pages
// held until a MAP_FIXED there replaces it), or left as it was
// (kUnchanged).
enum class Released { kReserved, kProtected, kUnchanged, kHole };
[[nodiscard]] Released release_to_reserve(void *addr, size_t len, bool may_unmap = false);

// memfd_secret(2) + ftruncate + mmap(MAP_SHARED|MAP_FIXED) at addr; the fd is
// closed before returning (the mapping keeps the file alive).
// Returns 0 or: ENOSYS/EPERM (syscall refused: permanent), EAGAIN (memlock
// budget), ENOMEM/EMFILE/ENFILE (transient).
int map_secret_fixed(void *addr, size_t len);

// Anonymous private mapping at addr with MADV_DONTDUMP. Returns 0 or ENOMEM.
int map_anon_fixed(void *addr, size_t len);

// mlock an existing range: 0 or errno.
int lock_range(void *addr, size_t len);
// mlock2(MLOCK_ONFAULT): the pages in memory now are locked, the others as
// they are faulted in; nothing is populated (a fork child's copy-on-write
// pages stay shared until written). 0 or an errno (ENOSYS, EINVAL: a kernel
// before 4.4).
int lock_range_on_fault(void *addr, size_t len);

// First touch of fresh pages through the kernel (read from /dev/zero), so a
// refusal to charge them comes back as an errno (EFAULT) instead of SIGBUS.
int touch_through_kernel(void *addr, size_t len);
// The same for several runs in a row: /dev/zero opened at the first touch
// and closed with the source (no /dev, a bare chroot: from user space).
class ZeroSource {
public:
  ZeroSource() = default;
  ZeroSource(const ZeroSource &) = delete;
  ZeroSource &operator=(const ZeroSource &) = delete;
  ~ZeroSource();
  int touch(void *addr, size_t len);

private:
  int fd_ = -2; // -2: not opened yet; -1: none to be had
};

// map_secret_fixed, but the kernel picks the address and the file is handed
// back (the caller closes it); and a second mapping of a file at addr,
// replacing what is there: how a copy reaches its place in a fork child
// (mmap, not mremap).
int map_secret_anywhere_with_fd(size_t len, void **out, int *fd);
int map_fd_fixed(int fd, void *addr, size_t len, size_t offset = 0);

// The fork staging files (chunks/fork.cpp): a memfd_secret file of len bytes,
// not mapped (0 or errno, as map_secret_fixed); a mapping of one anywhere,
// left out of fork children (MADV_DONTFORK); which of its pages are in memory
// (mincore: one byte per page, bit 0).
int secret_file(size_t len, int *fd);
int map_fd_not_inherited(int fd, size_t len, void **out);
int pages_in_memory(void *addr, size_t len, unsigned char *vec);

// Whether a process this one forked is still there: waitid(WNOHANG |
// WNOWAIT), which leaves its exit status to the program. kGone: it exited
// (a zombie's memory is released) or was reaped. A seccomp filter may kill
// on waitid: ask TierMapper::may_call first.
enum class ChildState { kRunning, kGone, kUnknown };
ChildState child_state(int pid);

// What an fd refers to (fstat's device and inode; zero when fstat fails):
// a descriptor the heap keeps is its own only while this matches (a program
// may close it and open something else under the number).
struct FileId {
  uint64_t dev = 0, ino = 0;
  bool operator==(const FileId &other) const { return dev == other.dev && ino == other.ino && ino != 0; }
};
FileId file_id(int fd);

// mprotect: 0 or errno (ENOMEM: the process's mapping count limit).
int protect(void *addr, size_t len, int prot);

// Copies len bytes, invisible to AddressSanitizer and valgrind (the fork copy
// reads blocks that the heap has poisoned for them as freed).
void copy_unchecked(void *to, const void *from, size_t len);
// explicit_bzero for the same (fork staging pages that held older copies).
void zero_unchecked(void *to, size_t len);

// len random bytes from getrandom(2); false if the kernel has none to give.
bool random_bytes(void *out, size_t len);

// prctl(PR_SET_DUMPABLE, 0): no core dump, no same-user ptrace. 0 or errno.
int make_undumpable();

// libsecmem.so, loaded in the program's own link-map namespace, stays
// loaded for good (RTLD_NODELETE; called by its constructor): its heap
// then serves every later load of a plugin that pulls it in. Nothing for
// libsecmem.a (the object holding it is the program or the plugin) or in a
// namespace made by dlmopen.
void pin_shared_library();

// Private read-write anonymous memory for allocator metadata (never secret). nullptr on failure.
void *map_metadata(size_t len);

// Anonymous private read-write mapping anywhere, MADV_DONTDUMP (fork staging).
void *map_anon_anywhere(size_t len);

// Unmap a mapping that the heap no longer tracks (fork staging).
void unmap(void *addr, size_t len);

// The fork hand-shake: a pipe (O_CLOEXEC), 0 or errno; one byte written, or
// read until it comes or the writer is gone; close. Raw system calls (no
// interposer runs in a fork handler).
int make_pipe(int fds[2]);
// A pipe for short messages (at most PIPE_BUF bytes each, so each is written
// whole): O_NONBLOCK | O_CLOEXEC. take_messages reads what is there, up to
// len bytes (whole messages when len is a multiple of their size): the bytes read.
int make_message_pipe(int fds[2]);
// The same on a Unix stream socket pair: another process that may read this
// one's /proc/PID/fd cannot open it again (a pipe it can, and write to).
int make_message_socket(int fds[2]);
// The inode of this process's pid namespace (/proc/self/ns/pid); 0 when it
// cannot be read. Async-signal-safe.
uint64_t pid_namespace_id();
// A fork child's writes to its parent (EINTR retried; a SIGPIPE they raise
// while signals are blocked is taken back).
void send_message(int fd, const void *msg, size_t len);
size_t take_messages(int fd, void *buf, size_t len);
void send_byte(int fd);
// Waits for a byte on a pipe's read end, or for its end (no writer left):
// true then. read(2) first; where it is refused (a seccomp filter's errno),
// ppoll(2) for the same two events. False when neither could wait.
bool await_byte(int fd);
// The same for at most ms milliseconds: what came.
enum class Awaited { kByte, kEnd, kNothing };
Awaited await_byte_for(int fd, int ms);
void close_fd(int fd);

// Address space RLIMIT_AS leaves this process (the limit minus VmSize);
// SIZE_MAX when there is no limit.
size_t address_space_left();

// Locked-memory budget left to this process: RLIMIT_MEMLOCK minus VmLck,
// or SIZE_MAX when the process has CAP_IPC_LOCK or no limit.
size_t memlock_budget();

// The asymmetric barrier of the fork gate (heap/fork_gate.h):
// membarrier(PRIVATE_EXPEDITED), registered once. register returns 0 or
// errno; the barrier falls back to an mprotect that makes the kernel
// interrupt every CPU running a thread of this process (x86) when membarrier
// fails (a seccomp filter added later that refuses it).
int register_thread_barrier();
void sleep_us(long us);
void barrier_all_threads();

// mprotect of metadata the heap seals after start-up (its configuration page). 0 or errno.
int seal_readonly(void *addr, size_t len);

} // namespace secmem::os
