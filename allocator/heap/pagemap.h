// The heap's page map: from any pointer to its block, lock-free. A chunk's
// owner[] table names the span of each used page; the heap writes it under
// its lock before a block in the page is handed out.
#pragma once

#include <cstdint>

#include "heap/span.h"
#include "heap/state.h"

namespace secmem::heap {

enum class Found { kForeign, kNoBlock, kInterior, kBlock, kFreed };

// Marks the first page of a freed large block's run until it is reused, so
// that a second free of the block is reported as the double free it is.
inline Span *const kFreedRun = reinterpret_cast<Span *>(uintptr_t{1});

// Locates the block holding p. kInterior: p is inside a block, not at its start.
[[gnu::always_inline]] inline Found find_block(const void *p, BlockRef *ref) {
  const ChunkPool &pool = lookup_pool();
  Chunk *chunk = pool.chunk_of(p);
  if (chunk == nullptr)
    return !pool.in_range(p) ? Found::kForeign : pool.freed_huge_at(p) ? Found::kFreed : Found::kNoBlock;
  uintptr_t addr = reinterpret_cast<uintptr_t>(p);
  uint32_t page = pool.page_in_slot(p); // a chunk that is not huge starts at its slot
  if (chunk->huge) {
    // A huge chunk's size never changes; its first page names its span. (In
    // other chunks unmapped pages have no owner.)
    if ((addr - chunk->base) / os::kPageSize >= chunk->mapped_pages) return Found::kNoBlock;
    page = 0;
  }
  Span *span = chunk->owner[page].load(std::memory_order_acquire);
  if (span == nullptr) return Found::kNoBlock;
  if (span == kFreedRun) return addr % os::kPageSize == 0 ? Found::kFreed : Found::kNoBlock;
  ref->span = span;
  uint64_t offset = addr - span->start;
  if (span->cls < 0) {
    ref->index = 0;
    return offset == 0 ? Found::kBlock : Found::kInterior;
  }
  uint32_t index = static_cast<uint32_t>((offset * span->divide_magic) >> 32);
  if (index >= span->blocks) return Found::kNoBlock; // the span's unused tail
  ref->index = index;
  return offset == uint64_t{index} * span->block_size ? Found::kBlock : Found::kInterior;
}

// Points the span's pages at it (a huge chunk: its first page). Heap lock held.
inline void set_owners(Span *span) {
  uint32_t pages = span->chunk->huge ? 1 : span->pages;
  for (uint32_t p = span->first_page; p < span->first_page + pages; ++p)
    span->chunk->owner[p].store(span, std::memory_order_release);
}

// Forgets the span's pages; the first page keeps first_page_mark.
inline void clear_owners(Span *span, Span *first_page_mark) {
  uint32_t pages = span->chunk->huge ? 1 : span->pages;
  for (uint32_t p = span->first_page; p < span->first_page + pages; ++p)
    span->chunk->owner[p].store(p == span->first_page ? first_page_mark : nullptr, std::memory_order_release);
}

// What a pointer handed to free or realloc turned out to be, when not a block.
enum class Misuse { kFree, kRealloc };

// Validates p for free/realloc; aborts with a message naming the misuse.
[[gnu::always_inline]] inline BlockRef checked_block(const void *p, Misuse misuse) {
  BlockRef ref;
  const char *what = misuse == Misuse::kFree ? "invalid free of" : "invalid realloc of";
  switch (find_block(p, &ref)) {
  case Found::kBlock: return ref;
  case Found::kForeign: diag::fatal_pointer(what, p, "not allocated by secmem");
  case Found::kNoBlock: diag::fatal_pointer(what, p, "no block starts here");
  case Found::kFreed:
    if (misuse == Misuse::kFree) diag::fatal_pointer("double free of", p, nullptr);
    diag::fatal_pointer(what, p, "block already freed");
  case Found::kInterior: diag::fatal_pointer(what, p, "pointer inside a block");
  }
  return ref;
}

} // namespace secmem::heap
