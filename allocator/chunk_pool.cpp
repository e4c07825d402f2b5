#include "chunk_pool.h"

#include <cerrno>
#include <cstring>
#include <sys/mman.h>

#include "diag.h"

namespace secmem {

namespace {

constexpr size_t kLargestReservation = size_t{64} << 30; // 64 GiB of address space
constexpr size_t kSmallestReservation = size_t{64} << 20;

uint32_t min_u32(uint32_t a, uint32_t b) { return a < b ? a : b; }

const char *reason_text(FallbackReason why) {
  switch (why) {
  case FallbackReason::kNoKernelSupport: return "no kernel support, or secretmem.enable=0";
  case FallbackReason::kRefused: return "refused, as by a seccomp filter";
  case FallbackReason::kMemlock: return "RLIMIT_MEMLOCK budget spent";
  case FallbackReason::kOther: break;
  }
  return "mapping failed";
}

const char *tier_description(Tier tier) {
  switch (tier) {
  case Tier::kSecret: return "memfd_secret";
  case Tier::kLocked: return "mlock'ed anonymous memory (MADV_DONTDUMP)";
  case Tier::kUnlocked: return "unlocked anonymous memory (MADV_DONTDUMP; it can be swapped)";
  }
  return "?";
}

} // namespace

const char *tier_name(Tier tier) {
  switch (tier) {
  case Tier::kSecret: return "memfd_secret";
  case Tier::kLocked: return "mlock";
  case Tier::kUnlocked: return "unlocked";
  }
  return "?";
}

bool ChunkPool::init(const Config &config) {
  config_ = &config;
  void *raw = nullptr;
  size_t len = kLargestReservation;
  for (; len >= kSmallestReservation && raw == nullptr; len /= 2) raw = os::reserve(len + kChunkSize);
  if (raw == nullptr) {
    diag::Line().add("cannot reserve address space for the secret heap (").err(errno)
        .add("); every allocation will return NULL").emit();
    return false;
  }
  len *= 2; // undo the last halving
  uintptr_t aligned = (reinterpret_cast<uintptr_t>(raw) + kChunkSize - 1) & ~(kChunkSize - 1);
  nslots_ = static_cast<uint32_t>(len / kChunkSize);
  slot_table_ = static_cast<std::atomic<Chunk *> *>(os::map_metadata(nslots_ * sizeof(*slot_table_)));
  slot_used_ = static_cast<uint64_t *>(os::map_metadata((nslots_ + 63) / 64 * sizeof(uint64_t)));
  if (slot_table_ == nullptr || slot_used_ == nullptr) {
    diag::Line().add("cannot map the secret heap's slot table; every allocation will return NULL").emit();
    return false;
  }
  slot_used_[0] = 1; // slot 0 stays PROT_NONE: the guard before the first chunk
  base_ = aligned;
  size_ = len;
  return true;
}

long ChunkPool::take_slots(uint32_t count) {
  uint32_t run = 0;
  for (uint32_t slot = 0; slot < nslots_; ++slot) {
    bool used = (slot_used_[slot / 64] >> (slot % 64)) & 1;
    run = used ? 0 : run + 1;
    if (run == count) {
      uint32_t first = slot + 1 - count;
      for (uint32_t s = first; s <= slot; ++s) slot_used_[s / 64] |= uint64_t{1} << (s % 64);
      return first;
    }
  }
  return -1;
}

void ChunkPool::give_slots(uint32_t first, uint32_t count) {
  for (uint32_t s = first; s < first + count; ++s) slot_used_[s / 64] &= ~(uint64_t{1} << (s % 64));
}

// Maps one tier at addr. flexible: size the chunk to the budget (at least
// min_pages); otherwise exactly min_pages. Returns 0 or an errno, with why set.
int ChunkPool::map_tier(Tier tier, uintptr_t addr, uint32_t min_pages, bool flexible,
                        uint32_t *mapped, uint32_t *touched, FallbackReason *why) {
  if (tier == Tier::kSecret && secret_refused_) {
    *why = secret_refusal_;
    return secret_refusal_errno_;
  }
  uint32_t pages = flexible ? kMaxChunkPages : min_pages;
  if (tier != Tier::kUnlocked) {
    size_t budget_pages = os::memlock_budget() / os::kPageSize;
    if (flexible && budget_pages < pages) pages = static_cast<uint32_t>(budget_pages);
    if (budget_pages < min_pages || pages < min_pages) {
      *why = FallbackReason::kMemlock;
      return EAGAIN;
    }
  }
  void *at = reinterpret_cast<void *>(addr);
  size_t len = size_t{pages} * os::kPageSize;
  int err = 0;
  switch (tier) {
  case Tier::kSecret:
    err = os::map_secret_fixed(at, len);
    if (err == ENOSYS || err == EPERM || err == EACCES) {
      secret_refused_ = true;
      secret_refusal_ = err == ENOSYS ? FallbackReason::kNoKernelSupport : FallbackReason::kRefused;
      secret_refusal_errno_ = err;
    }
    *why = err == ENOSYS   ? FallbackReason::kNoKernelSupport
           : err == EPERM || err == EACCES ? FallbackReason::kRefused
           : err == EAGAIN ? FallbackReason::kMemlock
                           : FallbackReason::kOther;
    break;
  case Tier::kLocked:
  case Tier::kUnlocked:
    err = os::map_anon_fixed(at, len);
    *why = FallbackReason::kOther;
    break;
  }
  // The first pages are faulted in now, so that a refusal to charge them
  // (EFAULT from kernels that charge memlock at first touch, or mlock's
  // EAGAIN/ENOMEM) sends this chunk to the next tier.
  uint32_t first_touch = flexible ? min_u32(pages, min_pages > kTouchBatchPages ? min_pages : kTouchBatchPages) : pages;
  if (err == 0) {
    err = fault_in(tier, at, size_t{first_touch} * os::kPageSize);
    if (err != 0) *why = FallbackReason::kMemlock;
  }
  if (err != 0) {
    os::release_to_reserve(at, len); // a failed MAP_FIXED may have dropped the reservation
    return err;
  }
  *mapped = pages;
  *touched = first_touch;
  return 0;
}

Chunk *ChunkPool::new_chunk(uint32_t min_pages, bool huge) {
  uint32_t slots = huge ? (min_pages + 1 + kSlotPages - 1) / kSlotPages : 1;
  long first_slot = size_ == 0 ? -1 : take_slots(slots);
  if (first_slot < 0) {
    errno = ENOMEM;
    return nullptr;
  }
  uintptr_t addr = base_ + static_cast<uintptr_t>(first_slot) * kChunkSize;
  Chunk *chunk = chunk_meta_.take();
  if (chunk == nullptr) {
    give_slots(static_cast<uint32_t>(first_slot), slots);
    errno = ENOMEM;
    return nullptr;
  }
  Tier top = config_->backend_kind() == Backend::kMlock ? Tier::kLocked : Tier::kSecret;
  bool may_degrade = config_->backend_kind() != Backend::kMemfdSecret &&
                     config_->exhaustion_kind() == OnExhaustion::kFallback;
  FallbackReason first_why = FallbackReason::kOther;
  int first_err = 0;
  for (int t = static_cast<int>(top); t < kNumTiers; ++t) {
    Tier tier = static_cast<Tier>(t);
    if (tier != top && !may_degrade) break;
    uint32_t mapped = 0;
    uint32_t touched = 0;
    FallbackReason why = FallbackReason::kOther;
    int err = map_tier(tier, addr, min_pages, !huge, &mapped, &touched, &why);
    if (err == 0) {
      chunk->base = addr;
      chunk->slots = slots;
      chunk->mapped_pages = mapped;
      chunk->free_pages = mapped;
      chunk->tier = tier;
      chunk->huge = huge;
      chunk->touched_pages = touched;
      counters_.pages_touched += chunk->touched_pages;
      counters_.mapped_bytes[t] += chunk->mapped_bytes();
      counters_.chunks++;
      for (uint32_t s = 0; s < slots; ++s)
        slot_table_[first_slot + s].store(chunk, std::memory_order_release);
      // Keep the list ordered strongest tier first, so runs come from there.
      Chunk **link = &chunks_;
      Chunk *prev = nullptr;
      while (*link != nullptr && (*link)->tier <= tier) {
        prev = *link;
        link = &(*link)->next;
      }
      chunk->next = *link;
      chunk->prev = prev;
      if (*link != nullptr) (*link)->prev = chunk;
      *link = chunk;
      if (tier != top) {
        counters_.fallbacks[static_cast<int>(first_why)]++;
        report_fallback(tier, first_why, first_err);
      }
      if (tier != Tier::kSecret) note_weaker_tier();
      if (config_->verbose) {
        diag::Line().add("mapped chunk ").hex(addr).add(" (").dec(chunk->mapped_bytes() / 1024)
            .add(" KiB, ").add(tier_name(tier)).add(")").emit();
      }
      return chunk;
    }
    if (tier == top) {
      first_why = why;
      first_err = err;
    }
  }
  chunk_meta_.give(chunk);
  give_slots(static_cast<uint32_t>(first_slot), slots);
  counters_.failed_chunks++;
  report_failure(first_why, first_err);
  errno = ENOMEM;
  return nullptr;
}

void ChunkPool::report_fallback(Tier to, FallbackReason why, int err) {
  if (reported_[static_cast<int>(to)]) return;
  reported_[static_cast<int>(to)] = true;
  Tier top = config_->backend_kind() == Backend::kMlock ? Tier::kLocked : Tier::kSecret;
  diag::Line().add(tier_name(top)).add(" unavailable (").err(err).add(": ").add(reason_text(why))
      .add("); falling back to ").add(tier_description(to))
      .add(" (set SECMEM_ON_EXHAUSTION=fail to refuse instead)").emit();
}

void ChunkPool::report_failure(FallbackReason why, int err) {
  if (reported_failure_) return;
  reported_failure_ = true;
  diag::Line line;
  line.add("out of secret memory (").err(err).add(": ").add(reason_text(why))
      .add("); allocations return NULL with ENOMEM");
  if (config_->backend_kind() == Backend::kMemfdSecret)
    line.add(" (SECMEM_BACKEND=memfd_secret never falls back)");
  else if (config_->exhaustion_kind() == OnExhaustion::kFail)
    line.add(" (SECMEM_ON_EXHAUSTION=fail)");
  line.emit();
}

// First touch of fresh pages: through the kernel for memfd_secret, by mlock
// for the locked tier; unlocked pages fault on use. 0 or an errno.
int ChunkPool::fault_in(Tier tier, void *addr, size_t len) {
  switch (tier) {
  case Tier::kSecret: return os::touch_through_kernel(addr, len);
  case Tier::kLocked: return os::lock_range(addr, len);
  case Tier::kUnlocked: break;
  }
  return 0;
}

// Faults pages up to end_page in, in batches. A kernel that charges locked
// memory at first touch refuses with EFAULT: the chunk then ends where it is.
bool ChunkPool::ensure_touched(Chunk *chunk, uint32_t end_page) {
  if (end_page <= chunk->touched_pages) return true;
  uint32_t target = end_page;
  if (target < chunk->touched_pages + kTouchBatchPages) target = chunk->touched_pages + kTouchBatchPages;
  target = min_u32(target, chunk->mapped_pages);
  {
    uintptr_t from = chunk->base + size_t{chunk->touched_pages} * os::kPageSize;
    size_t len = size_t{target - chunk->touched_pages} * os::kPageSize;
    if (fault_in(chunk->tier, reinterpret_cast<void *>(from), len) != 0) {
      // Pages past the frontier are all free; give them back and shrink.
      uint32_t dropped = chunk->mapped_pages - chunk->touched_pages;
      os::release_to_reserve(reinterpret_cast<void *>(from), size_t{dropped} * os::kPageSize);
      counters_.mapped_bytes[static_cast<int>(chunk->tier)] -= size_t{dropped} * os::kPageSize;
      chunk->mapped_pages = chunk->touched_pages;
      chunk->free_pages -= dropped;
      counters_.fallbacks[static_cast<int>(FallbackReason::kMemlock)]++;
      return false;
    }
  }
  counters_.pages_touched += target - chunk->touched_pages;
  chunk->touched_pages = target;
  return true;
}

bool ChunkPool::find_run(Chunk *chunk, uint32_t pages, uint32_t align_pages, uint32_t *first) const {
  uint32_t start = 0;
  while (start + pages <= chunk->mapped_pages) {
    uint32_t blocked = UINT32_MAX;
    for (uint32_t p = start; p < start + pages; ++p) {
      if ((chunk->used[p / 64] >> (p % 64)) & 1) {
        blocked = p;
        break;
      }
    }
    if (blocked == UINT32_MAX) {
      *first = start;
      return true;
    }
    start = (blocked + align_pages) / align_pages * align_pages;
  }
  return false;
}

void ChunkPool::mark_pages(Chunk *chunk, uint32_t first, uint32_t pages, bool used) {
  for (uint32_t p = first; p < first + pages; ++p) {
    if (used)
      chunk->used[p / 64] |= uint64_t{1} << (p % 64);
    else
      chunk->used[p / 64] &= ~(uint64_t{1} << (p % 64));
  }
  if (used)
    chunk->free_pages -= pages;
  else
    chunk->free_pages += pages;
}

bool ChunkPool::alloc_run(uint32_t pages, uint32_t align_pages, Chunk **out, uint32_t *first_page) {
  for (Chunk *chunk = chunks_; chunk != nullptr; chunk = chunk->next) {
    uint32_t first = 0;
    if (chunk->huge || chunk->free_pages < pages) continue;
    if (!find_run(chunk, pages, align_pages, &first)) continue;
    if (!ensure_touched(chunk, first + pages)) continue;
    mark_pages(chunk, first, pages, true);
    *out = chunk;
    *first_page = first;
    return true;
  }
  Chunk *chunk = new_chunk(pages, false); // its first pages are touched already
  if (chunk == nullptr) return false;
  mark_pages(chunk, 0, pages, true);
  *out = chunk;
  *first_page = 0;
  return true;
}

void ChunkPool::free_run(Chunk *chunk, uint32_t first_page, uint32_t pages) {
  mark_pages(chunk, first_page, pages, false);
  if (config_->release_kind() == Release::kEmpty && chunk->free_pages == chunk->mapped_pages)
    release_chunk(chunk);
}

Chunk *ChunkPool::alloc_huge(size_t pages) {
  if (pages >= size_ / os::kPageSize) {
    errno = ENOMEM;
    return nullptr;
  }
  Chunk *chunk = new_chunk(static_cast<uint32_t>(pages), true); // touched in full
  if (chunk == nullptr) return nullptr;
  chunk->free_pages = 0;
  return chunk;
}

void ChunkPool::free_huge(Chunk *chunk) { release_chunk(chunk); }

void ChunkPool::unlink_chunk(Chunk *chunk) {
  if (chunk->prev != nullptr)
    chunk->prev->next = chunk->next;
  else
    chunks_ = chunk->next;
  if (chunk->next != nullptr) chunk->next->prev = chunk->prev;
}

// Pages being released are all zero already (every free zeroes its bytes).
void ChunkPool::release_chunk(Chunk *chunk) {
  unlink_chunk(chunk);
  uint32_t first_slot = static_cast<uint32_t>((chunk->base - base_) / kChunkSize);
  for (uint32_t s = 0; s < chunk->slots; ++s) slot_table_[first_slot + s].store(nullptr, std::memory_order_release);
  os::release_to_reserve(reinterpret_cast<void *>(chunk->base), chunk->mapped_bytes());
  counters_.mapped_bytes[static_cast<int>(chunk->tier)] -= chunk->mapped_bytes();
  counters_.pages_touched -= chunk->touched_pages;
  counters_.chunks--;
  give_slots(first_slot, chunk->slots);
  chunk_meta_.give(chunk);
}

// A chunk is outside memfd_secret, where the same user can read it through
// ptrace and /proc/PID/mem: SECMEM_NODUMP=fallback makes the process non-dumpable.
void ChunkPool::note_weaker_tier() {
  if (config_->nodump_kind() != NoDump::kFallback || undumpable_) return;
  int err = os::make_undumpable();
  undumpable_ = err == 0;
  if (!undumpable_) diag::Line().add("SECMEM_NODUMP: prctl(PR_SET_DUMPABLE, 0) failed (").err(err).add(")").emit();
}

// Chunk::prot's encoding: 0 for read-write, else the PROT_* value plus one.
static uint8_t prot_code(int prot) { return prot == (PROT_READ | PROT_WRITE) ? 0 : static_cast<uint8_t>(prot + 1); }

int ChunkPool::protect(Chunk *chunk, uint32_t first_page, uint32_t pages, int prot) {
  int err = os::protect(reinterpret_cast<void *>(chunk->base + size_t{first_page} * os::kPageSize),
                        size_t{pages} * os::kPageSize, prot);
  if (err != 0) return err;
  uint8_t value = prot_code(prot);
  uint32_t marks = chunk->huge ? 1 : pages;
  for (uint32_t p = first_page; p < first_page + marks; ++p) {
    chunk->restricted_pages += (value != 0) - (chunk->prot[p] != 0);
    chunk->prot[p] = value;
  }
  return 0;
}

int ChunkPool::ensure_protection(Chunk *chunk, uint32_t first_page, uint32_t pages, int prot) {
  uint8_t want = prot_code(prot);
  if (chunk->huge) return chunk->prot[0] == want ? 0 : protect(chunk, 0, pages, prot);
  uint32_t end = first_page + pages;
  for (uint32_t p = first_page; p < end;) {
    if (chunk->prot[p] == want) {
      ++p;
      continue;
    }
    uint32_t q = p + 1;
    while (q < end && chunk->prot[q] != want) ++q;
    int err = protect(chunk, p, q - p, prot);
    if (err != 0) return err;
    p = q;
  }
  return 0;
}

// Calls fn for each run of pages with the same restricted protection.
void ChunkPool::for_each_restricted(Chunk *chunk, void (*fn)(void *, size_t, int, void *), void *ctx) {
  if (chunk->restricted_pages == 0) return;
  if (chunk->huge) {
    fn(reinterpret_cast<void *>(chunk->base), chunk->mapped_bytes(), chunk->prot[0] - 1, ctx);
    return;
  }
  for (uint32_t p = 0; p < chunk->mapped_pages;) {
    uint32_t end = p + 1;
    while (end < chunk->mapped_pages && chunk->prot[end] == chunk->prot[p]) ++end;
    if (chunk->prot[p] != 0)
      fn(reinterpret_cast<void *>(chunk->base + size_t{p} * os::kPageSize), size_t{end - p} * os::kPageSize,
         chunk->prot[p] - 1, ctx);
    p = end;
  }
}

// Makes the chunk's guard pages and sealed blocks readable, for the fork copy
// and for mlock (which cannot fault in PROT_NONE pages).
void ChunkPool::open_restricted(Chunk *chunk) {
  for_each_restricted(chunk, [](void *addr, size_t len, int, void *) { os::protect(addr, len, PROT_READ); }, nullptr);
}

// Puts their protection back; returns the first mprotect error, or 0.
int ChunkPool::restore_restricted(Chunk *chunk) {
  int first_err = 0;
  for_each_restricted(chunk, [](void *addr, size_t len, int prot, void *ctx) {
    int err = os::protect(addr, len, prot);
    if (err != 0 && *static_cast<int *>(ctx) == 0) *static_cast<int *>(ctx) = err;
  }, &first_err);
  return first_err;
}

void ChunkPool::prepare_fork() {
  for (Chunk *chunk = chunks_; chunk != nullptr; chunk = chunk->next) {
    if (chunk->tier != Tier::kSecret) continue;
    size_t len = chunk->mapped_bytes();
    size_t live = size_t{chunk->touched_pages} * os::kPageSize;
    void *staging = nullptr;
    chunk->fork_staging_tier = Tier::kSecret;
    if (os::memlock_budget() < len || os::map_secret_anywhere(len, &staging) != 0) {
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
      open_restricted(chunk);
      os::copy_unchecked(staging, reinterpret_cast<void *>(chunk->base), live);
      restore_restricted(chunk);
    }
    chunk->fork_staging = staging;
  }
}

void ChunkPool::after_fork_parent() {
  for (Chunk *chunk = chunks_; chunk != nullptr; chunk = chunk->next) {
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
  for (Chunk *chunk = chunks_; chunk != nullptr; chunk = chunk->next) {
    Tier before = chunk->tier;
    if (chunk->tier == Tier::kSecret) {
      // Without a private copy the child would write the parent's pages.
      if (chunk->fork_staging == nullptr)
        diag::fatal("fork: no memory to give the child a private copy of the secret heap");
      int err = os::move_mapping(chunk->fork_staging, chunk->mapped_bytes(), reinterpret_cast<void *>(chunk->base));
      if (err != 0) diag::fatal_errno("fork: cannot move the child's private copy of the secret heap", err);
      chunk->tier = chunk->fork_staging_tier;
      chunk->fork_staging = nullptr;
      counters_.fork_privatisations++;
      // The copy was mapped read-write: guards and seals again.
      if (int err = restore_restricted(chunk); err != 0)
        diag::fatal_errno("fork: cannot protect the child's guard pages and sealed blocks", err);
    }
    // Locks are not inherited across fork: take them again.
    if (before == Tier::kLocked || (before == Tier::kSecret && chunk->tier != Tier::kSecret)) {
      open_restricted(chunk); // mlock cannot fault in PROT_NONE pages
      bool locked = os::lock_range(reinterpret_cast<void *>(chunk->base), size_t{chunk->touched_pages} * os::kPageSize) == 0;
      if (int err = restore_restricted(chunk); err != 0)
        diag::fatal_errno("fork: cannot protect the child's guard pages and sealed blocks", err);
      chunk->tier = locked ? Tier::kLocked : Tier::kUnlocked;
      if (!locked) report_fallback(Tier::kUnlocked, FallbackReason::kMemlock, EAGAIN);
    }
    if (chunk->tier != before) {
      counters_.mapped_bytes[static_cast<int>(before)] -= chunk->mapped_bytes();
      counters_.mapped_bytes[static_cast<int>(chunk->tier)] += chunk->mapped_bytes();
    }
    if (chunk->tier != Tier::kSecret) note_weaker_tier();
  }
}

} // namespace secmem
