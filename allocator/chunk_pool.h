// The chunk pool: 2 MiB-aligned chunks of secret memory inside one reserved
// address range, so "is this pointer ours?" is a range check plus a table
// load. It picks the protection tier for each new chunk (memfd_secret, then
// the configured fallbacks), sizes chunks to the RLIMIT_MEMLOCK budget, hands
// out page runs, and faults pages in batches through the kernel.
//
// Layout of one 2 MiB slot:  [ mapped pages ... | PROT_NONE ... guard page ]
// The last page of a slot is never mapped, and slot 0 is never used, so every
// chunk has PROT_NONE address space on both sides (linear overflow off the
// end of a chunk faults) and the guards cost no locked memory.
//
// Not thread-safe: the heap calls it under its lock, except for the lookups
// (chunk_of), which read tables that are only written before a block can be
// handed out.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "config.h"
#include "object_pool.h"
#include "os.h"

namespace secmem {

enum class Tier : uint8_t { kSecret = 0, kLocked = 1, kUnlocked = 2 };
inline constexpr int kNumTiers = 3;
const char *tier_name(Tier tier);

// Why a chunk landed in a weaker tier than the configured one.
enum class FallbackReason : uint8_t { kNoKernelSupport, kRefused, kMemlock, kOther };
inline constexpr int kNumFallbackReasons = 4;

inline constexpr size_t kChunkSize = size_t{2} << 20;
inline constexpr uint32_t kSlotPages = kChunkSize / os::kPageSize;
inline constexpr uint32_t kMaxChunkPages = kSlotPages - 1; // the last page is the guard
inline constexpr uint32_t kTouchBatchPages = 8;            // first touches come in batches

struct Span;

struct Chunk {
  uintptr_t base = 0;
  uint32_t slots = 0;         // 1, or more for a huge chunk
  uint32_t mapped_pages = 0;  // [0, mapped_pages) is mapped
  uint32_t touched_pages = 0; // [0, touched_pages) has been faulted in
  uint32_t free_pages = 0;
  Tier tier = Tier::kSecret;
  bool huge = false;
  Chunk *next = nullptr;
  Chunk *prev = nullptr;
  void *fork_staging = nullptr; // private copy prepared for a fork child
  Tier fork_staging_tier = Tier::kSecret;
  uint64_t used[kSlotPages / 64] = {};
  // Pages whose protection is not read-write (guards, sealed blocks): the
  // PROT_* value of each, for the fork copy and the child; a huge chunk
  // keeps one value for its whole block in prot[0].
  uint8_t prot[kSlotPages] = {};
  uint32_t restricted_pages = 0;
  // Span of each used page (huge: owner[0]); written by the heap, which also
  // clears it before giving pages back with free_run.
  std::atomic<Span *> owner[kSlotPages] = {};

  size_t mapped_bytes() const { return size_t{mapped_pages} * os::kPageSize; }
};

struct PoolCounters {
  size_t mapped_bytes[kNumTiers] = {};
  size_t pages_touched = 0;
  size_t chunks = 0;
  uint64_t fallbacks[kNumFallbackReasons] = {};
  uint64_t failed_chunks = 0; // a chunk was needed and no allowed tier gave one
  uint64_t fork_privatisations = 0;
};

class ChunkPool {
public:
  // Reserves the address range. False (with one diagnostic) if none can be had.
  bool init(const Config &config);

  bool in_range(const void *p) const {
    return reinterpret_cast<uintptr_t>(p) - base_ < size_;
  }
  // The chunk whose slot holds p, or nullptr (outside the range, or unmapped).
  Chunk *chunk_of(const void *p) const {
    uintptr_t offset = reinterpret_cast<uintptr_t>(p) - base_;
    if (offset >= size_) return nullptr;
    return slot_table_[offset / kChunkSize].load(std::memory_order_acquire);
  }

  // A run of pages (first page aligned to align_pages) in a chunk, faulted in.
  // False when no allowed tier has room (errno set to ENOMEM).
  bool alloc_run(uint32_t pages, uint32_t align_pages, Chunk **chunk, uint32_t *first_page);
  void free_run(Chunk *chunk, uint32_t first_page, uint32_t pages);

  // Sets the protection of pages [first_page, first_page+pages) (a huge
  // chunk: first_page 0 and all its pages) to PROT_NONE, PROT_READ or
  // PROT_READ|PROT_WRITE. Returns 0 or the errno of mprotect.
  int protect(Chunk *chunk, uint32_t first_page, uint32_t pages, int prot);
  // The same, calling mprotect only for the pages not already so (free pages
  // keep the protection they last had, so a freed large block's guards are
  // still in place when the run is reused for another).
  int ensure_protection(Chunk *chunk, uint32_t first_page, uint32_t pages, int prot);

  // A dedicated chunk for one very large block (guard pages both sides).
  Chunk *alloc_huge(size_t pages);
  void free_huge(Chunk *chunk);

  // fork: the child gets private copies of memfd_secret chunks (which are
  // MAP_SHARED) at the same addresses, staged by the parent before fork.
  void prepare_fork();
  void after_fork_parent();
  void after_fork_child();

  const PoolCounters &counters() const { return counters_; }
  Chunk *first_chunk() const { return chunks_; }
  size_t reserved_bytes() const { return size_; }
  uintptr_t reserved_base() const { return base_; }

private:
  Chunk *new_chunk(uint32_t min_pages, bool huge);
  int map_tier(Tier tier, uintptr_t addr, uint32_t min_pages, bool flexible, uint32_t *mapped,
               uint32_t *touched, FallbackReason *why);
  static int fault_in(Tier tier, void *addr, size_t len);
  bool ensure_touched(Chunk *chunk, uint32_t end_page);
  void for_each_restricted(Chunk *chunk, void (*fn)(void *addr, size_t len, int prot, void *ctx), void *ctx);
  void open_restricted(Chunk *chunk);
  int restore_restricted(Chunk *chunk);
  bool find_run(Chunk *chunk, uint32_t pages, uint32_t align_pages, uint32_t *first) const;
  void mark_pages(Chunk *chunk, uint32_t first, uint32_t pages, bool used);
  long take_slots(uint32_t count);
  void give_slots(uint32_t first, uint32_t count);
  void unlink_chunk(Chunk *chunk);
  void release_chunk(Chunk *chunk);
  void report_fallback(Tier to, FallbackReason why, int err);
  void note_weaker_tier();
  void report_failure(FallbackReason why, int err);

  const Config *config_ = nullptr;
  uintptr_t base_ = 0;
  size_t size_ = 0;
  uint32_t nslots_ = 0;
  std::atomic<Chunk *> *slot_table_ = nullptr;
  uint64_t *slot_used_ = nullptr;
  Chunk *chunks_ = nullptr;
  ObjectPool<Chunk> chunk_meta_;
  PoolCounters counters_;
  bool secret_refused_ = false; // ENOSYS/EPERM: memfd_secret will not work in this process
  FallbackReason secret_refusal_ = FallbackReason::kOther;
  int secret_refusal_errno_ = 0;
  bool reported_[kNumTiers] = {};
  bool reported_failure_ = false;
  bool undumpable_ = false; // SECMEM_NODUMP=fallback has acted
};

} // namespace secmem
