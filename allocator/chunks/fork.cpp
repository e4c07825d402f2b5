// The chunk pool's half of fork. memfd_secret mappings are MAP_SHARED: after
// fork, parent and child would write the same pages. The child makes its own
// private copy of each secret chunk, in a new secret file charged to its own
// memlock budget (mlock'ed and memfd_secret pages are not charged to a fork
// child until it maps them), moves it over the shared mapping at the same
// address, and puts guards, seals and locks back. Meanwhile the parent's
// forking thread waits, holding the heap lock, until the child says its copies
// are in place: nothing the parent does after fork() returns reaches the child.
// Nothing is ever opened or copied in the parent: sealed blocks and guard
// pages stay closed to its threads, and no copy lands in memory the parent can
// read. Only when no pipe can be had (EMFILE) does the parent stage the copy
// itself, as before. The heap's half (its lock and thread caches) is in
// heap/heap.cpp.
#include <cerrno>
#include <cstring>
#include <sys/mman.h>

#include "chunks/chunk_pool.h"
#include "chunks/protection.h"
#include "platform/diag.h"

namespace secmem {

namespace {

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

} // namespace

// The fallback when no pipe can be had: a copy staged by the parent before fork.
void ChunkPool::stage_in_parent(Chunk *chunk) {
  size_t len = chunk->mapped_bytes();
  size_t live = size_t{chunk->touched_pages} * os::kPageSize;
  void *staging = nullptr;
  chunk->fork_staging_tier = Tier::kSecret;
  if (!fork_may_map_secret_ || os::memlock_budget() < len || os::map_secret_anywhere(len, &staging) != 0) {
    staging = nullptr;
  } else if (os::touch_through_kernel(staging, live) != 0) {
    os::unmap(staging, len);
    staging = nullptr;
  }
  if (staging == nullptr) {
    staging = os::map_anon_anywhere(len);
    chunk->fork_staging_tier = Tier::kUnlocked;
  }
  if (staging != nullptr) {
    protection::open_restricted(chunk);
    os::copy_unchecked(staging, reinterpret_cast<void *>(chunk->base), live);
    protection::restore_restricted(chunk);
  }
  chunk->fork_staging = staging;
}

void ChunkPool::prepare_fork() {
  fork_pipe_[0] = fork_pipe_[1] = -1;
  bool any_secret = false;
  for (Chunk *chunk = chunks_.front(); chunk != nullptr; chunk = ChunkList::next(chunk))
    any_secret = any_secret || chunk->tier == Tier::kSecret;
  // Decided here, for the child: the forking thread's filters are the
  // child's, and /proc is slower to read in a new process.
  fork_may_map_secret_ = any_secret && tiers_.may_call(linux_facts::ProbeCall::kMemfdSecret);
  if (!any_secret || os::make_pipe(fork_pipe_) == 0) return;
  fork_pipe_[0] = fork_pipe_[1] = -1;
  for (Chunk *chunk = chunks_.front(); chunk != nullptr; chunk = ChunkList::next(chunk))
    if (chunk->tier == Tier::kSecret) stage_in_parent(chunk);
}

void ChunkPool::after_fork_parent() {
  if (fork_pipe_[0] >= 0) {
    os::close_fd(fork_pipe_[1]);
    os::await_byte(fork_pipe_[0]); // or end of file: the child is gone
    os::close_fd(fork_pipe_[0]);
    return;
  }
  for (Chunk *chunk = chunks_.front(); chunk != nullptr; chunk = ChunkList::next(chunk)) {
    if (chunk->fork_staging == nullptr) continue;
    // A memfd_secret staging file is zeroed by the kernel when freed; an
    // anonymous one is not.
    if (chunk->fork_staging_tier != Tier::kSecret)
      explicit_bzero(chunk->fork_staging, size_t{chunk->touched_pages} * os::kPageSize);
    os::unmap(chunk->fork_staging, chunk->mapped_bytes());
    chunk->fork_staging = nullptr;
  }
}

// In the child: a private copy of a secret chunk, in memfd_secret when the
// child's budget and sandbox allow, else as the policy says, with one message.
// Only the pages in use are copied (and first touched): the rest of the new
// file stays unmade, and those pages are faulted in when a run needs them
// (Chunk::cold), so a heap that once grew forks like one that never did.
void ChunkPool::privatise_in_child(Chunk *chunk) {
  size_t len = chunk->mapped_bytes();
  void *copy = chunk->fork_staging; // staged by the parent (no pipe), or made here
  Tier tier = chunk->fork_staging_tier;
  int copy_fd = -1;
  bool made_here = false;
  if (copy == nullptr) {
    // Read-write in the child's own mapping, first: the guards' mappings
    // merge, which frees room under vm.max_map_count for the copy's.
    protection::open_all_in_child(chunk);
    tier = Tier::kSecret;
    bool allowed = fork_may_map_secret_; // may_call, asked in prepare_fork
    int err = allowed ? os::map_secret_anywhere_with_fd(len, &copy, &copy_fd) : EPERM;
    FallbackReason why = allowed ? TierMapper::secret_refusal(err) : FallbackReason::kSandbox;
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
    for_each_copied_run(chunk, [copy, chunk](uint32_t page, uint32_t pages) {
      size_t at = size_t{page} * os::kPageSize;
      os::copy_unchecked(static_cast<char *>(copy) + at, reinterpret_cast<char *>(chunk->base) + at,
                         size_t{pages} * os::kPageSize);
      return 0;
    });
    made_here = true;
  }
  int err = os::move_mapping(copy, len, reinterpret_cast<void *>(chunk->base));
  if (err == ENOMEM && copy_fd >= 0) {
    // mremap wants headroom under vm.max_map_count; a second mapping of the
    // file in place of the first does not (the copy is in the file).
    os::unmap(copy, len);
    err = os::map_fd_fixed(copy_fd, reinterpret_cast<void *>(chunk->base), len);
  }
  if (copy_fd >= 0) os::close_fd(copy_fd);
  if (err != 0) diag::fatal_errno("fork: cannot move the child's private copy of the secret heap", err);
  move_tier(chunk, tier);
  chunk->fork_staging = nullptr;
  // The pages left out are free: zero in the new file, faulted in when used.
  chunk->cold_pages = 0;
  for (uint32_t page = 0; !chunk->huge && page < chunk->touched_pages; ++page) {
    bool cold = made_here && tier == Tier::kSecret && !chunk->copied_in_fork(page);
    if (cold)
      bitmap::set(chunk->cold, page);
    else
      bitmap::clear(chunk->cold, page);
    chunk->cold_pages += cold;
  }
  fork_privatisations_++;
  // The copy was mapped read-write: guards and seals again.
  if (int prot_err = protection::restore_restricted(chunk); prot_err != 0)
    diag::fatal_errno("fork: cannot protect the child's guard pages and sealed blocks", prot_err);
}

void ChunkPool::after_fork_child() {
  if (fork_pipe_[0] >= 0) os::close_fd(fork_pipe_[0]);
  for (Chunk *chunk = chunks_.front(); chunk != nullptr; chunk = ChunkList::next(chunk)) {
    Tier before = chunk->tier;
    degraded_err_ = 0;
    // Without a private copy the child would write the parent's pages.
    if (chunk->tier == Tier::kSecret) privatise_in_child(chunk);
    // Locks are not inherited across fork: take them again.
    if (before == Tier::kLocked || (before == Tier::kSecret && chunk->tier != Tier::kSecret)) {
      protection::open_all_in_child(chunk); // mlock cannot fault in PROT_NONE pages
      bool locked = tiers_.fault_in(Tier::kLocked, reinterpret_cast<void *>(chunk->base),
                                    size_t{chunk->touched_pages} * os::kPageSize) == 0;
      if (int err = protection::restore_restricted(chunk); err != 0)
        diag::fatal_errno("fork: cannot protect the child's guard pages and sealed blocks", err);
      move_tier(chunk, locked ? Tier::kLocked : Tier::kUnlocked);
      if (degraded_err_ != 0)
        tiers_.report_fallback(chunk->tier, degraded_why_, degraded_err_);
      else if (!locked)
        tiers_.report_fallback(Tier::kUnlocked, FallbackReason::kMemlock, EAGAIN);
    }
    tiers_.note_tier(chunk->tier);
  }
  if (fork_pipe_[1] >= 0) {
    os::send_byte(fork_pipe_[1]);
    os::close_fd(fork_pipe_[1]);
  }
}

} // namespace secmem
