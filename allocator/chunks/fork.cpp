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

// The fallback when no pipe can be had: a copy staged by the parent before fork.
void ChunkPool::stage_in_parent(Chunk *chunk) {
  size_t len = chunk->mapped_bytes();
  size_t live = size_t{chunk->touched_pages} * os::kPageSize;
  void *staging = nullptr;
  chunk->fork_staging_tier = Tier::kSecret;
  if (!tiers_.may_call(linux_facts::ProbeCall::kMemfdSecret) || os::memlock_budget() < len ||
      os::map_secret_anywhere(len, &staging) != 0) {
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
void ChunkPool::privatise_in_child(Chunk *chunk) {
  size_t len = chunk->mapped_bytes();
  size_t live = size_t{chunk->touched_pages} * os::kPageSize;
  void *copy = chunk->fork_staging; // staged by the parent (no pipe), or made here
  Tier tier = chunk->fork_staging_tier;
  if (copy == nullptr) {
    tier = Tier::kSecret;
    bool allowed = tiers_.may_call(linux_facts::ProbeCall::kMemfdSecret);
    int err = allowed ? os::map_secret_anywhere(len, &copy) : EPERM;
    FallbackReason why = allowed ? TierMapper::secret_refusal(err) : FallbackReason::kSandbox;
    if (err == 0 && (err = os::touch_through_kernel(copy, live)) != 0) {
      os::unmap(copy, len);
      copy = nullptr;
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
    protection::open_restricted(chunk); // in the child's own mappings only
    os::copy_unchecked(copy, reinterpret_cast<void *>(chunk->base), live);
  }
  int err = os::move_mapping(copy, len, reinterpret_cast<void *>(chunk->base));
  if (err != 0) diag::fatal_errno("fork: cannot move the child's private copy of the secret heap", err);
  move_tier(chunk, tier);
  chunk->fork_staging = nullptr;
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
      protection::open_restricted(chunk); // mlock cannot fault in PROT_NONE pages
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
