// The chunk pool's half of fork. memfd_secret mappings are MAP_SHARED: after
// fork, parent and child would write the same pages. Each child gets private
// copies of the secret chunks, at the same addresses, in one of three ways:
//
// - Staged (the common case): before fork, with the fork gate closed, the
//   parent copies the pages in use into a staging file, a memfd_secret file
//   whose pages it faulted in before the gate closed. The child maps that file
//   over its chunks; the parent does not wait for it. Staging files are kept
//   (mapped PROT_NONE, not inherited) and used again once the child that took
//   one is gone, so a parent that forks again and again makes no new pages;
//   a child that needs more grows into room left after its copy in the file
//   (plan_child_room), whose pages the next child gets again, zeroed.
// - By the child: a chunk whose copy needs pages the parent cannot read (a
//   sealed block, PROT_NONE) is copied by the child, in a new secret file,
//   while the parent waits; the same when no staging file can be had (memlock
//   budget, file limits, a sandbox).
// - Staged without a pipe (EMFILE, or fstat refused: unknown_descriptor):
//   the parent's copy in memory of its own, opening the chunk for it (where
//   mprotect is refused, by the record: copy_open_pages).
//
// Sealed blocks and guards stay closed to the parent's threads, and no copy
// lands in memory readable in the parent. The heap's half (its lock, the
// thread caches and the gate) is in heap/heap.cpp.
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "chunks/chunk_pool.h"
#include "chunks/protection.h"
#include "platform/diag.h"
#include "platform/raw_syscall.h"

namespace secmem {

namespace {

constexpr unsigned kPidBits = 22; // pids stay below 2^22, the kernel's PID_MAX_LIMIT

// The caller's parent and process group, as its pid namespace numbers them
// (0 where they are outside it; below 0 refused): what the reap log keeps of
// its owner besides the pid.
struct Lineage {
  int parent, group;
};
Lineage own_lineage() { return {os::parent_process_id(), os::process_group_id()}; }

// Calls fn(first_page, pages) for each run of pages a fork child copies; the
// first non-zero result stops the walk and is returned.
template <typename Fn> int for_each_copied_run(const Chunk *chunk, Fn fn) {
  for (uint32_t page = 0; page < chunk->touched_pages;) {
    if (!chunk->copied_in_fork(page)) {
      ++page;
      continue;
    }
    uint32_t end = page;
    while (end < chunk->touched_pages && chunk->copied_in_fork(end)) ++end;
    if (int err = fn(page, end - page); err != 0) return err;
    page = end;
  }
  return 0;
}

// Where the kernel refused to open a chunk for its fork copy (mprotect
// refused: a seccomp filter, the map count), the pages [first, first +
// count) are copied to the same pages at `to` by the record: those it says
// are PROT_NONE are left out (a guard holds nothing: zero in the copy). A
// page still closed would fault (a parent that copied anyway died of
// SIGSEGV). False when a sealed block's page was left out.
bool copy_open_pages(const Chunk *chunk, char *to, uint32_t first, uint32_t count) {
  auto closed = [chunk](uint32_t page) { return chunk->guard_page(page) || chunk->hidden_from_parent(page); };
  bool whole = true;
  for (uint32_t page = first, last = first + count; page < last;) {
    uint32_t end = page + 1;
    while (end < last && closed(end) == closed(page)) ++end;
    size_t at = size_t{page} * os::kPageSize;
    if (!closed(page))
      os::copy_unchecked(to + at, reinterpret_cast<const char *>(chunk->base) + at, size_t{end - page} * os::kPageSize);
    else
      for (uint32_t q = page; q < end; ++q) whole = whole && !chunk->hidden_from_parent(q);
    page = end;
  }
  return whole;
}

// What a child tells its parent through the staging pipe: which file it
// took (the slot, and which hand-out of it) and its pid.
struct StagingMessage {
  uint32_t slot;
  uint32_t handout;
  int32_t pid;
};

// Calls fn(first, pages, in_memory) for windows of a chunk's region in a
// staging mapping; in_memory[i] & 1: page first+i of the file is in memory.
template <typename Fn> bool for_each_window(char *region, uint32_t pages, unsigned char *in_memory, Fn fn) {
  for (uint32_t first = 0; first < pages; first += kSlotPages) {
    uint32_t n = pages - first < kSlotPages ? pages - first : kSlotPages;
    if (os::pages_in_memory(region + size_t{first} * os::kPageSize, size_t{n} * os::kPageSize, in_memory) != 0)
      return false;
    if (!fn(first, n, in_memory)) return false;
  }
  return true;
}

// Fork state is written only where it changes: after a fork every page of
// the parent is copy-on-write, and storing an unchanged value costs a page
// fault at the next fork.
template <typename T> void set_if_changed(T &field, T value) {
  if (field != value) field = value;
}

// A chunk that the parent cannot stage: a page of it that the copy takes is
// a sealed block's, PROT_NONE (the child copies it for itself).
bool hidden_from_parent(const Chunk *chunk) {
  for (uint32_t page = 0; page < chunk->touched_pages; ++page)
    if (chunk->copied_in_fork(page) && chunk->hidden_from_parent(page)) return true;
  return false;
}

// A page the staged copy takes from the parent (guards hold nothing: zero).
SECMEM_FORK_CHILD_TEXT bool staged_copy_takes(const Chunk *chunk, uint32_t page) {
  return page < chunk->touched_pages && chunk->copied_in_fork(page) && !chunk->guard_page(page);
}

// A fork child's chunk, its copy in place: Chunk::cold from is_cold(page)
// (pages the copy left out, faulted in when a run needs them), then guards
// and seals again (the copy was mapped read-write), but for the guards of
// pages in no run.
template <typename Cold> void settle_copy_in_child(Chunk *chunk, Cold is_cold) {
  chunk->cold_pages = 0;
  for (uint32_t page = 0; !chunk->huge && page < chunk->touched_pages; ++page) {
    bool cold = is_cold(page);
    if (cold)
      bitmap::set(chunk->cold, page);
    else
      bitmap::clear(chunk->cold, page);
    chunk->cold_pages += cold;
  }
  protection::forget_free_guards(chunk);
  if (int err = protection::restore_restricted(chunk); err != 0)
    diag::fatal_errno("fork: cannot protect the child's guard pages and sealed blocks", err);
}

// Out of line: its message buffer (1 KiB) in after_fork_child's frame made
// every child's handlers reach a page deeper into the stack, one more
// copy-on-write fault where it was a page the parent had used.
[[gnu::cold, gnu::noinline, noreturn]] void relock_refused(const TierMapper &tiers, FallbackReason why, int err) {
  diag::Line line;
  line.add("fork: the child cannot lock its copy of the secret heap again (");
  tiers.describe(line, why, err);
  line.add("); the configuration allows no other tier").emit();
  abort();
}

// How a fork child locks its copies again (locks are not inherited), asked
// once per fork, in the child (its own filters: see privatise_in_child).
struct ChildLock {
  enum Way { kUnasked, kRefused, kMlock, kOnFault } way = kUnasked;
  bool for_now = false; // refused for want of a descriptor to read the status with
};

// Locks [range, range + len) of a fork child's copy again: 0 or an errno,
// with why. mlock2(MLOCK_ONFAULT) where allowed: the copy-on-write pages in
// memory are locked as they are (shared with the parent until either
// writes, locked in both), where mlock would copy every one of them (460-590
// us for 256 pages here, against 65); else mlock.
int relock_in_child(TierMapper &tiers, ChildLock *lock, void *range, size_t len, FallbackReason *why) {
  if (lock->way == ChildLock::kUnasked) {
    lock->way = tiers.may_call_now(linux_facts::ProbeCall::kMlockOnFault) ? ChildLock::kOnFault
                : tiers.may_call_now(linux_facts::ProbeCall::kMlock)      ? ChildLock::kMlock
                                                                          : ChildLock::kRefused;
    lock->for_now = tiers.last_check_for_now();
  }
  int err = 0;
  if (lock->way == ChildLock::kOnFault) {
    err = os::lock_range_on_fault(range, len);
    if (err == ENOSYS || err == EINVAL) // a kernel before 4.4
      lock->way = tiers.may_call_now(linux_facts::ProbeCall::kMlock) ? ChildLock::kMlock : ChildLock::kRefused;
  }
  if (lock->way == ChildLock::kMlock) err = os::lock_range(range, len);
  if (lock->way == ChildLock::kRefused) {
    *why = lock->for_now ? FallbackReason::kOther : FallbackReason::kSandbox;
    return lock->for_now ? EMFILE : EPERM;
  }
  // mlock's own errno: EAGAIN or ENOMEM (EPERM from an ERRNO filter looks
  // like the budget, as for any chunk).
  *why = FallbackReason::kMemlock;
  return err;
}

} // namespace

void ChunkPool::watch_reaping() { reaped_.watched.store(true, std::memory_order_relaxed); }

void ChunkPool::note_reaped(int pid, uint64_t forks_done_before) {
  if (pid <= 0 || static_cast<uint64_t>(pid) >= (uint64_t{1} << kPidBits) || forks_done_before == 0 ||
      forks_done_before >= (uint64_t{1} << (64 - kPidBits)))
    return;
  // No child holds a staging file (the mlock tier, or a heap with nothing to
  // copy): nothing to note, and no system call made. Set before the fork
  // that hands a file out; a stale false drops the entry (the kernel is
  // asked instead).
  if (!reaped_.tracking.load(std::memory_order_seq_cst)) return;
  if (reaped_.owner.load(std::memory_order_acquire) != os::process_id()) return;
  // Another process that shares this memory and has the owner's number is
  // in another pid namespace: one the owner or its parent made it in (its
  // parent is outside: getppid() says 0), or one where a process like it
  // made it (its parent is that namespace's first process, pid 1 as the
  // owner's parent often is, but its process group, inherited from
  // outside, reads 0 unless something made it a group there), or the
  // owner is such a process (the numbers then name other processes). Only
  // when getppid() and getpgid(0) give the owner's numbers, neither 0 nor
  // an error, is the namespace not read (a path lookup in /proc, 2.5-3.5
  // us, at every child reaped; so always for a process whose parent or
  // group is outside its namespace: a container's first process, one in a
  // group made outside). Not told apart: a process in another namespace
  // whose pid, parent and group numbers are all the owner's (one in a
  // group its namespace's first process or a shell made there, under that
  // first process, where the owner's parent and group are pid 1's).
  Lineage mine = own_lineage();
  if (mine.parent <= 0 || mine.group <= 0 || mine.parent != reaped_.owner_parent.load(std::memory_order_relaxed) ||
      mine.group != reaped_.owner_group.load(std::memory_order_relaxed)) {
    uint64_t space = os::pid_namespace_id();
    if (space == 0 || space != reaped_.owner_namespace.load(std::memory_order_relaxed)) return;
  }
  uint32_t at = reaped_.next.fetch_add(1, std::memory_order_relaxed) % ReapLog::kEntries;
  reaped_.entries[at].store(forks_done_before << kPidBits | static_cast<uint64_t>(pid), std::memory_order_release);
}

// The children's messages (which file each took, and its pid), and which
// files' children are gone: those files are free again. What an interposer
// saw the program reap is read first: a child forked before the wait call
// that reaped its pid began is that child (two processes never hold one pid
// at once, and this one existed, holding it, from before the call until
// now). Then, with ask_kernel, the rest are asked after through waitid, where
// a seccomp filter allows it (TierMapper::may_call reads /proc). That runs
// after a fork, while the child runs, unless an interposer watches the
// program reap; and before a fork when no file is free.
void ChunkPool::refresh_staging(bool ask_kernel) {
  if (staging_pipe_[0] < 0) return;
  StagingMessage msgs[8];
  for (size_t got = sizeof msgs; got == sizeof msgs;) {
    got = os::take_messages(staging_pipe_[0], msgs, sizeof msgs);
    for (size_t i = 0; i < got / sizeof msgs[0]; ++i) {
      StagingFile *file = msgs[i].slot < kStagingFiles ? &staging_[msgs[i].slot] : nullptr;
      if (file != nullptr && file->in_use && file->handout == msgs[i].handout) file->holder = msgs[i].pid;
    }
  }
  bool held = false, in_use = false;
  for (const StagingFile &file : staging_) {
    held = held || (file.fd >= 0 && file.in_use && file.holder != 0);
    in_use = in_use || (file.fd >= 0 && file.in_use);
  }
  if (!in_use) reaped_.tracking.store(false, std::memory_order_relaxed);
  if (held && reaped_.watched.load(std::memory_order_relaxed)) {
    for (std::atomic<uint64_t> &entry : reaped_.entries) {
      if (entry.load(std::memory_order_relaxed) == 0) continue;
      uint64_t word = entry.exchange(0, std::memory_order_acquire);
      int pid = static_cast<int>(word & ((uint64_t{1} << kPidBits) - 1));
      uint64_t before = word >> kPidBits;
      for (StagingFile &file : staging_) {
        if (word == 0 || file.fd < 0 || !file.in_use || file.holder != pid || file.forked == 0 || file.forked > before)
          continue;
        file.in_use = false;
        file.holder = 0;
      }
    }
  }
  if (!ask_kernel) return;
  bool asked = false, may_wait = false;
  for (StagingFile &file : staging_) {
    if (file.fd < 0 || !file.in_use || file.holder == 0) continue;
    if (!asked) {
      may_wait = tiers_.may_call(linux_facts::ProbeCall::kWaitid);
      asked = true;
    }
    if (!may_wait) return;
    if (os::child_state(file.holder) == os::ChildState::kGone) {
      file.in_use = false;
      file.holder = 0;
    }
  }
}

// A descriptor secmem made but cannot fstat (a seccomp filter refuses it):
// its identity is what tells it, in a later fork and in a child, from a file
// that a program or a fork handler opened under its number since, and
// unknown it counts as changed: a child then left a copy pipe unanswered and
// open (its parent waited in fork() until it exited), and each fork left
// the message socket and a staging file open, two or three descriptors
// more a fork. Such a descriptor is closed at once and not used: the forks
// then go without (the parent stages each child's copy itself).
void ChunkPool::unknown_descriptor(int fds[2]) {
  for (int i = 0; i < 2; ++i) {
    if (fds[i] >= 0) os::close_fd(fds[i]);
    fds[i] = -1;
  }
  static std::atomic<bool> said{false};
  diag::say_once(said, "fork: fstat refused on secmem's own descriptors (a seccomp filter?): forks go without staging "
                       "files and hand-shakes, the parent copying each child's heap itself");
}

// The staging pipe and files are descriptors kept between forks: a program
// may close them (daemons close every descriptor they did not open) and
// open something else under the same number. They are checked before each
// fork (and the child checks what it uses); a lost one is forgotten, not
// closed: the number is not ours any more.
void ChunkPool::check_staging_fds() {
  if (staging_pipe_[0] >= 0 &&
      !(os::file_id(staging_pipe_[0]) == staging_pipe_id_[0] && os::file_id(staging_pipe_[1]) == staging_pipe_id_[1]))
    staging_pipe_[0] = staging_pipe_[1] = -1;
  for (int slot = 0; slot < kStagingFiles; ++slot) {
    if (staging_[slot].fd < 0 || os::file_id(staging_[slot].fd) == staging_[slot].id) continue;
    staging_[slot].fd = -1;
    drop_staging(slot);
  }
}

// A staging file of at least bytes, not held by a live child: one kept from
// an earlier fork, or a new one. -1 when none can be had.
int ChunkPool::take_staging(size_t bytes) {
  int best = -1;
  // Children the program reaped since the last fork: their files first.
  if (reaped_.watched.load(std::memory_order_relaxed)) refresh_staging(false);
  for (int pass = 0; pass < 2 && best < 0; ++pass) {
    // None known to be free: a new file while a slot is empty (the check
    // after each fork then frees the last child's file for the next fork,
    // and two files take turns); else ask now.
    bool empty_slot = false;
    for (const StagingFile &file : staging_) empty_slot = empty_slot || file.fd < 0;
    if (pass == 1 && empty_slot) break;
    if (pass == 1) refresh_staging(true);
    for (int slot = 0; slot < kStagingFiles; ++slot) {
      StagingFile &file = staging_[slot];
      if (file.fd < 0 || file.in_use) continue;
      if (file.bytes < bytes)
        drop_staging(slot); // sized for a smaller heap
      else if (best < 0 || file.bytes < staging_[best].bytes)
        best = slot;
    }
  }
  if (best >= 0) return best;
  // A new file, in a free slot or in place of one a live child holds (the
  // child keeps its pages).
  int slot = 0;
  while (slot < kStagingFiles && staging_[slot].fd >= 0) ++slot;
  if (slot == kStagingFiles) {
    slot = static_cast<int>(staging_evict_++ % kStagingFiles);
    drop_staging(slot);
  }
  if (!tiers_.may_call(linux_facts::ProbeCall::kMemfdSecret)) return -1;
  // Room to grow: a heap that touches a few more pages keeps its file.
  size_t size = (bytes + bytes / 4 + kStagingSlackBytes) & ~(os::kPageSize - 1);
  int fd = -1;
  if (os::secret_file(size, &fd) != 0) return -1;
  os::FileId id = os::file_id(fd);
  if (id.ino == 0) { // as the pipes (unknown_descriptor)
    int fds[2] = {fd, -1};
    unknown_descriptor(fds);
    return -1;
  }
  staging_[slot].fd = fd;
  staging_[slot].id = id;
  staging_[slot].bytes = size;
  return slot;
}

// A staging file stays mapped between forks, PROT_NONE (its pages stay
// mapped in, so a parent that forks again takes no page faults). A new
// chunk unmaps them first: the memlock budget they are charged to is the heap's.
char *ChunkPool::open_staging(int slot) {
  StagingFile &file = staging_[slot];
  if (file.map != nullptr && os::protect(file.map, file.bytes, PROT_READ | PROT_WRITE) != 0) {
    os::unmap(file.map, file.bytes);
    file.map = nullptr;
  }
  void *map = nullptr;
  if (file.map == nullptr && os::map_fd_not_inherited(file.fd, file.bytes, &map) == 0)
    file.map = static_cast<char *>(map);
  return file.map;
}

void ChunkPool::close_staging(int slot) {
  StagingFile &file = staging_[slot];
  if (file.map != nullptr && os::protect(file.map, file.bytes, PROT_NONE) != 0) {
    os::unmap(file.map, file.bytes);
    file.map = nullptr;
  }
}

void ChunkPool::unmap_staging() {
  if (fork_slot_ >= 0) return; // in use by the fork in progress
  for (StagingFile &file : staging_) {
    if (file.map != nullptr) os::unmap(file.map, file.bytes);
    file.map = nullptr;
  }
}

void ChunkPool::drop_staging(int slot) {
  if (staging_[slot].map != nullptr) os::unmap(staging_[slot].map, staging_[slot].bytes);
  if (staging_[slot].fd >= 0) os::close_fd(staging_[slot].fd); // checked this fork (check_staging_fds)
  uint32_t handout = staging_[slot].handout;
  staging_[slot] = StagingFile{};
  staging_[slot].handout = handout; // a late message from the old holder must not match
}

// Walks the staged chunks' regions of this fork's staging mapping.
// Without copy (gate open): faults in the pages the copy will write (new
// ones through the kernel: a kernel that charges memlock at first touch
// refuses with an errno, not SIGBUS), so that the copy takes no fault; notes the pages in
// memory that it leaves out (an earlier child's: Chunk::stale). With copy
// (gate closed): copies the pages in use and zeroes the stale ones. False: a
// page was refused.
bool ChunkPool::fill_staging(bool copy) {
  staging_stale_pages_ = staging_taken_pages_ = 0;
  for (Chunk *chunk = chunks_.front(); chunk != nullptr; chunk = ChunkList::next(chunk)) {
    if (chunk->fork_copy != Chunk::ForkCopy::kStaged) continue;
    char *region = fork_map_ + size_t{chunk->fork_offset_pages} * os::kPageSize;
    uint32_t extent = chunk->touched_pages + chunk->fork_room_pages; // the child's room: taken by none, zeroed
    if (copy) {
      for (uint32_t page = 0; page < extent;) {
        bool takes = staged_copy_takes(chunk, page);
        bool stale = !chunk->huge && bitmap::test(chunk->stale, page);
        uint32_t end = page + 1;
        while (end < extent && staged_copy_takes(chunk, end) == takes &&
               (chunk->huge || bitmap::test(chunk->stale, end) == stale))
          ++end;
        size_t at = size_t{page} * os::kPageSize, len = size_t{end - page} * os::kPageSize;
        if (takes) os::copy_unchecked(region + at, chunk->page_address(page), len);
        if (stale) os::zero_unchecked(region + at, len);
        page = end;
      }
      continue;
    }
    for (uint64_t &word : chunk->stale) set_if_changed(word, uint64_t{0});
    os::ZeroSource zero; // opened when a page must be made
    bool ok = for_each_window(region, extent, in_memory_, [&](uint32_t first, uint32_t n, const unsigned char *mem) {
      for (uint32_t i = 0; i < n;) {
        uint32_t page = first + i;
        bool takes = staged_copy_takes(chunk, page), in_memory = (mem[i] & 1) != 0;
        uint32_t end = i + 1;
        while (end < n && staged_copy_takes(chunk, first + end) == takes && ((mem[end] & 1) != 0) == in_memory) ++end;
        char *to = region + size_t{page} * os::kPageSize;
        uint32_t pages = end - i;
        // A page not in memory is made through the kernel; one that is (an
        // earlier fork's) is charged already, and a store maps it here.
        if (takes && !in_memory && zero.touch(to, size_t{pages} * os::kPageSize) != 0) return false;
        if (takes && in_memory)
          for (uint32_t k = 0; k < pages; ++k) *reinterpret_cast<volatile char *>(to + size_t{k} * os::kPageSize) = 0;
        if (!takes && in_memory && !chunk->huge) {
          bitmap::set_range(chunk->stale, page, pages);
          // The room's pages are the children's to keep: not a sign of a larger heap gone.
          if (page < chunk->touched_pages) staging_stale_pages_ += std::min(pages, chunk->touched_pages - page);
        }
        staging_taken_pages_ += takes ? pages : 0;
        i = end;
      }
      return true;
    });
    if (!ok) return false;
  }
  return true;
}

bool ChunkPool::staging_file_ready(size_t *in_use_bytes) {
  size_t span = 0, used = 0;
  for (const Chunk *chunk = chunks_.front(); chunk != nullptr; chunk = ChunkList::next(chunk)) {
    if (chunk->tier != Tier::kSecret || hidden_from_parent(chunk)) continue; // as stage_fork
    span += size_t{chunk->touched_pages} * os::kPageSize;
    // The pages in runs: what mark_pages counts in free_pages (a huge chunk's copy: its touched pages).
    used += size_t{chunk->huge ? chunk->touched_pages : chunk->mapped_pages - chunk->free_pages} * os::kPageSize;
  }
  *in_use_bytes = used;
  if (span == 0) return false;
  // Children the program reaped (the wait calls' log): their files are free
  // now, as take_staging would find.
  if (reaped_.watched.load(std::memory_order_relaxed)) refresh_staging(false);
  for (const StagingFile &file : staging_)
    if (file.fd >= 0 && !file.in_use && file.bytes >= span) return true;
  return false;
}

// A child that needs more pages than its copy grows into the staging file's
// tail, after the last staged chunk's copy, rather than into a chunk of its
// own: the pages it makes there stay in the file once it is gone (zeroed by
// the next fork that hands the file out, as stale), so the children after it
// make no new secret pages (each costs a direct-map change and a TLB flush on
// every CPU) and no chunk. A PostgreSQL backend needs more secret memory for
// its TLS handshake than the postmaster holds: every backend mapped a chunk
// of its own and faulted its pages in. At most kChildRoomPages, within the
// pages the parent's chunk has mapped.
void ChunkPool::plan_child_room(size_t copy_bytes, size_t file_bytes) {
  Chunk *last = nullptr;
  for (Chunk *chunk = chunks_.front(); chunk != nullptr; chunk = ChunkList::next(chunk)) {
    if (chunk->fork_copy != Chunk::ForkCopy::kStaged) continue;
    if (last != nullptr) set_if_changed(last->fork_room_pages, uint32_t{0});
    last = chunk; // offsets follow the list: the last staged chunk's copy ends the file's copied part
  }
  if (last == nullptr) return;
  uint32_t room = 0;
  if (!last->huge && file_bytes > copy_bytes)
    room = std::min({kChildRoomPages, static_cast<uint32_t>((file_bytes - copy_bytes) / os::kPageSize),
                     last->mapped_pages - last->touched_pages});
  set_if_changed(last->fork_room_pages, room);
}

// Under the heap lock, before the gate closes: which chunks are staged, and
// the staging file, mapped and faulted in. Reading /proc and making pages is
// done here, while other threads' cache operations go on.
void ChunkPool::stage_fork(bool interrupted, int parent_pid, uint32_t given_back_pages) {
  fork_parent_pid_ = parent_pid;
  // Stored when they change (a new process, one whose parent went or whose
  // group changed), all of them from the process that forks now, so that
  // the page stays shared. The reaped log is read only while watched.
  if (reaped_.watched.load(std::memory_order_relaxed)) {
    Lineage mine = own_lineage();
    if (reaped_.owner.load(std::memory_order_relaxed) != parent_pid ||
        reaped_.owner_parent.load(std::memory_order_relaxed) != mine.parent ||
        reaped_.owner_group.load(std::memory_order_relaxed) != mine.group) {
      reaped_.owner.store(0, std::memory_order_relaxed);
      reaped_.owner_parent.store(mine.parent, std::memory_order_relaxed);
      reaped_.owner_group.store(mine.group, std::memory_order_relaxed);
      reaped_.owner_namespace.store(os::pid_namespace_id(), std::memory_order_relaxed);
      reaped_.owner.store(parent_pid, std::memory_order_release);
    }
  }
  fork_staging_stale_ = false;
  fork_pipe_[0] = fork_pipe_[1] = -1;
  fork_reentered_ = false;
  set_if_changed(fork_interrupted_, interrupted);
  fork_slot_ = -1;
  fork_map_ = nullptr;
  size_t bytes = 0;
  for (Chunk *chunk = chunks_.front(); chunk != nullptr; chunk = ChunkList::next(chunk)) {
    if (chunk->tier != Tier::kSecret) {
      set_if_changed(chunk->fork_copy, Chunk::ForkCopy::kNone);
      // The child locks its copy with mlock2(MLOCK_ONFAULT): checked here
      // once, so that no child has to try it in a child of its own (each
      // child still compares its own filters with this verdict's).
      if (chunk->tier == Tier::kLocked && !tiers_.checked(linux_facts::ProbeCall::kMlockOnFault))
        tiers_.may_call(linux_facts::ProbeCall::kMlockOnFault);
      continue;
    }
    bool hidden = interrupted || hidden_from_parent(chunk); // interrupted: protections may be halfway changed
    set_if_changed(chunk->fork_copy, hidden ? Chunk::ForkCopy::kByChild : Chunk::ForkCopy::kStaged);
    if (hidden) continue;
    set_if_changed(chunk->fork_offset_pages, static_cast<uint32_t>(bytes / os::kPageSize));
    bytes += size_t{chunk->touched_pages} * os::kPageSize;
  }
  if (bytes != 0) {
    check_staging_fds();
    if (staging_pipe_[0] < 0) {
      // A socket pair: a child that can read this process's /proc/PID/fd
      // could open a pipe again and say another child's pid for its own
      // file (which would then be given away while it maps it). Only where
      // this thread has no seccomp filter at all (the status read says so):
      // a filter is per thread, and a trial in a child would have to match
      // it exactly; under one, the pipe as before.
      linux_facts::SeccompState sandbox = linux_facts::seccomp_state();
      bool socket = sandbox.known && !sandbox.filtered && os::make_message_socket(staging_pipe_) == 0;
      if (!socket && os::make_message_pipe(staging_pipe_) != 0) staging_pipe_[0] = staging_pipe_[1] = -1;
      staging_pipe_id_[0] = os::file_id(staging_pipe_[0]); // a socket's two ends are two files
      staging_pipe_id_[1] = os::file_id(staging_pipe_[1]);
      if (staging_pipe_[0] >= 0 && (staging_pipe_id_[0].ino == 0 || staging_pipe_id_[1].ino == 0))
        unknown_descriptor(staging_pipe_); // as the copy pipes: then no staging file
    }
    // A file that an earlier, larger heap filled is given up (the pages it
    // holds would be zeroed at every fork, and held for nothing); not for
    // as many pages as threads' caches gave back for this fork, which they
    // take again after it, from the pool's free runs, not always the same
    // (given up for them, files were made again at 45 forks in 200, with two
    // threads bouncing 64 blocks of 16 KiB, against 4; excusing the stale
    // pages of the runs given back alone, at 18-24).
    int slot = -1;
    for (int attempt = 0; attempt <= kStagingFiles && fork_slot_ < 0; ++attempt) {
      slot = staging_pipe_[0] >= 0 ? take_staging(bytes) : -1;
      if (slot < 0 || (fork_map_ = open_staging(slot)) == nullptr) break;
      plan_child_room(bytes, staging_[slot].bytes);
      bool filled = fill_staging(false);
      if (filled && staging_stale_pages_ <= kStaleStagingPages + staging_taken_pages_ + given_back_pages) {
        reaped_.tracking.store(true, std::memory_order_seq_cst); // before the child exists
        fork_slot_ = slot;
        staging_[slot].handout++;
        break;
      }
      close_staging(slot);
      fork_map_ = nullptr;
      if (!filled) break;
      drop_staging(slot);
      slot = -1;
    }
    if (fork_slot_ < 0) {
      if (slot >= 0) drop_staging(slot); // refused (memlock budget): no use keeping it
      for (Chunk *chunk = chunks_.front(); chunk != nullptr; chunk = ChunkList::next(chunk))
        if (chunk->fork_copy == Chunk::ForkCopy::kStaged) chunk->fork_copy = Chunk::ForkCopy::kByChild;
    }
  }
}

// The forking thread's children (/proc/thread-self/children) before the
// kernel's fork of a level (the outer fork, or one made inside it at a
// nesting depth), when its child is to copy for itself: a pid not among them
// afterwards says the fork has happened (another thread's fork or _Fork puts
// its child in that thread's list; a child reaped meanwhile only leaves it;
// a child of a fork made inside this one since is a false alarm, which the
// wait below finds out and notes). Unknown (no /proc, a seccomp filter on
// this thread, whose calls might not be allowed; more children than kept):
// -1, no wait, as before.
namespace {
// The pids in a /proc/PID/task/TID/children text, each ended by a space
// (one cut short at the end of a full buffer is left out).
template <typename Each> void each_child(const char *text, long len, Each each) {
  for (long at = 0; at < len;) {
    int32_t pid = 0;
    while (at < len && (text[at] < '0' || text[at] > '9')) ++at;
    if (at == len) break;
    while (at < len && text[at] >= '0' && text[at] <= '9') pid = pid * 10 + (text[at++] - '0');
    if (at == len) break;
    if (!each(pid)) break;
  }
}
} // namespace

void ChunkPool::note_children_before_fork(int level) {
  ChildrenBefore &before = children_before_[level + 1];
  before.count = -1;
  linux_facts::SeccompState sandbox = linux_facts::seccomp_state();
  if (!sandbox.known || sandbox.filtered) return;
  char text[kChildrenBefore * 12];
  long len = linux_facts::read_small_file("/proc/thread-self/children", text, sizeof text);
  if (len < 0 || static_cast<size_t>(len) == sizeof text) return;
  int count = 0;
  bool all = true;
  each_child(text, len, [&](int32_t pid) {
    if (count == kChildrenBefore) return all = false;
    before.pids[count++] = pid;
    return true;
  });
  if (all) before.count = count;
}

bool ChunkPool::forked_since_noted(int level) const {
  const ChildrenBefore &before = children_before_[level + 1];
  if (before.count < 0) return false;
  char text[kChildrenBefore * 12 + 16];
  long len = linux_facts::read_small_file("/proc/thread-self/children", text, sizeof text);
  bool forked = false;
  each_child(text, len, [&](int32_t pid) {
    bool known = false;
    for (int i = 0; i < before.count && !known; ++i) known = before.pids[i] == pid;
    forked = !known;
    return known;
  });
  return forked;
}

// The pipe on which the child of a fork level (-1: the outer fork; else a
// nesting depth) says its copy is done: its id, for the child's checks, and
// the forking thread's children noted. false, both ends -1, when none can
// be had.
bool ChunkPool::open_copy_pipe(int level) {
  int *fds = level < 0 ? fork_pipe_ : nested_pipe_[level];
  os::FileId &id = level < 0 ? fork_pipe_id_ : nested_pipe_id_[level];
  if (os::make_pipe(fds) != 0) {
    fds[0] = fds[1] = -1;
    id = os::FileId{};
    return false;
  }
  id = os::file_id(fds[0]);
  if (id.ino == 0) { // fstat refused (a seccomp filter): the child could not tell the pipe is its to answer on
    unknown_descriptor(fds);
    id = os::FileId{};
    return false;
  }
  note_children_before_fork(level);
  return true;
}

// Before a fork handler's write in the parent (one registered before
// secmem's: its parent handler runs after the kernel's fork and before
// secmem's parent handler, which is where the parent waits): every fork in
// progress, the innermost first, whose child copies for itself and has been
// made is waited for, for at most kChildCopyWaitMs (a child handler
// registered earlier may wait for this very handler).
void ChunkPool::wait_for_copies(int nest) {
  for (int level = nest - 1; level >= -1; --level) {
    if (level >= static_cast<int>(kNestedForks)) continue; // no pipe that deep: its child copies unwaited for
    int *fds = level < 0 ? fork_pipe_ : nested_pipe_[level];
    if (fds[1] < 0 || !forked_since_noted(level)) continue;
    os::close_fd(fds[1]);
    fds[1] = -1;
    os::Awaited came = os::await_byte_for(fds[0], kChildCopyWaitMs);
    if (came == os::Awaited::kNothing) {
      // A child too slow, or a process this thread made without secmem's
      // handlers (_Fork, clone) that holds the write end and lives on: a
      // new pipe, as below, so that neither this wait nor the parent
      // handler's waits for that process. The old read end stays open until
      // the fork is over: a child that writes to a pipe without a reader
      // would die of SIGPIPE.
      close_stale_read(level + 1);
      keep_read_end(level + 1, fds[0]);
    } else {
      os::close_fd(fds[0]);
    }
    fds[0] = -1;
    if (came != os::Awaited::kByte) {
      // No copy came: the child died first, or the new pid was not this
      // fork's child (one of a fork made inside it, or another process this
      // thread made): then that fork is still to come, and its child needs
      // a pipe.
      if (!open_copy_pipe(level) && level < 0)
        fork_staging_stale_ = true; // a child made now has no exact copy: it says so and stops
    }
    if (came == os::Awaited::kNothing) {
      static std::atomic<bool> said{false};
      diag::say_once(said, "fork: a fork handler registered before secmem's uses the secret heap in the parent while "
                           "the child copies it, and no copy was done in 2 s (a child fork handler registered earlier "
                           "that waits for the parent, or a process made with _Fork or clone in a prepare handler that "
                           "lives on?); going on: that child's copy may hold this change");
    }
  }
}

// Another fork handler uses the heap on the forking thread while the fork is
// in progress: a prepare handler registered before secmem's (it runs after
// secmem's, so before the fork), or a parent handler registered before it
// (after the fork). A child that copies for itself and exists is waited for
// first (wait_for_copies). Before the fork the parent's state now differs
// from the staged copy: the child copies instead, while the parent waits, as
// for a sealed block (a chunk made by that handler is copied by the child
// too). After a fork with a staged copy, which of the two it is cannot be
// told, so the staging file stays marked as this fork's: the parent then
// counts it as the child's (a child that copied for itself never says so,
// and the file waits to be given up). A copy the parent took in its own
// memory (no pipe then) goes the same way once a pipe can be had. Without a
// pipe the copy is stale, and a child made now stops (after_fork_child).
void ChunkPool::fork_reentered(int nest) {
  wait_for_copies(nest);
  if (fork_reentered_) return;
  if (fork_pipe_[0] >= 0) {
    note_children_before_fork(-1);
  } else if (!open_copy_pipe(-1)) {
    fork_staging_stale_ = true; // a child made now has no exact copy: it says so and stops
    return;
  }
  fork_staging_stale_ = false;
  fork_reentered_ = true;
  for (Chunk *chunk = chunks_.front(); chunk != nullptr; chunk = ChunkList::next(chunk))
    if (chunk->fork_copy == Chunk::ForkCopy::kStaged || chunk->fork_copy == Chunk::ForkCopy::kStagedNoPipe)
      chunk->fork_copy = Chunk::ForkCopy::kByChild;
}

// The fallback when no pipe can be had: a copy staged by the parent before fork.
void ChunkPool::stage_in_parent(Chunk *chunk) {
  size_t len = chunk->mapped_bytes();
  size_t live = size_t{chunk->touched_pages} * os::kPageSize;
  void *staging = nullptr;
  chunk->fork_staging_tier = Tier::kSecret;
  int fd = -1;
  if (!tiers_.may_call(linux_facts::ProbeCall::kMemfdSecret) || os::memlock_budget() < len ||
      os::map_secret_anywhere_with_fd(len, &staging, &fd) != 0) {
    staging = nullptr;
  } else if (os::touch_through_kernel(staging, live) != 0) {
    os::unmap(staging, len);
    os::close_fd(fd);
    staging = nullptr;
    fd = -1;
  }
  if (staging == nullptr) {
    staging = os::map_anon_anywhere(len);
    chunk->fork_staging_tier = Tier::kUnlocked;
  }
  chunk->fork_copy_short = false;
  if (staging != nullptr) {
    // After an interrupted protection change the record may say read-write
    // of a page still PROT_NONE (protection::set records first): opening by
    // the record, the copy faulted in the parent.
    int err = fork_interrupted_ ? protection::open_touched_for_copy(chunk) : protection::open_restricted(chunk);
    if (err == 0)
      os::copy_unchecked(staging, reinterpret_cast<void *>(chunk->base), live);
    else // by the record; after an interrupted change not even that (the child stops)
      chunk->fork_copy_short =
          fork_interrupted_ || !copy_open_pages(chunk, static_cast<char *>(staging), 0, chunk->touched_pages);
    // Refused, the pages it could not open are still closed: restore_restricted
    // would record a guard it cannot close as read-write, and the next copy
    // (or a block made there) would fault on it.
    if (err == 0)
      protection::restore_restricted(chunk);
    else
      protection::close_again(chunk);
  }
  chunk->fork_staging = staging;
  chunk->fork_staging_fd = fd; // the child maps the file in the chunk's place
}

// With the gate closed: the staged copy, and the hand-shake for the rest.
// The staging mapping goes back to PROT_NONE as soon as the copy is in it,
// before the kernel's fork: read-write only while the copy is written, not
// through the fork and the fork handlers after secmem's (in the parent
// handler, where it was closed, the mprotect also cost about 1 us more: a
// loop of forks, 94 pages).
void ChunkPool::prepare_fork() {
  if (fork_slot_ >= 0) {
    fill_staging(true); // every page it writes is in memory
    close_staging(fork_slot_);
    fork_map_ = nullptr;
  }
  bool by_child = false;
  for (Chunk *chunk = chunks_.front(); chunk != nullptr; chunk = ChunkList::next(chunk))
    by_child = by_child || chunk->fork_copy == Chunk::ForkCopy::kByChild;
  if (!by_child) return;
  if (open_copy_pipe(-1)) return;
  for (Chunk *chunk = chunks_.front(); chunk != nullptr; chunk = ChunkList::next(chunk)) {
    if (chunk->fork_copy != Chunk::ForkCopy::kByChild) continue;
    stage_in_parent(chunk);
    chunk->fork_copy = Chunk::ForkCopy::kStagedNoPipe;
  }
}

void ChunkPool::after_fork_parent(uint64_t forks_done) {
  if (fork_slot_ >= 0) {
    staging_[fork_slot_].in_use = true; // until the child (it says its pid) is gone
    staging_[fork_slot_].holder = 0;
    staging_[fork_slot_].forked = forks_done;
    fork_slot_ = -1;
    // Earlier children, while this one runs; unless an interposer watches
    // the program reap them: asking the kernel costs a /proc read and a
    // waitid (30 us of copy-on-write faults and /proc formatting here), and
    // the next fork reads what the interposer saw instead.
    if (!reaped_.watched.load(std::memory_order_relaxed)) refresh_staging(true);
  }
  int unwaited = -1;
  if (fork_pipe_[0] >= 0) {
    if (fork_pipe_[1] >= 0) os::close_fd(fork_pipe_[1]);
    if (os::await_byte(fork_pipe_[0])) // or end of file: the child is gone
      os::close_fd(fork_pipe_[0]);
    else
      unwaited = fork_pipe_[0];
    fork_pipe_[0] = fork_pipe_[1] = -1;
  }
  close_stale_read(0);
  if (unwaited >= 0) keep_unwaited(0, unwaited);
  for (Chunk *chunk = chunks_.front(); chunk != nullptr; chunk = ChunkList::next(chunk)) {
    if (chunk->fork_staging == nullptr) continue;
    // A memfd_secret staging file is zeroed by the kernel when freed; an
    // anonymous one is not.
    if (chunk->fork_staging_tier != Tier::kSecret)
      explicit_bzero(chunk->fork_staging, size_t{chunk->touched_pages} * os::kPageSize);
    os::unmap(chunk->fork_staging, chunk->mapped_bytes());
    if (chunk->fork_staging_fd >= 0) os::close_fd(chunk->fork_staging_fd);
    chunk->fork_staging = nullptr;
    chunk->fork_staging_fd = -1;
  }
}

// In the child: a private copy of a secret chunk, in memfd_secret when the
// child's budget and sandbox allow, else as the policy says, with one message.
// Only the pages in use are copied (and first touched): the rest of the new
// file stays unmade, and those pages are faulted in when a run needs them
// (Chunk::cold), so a heap that once grew forks like one that never did.
void ChunkPool::privatise_in_child(Chunk *chunk, bool use_staged_copy) {
  size_t len = chunk->mapped_bytes();
  void *copy = use_staged_copy ? chunk->fork_staging : nullptr; // staged by the parent (no pipe), or made here
  Tier tier = chunk->fork_staging_tier;
  int copy_fd = copy != nullptr ? chunk->fork_staging_fd : -1;
  bool made_here = false;
  if (copy != nullptr && chunk->fork_copy_short)
    diag::fatal_errno("fork: the parent could not open a sealed block to copy it for this child (mprotect refused)",
                      EPERM);
  int opened = 0;
  if (copy == nullptr) {
    // Read-write in the child's own mapping, first: the guards' mappings
    // merge, which frees room under vm.max_map_count for the copy's.
    // Refused, the copy goes by the record (copy_open_pages), unless an
    // interrupted change may have left the record ahead of the kernel.
    opened = protection::open_all_in_child(chunk);
    if (opened != 0 && fork_interrupted_)
      diag::fatal_errno("fork: cannot open the secret heap to copy it for this child", opened);
    tier = Tier::kSecret;
    // Asked here, in the child: a filter may have come since the parent's
    // prepare handler (another thread's with TSYNC, a prepare handler that
    // runs after secmem's, a child handler that runs before it).
    // Without a descriptor to read the status with, the parent's verdict
    // may be stale: not made.
    bool allowed = tiers_.may_call_now(linux_facts::ProbeCall::kMemfdSecret);
    bool for_now = tiers_.last_check_for_now();
    int err = allowed ? os::map_secret_anywhere_with_fd(len, &copy, &copy_fd) : for_now ? EMFILE : EPERM;
    FallbackReason why = allowed   ? TierMapper::secret_refusal(err)
                         : for_now ? FallbackReason::kOther
                                   : FallbackReason::kSandbox;
    if (err == 0 && (err = for_each_copied_run(chunk, [copy](uint32_t page, uint32_t pages) {
                       return os::touch_through_kernel(static_cast<char *>(copy) + size_t{page} * os::kPageSize,
                                                       size_t{pages} * os::kPageSize);
                     })) != 0) {
      os::unmap(copy, len);
      os::close_fd(copy_fd);
      copy = nullptr;
      copy_fd = -1;
      why = FallbackReason::kMemlock;
    }
    if (err != 0) {
      if (!tiers_.may_degrade()) {
        diag::Line line;
        line.add("fork: memfd_secret cannot hold the child's private copy of the secret heap (");
        line.err(err).add("); the configuration allows no other tier").emit();
        abort();
      }
      copy = os::map_anon_anywhere(len);
      if (copy == nullptr)
        diag::fatal_errno("fork: no memory to give the child a private copy of the secret heap", ENOMEM);
      tier = Tier::kUnlocked; // locked below, where the budget allows; reported then
      tiers_.count_fallback(why);
      degraded_why_ = why;
      degraded_err_ = err;
    }
    int short_err = for_each_copied_run(chunk, [copy, chunk, opened](uint32_t page, uint32_t pages) {
      size_t at = size_t{page} * os::kPageSize;
      if (opened != 0) return copy_open_pages(chunk, static_cast<char *>(copy), page, pages) ? 0 : opened;
      os::copy_unchecked(static_cast<char *>(copy) + at, reinterpret_cast<char *>(chunk->base) + at,
                         size_t{pages} * os::kPageSize);
      return 0;
    });
    if (short_err != 0)
      diag::fatal_errno("fork: cannot open the parent's sealed block to copy it for this child", short_err);
    made_here = true;
  } else if (tier != Tier::kSecret && !tiers_.may_degrade()) {
    // Staged by the parent in its own memory (no descriptor for a pipe).
    diag::Line()
        .add("fork: memfd_secret could not hold the copy of the secret heap staged for the child (EMFILE: no "
             "descriptor for the hand-shake); the configuration allows no other tier")
        .emit();
    abort();
  }
  // In place of the chunk without mremap (a sandbox that allows mmap may not
  // allow it, and it wants mapping-count headroom): the copy's file mapped
  // again there, or anonymous memory there and the copy copied in.
  void *base = reinterpret_cast<void *>(chunk->base);
  int err = 0;
  if (copy_fd >= 0) {
    os::unmap(copy, len);
    err = os::map_fd_fixed(copy_fd, base, len);
    os::close_fd(copy_fd);
  } else {
    err = os::map_anon_fixed(base, len);
    if (err == 0) os::copy_unchecked(base, copy, size_t{chunk->touched_pages} * os::kPageSize);
    explicit_bzero(copy, size_t{chunk->touched_pages} * os::kPageSize);
    os::unmap(copy, len);
  }
  if (err != 0) diag::fatal_errno("fork: cannot move the child's private copy of the secret heap", err);
  move_tier(chunk, tier);
  chunk->fork_staging = nullptr;
  fork_privatisations_++;
  // The pages left out are free: zero in the new file, faulted in when used.
  settle_copy_in_child(
      chunk, [&](uint32_t page) { return made_here && tier == Tier::kSecret && !chunk->copied_in_fork(page); });
}

// In the child: the staged copy mapped over the chunk (one mapping in place
// of the chunk's, so no mapping-count headroom is needed). Pages the copy left
// out are zero (stale: the parent zeroed them) or not yet made (cold, faulted
// in through the kernel when used).
SECMEM_FORK_CHILD_TEXT void ChunkPool::map_staged_in_child(Chunk *chunk, int fd, bool fd_ours) {
  // A child handler registered before secmem's that closed the descriptor:
  // the child has no way to its copy, and the parent's pages are shared.
  if (!fd_ours)
    diag::fatal_errno("fork: the descriptor of the child's copy of the secret heap was closed before secmem's fork "
                      "handler ran (by a fork handler registered earlier)",
                      EBADF);
  // The chunk ends where its touched pages end, or with the room the parent
  // zeroed after them (plan_child_room); the rest of the file is not the
  // child's to use. Back to reserve first, whole: one mapping, so no
  // mapping-count headroom is needed, and the file's mapping then takes one
  // slot of it. A memlock budget too tight for the room maps the copy alone.
  // (At vm.max_map_count the parent's mapping is unmapped instead: no other
  // thread runs here to map anything meanwhile. A hole that cannot be
  // reserved again keeps the chunk's slots out of use.)
  void *base = reinterpret_cast<void *>(chunk->base);
  os::Released released = os::release_to_reserve(base, chunk->mapped_bytes(), /*may_unmap=*/true);
  bool parents_left = released == os::Released::kUnchanged;
  chunk->holed = chunk->holed || released == os::Released::kHole;
  uint32_t pages = chunk->touched_pages + chunk->fork_room_pages;
  size_t offset = size_t{chunk->fork_offset_pages} * os::kPageSize;
  int err = os::map_fd_fixed(fd, base, size_t{pages} * os::kPageSize, offset);
  if (err != 0 && pages != chunk->touched_pages) {
    // (A failed mmap may have left the range unmapped: reserve again.)
    chunk->holed =
        chunk->holed || os::release_to_reserve(base, size_t{pages} * os::kPageSize, true) == os::Released::kHole;
    pages = chunk->touched_pages;
    err = os::map_fd_fixed(fd, base, size_t{pages} * os::kPageSize, offset);
  }
  if (err != 0) diag::fatal_errno("fork: cannot map the child's private copy of the secret heap", err);
  // The parent's mapping past the copy would share its later pages.
  if (parents_left && pages < chunk->mapped_pages) {
    os::Released tail =
        os::release_to_reserve(chunk->page_address(pages), size_t{chunk->mapped_pages - pages} * os::kPageSize, true);
    if (tail == os::Released::kUnchanged)
      diag::fatal_errno("fork: cannot unmap the parent's secret heap past the child's copy", ENOMEM);
    chunk->holed = chunk->holed || tail == os::Released::kHole;
  }
  uint32_t dropped = chunk->mapped_pages - pages;
  mapped_bytes_[static_cast<int>(chunk->tier)] -= size_t{dropped} * os::kPageSize;
  chunk->mapped_pages = pages;
  chunk->free_pages -= dropped;
  fork_privatisations_++;
  // The pages the copy left out that the file holds (an earlier child's,
  // Chunk::stale, zeroed by the parent) are used as they are: only those it
  // does not hold are cold, and the chunk is touched over the room's pages
  // the file holds, up to the first it does not (made as any page past
  // touched_pages, so that a refused one shrinks the chunk as before). Made
  // through the kernel again at their first use, they cost a PostgreSQL
  // backend an open of /dev/zero and a read per run at every connection (7
  // opens, 14 pages).
  uint32_t copied = chunk->touched_pages;
  uint32_t held = copied;
  while (!chunk->huge && held < pages && bitmap::test(chunk->stale, held)) ++held;
  pages_touched_ += held - copied;
  chunk->touched_pages = held;
  settle_copy_in_child(chunk, [chunk, copied](uint32_t page) {
    bool taken = page < copied && staged_copy_takes(chunk, page);
    return !taken && !bitmap::test(chunk->stale, page);
  });
}

void ChunkPool::prepare_nested_fork(unsigned depth) {
  if (depth >= kNestedForks) return;
  open_copy_pipe(static_cast<int>(depth)); // without one, the inner child copies unwaited for
}

// (Still the pipe: a daemon may have closed it and opened a file under its
// number since.)
void ChunkPool::close_stale_read(int slot) {
  if (stale_read_[slot] >= 0 && os::file_id(stale_read_[slot]) == stale_read_id_[slot]) os::close_fd(stale_read_[slot]);
  stale_read_[slot] = -1;
}

// A read end kept open until the next fork at its level (stale_read_), where
// its identity says it is still the pipe; one that cannot be identified is
// closed now.
void ChunkPool::keep_read_end(int slot, int read_end) {
  os::FileId id = os::file_id(read_end);
  if (id.ino != 0) { // known (fstat allowed): else it could never be closed safely, and one would leak per fork
    stale_read_[slot] = read_end;
    stale_read_id_[slot] = id;
  } else {
    os::close_fd(read_end);
  }
}

// A child that copies for itself could not be waited for: a seccomp filter
// refuses both read and ppoll here. Its pipe's read end stays open until
// the next fork at this level (a child whose byte finds no reader takes its
// SIGPIPE back: os::send_byte), and the parent goes on, saying so once.
void ChunkPool::keep_unwaited(int slot, int read_end) {
  keep_read_end(slot, read_end);
  static std::atomic<bool> said{false};
  diag::say_once(said, "fork: cannot wait for the child's copy of the secret heap (read and ppoll refused: a "
                       "seccomp filter?); going on: that child's copy may hold this process's later changes");
}

void ChunkPool::after_nested_fork_parent(unsigned depth) {
  if (depth >= kNestedForks) return;
  close_stale_read(static_cast<int>(depth) + 1); // its writers had their 2 s, or could not be waited for
  if (nested_pipe_[depth][0] < 0) return;        // or waited for already (wait_for_copies)
  if (nested_pipe_[depth][1] >= 0) os::close_fd(nested_pipe_[depth][1]);
  if (os::await_byte(nested_pipe_[depth][0])) // or end of file: the child is gone
    os::close_fd(nested_pipe_[depth][0]);
  else
    keep_unwaited(static_cast<int>(depth) + 1, nested_pipe_[depth][0]);
  nested_pipe_[depth][0] = nested_pipe_[depth][1] = -1;
}

SECMEM_FORK_CHILD_TEXT void ChunkPool::after_fork_child(int nested_depth) {
  bool nested = nested_depth >= 0;
  // Pipe ends are closed and written only while they are still the pipes
  // made for them: a child handler registered earlier may have closed them
  // and opened files under the numbers.
  auto ours = [](int fd, os::FileId id) { return fd >= 0 && os::file_id(fd) == id; };
  // The outer fork's hand-shake is not a nested child's to answer.
  if (ours(fork_pipe_[0], fork_pipe_id_)) os::close_fd(fork_pipe_[0]);
  fork_pipe_[0] = -1;
  if (fork_pipe_[1] >= 0 && !ours(fork_pipe_[1], fork_pipe_id_)) fork_pipe_[1] = -1;
  if (nested && fork_pipe_[1] >= 0) os::close_fd(fork_pipe_[1]);
  if (nested) fork_pipe_[1] = -1;
  int signal_fd = -1;
  for (unsigned depth = 0; depth < kNestedForks; ++depth) {
    for (int &fd : nested_pipe_[depth]) {
      if (fd >= 0 && ours(fd, nested_pipe_id_[depth])) {
        if (nested && depth == static_cast<unsigned>(nested_depth) && &fd == &nested_pipe_[depth][1])
          signal_fd = fd;
        else
          os::close_fd(fd);
      }
      fd = -1;
    }
  }
  for (int slot = 0; slot <= static_cast<int>(kNestedForks); ++slot) { // the parent's, given up
    if (stale_read_[slot] >= 0 && ours(stale_read_[slot], stale_read_id_[slot])) os::close_fd(stale_read_[slot]);
    stale_read_[slot] = -1;
  }
  int staging_fd = fork_slot_ >= 0 ? staging_[fork_slot_].fd : -1;
  bool staging_fd_ours = false, checked = false;
  ChildLock child_lock;
  for (Chunk *chunk = chunks_.front(); chunk != nullptr; chunk = ChunkList::next(chunk)) {
    Tier before = chunk->tier;
    degraded_err_ = 0;
    // Without a private copy the child would write the parent's pages.
    // A copy the parent took (staged, or in its own memory without a pipe)
    // that another fork handler's heap call has made stale, with no pipe for
    // the child to copy instead: the child stops (the kernel's copy of the
    // heap's bookkeeping would not match the copy's bytes).
    bool parents_copy =
        (chunk->fork_copy == Chunk::ForkCopy::kStaged || chunk->fork_copy == Chunk::ForkCopy::kStagedNoPipe) && !nested;
    if (parents_copy && fork_staging_stale_)
      diag::fatal_errno("fork: another fork handler changed the secret heap after its copy for the child was taken, "
                        "and no pipe could be had to let the child copy it instead (no descriptor free, or fstat "
                        "refused on it)",
                        EMFILE);
    if (chunk->fork_copy == Chunk::ForkCopy::kStaged && !nested) {
      if (!checked) staging_fd_ours = os::file_id(staging_fd) == staging_[fork_slot_].id;
      checked = true;
      map_staged_in_child(chunk, staging_fd, staging_fd_ours);
    } else if (chunk->tier == Tier::kSecret)
      privatise_in_child(chunk, !nested && chunk->fork_copy == Chunk::ForkCopy::kStagedNoPipe);
    chunk->fork_copy = Chunk::ForkCopy::kNone;
    // Locks are not inherited across fork: take them again.
    if (before == Tier::kLocked || (before == Tier::kSecret && chunk->tier != Tier::kSecret)) {
      // mlock cannot fault in PROT_NONE pages (a chunk without any needs no
      // mprotect: in a new process the first change to its mappings costs
      // most, 10-20 us here). After a fork that interrupted this thread's
      // heap operation, a page may still be PROT_NONE that the record already
      // shows read-write (protection::set records first): opened all the same.
      // Refused (a seccomp filter), the pages stay as the record says
      // (mlock2 with MLOCK_ONFAULT takes PROT_NONE pages as they are), and
      // are not restored: a guard the kernel kept closed would have been
      // recorded read-write, and a block made there faulted.
      int opened = chunk->restricted_pages != 0 || fork_interrupted_ ? protection::open_all_in_child(chunk) : 0;
      FallbackReason why = FallbackReason::kOther;
      int lock_err = relock_in_child(tiers_, &child_lock, reinterpret_cast<void *>(chunk->base),
                                     size_t{chunk->touched_pages} * os::kPageSize, &why);
      if (int err = opened == 0 ? protection::restore_restricted(chunk) : 0; err != 0)
        diag::fatal_errno("fork: cannot protect the child's guard pages and sealed blocks", err);
      // A copy on the locked tier that cannot be locked again: unlocked
      // memory where the policy allows it; else, as for memfd_secret, the
      // child stops (its secrets would be swappable).
      if (lock_err != 0 && degraded_err_ == 0 && !tiers_.may_degrade()) relock_refused(tiers_, why, lock_err);
      move_tier(chunk, lock_err == 0 ? Tier::kLocked : Tier::kUnlocked);
      if (degraded_err_ != 0)
        tiers_.report_fallback(chunk->tier, degraded_why_, degraded_err_);
      else if (lock_err != 0)
        tiers_.report_fallback(Tier::kUnlocked, why, lock_err);
    }
    tiers_.note_tier(chunk->tier);
  }
  // The parent's staging files are its own: the child says which one it
  // took (so that the parent knows when it is free again) and keeps none.
  // (Checked again here: a child handler registered earlier may have
  // closed and reused the numbers.)
  bool pipe_ours = staging_pipe_[0] >= 0 && os::file_id(staging_pipe_[0]) == staging_pipe_id_[0] &&
                   os::file_id(staging_pipe_[1]) == staging_pipe_id_[1];
  // Only to a parent that sees this child's pid as this child does (not
  // across a pid namespace the parent entered).
  if (fork_slot_ >= 0 && !nested && !fork_reentered_ && staging_fd_ours && pipe_ours &&
      os::parent_process_id() == fork_parent_pid_) {
    StagingMessage msg{static_cast<uint32_t>(fork_slot_), staging_[fork_slot_].handout,
                       static_cast<int32_t>(os::process_id())};
    os::send_message(staging_pipe_[1], &msg, sizeof msg);
  }
  for (int slot = 0; slot < kStagingFiles; ++slot) {
    int fd = staging_[slot].fd;
    if (fd >= 0 && (slot == fork_slot_ && checked ? staging_fd_ours : os::file_id(fd) == staging_[slot].id))
      os::close_fd(fd);
    staging_[slot] = StagingFile{};
  }
  for (int &fd : staging_pipe_) {
    if (fd >= 0 && pipe_ours) os::close_fd(fd);
    fd = -1;
  }
  fork_slot_ = -1;
  fork_map_ = nullptr; // staging mappings are not inherited (MADV_DONTFORK)
  if (fork_pipe_[1] >= 0) {
    os::send_byte(fork_pipe_[1]);
    os::close_fd(fork_pipe_[1]);
  }
  fork_pipe_[1] = -1; // [0] is already (a pair of stores would be one 8-byte constant from .rodata: a page fault here)
  if (signal_fd >= 0) {
    os::send_byte(signal_fd);
    os::close_fd(signal_fd);
  }
}

} // namespace secmem
