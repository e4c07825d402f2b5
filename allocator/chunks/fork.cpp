// The chunk pool's half of fork. memfd_secret mappings are MAP_SHARED: after
// fork, parent and child would write the same pages. Before fork the parent
// stages a private copy of each secret chunk (in a new secret file when the
// memlock budget allows, else in anonymous memory); the child moves the copy
// over the shared mapping, at the same address, and puts guards, seals and
// locks back. The heap's half (its lock and thread caches) is in heap/heap.cpp.
#include <cerrno>
#include <cstring>
#include <sys/mman.h>

#include "chunks/chunk_pool.h"
#include "chunks/protection.h"
#include "platform/diag.h"

namespace secmem {

void ChunkPool::prepare_fork() {
  for (Chunk *chunk = chunks_.front(); chunk != nullptr; chunk = ChunkList::next(chunk)) {
    if (chunk->tier != Tier::kSecret) continue;
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
      // Guard pages and sealed blocks are readable only for the copy.
      protection::open_restricted(chunk);
      os::copy_unchecked(staging, reinterpret_cast<void *>(chunk->base), live);
      protection::restore_restricted(chunk);
    }
    chunk->fork_staging = staging;
  }
}

void ChunkPool::after_fork_parent() {
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

void ChunkPool::after_fork_child() {
  for (Chunk *chunk = chunks_.front(); chunk != nullptr; chunk = ChunkList::next(chunk)) {
    Tier before = chunk->tier;
    if (chunk->tier == Tier::kSecret) {
      // Without a private copy the child would write the parent's pages.
      if (chunk->fork_staging == nullptr)
        diag::fatal("fork: no memory to give the child a private copy of the secret heap");
      int err = os::move_mapping(chunk->fork_staging, chunk->mapped_bytes(), reinterpret_cast<void *>(chunk->base));
      if (err != 0) diag::fatal_errno("fork: cannot move the child's private copy of the secret heap", err);
      move_tier(chunk, chunk->fork_staging_tier);
      chunk->fork_staging = nullptr;
      fork_privatisations_++;
      // The copy was mapped read-write: guards and seals again.
      if (int err = protection::restore_restricted(chunk); err != 0)
        diag::fatal_errno("fork: cannot protect the child's guard pages and sealed blocks", err);
    }
    // Locks are not inherited across fork: take them again.
    if (before == Tier::kLocked || (before == Tier::kSecret && chunk->tier != Tier::kSecret)) {
      protection::open_restricted(chunk); // mlock cannot fault in PROT_NONE pages
      bool locked = tiers_.fault_in(Tier::kLocked, reinterpret_cast<void *>(chunk->base),
                                    size_t{chunk->touched_pages} * os::kPageSize) == 0;
      if (int err = protection::restore_restricted(chunk); err != 0)
        diag::fatal_errno("fork: cannot protect the child's guard pages and sealed blocks", err);
      move_tier(chunk, locked ? Tier::kLocked : Tier::kUnlocked);
      if (!locked) tiers_.report_fallback(Tier::kUnlocked, FallbackReason::kMemlock, EAGAIN);
    }
    tiers_.note_tier(chunk->tier);
  }
}

} // namespace secmem
