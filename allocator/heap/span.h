// Spans: a run of pages holding blocks of one size class, or one large block.
// Their metadata lives outside the secret pages. Each block has a live byte
// (the source of truth for double-free detection and secmem_owns) and, for
// small blocks, the size it was asked for.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "chunks/chunk_pool.h"
#include "heap/size_class.h"
#include "platform/diag.h"
#include "support/bitmap.h"
#include "support/list.h"

namespace secmem {

inline constexpr uint32_t kFreeWords = bitmap::words_for(kMaxBlocksPerSpan);

struct Span {
  uintptr_t start = 0;
  Chunk *chunk = nullptr;
  uint32_t first_page = 0; // the pages the page map points at this span
  uint32_t pages = 0;
  int32_t cls = -1;      // -1: one large block
  size_t block_size = 0; // small: the class size; large: pages * page size (4 GiB and more too)
  uint32_t blocks = 0;
  uint32_t divide_magic = 0; // offset * magic >> 32 == offset / block_size within a span
  uint32_t central_free = 0;
  ListLinks<Span> partial_links; // in its class's list of spans with central free blocks
  bool listed = false;
  ListLinks<Span> all_links; // every span: statistics walk them
  GuardedRun run;            // large: its pages and guards
  // Sealed blocks (secmem_sealed_alloc): open access scopes, under the heap lock.
  bool sealed = false;
  uint32_t readers = 0;
  uint32_t writers = 0;
  size_t large_requested = 0;          // large: the size asked for
  uint64_t free_bits[kFreeWords] = {}; // one bit per block in the central free list
  // One byte per block handed out: set by plain store (the allocating thread
  // owns the block), cleared by exchange (a racing double free is caught).
  alignas(64) std::atomic<uint8_t> live[kMaxBlocksPerSpan] = {}; // 64 blocks per cache line
  uint16_t requested[kMaxBlocksPerSpan] = {};                    // small: the size asked for, per live block
};

using PartialList = IntrusiveList<Span, &Span::partial_links>;
using SpanList = IntrusiveList<Span, &Span::all_links>;

// One block: its span and its index there.
struct BlockRef {
  Span *span = nullptr;
  uint32_t index = 0;

  void *address() const { return reinterpret_cast<void *>(span->start + uintptr_t{index} * span->block_size); }
  bool is_live() const { return span->live[index].load(std::memory_order_acquire) != 0; }

  void set_live() const {
    std::atomic<uint8_t> &live = span->live[index];
    if (live.load(std::memory_order_relaxed) != 0)
      diag::fatal_pointer("heap corruption: block handed out twice at", address(), nullptr);
    live.store(1, std::memory_order_release);
  }
  // Clears the live mark; aborts on a double free, even one racing in another thread.
  void clear_live() const {
    if (span->live[index].exchange(0, std::memory_order_acq_rel) == 0)
      diag::fatal_pointer("double free of", address(), nullptr);
  }

  size_t requested_size() const { return span->cls >= 0 ? span->requested[index] : span->large_requested; }
  void set_requested(size_t size) const {
    if (span->cls >= 0)
      span->requested[index] = static_cast<uint16_t>(size);
    else
      span->large_requested = size;
  }
};

// A block as a thread cache keeps it, in 8 bytes instead of 16: the span's
// address (metadata from mmap, below 2^47 in user space; checked where a span
// is made) with the block's index in the top 16 bits.
class CachedBlock {
public:
  static constexpr int kIndexShift = 48;
  CachedBlock() = default;
  CachedBlock(const BlockRef &ref) // NOLINT(google-explicit-constructor): a cache slot takes a block as is
      : bits_(reinterpret_cast<uintptr_t>(ref.span) | uint64_t{ref.index} << kIndexShift) {}
  BlockRef ref() const {
    return BlockRef{reinterpret_cast<Span *>(bits_ & ((uint64_t{1} << kIndexShift) - 1)),
                    static_cast<uint32_t>(bits_ >> kIndexShift)};
  }

private:
  uint64_t bits_ = 0;
};
static_assert(kMaxBlocksPerSpan <= (1 << (64 - CachedBlock::kIndexShift)));

inline BlockRef to_ref(const BlockRef &ref) { return ref; }
inline BlockRef to_ref(const CachedBlock &block) { return block.ref(); }

} // namespace secmem
