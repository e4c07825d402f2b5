// The central free lists: spans of each size class with free blocks, the
// span metadata, and the byte count the heap holds. Thread caches refill
// from here and flush back in batches. Not thread-safe: it is a member of
// the heap guarded by the heap lock, and takes the pool it carves spans from
// as an argument from callers that hold that lock.
#pragma once

#include <cstddef>
#include <cstdint>

#include "chunks/chunk_pool.h"
#include "heap/size_class.h"
#include "heap/span.h"
#include "support/object_pool.h"

namespace secmem::heap {

class Central {
public:
  // keep_empty: keep one empty span per class (its pages stay faulted).
  void init(bool keep_empty) { keep_empty_ = keep_empty; }

  // Takes up to want free blocks of class cls into out (BlockRef or
  // CachedBlock); returns how many.
  //
  // claim: a thread cache's slot for the class (ThreadCache::refilling),
  // or nullptr. A refill takes from the span it claimed before, or claims
  // one that no other cache claims, or, for classes whose spans are one
  // page, a new one (may_grow: memory is not tight), so that two threads'
  // blocks come from different spans: two threads allocating and freeing
  // blocks of one span write its live marks a few lines apart, and random
  // batches of 16-byte blocks ran 1.5x faster on 2 threads than on 1,
  // against 1.9x with a span each (the lines differ: the likely carrier is
  // the prefetchers, which fetch lines next to those in use). At most one
  // page per thread and class goes to this, and no more than a budget for
  // the process: a sixteenth of the RLIMIT_MEMLOCK budget seen when the
  // first locked chunk was mapped, at most 1 MiB (32 threads each making
  // spans of 12 classes took half of a 2 MiB budget, and requests near the
  // limit failed that had not). When every span looked at is claimed and no
  // new one is made, two caches share one, as before.
  template <typename Block>
  uint32_t take(ChunkPool &pool, int cls, Block *out, uint32_t want, Span **claim = nullptr, bool may_grow = false);
  // Lets go of a cache's claim (the cache is retired).
  static void release_claim(Span **claim) {
    if (*claim != nullptr && (*claim)->refiller == claim) (*claim)->refiller = nullptr;
    *claim = nullptr;
  }
  // Returns freed (already zeroed, not live) blocks of class cls to their spans.
  template <typename Block> void put(ChunkPool &pool, int cls, const Block *blocks, uint32_t n);

  // Gives the empty spans kept per class back to the pool, and keeps none
  // from now on (RLIMIT_MEMLOCK refused a chunk: heap/thread_cache.cpp).
  void drop_kept_empty(ChunkPool &pool);

  // Metadata for one large block over run, or nullptr; and back.
  Span *new_large_span(const GuardedRun &run);
  void drop_large_span(Span *span);

  // Bytes in live blocks and thread caches: small blocks move with take/put, large ones with note_large.
  void note_large(ptrdiff_t bytes) { note_held(bytes); }
  size_t peak_held() const { return peak_held_; }

  // Calls fn(const Span &) for every span.
  template <typename F> void for_each_span(F fn) const {
    for (const Span *span = all_.front(); span != nullptr; span = SpanList::next(span)) fn(*span);
  }

private:
  // The span the next blocks for claim come from, listed; nullptr when none is left.
  Span *refill_span(ChunkPool &pool, int cls, Span **claim, bool may_grow);
  Span *new_span(ChunkPool &pool, int cls);
  void drop_span(ChunkPool &pool, Span *span);
  void list(Span *span);
  void unlist(Span *span);
  void note_held(ptrdiff_t delta) {
    held_ += static_cast<size_t>(delta);
    if (held_ > peak_held_) peak_held_ = held_;
  }

  static constexpr size_t kMaxClaimPages = 256; // 1 MiB
  size_t claim_pages_ = 0;                      // pages of spans made for claims
  PartialList partial_[kNumClasses];            // spans with central free blocks
  Span *kept_empty_[kNumClasses] = {};
  SpanList all_;
  ObjectPool<Span> span_meta_;
  // Spans of freed large blocks kept for the next ones (new_large_span), up
  // to kSpareLargeSpans: made again from their header alone.
  PartialList spare_large_;
  uint32_t spare_large_count_ = 0;
  bool keep_empty_ = true;
  size_t held_ = 0;
  size_t peak_held_ = 0;
};

} // namespace secmem::heap
