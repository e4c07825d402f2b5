#include "heap/central.h"

#include "heap/pagemap.h"

namespace secmem::heap {

void Central::list(Span *span) {
  partial_[span->cls].push_front(span);
  span->listed = true;
}

void Central::unlist(Span *span) {
  partial_[span->cls].remove(span);
  span->listed = false;
}

Span *Central::new_span(ChunkPool &pool, int cls) {
  Span *span = span_meta_.take();
  if (span == nullptr) return nullptr;
  if ((reinterpret_cast<uintptr_t>(span) >> CachedBlock::kIndexShift) != 0)
    diag::fatal_pointer("span metadata outside the lower 2^48 bytes of address space at", span, nullptr);
  Chunk *chunk = nullptr;
  uint32_t first = 0;
  uint32_t pages = kClassTable.span_pages[cls];
  if (!pool.alloc_run(pages, &chunk, &first)) {
    span_meta_.give(span);
    return nullptr;
  }
  span->start = chunk->base + size_t{first} * os::kPageSize;
  span->chunk = chunk;
  span->first_page = first;
  span->pages = pages;
  span->cls = cls;
  span->block_size = kClassSizes[cls];
  span->blocks = kClassTable.blocks_per_span[cls];
  span->divide_magic = static_cast<uint32_t>((uint64_t{1} << 32) / span->block_size + 1);
  span->central_free = span->blocks;
  bitmap::set_range(span->free_bits, 0, span->blocks);
  all_.push_front(span);
  set_owners(span);
  return span;
}

void Central::drop_span(ChunkPool &pool, Span *span) {
  if (span->made_for_claim) claim_pages_ -= span->pages;
  // Its first page keeps the freed-run mark, as a large block's run does:
  // a second free of a block that started the span (every block of 4 KiB
  // and more) is still the double free it is once the span is gone (a
  // thread that freed a 4 KiB block and exited left it "no block starts
  // here").
  clear_owners(span, kFreedRun);
  all_.remove(span);
  pool.free_run(span->chunk, span->first_page, span->pages);
  span_meta_.give(span);
}

Span *Central::refill_span(ChunkPool &pool, int cls, Span **claim, bool may_grow) {
  if (claim != nullptr && *claim != nullptr && (*claim)->refiller == claim && (*claim)->listed) return *claim;
  constexpr int kLook = 8; // partial spans looked at: the lock is held
  int looked = 0;
  for (Span *span = partial_[cls].front(); span != nullptr && looked < kLook; span = PartialList::next(span), ++looked)
    if (claim == nullptr || span->refiller == nullptr || span->refiller == claim) return span;
  Span *span = kept_empty_[cls];
  kept_empty_[cls] = nullptr;
  if (span == nullptr && partial_[cls].front() == nullptr) {
    span = new_span(pool, cls);
  } else if (span == nullptr && may_grow && kClassTable.span_pages[cls] == 1) {
    size_t budget = pool.first_memlock_budget() / 16 / os::kPageSize;
    if (claim_pages_ + 1 <= (budget < kMaxClaimPages ? budget : kMaxClaimPages)) span = new_span(pool, cls);
    if (span != nullptr) {
      span->made_for_claim = true;
      claim_pages_ += span->pages;
    }
  }
  if (span == nullptr) return partial_[cls].front(); // shared with another cache, or none left
  list(span);
  return span;
}

template <typename Block>
uint32_t Central::take(ChunkPool &pool, int cls, Block *out, uint32_t want, Span **claim, bool may_grow) {
  uint32_t got = 0;
  while (got < want) {
    Span *span = refill_span(pool, cls, claim, may_grow);
    if (span == nullptr) break;
    if (claim != nullptr && span->refiller != claim) {
      release_claim(claim);
      if (span->refiller == nullptr) {
        span->refiller = claim;
        *claim = span;
      }
    }
    for (uint32_t w = 0; w < kFreeWords && got < want; ++w) {
      uint64_t &word = span->free_bits[w];
      while (word != 0 && got < want) {
        uint32_t bit = static_cast<uint32_t>(__builtin_ctzll(word));
        word &= word - 1;
        out[got++] = BlockRef{span, w * bitmap::kWordBits + bit};
        span->central_free--;
      }
    }
    if (span->central_free == 0) {
      unlist(span);
      if (claim != nullptr) release_claim(claim); // blocks freed to it later are anyone's
    }
  }
  note_held(static_cast<ptrdiff_t>(got) * kClassSizes[cls]);
  return got;
}

template <typename Block> void Central::put(ChunkPool &pool, int cls, const Block *blocks, uint32_t n) {
  for (uint32_t i = 0; i < n; ++i) {
    BlockRef ref = to_ref(blocks[i]);
    Span *span = ref.span;
    bitmap::set(span->free_bits, ref.index);
    span->central_free++;
    if (!span->listed) list(span);
    if (span->central_free == span->blocks) {
      unlist(span);
      span->refiller = nullptr; // empty: kept for any cache, or given back
      // Keep one empty span per class (its pages stay faulted) unless the
      // configuration asks for memory back.
      if (kept_empty_[cls] == nullptr && keep_empty_)
        kept_empty_[cls] = span;
      else
        drop_span(pool, span);
    }
  }
  note_held(-static_cast<ptrdiff_t>(n) * kClassSizes[cls]);
}

void Central::drop_kept_empty(ChunkPool &pool) {
  keep_empty_ = false;
  for (Span *&span : kept_empty_) {
    if (span != nullptr) drop_span(pool, span);
    span = nullptr;
  }
}

template uint32_t Central::take(ChunkPool &, int, BlockRef *, uint32_t, Span **, bool);
template uint32_t Central::take(ChunkPool &, int, CachedBlock *, uint32_t, Span **, bool);
template void Central::put(ChunkPool &, int, const BlockRef *, uint32_t);
template void Central::put(ChunkPool &, int, const CachedBlock *, uint32_t);

namespace {
constexpr uint32_t kSpareLargeSpans = 64;
} // namespace

Span *Central::new_large_span(const GuardedRun &run) {
  Span *span = spare_large_.front();
  if (span != nullptr) {
    spare_large_.remove(span);
    --spare_large_count_;
    span->reset_large_header();
  } else {
    span = span_meta_.take();
    if (span == nullptr) return nullptr;
  }
  span->start = run.start();
  span->chunk = run.chunk;
  span->first_page = run.first_page;
  span->pages = run.pages;
  span->cls = -1;
  span->block_size = size_t{run.pages} * os::kPageSize;
  span->blocks = 1;
  span->run = run;
  span->live[0].store(1, std::memory_order_relaxed);
  all_.push_front(span);
  return span;
}

void Central::drop_large_span(Span *span) {
  all_.remove(span);
  if (spare_large_count_ == kSpareLargeSpans) return span_meta_.give(span);
  spare_large_.push_front(span);
  ++spare_large_count_;
}

} // namespace secmem::heap
