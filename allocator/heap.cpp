#include "heap.h"

#include <atomic>
#include <cerrno>
#include <cstring>
#include <pthread.h>
#include <sys/mman.h>

#include "config.h"
#include "diag.h"
#include "secmem/secmem.h"
#include "size_class.h"
#include "tools.h"

namespace secmem {

constexpr int kFreeWords = kMaxBlocksPerSpan / 64;

// A run of pages holding blocks of one size class, or one large block.
struct Span {
  uintptr_t start = 0;
  Chunk *chunk = nullptr;
  uint32_t first_page = 0;
  uint32_t pages = 0;
  int32_t cls = -1;        // -1: one large block
  uint32_t block_size = 0; // small: the class size; large: pages * page size
  uint32_t blocks = 0;
  uint32_t divide_magic = 0; // offset * magic >> 32 == offset / block_size within a span
  uint32_t central_free = 0;
  Span *next = nullptr;
  Span *prev = nullptr;
  bool listed = false;
  // Large blocks: PROT_NONE guard pages before and after the block, part of
  // the span's page run but not of [first_page, first_page + pages).
  uint32_t guard_lead = 0;
  uint32_t guard_tail = 0;
  // Sealed blocks (secmem_sealed_alloc): open access scopes, under the heap lock.
  bool sealed = false;
  uint32_t readers = 0;
  uint32_t writers = 0;
  size_t large_requested = 0; // large: the size asked for
  uint64_t free_bits[kFreeWords] = {}; // one bit per block in the central free list
  // One byte per block handed out: set by plain store (the allocating thread
  // owns the block), cleared by exchange (a racing double free is caught).
  alignas(64) std::atomic<uint8_t> live[kMaxBlocksPerSpan] = {}; // 64 blocks per cache line
  uint16_t requested[kMaxBlocksPerSpan] = {}; // small: the size asked for, per live block
};

} // namespace secmem

namespace secmem::heap {

namespace {

constexpr uint32_t kCacheSlots = 128;

struct alignas(128) ThreadCache { // aligned: no false sharing between threads
  uint32_t count[kNumClasses] = {};
  void *blocks[kNumClasses][kCacheSlots] = {};
  // Written by the owning thread only; read by secmem_get_stats.
  std::atomic<uint64_t> allocations{0};
  std::atomic<uint64_t> frees{0};
  ThreadCache *next = nullptr;
  ThreadCache *prev = nullptr;
};

// Configuration lives alone in a page that is made read-only once parsed.
struct alignas(os::kPageSize) SealedConfig {
  Config config;
};

enum class State : int { kUninitialised, kReady, kFailed };

struct Heap {
  pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
  ChunkPool pool;
  ObjectPool<Span> span_meta;
  ObjectPool<ThreadCache> cache_meta;
  Span *partial[kNumClasses] = {}; // spans with central free blocks
  Span *kept_empty[kNumClasses] = {};
  ThreadCache *caches = nullptr;
  uint32_t cache_cap[kNumClasses] = {};
  uint64_t retired_allocations = 0; // counters of exited threads and of uncached operations
  uint64_t retired_frees = 0;
  size_t held = 0;
  size_t peak_held = 0;
  uint64_t canary_key = 0; // random, set once at initialisation
  pthread_key_t cache_key{};
};

constinit Heap g_heap;
constinit SealedConfig g_sealed;
std::atomic<State> g_state{State::kUninitialised};
pthread_mutex_t g_init_lock = PTHREAD_MUTEX_INITIALIZER;

__attribute__((tls_model("initial-exec"))) thread_local ThreadCache *t_cache = nullptr;

const Config &config() { return g_sealed.config; }

class Locked {
public:
  Locked() { pthread_mutex_lock(&g_heap.lock); }
  ~Locked() { pthread_mutex_unlock(&g_heap.lock); }
  Locked(const Locked &) = delete;
  Locked &operator=(const Locked &) = delete;
};

void zero(void *p, size_t n) {
  memset(p, 0, n);
  asm volatile("" : : "r"(p) : "memory"); // the stores must happen: the block may be reused by anyone
}

// ---- block lookup -----------------------------------------------------------

enum class Found { kForeign, kNoBlock, kInterior, kBlock, kFreed };

// Marks the first page of a freed page run until it is reused, so that a
// second free of a large block is reported as the double free it is.
Span *const kFreedRun = reinterpret_cast<Span *>(uintptr_t{1});

struct BlockRef {
  Span *span = nullptr;
  uint32_t index = 0;
};

// Locates the block holding p. kInterior: p is inside a block, not at its start.
[[gnu::always_inline]] inline Found find_block(const void *p, BlockRef *ref) {
  Chunk *chunk = g_heap.pool.chunk_of(p);
  if (chunk == nullptr) return g_heap.pool.in_range(p) ? Found::kNoBlock : Found::kForeign;
  uintptr_t addr = reinterpret_cast<uintptr_t>(p);
  size_t page = (addr - chunk->base) / os::kPageSize;
  // A huge chunk's size never changes; in other chunks unmapped pages have no owner.
  if (chunk->huge && page >= chunk->mapped_pages) return Found::kNoBlock;
  Span *span = chunk->owner[chunk->huge ? 0 : page].load(std::memory_order_acquire);
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

bool is_live(const BlockRef &ref) { return ref.span->live[ref.index].load(std::memory_order_acquire) != 0; }

void set_live(const BlockRef &ref, const void *p) {
  std::atomic<uint8_t> &live = ref.span->live[ref.index];
  if (live.load(std::memory_order_relaxed) != 0) diag::fatal_pointer("heap corruption: block handed out twice at", p, nullptr);
  live.store(1, std::memory_order_release);
}

// Clears the live mark; aborts on a double free.
void clear_live(const BlockRef &ref, const void *p) {
  if (ref.span->live[ref.index].exchange(0, std::memory_order_acq_rel) == 0) diag::fatal_pointer("double free of", p, nullptr);
}

size_t requested_size(const BlockRef &ref) {
  return ref.span->cls >= 0 ? ref.span->requested[ref.index] : ref.span->large_requested;
}

void set_requested(const BlockRef &ref, size_t size) {
  if (ref.span->cls >= 0)
    ref.span->requested[ref.index] = static_cast<uint16_t>(size);
  else
    ref.span->large_requested = size;
}

// ---- overflow canaries ----------------------------------------------------
//
// The slack between the requested size and the end of the block holds a
// canary in its first (up to) 8 bytes, derived from a random key and the
// block's address, with no zero byte; the rest of the slack stays zero. Free
// and realloc check both, so a linear overflow of even one byte (a string's
// terminating NUL) is caught when the block is freed. A request that fills
// its block exactly has no slack and no canary.

constexpr size_t kCanaryBytes = 8;

uint64_t canary_value(const void *p) {
  uint64_t v = (g_heap.canary_key ^ reinterpret_cast<uintptr_t>(p)) * 0x9E3779B97F4A7C15ull;
  return v | 0x0101010101010101ull;
}

inline void write_canary(void *p, size_t requested, size_t usable) {
  char *slack = static_cast<char *>(p) + requested;
  uint64_t v = canary_value(p);
  if (usable - requested >= kCanaryBytes) {
    memcpy(slack, &v, kCanaryBytes); // one 8-byte store
    return;
  }
  for (size_t i = 0; i < usable - requested; ++i) slack[i] = static_cast<char>(v >> (8 * i));
}

[[gnu::noinline, noreturn]] void overflow_found(const void *p, size_t requested) {
  diag::Line().add("heap buffer overflow: the bytes after the ").dec(requested).add("-byte block at ")
      .hex(reinterpret_cast<uintptr_t>(p)).add(" were overwritten").emit();
  abort();
}

inline void check_canary(const void *p, size_t requested, size_t usable) {
  const auto *slack = static_cast<const unsigned char *>(p) + requested;
  size_t n = usable - requested;
  uint64_t v = canary_value(p);
  if (n >= kCanaryBytes) {
    uint64_t seen;
    memcpy(&seen, slack, kCanaryBytes);
    uint64_t rest = 0;
    for (size_t i = kCanaryBytes; i < n; ++i) rest |= slack[i];
    if (seen != v || rest != 0) overflow_found(p, requested);
    return;
  }
  for (size_t i = 0; i < n; ++i)
    if (slack[i] != static_cast<unsigned char>(v >> (8 * i))) overflow_found(p, requested);
}

// Validates p for free/realloc; aborts with a message naming the misuse.
[[gnu::always_inline]] inline BlockRef checked_block(const void *p, const char *what) {
  BlockRef ref;
  switch (find_block(p, &ref)) {
  case Found::kBlock: return ref;
  case Found::kForeign: diag::fatal_pointer(what, p, "not allocated by secmem");
  case Found::kNoBlock: diag::fatal_pointer(what, p, "no block starts here");
  case Found::kFreed:
    if (strcmp(what, "invalid free of") == 0) diag::fatal_pointer("double free of", p, nullptr);
    diag::fatal_pointer(what, p, "block already freed");
  case Found::kInterior: diag::fatal_pointer(what, p, "pointer inside a block");
  }
  return ref;
}

// ---- central free lists (heap lock held) ------------------------------------

void track_held(ptrdiff_t delta) {
  g_heap.held += static_cast<size_t>(delta);
  if (g_heap.held > g_heap.peak_held) g_heap.peak_held = g_heap.held;
}

void list_span(Span *span) {
  Span *&head = g_heap.partial[span->cls];
  span->prev = nullptr;
  span->next = head;
  if (head != nullptr) head->prev = span;
  head = span;
  span->listed = true;
}

void unlist_span(Span *span) {
  if (span->prev != nullptr)
    span->prev->next = span->next;
  else
    g_heap.partial[span->cls] = span->next;
  if (span->next != nullptr) span->next->prev = span->prev;
  span->next = span->prev = nullptr;
  span->listed = false;
}

Span *new_span(int cls) {
  Span *span = g_heap.span_meta.take();
  if (span == nullptr) return nullptr;
  Chunk *chunk = nullptr;
  uint32_t first = 0;
  uint32_t pages = kClassTable.span_pages[cls];
  if (!g_heap.pool.alloc_run(pages, 1, &chunk, &first)) {
    g_heap.span_meta.give(span);
    return nullptr;
  }
  // The pages may have been a large block's guards.
  if (g_heap.pool.ensure_protection(chunk, first, pages, PROT_READ | PROT_WRITE) != 0) {
    g_heap.pool.free_run(chunk, first, pages);
    g_heap.span_meta.give(span);
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
  for (uint32_t i = 0; i < span->blocks; ++i) span->free_bits[i / 64] |= uint64_t{1} << (i % 64);
  for (uint32_t p = first; p < first + pages; ++p) chunk->owner[p].store(span, std::memory_order_release);
  return span;
}

// Forgets the span's pages; the first page keeps first_page_mark.
void clear_owners(Span *span, Span *first_page_mark) {
  for (uint32_t p = span->first_page; p < span->first_page + span->pages; ++p)
    span->chunk->owner[p].store(p == span->first_page ? first_page_mark : nullptr, std::memory_order_release);
}

void drop_span(Span *span) {
  clear_owners(span, nullptr);
  g_heap.pool.free_run(span->chunk, span->first_page, span->pages);
  g_heap.span_meta.give(span);
}

// Takes up to want free blocks of class cls into out; returns how many.
uint32_t central_take(int cls, void **out, uint32_t want) {
  uint32_t got = 0;
  while (got < want) {
    Span *span = g_heap.partial[cls];
    if (span == nullptr) {
      span = g_heap.kept_empty[cls];
      g_heap.kept_empty[cls] = nullptr;
      if (span == nullptr) span = new_span(cls);
      if (span == nullptr) break;
      list_span(span);
    }
    for (int w = 0; w < kFreeWords && got < want; ++w) {
      while (span->free_bits[w] != 0 && got < want) {
        int bit = __builtin_ctzll(span->free_bits[w]);
        span->free_bits[w] &= span->free_bits[w] - 1;
        out[got++] = reinterpret_cast<void *>(span->start + (uint64_t{64} * w + bit) * span->block_size);
        span->central_free--;
      }
    }
    if (span->central_free == 0) unlist_span(span);
  }
  track_held(static_cast<ptrdiff_t>(got) * kClassSizes[cls]);
  return got;
}

// Returns freed (already zeroed, not live) blocks to their spans.
void central_put(int cls, void *const *blocks, uint32_t n) {
  for (uint32_t i = 0; i < n; ++i) {
    BlockRef ref;
    if (find_block(blocks[i], &ref) != Found::kBlock) diag::fatal_pointer("heap corruption: cached block", blocks[i], nullptr);
    Span *span = ref.span;
    span->free_bits[ref.index / 64] |= uint64_t{1} << (ref.index % 64);
    span->central_free++;
    if (!span->listed) list_span(span);
    if (span->central_free == span->blocks) {
      unlist_span(span);
      // Keep one empty span per class (its pages stay faulted) unless the
      // configuration asks for memory back.
      if (g_heap.kept_empty[cls] == nullptr && config().release_kind() == Release::kNever)
        g_heap.kept_empty[cls] = span;
      else
        drop_span(span);
    }
  }
  track_held(-static_cast<ptrdiff_t>(n) * kClassSizes[cls]);
}

// ---- thread caches ----------------------------------------------------------

void flush_cache_locked(ThreadCache *cache) {
  for (int cls = 0; cls < kNumClasses; ++cls) {
    central_put(cls, cache->blocks[cls], cache->count[cls]);
    cache->count[cls] = 0;
  }
}

void retire_cache_locked(ThreadCache *cache) {
  flush_cache_locked(cache);
  g_heap.retired_allocations += cache->allocations.load(std::memory_order_relaxed);
  g_heap.retired_frees += cache->frees.load(std::memory_order_relaxed);
  if (cache->prev != nullptr)
    cache->prev->next = cache->next;
  else
    g_heap.caches = cache->next;
  if (cache->next != nullptr) cache->next->prev = cache->prev;
  g_heap.cache_meta.give(cache);
}

void thread_exit(void *value) {
  auto *cache = static_cast<ThreadCache *>(value);
  if (t_cache == cache) t_cache = nullptr;
  Locked lock;
  retire_cache_locked(cache);
}

ThreadCache *make_cache() {
  ThreadCache *cache;
  {
    Locked lock;
    cache = g_heap.cache_meta.take();
    if (cache == nullptr) return nullptr;
    cache->next = g_heap.caches;
    if (g_heap.caches != nullptr) g_heap.caches->prev = cache;
    g_heap.caches = cache;
  }
  pthread_setspecific(g_heap.cache_key, cache);
  t_cache = cache;
  return cache;
}

void bump(std::atomic<uint64_t> &counter) {
  counter.store(counter.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
}

// ---- initialisation and fork ------------------------------------------------

void prepare_fork() {
  pthread_mutex_lock(&g_heap.lock);
  g_heap.pool.prepare_fork();
}

void after_fork_parent() {
  g_heap.pool.after_fork_parent();
  pthread_mutex_unlock(&g_heap.lock);
}

void after_fork_child() {
  g_heap.pool.after_fork_child();
  // Only the forking thread exists in the child: the other caches' blocks are free.
  for (ThreadCache *cache = g_heap.caches; cache != nullptr;) {
    ThreadCache *next = cache->next;
    if (cache != t_cache) retire_cache_locked(cache);
    cache = next;
  }
  pthread_mutex_init(&g_heap.lock, nullptr);
}

bool init_slow() {
  pthread_mutex_lock(&g_init_lock);
  if (g_state.load(std::memory_order_acquire) == State::kUninitialised) {
    g_sealed.config = parse_config(os::environment(), os::is_secure_exec());
    mprotect(&g_sealed, sizeof g_sealed, PROT_READ);
    const Config &cfg = config();
    if (cfg.verbose) print_config(cfg);
    tools::detect();
    if (!os::random_bytes(&g_heap.canary_key, sizeof g_heap.canary_key)) // no entropy yet: ASLR's
      g_heap.canary_key = reinterpret_cast<uintptr_t>(&g_heap) ^ (reinterpret_cast<uintptr_t>(&cfg) << 17);
    if (cfg.nodump_kind() == NoDump::kAlways) {
      int err = os::make_undumpable();
      if (err != 0) diag::Line().add("SECMEM_NODUMP: prctl(PR_SET_DUMPABLE, 0) failed (").err(err).add(")").emit();
    }
    bool cached = cfg.release_kind() == Release::kNever;
    for (int cls = 0; cls < kNumClasses; ++cls) {
      uint32_t cap = 16384 / kClassSizes[cls];
      g_heap.cache_cap[cls] = !cached ? 0 : cap > kCacheSlots ? kCacheSlots : cap < 2 ? 2 : cap;
    }
    bool ok = g_heap.pool.init(cfg) && pthread_key_create(&g_heap.cache_key, thread_exit) == 0 &&
              pthread_atfork(prepare_fork, after_fork_parent, after_fork_child) == 0;
    g_state.store(ok ? State::kReady : State::kFailed, std::memory_order_release);
  }
  pthread_mutex_unlock(&g_init_lock);
  return g_state.load(std::memory_order_acquire) == State::kReady;
}

inline bool ready() {
  State state = g_state.load(std::memory_order_acquire);
  return state == State::kReady || (state == State::kUninitialised && init_slow());
}

// ---- small, large and huge blocks ---------------------------------------------

void *allocate_small(int cls, size_t size) {
  ThreadCache *cache = t_cache;
  if (cache == nullptr && g_heap.cache_cap[cls] != 0) cache = make_cache();
  void *p = nullptr;
  if (cache != nullptr && cache->count[cls] != 0) {
    p = cache->blocks[cls][--cache->count[cls]];
  } else if (cache != nullptr && g_heap.cache_cap[cls] != 0) {
    Locked lock;
    uint32_t got = central_take(cls, cache->blocks[cls], (g_heap.cache_cap[cls] + 1) / 2);
    if (got != 0) p = cache->blocks[cls][--got];
    cache->count[cls] = got;
  } else {
    Locked lock;
    if (central_take(cls, &p, 1) == 0) p = nullptr;
    if (p != nullptr) g_heap.retired_allocations++;
  }
  if (p == nullptr) {
    errno = ENOMEM;
    return nullptr;
  }
  BlockRef ref;
  find_block(p, &ref);
  set_live(ref, p);
  set_requested(ref, size);
  tools::open(p, kClassSizes[cls]);
  write_canary(p, size, kClassSizes[cls]);
  tools::allocated(p, size, kClassSizes[cls]);
  if (cache != nullptr) bump(cache->allocations);
  return p;
}

void release_small(void *p, const BlockRef &ref) {
  clear_live(ref, p);
  int cls = ref.span->cls;
  tools::freeing(p);
  tools::open(p, ref.span->block_size);
  check_canary(p, ref.span->requested[ref.index], ref.span->block_size);
  zero(p, ref.span->block_size);
  tools::freed(p, ref.span->block_size);
  ThreadCache *cache = t_cache;
  uint32_t cap = g_heap.cache_cap[cls];
  if (cache == nullptr && cap != 0) cache = make_cache();
  if (cache == nullptr || cap == 0) {
    Locked lock;
    central_put(cls, &p, 1);
    g_heap.retired_frees++;
    return;
  }
  if (cache->count[cls] == cap) {
    uint32_t half = cap / 2;
    Locked lock;
    central_put(cls, cache->blocks[cls], half);
    memmove(cache->blocks[cls], cache->blocks[cls] + half, (cap - half) * sizeof(void *));
    cache->count[cls] = cap - half;
  }
  cache->blocks[cls][cache->count[cls]++] = p;
  bump(cache->frees);
}

Span *large_span(Chunk *chunk, uint32_t first, uint32_t pages) {
  Span *span = g_heap.span_meta.take();
  if (span == nullptr) return nullptr;
  span->start = chunk->base + size_t{first} * os::kPageSize;
  span->chunk = chunk;
  span->first_page = first;
  span->pages = pages;
  span->cls = -1;
  span->block_size = pages * static_cast<uint32_t>(os::kPageSize);
  span->blocks = 1;
  span->live[0].store(1, std::memory_order_relaxed);
  return span;
}

constexpr int kReadWrite = PROT_READ | PROT_WRITE;

// The pages a large span protects as a whole: a huge chunk's, or the block's.
int protect_block(Span *span, int prot) {
  return g_heap.pool.protect(span->chunk, span->chunk->huge ? 0 : span->first_page, span->pages, prot);
}

// Returns a large block that is no longer live to the pool, zeroing it first
// unless the caller has (heap lock held).
void give_back_large_locked(Span *span, bool zeroed) {
  Chunk *chunk = span->chunk;
  void *p = reinterpret_cast<void *>(span->start);
  if (!zeroed) {
    tools::open(p, span->block_size);
    zero(p, span->block_size);
  }
  tools::freed(p, span->block_size);
  if (chunk->huge) {
    g_heap.pool.free_huge(chunk);
  } else {
    // The guards stay PROT_NONE while free: the next large block here reuses them.
    clear_owners(span, kFreedRun);
    g_heap.pool.free_run(chunk, span->first_page - span->guard_lead, span->guard_lead + span->pages + span->guard_tail);
  }
  g_heap.span_meta.give(span);
}

// Large blocks: [guard_lead PROT_NONE pages][block][1 PROT_NONE page] in a
// chunk (guard_lead is the alignment in pages, so that the block is aligned
// when the run is), or a chunk of their own, which the slot layout already
// surrounds with unmapped pages. A guard that mprotect refuses (the mapping
// count limit) is left out. Sealed blocks start PROT_NONE.
void *allocate_pages(size_t bytes, size_t alignment, bool sealed) {
  size_t pages = (bytes + os::kPageSize - 1) / os::kPageSize;
  uint32_t align_pages = alignment > os::kPageSize ? static_cast<uint32_t>(alignment / os::kPageSize) : 1;
  Locked lock;
  Span *span = nullptr;
  if (pages > kHugePages || align_pages > kHugePages || align_pages + pages + 1 > kMaxChunkPages) {
    Chunk *chunk = g_heap.pool.alloc_huge(pages);
    if (chunk != nullptr) {
      span = large_span(chunk, 0, static_cast<uint32_t>(pages));
      if (span == nullptr) g_heap.pool.free_huge(chunk);
      else chunk->owner[0].store(span, std::memory_order_release);
    }
  } else {
    Chunk *chunk = nullptr;
    uint32_t first = 0, run = align_pages + static_cast<uint32_t>(pages) + 1;
    if (g_heap.pool.alloc_run(run, align_pages, &chunk, &first)) {
      span = large_span(chunk, first + align_pages, static_cast<uint32_t>(pages));
      if (span == nullptr) {
        g_heap.pool.free_run(chunk, first, run); // no owner was set
      } else {
        span->guard_lead = align_pages;
        span->guard_tail = 1;
        // Guards where mprotect allows (they often are from the run's last use).
        g_heap.pool.ensure_protection(chunk, first, align_pages, PROT_NONE);
        g_heap.pool.ensure_protection(chunk, first + align_pages + static_cast<uint32_t>(pages), 1, PROT_NONE);
        if (g_heap.pool.ensure_protection(chunk, span->first_page, static_cast<uint32_t>(pages), kReadWrite) != 0) {
          g_heap.pool.free_run(chunk, first, run);
          g_heap.span_meta.give(span);
          errno = ENOMEM;
          return nullptr;
        }
        for (uint32_t p = span->first_page; p < span->first_page + pages; ++p)
          chunk->owner[p].store(span, std::memory_order_release);
      }
    }
  }
  if (span == nullptr) {
    errno = ENOMEM;
    return nullptr;
  }
  void *p = reinterpret_cast<void *>(span->start);
  span->large_requested = bytes;
  tools::open(p, span->block_size);
  write_canary(p, bytes, span->block_size);
  tools::allocated(p, bytes, span->block_size);
  if (sealed) {
    span->sealed = true;
    int err = protect_block(span, PROT_NONE);
    if (err != 0) { // nothing to seal it with: give it back
      protect_block(span, kReadWrite); // mprotect may have changed part of it
      span->live[0].store(0, std::memory_order_relaxed);
      give_back_large_locked(span, false);
      errno = err;
      return nullptr;
    }
  }
  track_held(static_cast<ptrdiff_t>(span->block_size));
  g_heap.retired_allocations++;
  return p;
}

void release_pages(void *p, const BlockRef &ref) {
  clear_live(ref, p);
  Span *span = ref.span;
  if (span->sealed) {
    Locked lock;
    int err = protect_block(span, kReadWrite);
    if (err != 0) diag::fatal_errno("cannot unseal a sealed block to zero it", err);
    span->readers = span->writers = 0;
  }
  tools::freeing(p);
  tools::open(p, span->block_size);
  check_canary(p, span->large_requested, span->block_size);
  zero(p, span->block_size); // outside the lock: blocks can be large
  Locked lock;
  track_held(-static_cast<ptrdiff_t>(span->block_size));
  g_heap.retired_frees++;
  give_back_large_locked(span, true);
}

// The smallest class at or above size whose blocks are all aligned, or -1.
int aligned_class(size_t size, size_t alignment) {
  if (size > kMaxSmallSize || alignment > os::kPageSize) return -1; // spans are only page-aligned
  for (int cls = size_to_class(size); cls < kNumClasses; ++cls)
    if (kClassSizes[cls] % alignment == 0) return cls;
  return -1;
}

} // namespace

void *allocate(size_t size) {
  if (size > kMaxRequest) {
    errno = ENOMEM;
    return nullptr;
  }
  if (!ready()) {
    errno = ENOMEM;
    return nullptr;
  }
  if (size <= kMaxSmallSize) return allocate_small(size_to_class(size), size == 0 ? 1 : size);
  return allocate_pages(size, os::kPageSize, false);
}

void *allocate_aligned(size_t alignment, size_t size) {
  if (alignment <= 16) return allocate(size);
  if (size > kMaxRequest || !ready()) {
    errno = ENOMEM;
    return nullptr;
  }
  int cls = aligned_class(size, alignment);
  if (cls >= 0) return allocate_small(cls, size == 0 ? 1 : size);
  return allocate_pages(size == 0 ? 1 : size, alignment, false);
}

void release(void *p) {
  if (p == nullptr) return;
  BlockRef ref = checked_block(p, "invalid free of");
  if (ref.span->cls >= 0)
    release_small(p, ref);
  else
    release_pages(p, ref);
}

void *reallocate(void *p, size_t size) {
  if (p == nullptr) return allocate(size);
  BlockRef ref = checked_block(p, "invalid realloc of");
  if (!is_live(ref)) diag::fatal_pointer("invalid realloc of", p, "block already freed");
  if (ref.span->sealed) { // its pages may be inaccessible; it keeps its place
    errno = EINVAL;
    return nullptr;
  }
  if (size == 0) {
    release(p);
    return nullptr;
  }
  size_t block = ref.span->block_size, old = requested_size(ref);
  bool fits = size <= block;
  bool same_class = ref.span->cls >= 0 ? size <= kMaxSmallSize && size_to_class(size) == ref.span->cls
                                       : fits && size > block / 2 && size > kMaxSmallSize;
  if (fits && same_class) {
    char *bytes = static_cast<char *>(p);
    tools::open(p, block);
    check_canary(p, old, block);
    // Shrinking keeps no stale tail; the old canary goes (the rest of the slack is zero).
    size_t keep = size < old ? size : old;
    size_t old_end = old + (block - old < kCanaryBytes ? block - old : kCanaryBytes);
    zero(bytes + keep, old_end - keep);
    set_requested(ref, size);
    write_canary(p, size, block);
    tools::resized(p, old, size, block);
    return p;
  }
  void *moved = allocate(size);
  if (moved == nullptr) return nullptr;
  memcpy(moved, p, size < old ? size : old);
  release(p);
  return moved;
}

size_t usable_size(const void *p) {
  BlockRef ref;
  if (p == nullptr || find_block(p, &ref) != Found::kBlock || !is_live(ref)) return 0;
  return requested_size(ref);
}

void *allocate_sealed(size_t size) {
  if (size > kMaxRequest || !ready()) {
    errno = ENOMEM;
    return nullptr;
  }
  return allocate_pages(size == 0 ? 1 : size, os::kPageSize, true);
}

int change_access(void *p, int mode, bool begin) {
  if (mode != kAccessRead && mode != kAccessWrite) return EINVAL;
  BlockRef ref;
  if (p == nullptr || find_block(p, &ref) != Found::kBlock || !is_live(ref) || !ref.span->sealed) return EINVAL;
  Locked lock;
  if (!is_live(ref)) return EINVAL; // freed meanwhile (free clears the mark before it unseals)
  Span *span = ref.span;
  uint32_t readers = span->readers, writers = span->writers;
  uint32_t &count = mode == kAccessWrite ? writers : readers;
  if (!begin && count == 0) return EINVAL; // no such scope is open
  count = begin ? count + 1 : count - 1;
  auto prot_of = [](uint32_t r, uint32_t w) { return w != 0 ? kReadWrite : r != 0 ? PROT_READ : PROT_NONE; };
  if (prot_of(readers, writers) != prot_of(span->readers, span->writers)) {
    int err = protect_block(span, prot_of(readers, writers));
    if (err != 0) return err;
  }
  span->readers = readers;
  span->writers = writers;
  return 0;
}

bool owns(const void *p) {
  BlockRef ref;
  Found found = find_block(p, &ref);
  return (found == Found::kBlock || found == Found::kInterior) && is_live(ref);
}

namespace {

// Live bytes per tier, by walking every span's live bitmap.
void count_in_use(size_t in_use[kNumTiers]) {
  for (Chunk *chunk = g_heap.pool.first_chunk(); chunk != nullptr; chunk = chunk->next) {
    Span *previous = nullptr;
    uint32_t pages = chunk->huge ? 1 : chunk->mapped_pages;
    for (uint32_t page = 0; page < pages; ++page) {
      Span *span = chunk->owner[page].load(std::memory_order_acquire);
      if (span == nullptr || span == kFreedRun || span == previous) continue;
      previous = span;
      size_t live = 0;
      for (uint32_t i = 0; i < span->blocks; ++i) live += span->live[i].load(std::memory_order_relaxed);
      in_use[static_cast<int>(chunk->tier)] += live * span->block_size;
    }
  }
}

// The locked tier mlocks pages as they are first touched.
size_t locked_bytes_locked() {
  size_t bytes = 0;
  for (Chunk *chunk = g_heap.pool.first_chunk(); chunk != nullptr; chunk = chunk->next)
    if (chunk->tier == Tier::kLocked) bytes += size_t{chunk->touched_pages} * os::kPageSize;
  return bytes;
}

const char *weakest_tier_locked() {
  int weakest = -1;
  for (Chunk *chunk = g_heap.pool.first_chunk(); chunk != nullptr; chunk = chunk->next)
    if (static_cast<int>(chunk->tier) > weakest) weakest = static_cast<int>(chunk->tier);
  return weakest < 0 ? "none" : tier_name(static_cast<Tier>(weakest));
}

} // namespace

void get_stats(secmem_stats *out) {
  *out = secmem_stats{};
  out->backend = "none";
  if (g_state.load(std::memory_order_acquire) != State::kReady) return;
  Locked lock;
  const PoolCounters &counters = g_heap.pool.counters();
  size_t in_use[kNumTiers] = {};
  count_in_use(in_use);
  out->backend = weakest_tier_locked();
  out->in_use_secret = in_use[0];
  out->in_use_locked = in_use[1];
  out->in_use_unlocked = in_use[2];
  out->mapped_secret = counters.mapped_bytes[0];
  out->mapped_locked = counters.mapped_bytes[1];
  out->mapped_unlocked = counters.mapped_bytes[2];
  out->memlock_charged = counters.mapped_bytes[0] + locked_bytes_locked();
  out->pages_touched = counters.pages_touched;
  out->chunks = counters.chunks;
  out->peak_held = g_heap.peak_held;
  out->allocations = g_heap.retired_allocations;
  out->frees = g_heap.retired_frees;
  for (ThreadCache *cache = g_heap.caches; cache != nullptr; cache = cache->next) {
    out->allocations += cache->allocations.load(std::memory_order_relaxed);
    out->frees += cache->frees.load(std::memory_order_relaxed);
  }
  out->fallbacks_enosys = counters.fallbacks[static_cast<int>(FallbackReason::kNoKernelSupport)];
  out->fallbacks_eperm = counters.fallbacks[static_cast<int>(FallbackReason::kRefused)];
  out->fallbacks_memlock = counters.fallbacks[static_cast<int>(FallbackReason::kMemlock)];
  out->fallbacks_other = counters.fallbacks[static_cast<int>(FallbackReason::kOther)];
  out->failed_chunks = counters.failed_chunks;
  out->fork_privatisations = counters.fork_privatisations;
}

const char *backend_name() {
  if (g_state.load(std::memory_order_acquire) != State::kReady) return "none";
  Locked lock;
  return weakest_tier_locked();
}

const ChunkPool &pool() { return g_heap.pool; }

void reserved_range(uintptr_t *base, size_t *size) {
  bool ready = g_state.load(std::memory_order_acquire) == State::kReady;
  *base = ready ? g_heap.pool.reserved_base() : 0;
  *size = ready ? g_heap.pool.reserved_bytes() : 0;
}

} // namespace secmem::heap
