// Where an allocation goes: the secret heap's range, the secret side of every
// wrapper, tags and SECMEM_TAG_CALLERS, and the counters the report prints.
#include <cerrno>
#include <cstring>
#include <gnu/libc-version.h>
#include <link.h>

#include "api/arg_checks.h"
#include "config/environ.h"
#include "platform/diag.h"
#include "shim.h"

namespace secmem::shim {

__thread bool t_in_secret_heap __attribute__((tls_model("initial-exec"))) = false;
__thread uint32_t t_shim_scopes __attribute__((tls_model("initial-exec"))) = 0;

const char *const kSourceNames[kNumSources] = {"openssl", "tag", "callers", "sodium"};
std::atomic<uintptr_t> g_secret_top{0};
std::atomic<size_t> g_secret_size{0};
constinit std::atomic<const unsigned char *> g_ours_floor{g_bootstrap};
std::atomic<bool> g_tags_enabled{true};
std::atomic<bool> g_shim_is_first{false};
std::atomic<bool> g_callers_enabled{false};
std::atomic<void *(*)(size_t)> g_untagged_malloc{nullptr};
std::atomic<void (*)(void *)> g_plain_free{free_slow};

// Both inputs only ever change once (resolved; callers named), each followed
// by a call here: a store is checked again after it, so the last one stored
// is right even when two threads race (start-up by a malloc on another
// thread than the constructor's).
void update_fast_paths() {
  if (g_resolve_state.load(std::memory_order_seq_cst) == 2)
    g_plain_free.store(g_next.free.get(), std::memory_order_seq_cst); // the same from every thread
  auto wanted = [] {
    return g_resolve_state.load(std::memory_order_seq_cst) == 2 && !g_callers_enabled.load(std::memory_order_seq_cst)
               ? g_next.malloc.get()
               : nullptr;
  };
  for (auto fn = wanted();; fn = wanted()) {
    g_untagged_malloc.store(fn, std::memory_order_seq_cst);
    if (wanted() == fn) return;
  }
}

namespace {

// The range is read at the first secret block, and again when a block lies
// below it (the range grew downwards for it): before the pointer is
// returned, so every free of it sees the range that holds it.
void track_range(const void *p) {
  if (p == nullptr || is_secret(p)) return;
  uintptr_t base = 0;
  size_t size = 0;
  secmem_reserved_range(&base, &size);
  const unsigned char *floor = g_ours_floor.load(std::memory_order_relaxed);
  while (base < reinterpret_cast<uintptr_t>(floor) &&
         !g_ours_floor.compare_exchange_weak(floor, reinterpret_cast<const unsigned char *>(base),
                                             std::memory_order_release)) {}
  g_secret_top.store(base + size, std::memory_order_relaxed);
  // Only ever larger: another thread may store a size it read earlier.
  size_t seen = g_secret_size.load(std::memory_order_relaxed);
  while (seen < size && !g_secret_size.compare_exchange_weak(seen, size, std::memory_order_release)) {}
}

// Counted only in a process that asks for a report (SECMEM_REPORT set when
// it makes its first secret allocation, with libc's environment set up),
// and then in shards, one cache line each, taken by threads in turn. One
// pair of counters for the process, added to with locked instructions at
// every secret allocation, cost each one even without a report, and cost
// threads allocating side by side most of their time: 2 threads'
// CRYPTO_secure_malloc/free pairs of 64-176 B took 80-89 ns against 13-16
// ns without the counters, one thread's 34-41 ns against 21-27 (the line
// went back and forth between the cores).
struct alignas(64) RoutedShard {
  std::atomic<uint64_t> allocations[kNumSources] = {};
  std::atomic<uint64_t> bytes[kNumSources] = {};
};
constexpr int kRoutedShards = 16;
RoutedShard g_routed[kRoutedShards];

// The shard of this thread (1 + its index; 0: none yet).
__thread uint8_t t_routed_shard __attribute__((tls_model("initial-exec"))) = 0;

// Decided at the process's first secret allocation made with an
// environment to read (a fork child inherits the answer: nothing written
// there): -1 not yet (counted meanwhile: libc's environ is still NULL in a
// program's .preinit_array functions), then 0 or 1.
std::atomic<int> g_counting{-1};

void count_secret(size_t n, Source source) {
  int counting = g_counting.load(std::memory_order_relaxed);
  if (__builtin_expect(counting < 0, 0) && process_environment() != nullptr) {
    counting = report_target() != nullptr ? 1 : 0;
    g_counting.store(counting, std::memory_order_relaxed);
  }
  if (counting == 0) return;
  if (t_routed_shard == 0) {
    static std::atomic<unsigned> next{0};
    t_routed_shard = static_cast<uint8_t>(1 + next.fetch_add(1, std::memory_order_relaxed) % kRoutedShards);
  }
  RoutedShard &shard = g_routed[t_routed_shard - 1];
  shard.allocations[static_cast<int>(source)].fetch_add(1, std::memory_order_relaxed);
  shard.bytes[static_cast<int>(source)].fetch_add(n, std::memory_order_relaxed);
}

void note_secret(void *p, size_t n, Source source) {
  if (p == nullptr) return;
  count_secret(n, source);
  track_range(p);
}

// Runs f with t_in_secret_heap set: the heap's own start-up may call malloc.
template <typename F> auto in_secret_heap(F f) {
  t_in_secret_heap = true;
  auto result = f();
  t_in_secret_heap = false;
  return result;
}

} // namespace

bool routed_counted() { return g_counting.load(std::memory_order_relaxed) != 0; }

RoutedTotal routed_total(Source source) {
  RoutedTotal total{0, 0};
  for (const RoutedShard &shard : g_routed) {
    total.allocations += shard.allocations[static_cast<int>(source)].load(std::memory_order_relaxed);
    total.bytes += shard.bytes[static_cast<int>(source)].load(std::memory_order_relaxed);
  }
  return total;
}

void *secret_alloc(size_t alignment, size_t n, Source source) {
  if (!args::is_power_of_two(alignment)) {
    errno = EINVAL;
    return nullptr;
  }
  void *p = in_secret_heap([&] { return alignment <= 16 ? secmem_malloc(n) : secmem_aligned_alloc(alignment, n); });
  note_secret(p, n, source);
  return p;
}

void *secret_realloc(void *p, size_t n) {
  void *moved = in_secret_heap([&] { return secmem_realloc(p, n); });
  track_range(moved);
  return moved;
}

void secret_free(void *p) {
  t_in_secret_heap = true;
  secmem_free(p);
  t_in_secret_heap = false;
}

namespace {

// The symbol name in an object's dynamic symbol table (through its GNU hash
// table, or its SysV one), or null.
const ElfW(Sym) * dynamic_symbol(const link_map *object, const char *name) {
  const ElfW(Sym) *symtab = nullptr;
  const char *strtab = nullptr;
  const uint32_t *gnu_hash = nullptr, *sysv_hash = nullptr;
  // ld.so relocates these addresses in place on x86-64, except in a
  // read-only dynamic section (the vDSO's): an address below the object's
  // base is still an offset.
  auto at = [object](ElfW(Addr) value) { return value < object->l_addr ? value + object->l_addr : value; };
  for (const ElfW(Dyn) *dyn = object->l_ld; dyn != nullptr && dyn->d_tag != DT_NULL; ++dyn) {
    if (dyn->d_tag == DT_SYMTAB) symtab = reinterpret_cast<const ElfW(Sym) *>(at(dyn->d_un.d_ptr));
    if (dyn->d_tag == DT_STRTAB) strtab = reinterpret_cast<const char *>(at(dyn->d_un.d_ptr));
    if (dyn->d_tag == DT_GNU_HASH) gnu_hash = reinterpret_cast<const uint32_t *>(at(dyn->d_un.d_ptr));
    if (dyn->d_tag == DT_HASH) sysv_hash = reinterpret_cast<const uint32_t *>(at(dyn->d_un.d_ptr));
  }
  if (symtab == nullptr || strtab == nullptr) return nullptr;
  if (gnu_hash != nullptr) {
    uint32_t h = 5381;
    for (const char *c = name; *c != '\0'; ++c) h = h * 33 + static_cast<unsigned char>(*c);
    uint32_t buckets = gnu_hash[0], first = gnu_hash[1], bloom_words = gnu_hash[2];
    if (buckets == 0) return nullptr;
    const uint32_t *bucket = gnu_hash + 4 + bloom_words * (sizeof(ElfW(Addr)) / 4);
    const uint32_t *chain = bucket + buckets;
    uint32_t index = bucket[h % buckets];
    if (index < first) return nullptr;
    for (;; ++index) {
      uint32_t h2 = chain[index - first];
      if ((h | 1) == (h2 | 1) && strcmp(strtab + symtab[index].st_name, name) == 0) return &symtab[index];
      if ((h2 & 1) != 0) return nullptr;
    }
  }
  if (sysv_hash != nullptr)
    for (uint32_t i = 0; i < sysv_hash[1]; ++i) // nchain: the number of symbols
      if (strcmp(strtab + symtab[i].st_name, name) == 0) return &symtab[i];
  return nullptr;
}

} // namespace

// If the process's free() is not ours, another allocator comes first in
// LD_PRELOAD: tagged blocks would be freed by it. Tags go off, with one line;
// OpenSSL's secure heap still goes to secret memory (its frees come here).
// The first object in the search order (the executable, then LD_PRELOAD,
// then the rest) that defines free is the one every call reaches. dlsym
// cannot tell: a non-PIE executable that takes free's address (Debian's
// python3.11) holds a canonical PLT entry for it, an undefined symbol with an
// address, which dlsym returns and which jumps to the first definition.
// The shim's own object is the one whose dynamic section is its _DYNAMIC
// (dladdr1 found it too, through a page of libc's code that a process
// touches nowhere else at start-up: a page fault in every program).
void check_preload_order() {
  bool first = false;
  for (const link_map *object = _r_debug.r_map; object != nullptr; object = object->l_next) {
    const ElfW(Sym) *symbol = dynamic_symbol(object, "free");
    if (symbol == nullptr || symbol->st_shndx == SHN_UNDEF || ELF64_ST_TYPE(symbol->st_info) != STT_FUNC) continue;
    first = object->l_ld == _DYNAMIC;
    break;
  }
  if (first) {
    g_shim_is_first.store(true, std::memory_order_release);
    return;
  }
  g_tags_enabled.store(false, std::memory_order_relaxed);
  diag::Line()
      .add("preload: another allocator comes before libsecmem_preload.so in LD_PRELOAD; "
           "secmem_tag_begin() is off (put libsecmem_preload.so first to use it)")
      .emit();
}

// ---- SECMEM_TAG_CALLERS=libfoo.so,libbar.so ----
// Allocations whose return address lies in one of these libraries (loaded at
// start-up or dlopen'ed later) go to the secret heap. The calling object is
// found with _dl_find_object (lock-free, so safe inside malloc) and cached
// until the next dlclose.

namespace {

constexpr int kMaxCallerNames = 8;
constexpr int kMaxCachedObjects = 64;
char g_caller_names[kMaxCallerNames][64];
int g_caller_name_count = 0;

// The cache of objects seen: each one's address range and verdict. Entries
// are written once per generation; dlclose starts a new generation (an object
// loaded later may reuse an unloaded one's addresses). g_cache holds the
// generation (above kCountBits) and the number of entries in it.
struct CachedObject {
  std::atomic<uintptr_t> start;
  std::atomic<uintptr_t> end;
  std::atomic<bool> tagged;
};
CachedObject g_objects[kMaxCachedObjects];
constexpr uint64_t kCountBits = 8;
constexpr uint64_t kCountMask = (uint64_t{1} << kCountBits) - 1;
static_assert(kMaxCachedObjects <= kCountMask);
std::atomic<uint64_t> g_cache{0};
std::atomic<bool> g_objects_lock{false}; // between threads adding entries
// dlcloses under way: nothing is cached meanwhile (an unloading library's
// destructors allocate, and its addresses may be another's before the
// wrapper's second forget).
std::atomic<int> g_unloading{0};

// "libfoo.so" names /path/libfoo.so and /path/libfoo.so.1.2.
bool listed(const char *path) {
  const char *base = strrchr(path, '/');
  base = base != nullptr ? base + 1 : path;
  for (int i = 0; i < g_caller_name_count; ++i) {
    size_t n = strlen(g_caller_names[i]);
    if (strncmp(base, g_caller_names[i], n) == 0 && (base[n] == '\0' || base[n] == '.')) return true;
  }
  return false;
}

} // namespace

void parse_tag_callers() {
  const char *value = env_value(process_environment(), kSECMEM_TAG_CALLERS);
  if (value == nullptr || is_secure_exec()) return;
  bool too_many_said = false;
  while (*value != '\0') {
    size_t n = strcspn(value, ",");
    if (n > 0 && g_caller_name_count == kMaxCallerNames) {
      if (!too_many_said) {
        char first[sizeof g_caller_names[0]];
        size_t shown = n < sizeof first - 1 ? n : sizeof first - 1;
        memcpy(first, value, shown);
        first[shown] = '\0';
        diag::Line()
            .add("preload: SECMEM_TAG_CALLERS: more than ")
            .dec(kMaxCallerNames)
            .add(" names; from ")
            .value(first)
            .add(n > shown ? "..." : "")
            .add(" on, ignored")
            .emit();
      }
      too_many_said = true;
    } else if (n > 0 && n < sizeof g_caller_names[0]) {
      memcpy(g_caller_names[g_caller_name_count], value, n);
      g_caller_names[g_caller_name_count++][n] = '\0';
    } else if (n > 0) {
      diag::Line().add("preload: SECMEM_TAG_CALLERS: a name is too long; ignored").emit();
    }
    value += n + (value[n] == ',' ? 1 : 0);
  }
  g_callers_enabled.store(g_caller_name_count > 0, std::memory_order_seq_cst);
  update_fast_paths();
}

bool from_tagged_caller(const void *return_address) {
  auto pc = reinterpret_cast<uintptr_t>(return_address);
  uint64_t cache = g_cache.load(std::memory_order_acquire);
  for (uint64_t i = 0; i < (cache & kCountMask); ++i) {
    // Acquire loads of release stores: an entry of a newer generation, read
    // here, makes that generation visible to the check below (no fence:
    // ThreadSanitizer does not support them).
    uintptr_t start = g_objects[i].start.load(std::memory_order_acquire);
    uintptr_t end = g_objects[i].end.load(std::memory_order_acquire);
    bool tagged = g_objects[i].tagged.load(std::memory_order_acquire);
    if (pc - start >= end - start) continue;
    // Read in this generation, or not used.
    if (g_cache.load(std::memory_order_acquire) >> kCountBits == cache >> kCountBits) return tagged;
    break;
  }
  dl_find_object found{};
  if (_dl_find_object(const_cast<void *>(return_address), &found) != 0 || found.dlfo_link_map == nullptr) return false;
  bool tagged = listed(found.dlfo_link_map->l_name);
  if (!g_objects_lock.exchange(true, std::memory_order_acquire)) {
    uint64_t now = g_cache.load(std::memory_order_acquire);
    uint64_t n = now & kCountMask;
    // Not cached during a dlclose, nor when one came between (the object
    // found may be gone).
    if (g_unloading.load(std::memory_order_seq_cst) == 0 && now >> kCountBits == cache >> kCountBits &&
        n < kMaxCachedObjects) {
      g_objects[n].start.store(reinterpret_cast<uintptr_t>(found.dlfo_map_start), std::memory_order_release);
      g_objects[n].end.store(reinterpret_cast<uintptr_t>(found.dlfo_map_end), std::memory_order_release);
      g_objects[n].tagged.store(tagged, std::memory_order_release);
      g_cache.compare_exchange_strong(now, now + 1, std::memory_order_release, std::memory_order_relaxed);
    }
    g_objects_lock.store(false, std::memory_order_release);
  }
  return tagged;
}

// glibc's object (libc.so.6): its range, found once through one of its
// functions that no program defines (with -fno-plt, its address is the
// one libc holds). A static program (no range found) has no shim.
bool from_libc(const void *return_address) {
  static std::atomic<uintptr_t> start{0}, end{0};
  uintptr_t first = start.load(std::memory_order_acquire);
  if (__builtin_expect(first == 0, 0)) {
    dl_find_object found{};
    if (_dl_find_object(reinterpret_cast<void *>(&gnu_get_libc_version), &found) != 0) return false;
    end.store(reinterpret_cast<uintptr_t>(found.dlfo_map_end), std::memory_order_relaxed);
    first = reinterpret_cast<uintptr_t>(found.dlfo_map_start);
    start.store(first, std::memory_order_release);
  }
  auto pc = reinterpret_cast<uintptr_t>(return_address);
  return pc - first < end.load(std::memory_order_relaxed) - first;
}

void unloading(bool begins) {
  if (begins) {
    g_unloading.fetch_add(1, std::memory_order_seq_cst);
  } else {
    g_unloading.fetch_sub(1, std::memory_order_seq_cst);
  }
}

uint64_t unload_generation() {
  if (g_unloading.load(std::memory_order_seq_cst) != 0) return kNoGeneration;
  return g_cache.load(std::memory_order_acquire) >> kCountBits;
}

// A new generation, empty: the verdicts of the objects a dlclose may unload
// are forgotten (their addresses may go to another object).
void forget_tagged_callers() {
  uint64_t cache = g_cache.load(std::memory_order_relaxed);
  while (!g_cache.compare_exchange_weak(cache, ((cache >> kCountBits) + 1) << kCountBits, std::memory_order_acq_rel,
                                        std::memory_order_relaxed)) {}
}

} // namespace secmem::shim

// dlclose: the objects it unloads leave their addresses free for the next
// dlopen, so the callers' cache starts again, before and after, and caches
// nothing in between (destructors allocate; another thread's dlopen may map
// a library where the unloaded one was before this returns). glibc's own
// unloads (gconv modules), and a dlclose called through libc's own symbol
// (dlsym on libc, dlvsym), do not come here.
SHIM_API int dlclose(void *handle) {
  using namespace secmem::shim;
  auto real = next_fn(g_next.dlclose, "dlclose");
  unloading(true);
  forget_tagged_callers();
  int result = real(handle);
  forget_tagged_callers();
  unloading(false);
  return result;
}
