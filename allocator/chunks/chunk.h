// A chunk: one 2 MiB slot (or several, for one huge block) of the reserved
// range, mapped in one protection tier. Its metadata lives in private
// anonymous memory, never in the secret pages it describes.
//
// Layout of one 2 MiB slot:  [ mapped pages ... | PROT_NONE ... guard page ]
// The last page of a slot is never mapped, and slot 0 is never used, so every
// chunk has PROT_NONE address space on both sides (linear overflow off the
// end of a chunk faults) and the guards cost no locked memory.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "config/policy.h"
#include "platform/os.h"
#include "support/bitmap.h"
#include "support/list.h"

namespace secmem {

inline constexpr size_t kChunkSize = size_t{2} << 20;
inline constexpr uint32_t kSlotPages = kChunkSize / os::kPageSize;
inline constexpr uint32_t kMaxChunkPages = kSlotPages - 1; // the last page is the guard
inline constexpr uint32_t kTouchBatchPages = 8;            // first touches come in batches
inline constexpr uint32_t kHugePages = 256;                // larger blocks get a chunk of their own

const char *tier_name(Tier tier);

// Why a chunk landed in a weaker tier than the configured one.
// kSandbox: a seccomp filter kills on the call, or may (see TierMapper::may_call).
enum class FallbackReason : uint8_t { kNoKernelSupport, kRefused, kMemlock, kOther, kSandbox };
inline constexpr int kNumFallbackReasons = 5;

struct Span; // the heap's: what owns each page

struct Chunk {
  uintptr_t base = 0;
  uint32_t slots = 0;         // 1, or more for a huge chunk
  uint32_t mapped_pages = 0;  // [0, mapped_pages) is mapped
  uint32_t touched_pages = 0; // [0, touched_pages) has been faulted in (but for cold pages)
  uint32_t free_pages = 0;
  Tier tier = Tier::kSecret;
  bool huge = false;
  // Part of its range was unmapped and could not be reserved again
  // (os::Released::kHole): its slots are never given back.
  bool holed = false;
  // Whose large runs come from this chunk first (a thread cache, opaque
  // here; heap/large.cpp), or nullptr: set and cleared by ChunkPool under
  // the heap lock.
  const void *claimed_by = nullptr;
  ListLinks<Chunk> links;
  // How a fork child gets its private copy of a memfd_secret chunk
  // (chunks/fork.cpp): kStaged, from the staging file at fork_offset_pages;
  // kByChild, made by the child while the parent waits; kStagedNoPipe, the
  // parent's copy in fork_staging (no pipe or file could be had).
  enum class ForkCopy : uint8_t { kNone, kStaged, kByChild, kStagedNoPipe };
  ForkCopy fork_copy = ForkCopy::kNone;
  uint32_t fork_offset_pages = 0;
  // kStaged: pages past touched_pages, in the staging file after this
  // chunk's copy, that the child maps too and grows into (0: none).
  uint32_t fork_room_pages = 0;
  // Pages of the staging file, in this chunk's place, that an earlier child
  // left in memory and this fork's copy leaves out: zeroed before the fork.
  uint64_t stale[bitmap::words_for(kSlotPages)] = {};
  void *fork_staging = nullptr;
  int fork_staging_fd = -1; // its file, when in memfd_secret
  Tier fork_staging_tier = Tier::kSecret;
  // kStagedNoPipe: the parent could not open every page its copy needed
  // (mprotect refused: a seccomp filter, the map count), and a sealed
  // block's pages are missing from fork_staging: the child stops.
  bool fork_copy_short = false;
  uint64_t used[bitmap::words_for(kSlotPages)] = {}; // pages in a run
  // In a fork child: pages below touched_pages that its copy left out (free
  // in the parent; zero) and that its file does not hold yet, not yet
  // faulted in; cold_pages of them.
  uint64_t cold[bitmap::words_for(kSlotPages)] = {};
  uint32_t cold_pages = 0;
  // Pages whose protection is not read-write (guards, sealed blocks): the
  // PROT_* value of each plus one (0: read-write), for the fork copy and the
  // child; a huge chunk keeps one value for its whole block in prot[0].
  uint8_t prot[kSlotPages] = {};
  uint32_t restricted_pages = 0;
  // Pages whose protection differs from the page before's (not in a huge
  // chunk): each such change is a mapping more for the process
  // (protection::mapping_splits).
  uint32_t prot_changes = 0;
  // Pages in no run may still have a freed large block's guards (free_run
  // with restricted pages): each guard splits the chunk's mapping in two,
  // and every mapping costs each fork (ChunkPool::open_free_guards).
  bool free_guards = false;
  // Such guard pages as the last fork found them, in no run since (a run
  // taken clears its pages): the next fork opens them.
  uint64_t idle_guards[bitmap::words_for(kSlotPages)] = {};
  // Pages of sealed blocks (as against guards, which hold no data): the
  // parent cannot read them for a fork copy while they are PROT_NONE.
  uint64_t sealed[bitmap::words_for(kSlotPages)] = {};
  // The heap's page map: the span of each used page (huge: owner[0]). The
  // heap writes it under its lock before a block in the page is handed out,
  // and clears it before giving the pages back.
  std::atomic<Span *> owner[kSlotPages] = {};

  size_t mapped_bytes() const { return size_t{mapped_pages} * os::kPageSize; }
  // What a fork child copies: pages in a run, below touched_pages; a huge chunk whole.
  bool copied_in_fork(uint32_t page) const { return huge || bitmap::test(used, page); }
  // A page the fork copy takes whose bytes only an open (mprotect) would let
  // the parent read: a sealed block's page while no access scope is open.
  bool hidden_from_parent(uint32_t page) const {
    uint32_t at = huge ? 0 : page;
    return prot[at] == 1 /* PROT_NONE */ && bitmap::test(sealed, at);
  }
  // A guard page (PROT_NONE, never written: zero).
  bool guard_page(uint32_t page) const {
    uint32_t at = huge ? 0 : page;
    return prot[at] == 1 && !bitmap::test(sealed, at);
  }
  void *page_address(uint32_t page) const { return reinterpret_cast<void *>(base + size_t{page} * os::kPageSize); }
};

using ChunkList = IntrusiveList<Chunk, &Chunk::links>;

} // namespace secmem
