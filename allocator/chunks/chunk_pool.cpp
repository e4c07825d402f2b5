#include "chunks/chunk_pool.h"

#include <algorithm>
#include <cerrno>
#include <sys/mman.h>

#include "chunks/protection.h"
#include "config/policy.h"
#include "platform/diag.h"
#include "platform/raw_syscall.h"
#include "platform/signals.h"

namespace secmem {

namespace {
constexpr int kReadWrite = PROT_READ | PROT_WRITE;

// The mappings the heap's guards and sealed blocks may add to the process
// (protection::mapping_splits): a quarter of vm.max_map_count, read at
// start-up. Past it, large blocks are made without guards and a freed
// one's guards open at once (mappings_allowed, free_guarded): the rest is the
// program's (a thread's stack is two mappings; 32,000 live guarded blocks
// of 9000 bytes left pthread_create none, and so did as many sealed ones
// once freed, each open between its closed guards). Under the heap lock;
// outside the heap's page (heap.cpp: what a fork writes stays on one page).
size_t g_split_budget = 65530 / 4;
bool g_guards_off_said = false;
} // namespace

bool ChunkPool::init(const Config &config) {
  config_ = &config;
  tiers_.init(config);
  char text[32];
  long n = linux_facts::read_small_file("/proc/sys/vm/max_map_count", text, sizeof text - 1);
  size_t max_maps = 0;
  for (long i = 0; i < n && text[i] >= '0' && text[i] <= '9'; ++i) max_maps = max_maps * 10 + (text[i] - '0');
  if (max_maps > 0) g_split_budget = max_maps / 4;
  return reservation_.init();
}

bool ChunkPool::mappings_allowed() {
  if (protection::mapping_splits() < g_split_budget) return true;
  // The guards that free runs keep (for the next block there, until a fork)
  // go first: a live block's needs come before them.
  for (Chunk *chunk = chunks_.front(); chunk != nullptr; chunk = ChunkList::next(chunk))
    if (chunk->free_guards && !protection::open_free_guards(chunk, true)) chunk->free_guards = false;
  if (protection::mapping_splits() < g_split_budget) return true;
  if (!g_guards_off_said) {
    g_guards_off_said = true;
    diag::Line()
        .add("the heap's guard pages and sealed blocks split its memory into ")
        .dec(protection::mapping_splits())
        .add(" mappings more, a quarter of what vm.max_map_count allows the process: while that lasts, large "
             "blocks go without guard pages, and new sealed blocks and access scopes that would open one are "
             "refused (ENOMEM)")
        .emit();
  }
  return false;
}

Chunk *ChunkPool::new_chunk(uint32_t min_pages, bool huge, size_t alignment) {
  uint32_t slots = huge ? (min_pages + 1 + kSlotPages - 1) / kSlotPages : 1;
  long first_slot = reservation_.take_slots(slots, alignment);
  if (first_slot < 0) {
    errno = ENOMEM;
    return nullptr;
  }
  uintptr_t addr = reservation_.slot_address(static_cast<uint32_t>(first_slot));
  // From the mapping to the list: a fork made by a signal handler on this
  // thread in between found the chunk mapped and not listed, and its child,
  // whose copies go by the list, kept the memfd_secret mapping shared with
  // the parent (each wrote the other's blocks). Asynchronous signals wait,
  // also through a huge chunk's first touch (as through one long system
  // call); those the kernel raises for this thread's own calls stay open (a
  // seccomp filter's SIGSYS, blocked, would kill the process). errno as set
  // here (ENOMEM).
  SignalsBlocked blocked(SignalsBlocked::kErrnoAsSet, SignalsBlocked::kAsynchronous);
  unmap_staging(); // the budget the staging mappings are charged to is the heap's
  Chunk *chunk = chunk_meta_.take();
  TierMapper::Mapped mapped;
  if (chunk == nullptr || !tiers_.map_chunk(addr, min_pages, !huge, &mapped)) {
    if (chunk != nullptr) {
      chunk_meta_.give(chunk);
      // What a tier mapped there: reserve again (the chunk's whole extent;
      // at vm.max_map_count, where every mmap fails, PROT_NONE, or its
      // slots stay taken).
      size_t extent = size_t{huge ? min_pages : kMaxChunkPages} * os::kPageSize;
      if (os::release_to_reserve(reinterpret_cast<void *>(addr), extent) == os::Released::kUnchanged) {
        errno = ENOMEM;
        return nullptr;
      }
    }
    reservation_.give_slots(static_cast<uint32_t>(first_slot), slots);
    errno = ENOMEM;
    return nullptr;
  }
  chunk->base = addr;
  chunk->slots = slots;
  chunk->mapped_pages = mapped.pages;
  chunk->free_pages = mapped.pages;
  chunk->tier = mapped.tier;
  chunk->huge = huge;
  chunk->touched_pages = mapped.touched;
  pages_touched_ += chunk->touched_pages;
  mapped_bytes_[static_cast<int>(chunk->tier)] += chunk->mapped_bytes();
  chunk_count_++;
  reservation_.publish(*chunk, chunk);
  Chunk *after = nullptr;
  for (Chunk *c = chunks_.front(); c != nullptr && c->tier <= chunk->tier; c = ChunkList::next(c)) after = c;
  chunks_.insert_after(after, chunk);
  tiers_.note_tier(chunk->tier);
  if (config_->verbose) {
    diag::Line()
        .add("mapped chunk ")
        .hex(addr)
        .add(" (")
        .dec(chunk->mapped_bytes() / 1024)
        .add(" KiB, ")
        .add(tier_name(chunk->tier))
        .add(")")
        .emit();
  }
  return chunk;
}

// Faults pages up to end_page in, in batches. A kernel that charges locked
// memory at first touch refuses with EFAULT: the chunk then ends where it is.
bool ChunkPool::ensure_touched(Chunk *chunk, uint32_t end_page) {
  if (end_page <= chunk->touched_pages) return true;
  uint32_t target = end_page;
  if (target < chunk->touched_pages + kTouchBatchPages) target = chunk->touched_pages + kTouchBatchPages;
  target = std::min(target, chunk->mapped_pages);
  size_t len = size_t{target - chunk->touched_pages} * os::kPageSize;
  if (tiers_.fault_in(chunk->tier, chunk->page_address(chunk->touched_pages), len) != 0) {
    // Pages past the frontier are all free; give them back and shrink
    // (unless the kernel refuses: at vm.max_map_count they stay mapped).
    uint32_t dropped = chunk->mapped_pages - chunk->touched_pages;
    // (No message: those pages were never touched, and hold no memory.)
    if (os::release_to_reserve(chunk->page_address(chunk->touched_pages), size_t{dropped} * os::kPageSize) !=
        os::Released::kUnchanged) {
      mapped_bytes_[static_cast<int>(chunk->tier)] -= size_t{dropped} * os::kPageSize;
      chunk->mapped_pages = chunk->touched_pages;
      chunk->free_pages -= dropped;
    }
    tiers_.note_touch_refused();
    return false;
  }
  pages_touched_ += target - chunk->touched_pages;
  chunk->touched_pages = target;
  return true;
}

// Faults in the cold pages of [first, first+pages) (pages a fork child's
// copy left out), in runs, through the kernel as for new pages.
bool ChunkPool::warm(Chunk *chunk, uint32_t first, uint32_t pages) {
  os::ZeroSource zero; // one open for all the runs
  for (uint32_t page = first; page < first + pages;) {
    if (!bitmap::test(chunk->cold, page)) {
      ++page;
      continue;
    }
    uint32_t end = page;
    bool restricted = false;
    for (; end < first + pages && bitmap::test(chunk->cold, end); ++end)
      restricted = restricted || chunk->prot[end] != 0;
    // A free page may keep a guard's protection; its new run sets its own.
    if (restricted && protection::set(chunk, page, end - page, kReadWrite) != 0) return false;
    if (tiers_.fault_in(chunk->tier, chunk->page_address(page), size_t{end - page} * os::kPageSize, &zero) != 0)
      return false;
    bitmap::clear_range(chunk->cold, page, end - page);
    chunk->cold_pages -= end - page;
    page = end;
  }
  return true;
}

void ChunkPool::mark_pages(Chunk *chunk, uint32_t first, uint32_t pages, bool used) {
  if (used) {
    bitmap::set_range(chunk->used, first, pages);
    bitmap::clear_range(chunk->idle_guards, first, pages); // in use again: not idle
    chunk->free_pages -= pages;
  } else {
    bitmap::clear_range(chunk->used, first, pages);
    chunk->free_pages += pages;
  }
}

// A run of pages (the first aligned to align_pages) in an existing chunk or a
// new one, faulted in and marked used. A new chunk that RLIMIT_MEMLOCK
// refuses first has the heap give back what it keeps (set_reclaimer), and
// the chunks are searched again.
bool ChunkPool::find_run(uint32_t pages, uint32_t align_pages, Chunk **out, uint32_t *first_page, bool spare,
                         uintptr_t prefer, const void *claimant) {
  // Before pages are made for a run (past a chunk's touched pages, in its
  // cold ones, or in a new chunk), this thread's own kept large blocks go
  // back (own_returner_) and the search starts again, in the same order:
  // the footprint does not grow by runs a thread keeps for a size it no
  // longer asks for (with 64 slots, a thread that had freed 100 blocks of
  // 50,000 bytes touched 24 more pages for its small blocks, and with the
  // search restricted to touched pages instead, two threads' claims gave
  // way to first-fit, and eight threads dropped their caches at each run
  // another's chunk could have held).
  bool may_return_own = own_returner_ != nullptr && !spare;
  bool search_again = false;
  auto makes_pages = [&](const Chunk *chunk, uint32_t first) {
    return first + pages > chunk->touched_pages ||
           (chunk->cold_pages != 0 && bitmap::find_set_in(chunk->cold, first, pages) != UINT32_MAX);
  };
  auto take = [&](Chunk *chunk) {
    uint32_t first = 0;
    if (chunk->huge || chunk->free_pages < pages) return false;
    if (!bitmap::find_clear_run(chunk->used, chunk->mapped_pages, pages, align_pages, &first)) return false;
    if (spare && makes_pages(chunk, first)) return false;
    if (may_return_own && makes_pages(chunk, first)) {
      may_return_own = false;
      if (own_returner_()) {
        search_again = true;
        return false;
      }
    }
    if (!ensure_touched(chunk, first + pages)) return false;
    if (chunk->cold_pages != 0 && !warm(chunk, first, pages)) return false;
    mark_pages(chunk, first, pages, true);
    *out = chunk;
    *first_page = first;
    return true;
  };
  // A claimant's runs: from the chunk it had, then from one no one claims,
  // among the chunks of the strongest tier there is (the first ones), so
  // that threads at work at once do not take turns at one chunk's runs,
  // bitmaps and pages. Then from any chunk, as for everyone.
  // Claims only move blocks between chunks in use: an empty chunk stays
  // whole for a block that needs most of it, and is taken only where
  // first-fit takes it (claims that spread two threads' small blocks over
  // empty chunks left no room for 1000 KiB blocks, which then took a new
  // chunk, or a weaker tier under a memlock limit).
  auto in_use = [](const Chunk *chunk) { return chunk->free_pages < chunk->mapped_pages; };
  auto mine_or_free = [claimant](const Chunk *chunk) {
    return chunk->claimed_by == nullptr || chunk->claimed_by == claimant;
  };
  // The first chunk in list order (of the strongest tier only, if asked)
  // that wanted() accepts and take() takes the run from, or nullptr. After
  // take() has set search_again no chunk is looked at again (the blocks
  // given back may have emptied one, which SECMEM_RELEASE=empty gives back
  // to the kernel, its metadata with it). Callers store the chunk in *out
  // again, as take() did: the static analyzer does not follow the lambdas.
  auto take_first = [&](bool strongest_only, auto wanted) -> Chunk * {
    Chunk *front = chunks_.front();
    for (Chunk *chunk = front; !search_again && chunk != nullptr && (!strongest_only || chunk->tier == front->tier);) {
      if (wanted(chunk) && take(chunk)) return chunk;
      if (!search_again) chunk = ChunkList::next(chunk);
    }
    return nullptr;
  };
  auto take_claimed = [&]() {
    Chunk *front = chunks_.front();
    if (claimant == nullptr || front == nullptr) return false;
    Chunk *had = prefer != 0 ? reservation_.chunk_of(reinterpret_cast<void *>(prefer)) : nullptr;
    Chunk *taken = had != nullptr && had->tier == front->tier && in_use(had) && mine_or_free(had) && take(had)
                       ? had
                       : take_first(true, [&](const Chunk *chunk) {
                           return chunk != had && chunk->claimed_by == nullptr && in_use(chunk);
                         });
    if (taken == nullptr) return false;
    taken->claimed_by = claimant;
    *out = taken;
    return true;
  };
  bool may_reclaim = reclaimer_ != nullptr;
  for (;; search_again = false) {
    if (take_claimed()) return true;
    if (search_again) continue;
    // Chunks in use of the strongest tier that no other thread claims
    // first; then first-fit over every chunk, strongest tier first, as
    // without claims (a claimant's spare runs, for its cache and not asked
    // for, never from another's chunk).
    Chunk *taken = take_first(true, [&](const Chunk *chunk) { return in_use(chunk) && mine_or_free(chunk); });
    if (taken == nullptr && !(spare && claimant != nullptr))
      taken = take_first(false, [](const Chunk *) { return true; });
    if (taken != nullptr) {
      *out = taken;
      return true;
    }
    if (search_again) continue;
    if (spare) return false;
    if (may_return_own) { // a new chunk makes pages too
      may_return_own = false;
      if (own_returner_()) continue;
    }
    tiers_.defer_memlock(may_reclaim);
    Chunk *chunk = new_chunk(pages, false); // its first pages are touched already
    bool deferred = tiers_.memlock_deferred();
    tiers_.defer_memlock(false);
    if (deferred) {
      may_reclaim = false;
      reclaimer_();
      continue;
    }
    if (chunk == nullptr) return false;
    mark_pages(chunk, 0, pages, true);
    if (claimant != nullptr) chunk->claimed_by = claimant; // its own chunk was full
    *out = chunk;
    *first_page = 0;
    return true;
  }
}

// A run whose former guard pages the kernel will not open (mprotect refused:
// a seccomp filter, the mapping count): those pages stay marked used, out of
// every run from now on (a page or two for each guard, never handed out,
// and never opened again: no block is in them), and the rest of the run
// goes back. The search is then made again: the lowest run was tried each
// time, and once a guarded block had been freed where mprotect was refused,
// every allocation in that chunk, 100 bytes too, failed with ENOMEM.
void ChunkPool::keep_closed_pages_out(Chunk *chunk, uint32_t first_page, uint32_t pages) {
  for (uint32_t page = first_page, end = first_page + pages; page < end;) {
    bool closed = chunk->prot[page] != 0;
    uint32_t next = page + 1;
    while (next < end && (chunk->prot[next] != 0) == closed) ++next;
    if (!closed) free_run(chunk, page, next - page);
    page = next;
  }
}

bool ChunkPool::alloc_run(uint32_t pages, Chunk **chunk, uint32_t *first_page) {
  for (int attempt = 0; attempt < kClosedRunAttempts; ++attempt) {
    if (!find_run(pages, 1, chunk, first_page)) return false;
    // The pages may have been a large block's guards.
    if (protection::ensure(*chunk, *first_page, pages, kReadWrite) == 0) return true;
    if ((*chunk)->huge) break;
    keep_closed_pages_out(*chunk, *first_page, pages);
  }
  errno = ENOMEM;
  return false;
}

void ChunkPool::free_run(Chunk *chunk, uint32_t first_page, uint32_t pages) {
  mark_pages(chunk, first_page, pages, false);
  if (chunk->restricted_pages != 0 && !chunk->huge) chunk->free_guards = true;
  if (!policy::keeps_memory(*config_) && chunk->free_pages == chunk->mapped_pages) release_chunk(chunk);
}

// In a shared chunk: [guard_lead PROT_NONE pages][block][1 PROT_NONE page],
// guard_lead being the alignment in pages, so that the block is aligned when
// the run is. A guard that mprotect refuses (the mapping count limit) is left
// out. Larger blocks get a chunk of their own, which the slot layout already
// surrounds with unmapped pages.
void ChunkPool::forget_claims(const void *claimant) {
  for (Chunk *chunk = chunks_.front(); chunk != nullptr; chunk = ChunkList::next(chunk))
    if (chunk->claimed_by == claimant) chunk->claimed_by = nullptr;
}

bool ChunkPool::alloc_guarded(size_t pages, size_t alignment, GuardedRun *out, bool spare, uintptr_t prefer,
                              const void *claimant) {
  // An alignment past a slot's: a chunk of its own, at an aligned slot.
  bool slot_aligned = alignment > kChunkSize;
  uint32_t align_pages = slot_aligned                ? 0
                         : alignment > os::kPageSize ? static_cast<uint32_t>(alignment / os::kPageSize)
                                                     : 1;
  if (slot_aligned || pages > kHugePages || align_pages > kHugePages || align_pages + pages + 1 > kMaxChunkPages) {
    if (pages >= kLargestReservation / os::kPageSize) {
      errno = ENOMEM;
      return false;
    }
    // At a slot whose address is aligned (slots are kChunkSize-aligned already).
    Chunk *chunk = new_chunk(static_cast<uint32_t>(pages), true, alignment); // touched in full
    if (chunk == nullptr) return false;
    chunk->free_pages = 0;
    *out = GuardedRun{chunk, 0, static_cast<uint32_t>(pages), 0, 0};
    return true;
  }
  uint32_t block_pages = static_cast<uint32_t>(pages);
  uint32_t run = align_pages + block_pages + 1;
  for (int attempt = 0; attempt < kClosedRunAttempts; ++attempt) {
    Chunk *chunk = nullptr;
    uint32_t first = 0;
    if (!find_run(run, align_pages, &chunk, &first, spare, prefer, claimant)) return false;
    // Guards where mprotect allows (they often are from the run's last use),
    // and the process's mappings are not short (mappings_allowed; a sealed
    // block is refused before, past that).
    if (mappings_allowed()) {
      protection::ensure(chunk, first, align_pages, PROT_NONE);
      protection::ensure(chunk, first + align_pages + block_pages, 1, PROT_NONE);
    }
    if (protection::ensure(chunk, first + align_pages, block_pages, kReadWrite) == 0) {
      *out = GuardedRun{chunk, first + align_pages, block_pages, align_pages, 1};
      return true;
    }
    // As alloc_run: the guards the kernel keeps closed stay out (the new
    // ones too, where it closed them: they are guards of no block now).
    keep_closed_pages_out(chunk, first, run);
  }
  errno = ENOMEM;
  return false;
}

void ChunkPool::free_guarded(const GuardedRun &run) {
  if (run.chunk->huge) return release_chunk(run.chunk);
  uint32_t first = run.first_page - run.guard_lead, pages = run.guard_lead + run.pages + run.guard_tail;
  // Past the budget of mappings, its guards open now, not at the next fork
  // (open_free_guards): the run is one mapping with its neighbours again.
  // Where mprotect refuses, they stay, as any free guard.
  if (protection::mapping_splits() >= g_split_budget) protection::ensure(run.chunk, first, pages, kReadWrite);
  free_run(run.chunk, first, pages);
}

void ChunkPool::open_free_guards() {
  for (Chunk *chunk = chunks_.front(); chunk != nullptr; chunk = ChunkList::next(chunk))
    if (chunk->free_guards && !protection::open_free_guards(chunk)) chunk->free_guards = false;
}

int ChunkPool::protect_guarded(const GuardedRun &run, int prot) {
  uint32_t first = run.chunk->huge ? 0 : run.first_page;
  int err = protection::set(run.chunk, first, run.pages, prot);
  if (err != 0) return err;
  uint32_t marks = run.chunk->huge ? 1 : run.pages;
  if (prot == kReadWrite)
    bitmap::clear_range(run.chunk->sealed, first, marks);
  else
    bitmap::set_range(run.chunk->sealed, first, marks);
  return 0;
}

// Pages being released are all zero already (every free zeroes its bytes).
void ChunkPool::release_chunk(Chunk *chunk) {
  chunks_.remove(chunk);
  reservation_.publish(*chunk, nullptr);
  if (chunk->huge) reservation_.mark_freed_huge(*chunk);
  // Where the kernel refuses, PROT_NONE (kProtected: a chunk made there
  // later maps over it), or left read-write and zero, its slots out of use
  // (kUnchanged: its pages would stand where a later chunk wants a guard).
  os::Released released = to_reserve(reinterpret_cast<void *>(chunk->base), chunk->mapped_bytes());
  mapped_bytes_[static_cast<int>(chunk->tier)] -= chunk->mapped_bytes();
  pages_touched_ -= chunk->touched_pages;
  chunk_count_--;
  protection::forget(chunk);
  if (released != os::Released::kUnchanged && !chunk->holed)
    reservation_.give_slots(reservation_.slot_of(chunk->base), chunk->slots);
  chunk_meta_.give(chunk);
}

// os::release_to_reserve, with one message the first time the kernel
// refuses (a process at vm.max_map_count: every mmap fails).
os::Released ChunkPool::to_reserve(void *addr, size_t len) {
  os::Released released = os::release_to_reserve(addr, len);
  if (released != os::Released::kReserved && !reserve_refused_said_) {
    reserve_refused_said_ = true;
    diag::Line line;
    line.add("cannot return ").dec(len / 1024).add(" KiB to the reserved range (ENOMEM: vm.max_map_count reached?); ");
    if (released == os::Released::kProtected)
      line.add("they stay in memory, zero and PROT_NONE, until that range is used again");
    else
      line.add("they stay in memory, zero, and that range out of use");
    line.emit();
  }
  return released;
}

// A chunk that changed tier (in a fork child) moves its bytes in the counters.
SECMEM_FORK_CHILD_TEXT void ChunkPool::move_tier(Chunk *chunk, Tier to) {
  mapped_bytes_[static_cast<int>(chunk->tier)] -= chunk->mapped_bytes();
  mapped_bytes_[static_cast<int>(to)] += chunk->mapped_bytes();
  chunk->tier = to;
}

void ChunkPool::facts(PoolFacts *out) const {
  for (int t = 0; t < kNumTiers; ++t) out->mapped_bytes[t] = mapped_bytes_[t];
  out->pages_touched = pages_touched_;
  out->chunks = chunk_count_;
  out->tiers = tiers_.counters();
  out->fork_privatisations = fork_privatisations_;
  out->mlocked_bytes = 0;
  out->weakest_tier = -1;
  for (const Chunk *chunk = chunks_.front(); chunk != nullptr; chunk = ChunkList::next(chunk)) {
    if (chunk->tier == Tier::kLocked) out->mlocked_bytes += size_t{chunk->touched_pages} * os::kPageSize;
    if (static_cast<int>(chunk->tier) > out->weakest_tier) out->weakest_tier = static_cast<int>(chunk->tier);
  }
}

const char *ChunkPool::weakest_tier_name() const {
  PoolFacts pool_facts;
  facts(&pool_facts);
  return pool_facts.weakest_tier < 0 ? "none" : tier_name(static_cast<Tier>(pool_facts.weakest_tier));
}

} // namespace secmem
