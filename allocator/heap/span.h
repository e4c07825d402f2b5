// Spans: a run of pages holding blocks of one size class, or one large block.
// Their metadata lives outside the secret pages. Each block has a live mark
// (the source of truth for double-free detection and secmem_owns), which
// for a small block is the size it was asked for.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#if __has_include(<sys/single_threaded.h>)
#include <sys/single_threaded.h>
#endif

#include "chunks/chunk_pool.h"
#include "heap/size_class.h"
#include "platform/diag.h"
#include "platform/sanitizers.h"
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
  // The thread cache (its slot for the class, ThreadCache::refilling) whose
  // refills take from this span, or nullptr: Central::take.
  Span *const *refiller = nullptr;
  bool made_for_claim = false;   // counted in Central's claim budget
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
  // Per block: 0 while free; while live, the size asked for (a small block,
  // 1 to 8192) or 1 (a large block, whose size is large_requested). Set by
  // plain store (the allocating thread owns the block), cleared by exchange
  // (a racing double free is caught; the exchange gives free the size).
  // One array, which malloc writes once and free exchanges once (the size
  // was a second array: a second line of metadata written by each, and
  // read again by free).
  alignas(64) std::atomic<uint16_t> live[kMaxBlocksPerSpan] = {}; // 32 blocks per cache line

  // A large block's span made again from one that held a large block (and
  // so never used free_bits or live past [0], which stay zero): the fields
  // above free_bits back to their first values, without rewriting the rest
  // (1.2 KiB, last written by whichever thread freed the block).
  void reset_large_header() {
    start = 0;
    chunk = nullptr;
    first_page = pages = 0;
    cls = -1;
    block_size = 0;
    blocks = divide_magic = central_free = 0;
    refiller = nullptr;
    made_for_claim = listed = false;
    partial_links = {};
    all_links = {};
    run = {};
    sealed = false;
    readers = writers = 0;
    large_requested = 0;
  }
};
// A field added above free_bits is reset in reset_large_header too.
static_assert(offsetof(Span, free_bits) == 160, "reset_large_header resets every field before free_bits");

using PartialList = IntrusiveList<Span, &Span::partial_links>;
using SpanList = IntrusiveList<Span, &Span::all_links>;

// One block: its span and its index there.
struct BlockRef {
  Span *span = nullptr;
  uint32_t index = 0;

  void *address() const { return reinterpret_cast<void *>(span->start + uintptr_t{index} * span->block_size); }
  bool is_live() const { return span->live[index].load(std::memory_order_acquire) != 0; }

  // Marks the block live: size is the size asked for (small blocks, 1 to
  // 8192), 1 for a large block.
  void set_live(size_t size = 1) const {
    std::atomic<uint16_t> &live = span->live[index];
    if (live.load(std::memory_order_relaxed) != 0)
      diag::fatal_pointer("heap corruption: block handed out twice at", address(), nullptr);
    live.store(static_cast<uint16_t>(size), std::memory_order_release);
  }
  // Clears the live mark and answers what it held (a small block: its size
  // asked for); aborts on a double free, even one racing in another thread
  // or in a signal handler.
  uint32_t clear_live() const {
    std::atomic<uint16_t> &live = span->live[index];
    uint32_t was;
    if (!cleared_on_this_thread(live, &was)) was = live.exchange(0, std::memory_order_acq_rel);
    if (was == 0) diag::fatal_pointer("double free of", address(), nullptr);
    return was;
  }
  // While the process has never had a second thread (glibc's
  // __libc_single_threaded, false for good from the first pthread_create,
  // before the thread starts, and always false in a dlmopen namespace's copy
  // of libc), the mark is read and cleared by one instruction without the
  // lock prefix, and *was gets what it held: atomic with respect to a signal
  // handler on this thread (signals arrive between instructions), not to
  // another processor, and without the locked exchange's wait for this
  // thread's earlier stores (the previous free's zeroing) to drain. False
  // otherwise, and on other processors and under ThreadSanitizer (the
  // exchange, which it sees). Threads glibc does not support do not count: a
  // raw clone with CLONE_VM, and a thread a dlmopen namespace's own
  // pthread_create makes (glibc's malloc breaks there too). A plain load and
  // store, measured first, let a handler that freed the block between the
  // two free it a second time, and both frees then pushed it into the
  // thread's cache: one push overwrote the other's slot (the double free
  // unreported) or took the count past its cap (later frees wrote past the
  // cache; found by the adversarial review). A mark that changed after the
  // load (a handler freed the block, or freed it and took it again) gives 0:
  // a double free.
  static bool cleared_on_this_thread(std::atomic<uint16_t> &live, uint32_t *was) {
#if defined(__x86_64__) && !defined(SECMEM_TSAN) && __has_include(<sys/single_threaded.h>)
    if (__builtin_expect(__libc_single_threaded == 0, 0)) return false;
    uint16_t held = live.load(std::memory_order_relaxed);
    bool cleared;
    asm volatile("cmpxchgw %w[zero], %[mark]"
                 : "+a"(held), [mark] "+m"(*reinterpret_cast<volatile uint16_t *>(&live)), "=@ccz"(cleared)
                 : [zero] "r"(uint16_t{0})
                 : "memory");
    *was = cleared ? held : 0;
    return true;
#else
    (void)live;
    (void)was;
    return false;
#endif
  }

  size_t requested_size() const {
    return span->cls >= 0 ? span->live[index].load(std::memory_order_relaxed) : span->large_requested;
  }
  // A live block's new size asked for (a resize in place, by its owner),
  // where it was old: a small block's mark changes only if it still holds
  // old (a free racing with the resize, which the program should never
  // make, is not undone: the block stays free and is reported).
  void set_requested(size_t old, size_t size) const {
    if (span->cls < 0) {
      span->large_requested = size;
      return;
    }
    auto was = static_cast<uint16_t>(old);
    if (!span->live[index].compare_exchange_strong(was, static_cast<uint16_t>(size), std::memory_order_acq_rel))
      diag::fatal_pointer("invalid realloc of", address(), "block freed while it was resized");
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
static_assert(kMaxSmallSize <= UINT16_MAX, "a small block's size asked for is its live mark");

inline BlockRef to_ref(const BlockRef &ref) { return ref; }
inline BlockRef to_ref(const CachedBlock &block) { return block.ref(); }

} // namespace secmem
