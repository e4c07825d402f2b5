// libsecmem_preload.so: routes the allocations a program already marks as
// secret into the secret heap, and everything else to the next allocator.
//
// - OpenSSL's secure heap (CRYPTO_secure_*): always secret memory.
// - Plain malloc & co. inside secmem_tag_begin()/secmem_tag_end().
// - free/realloc/malloc_usable_size of a secret pointer (a range check) go to
//   the secret heap; every other call goes to the next malloc in the process
//   (glibc's, or a preloaded jemalloc's), found with dlsym(RTLD_NEXT).
//
// Rules for this file: no allocation from any heap on these paths, no
// exceptions, initial-exec TLS only, and no call into the secret heap while
// it is already running on this thread (its own start-up calls malloc).
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <dlfcn.h>
#include <fcntl.h>
#include <link.h>
#include <sched.h>
#include <sys/auxv.h>
#include <sys/uio.h>
#include <unistd.h>

#include "secmem/secmem.h"

#define SHIM_API extern "C" __attribute__((visibility("default")))

// The tag depth lives in libsecmem (secmem_tag_begin/end); read directly.
extern "C" __attribute__((tls_model("initial-exec"))) __thread unsigned secmem_tag_depth_tls;

extern "C" char *program_invocation_short_name;

namespace {

#define SHIM_TLS __attribute__((tls_model("initial-exec"))) thread_local

// Inside the secret heap or the symbol resolver on this thread: every
// allocation goes to the next allocator (or the bootstrap arena).
SHIM_TLS bool t_busy = false;

// ---- the next allocator ---------------------------------------------------------

template <typename F> struct Next {
  std::atomic<F> fn{nullptr};
  F get() const { return fn.load(std::memory_order_acquire); }
};

Next<void *(*)(size_t)> next_malloc;
Next<void (*)(void *)> next_free;
Next<void *(*)(size_t, size_t)> next_calloc;
Next<void *(*)(void *, size_t)> next_realloc;
Next<void *(*)(size_t, size_t)> next_memalign;
Next<int (*)(void **, size_t, size_t)> next_posix_memalign;
Next<void *(*)(size_t, size_t)> next_aligned_alloc;
Next<void *(*)(size_t)> next_valloc;
Next<void *(*)(size_t)> next_pvalloc;
Next<size_t (*)(void *)> next_usable_size;
Next<void (*)(void *, size_t)> next_free_sized;                    // glibc 2.41+, else nullptr
Next<void (*)(void *, size_t, size_t)> next_free_aligned_sized;    // glibc 2.41+, else nullptr

std::atomic<int> g_resolve_state{0}; // 0: not yet, 1: resolving, 2: done

void write_line(const char *a, const char *b = "", const char *c = "") {
  char line[512];
  size_t n = 0;
  for (const char *part : {a, b, c})
    for (; *part != '\0' && n + 2 < sizeof line; ++part) line[n++] = *part;
  line[n++] = '\n';
  (void)!write(STDERR_FILENO, line, n);
}

void check_preload_order();

// The value of an environment variable ("NAME="), read from environ without allocating.
const char *env_value(const char *name_eq) {
  size_t len = strlen(name_eq);
  for (char **env = environ; env != nullptr && *env != nullptr; ++env)
    if (strncmp(*env, name_eq, len) == 0) return *env + len;
  return nullptr;
}

template <typename F> void look_up(Next<F> &next, const char *name) {
  next.fn.store(reinterpret_cast<F>(dlsym(RTLD_NEXT, name)), std::memory_order_release);
}

// Finds the next allocator's functions. dlsym may allocate: those calls are
// served from the bootstrap arena (t_busy). False when called recursively.
bool resolve() {
  if (g_resolve_state.load(std::memory_order_acquire) == 2) return true;
  if (t_busy) return false;
  int expected = 0;
  if (g_resolve_state.compare_exchange_strong(expected, 1)) {
    t_busy = true;
    look_up(next_free, "free");
    look_up(next_calloc, "calloc");
    look_up(next_realloc, "realloc");
    look_up(next_memalign, "memalign");
    look_up(next_posix_memalign, "posix_memalign");
    look_up(next_aligned_alloc, "aligned_alloc");
    look_up(next_valloc, "valloc");
    look_up(next_pvalloc, "pvalloc");
    look_up(next_usable_size, "malloc_usable_size");
    look_up(next_free_sized, "free_sized");
    look_up(next_free_aligned_sized, "free_aligned_sized");
    look_up(next_malloc, "malloc");
    t_busy = false;
    if (next_malloc.get() == nullptr || next_free.get() == nullptr) {
      write_line("secmem: preload: no next malloc/free in this process; aborting");
      abort();
    }
    g_resolve_state.store(2, std::memory_order_release);
    check_preload_order();
    return true;
  }
  while (g_resolve_state.load(std::memory_order_acquire) != 2) sched_yield();
  return true;
}

// ---- bootstrap arena: allocations made while dlsym runs -------------------------

constexpr size_t kBootstrapBytes = 256 * 1024;
alignas(64) unsigned char g_bootstrap[kBootstrapBytes];
std::atomic<size_t> g_bootstrap_used{0};

// Blocks carry their size in the 8 bytes just before them (for realloc).
void *bootstrap_alloc(size_t n, size_t alignment) {
  if (alignment < 16) alignment = 16;
  size_t used = g_bootstrap_used.load(std::memory_order_relaxed);
  size_t start, end;
  do {
    start = (used + 16 + alignment - 1) & ~(alignment - 1);
    end = start + n;
    if (end > kBootstrapBytes || end < start) {
      errno = ENOMEM;
      return nullptr;
    }
  } while (!g_bootstrap_used.compare_exchange_weak(used, end, std::memory_order_relaxed));
  memcpy(g_bootstrap + start - sizeof(size_t), &n, sizeof n);
  return g_bootstrap + start;
}

bool bootstrap_owns(const void *p) {
  return reinterpret_cast<uintptr_t>(p) - reinterpret_cast<uintptr_t>(g_bootstrap) < kBootstrapBytes;
}

size_t bootstrap_size(const void *p) {
  size_t n;
  memcpy(&n, static_cast<const unsigned char *>(p) - sizeof n, sizeof n);
  return n;
}

// ---- the secret heap ------------------------------------------------------------

std::atomic<uintptr_t> g_secret_base{0};
std::atomic<size_t> g_secret_size{0};

inline bool is_secret(const void *p) {
  size_t size = g_secret_size.load(std::memory_order_acquire);
  return reinterpret_cast<uintptr_t>(p) - g_secret_base.load(std::memory_order_relaxed) < size;
}

enum Source { kOpenSSL, kTag, kCallers, kSodium, kNumSources };
const char *const kSourceNames[kNumSources] = {"openssl", "tag", "callers", "sodium"};
struct Routed {
  std::atomic<uint64_t> allocations{0};
  std::atomic<uint64_t> bytes{0};
};
Routed g_routed[kNumSources];

void note_secret(void *p, size_t n, Source source) {
  if (p == nullptr) return;
  g_routed[source].allocations.fetch_add(1, std::memory_order_relaxed);
  g_routed[source].bytes.fetch_add(n, std::memory_order_relaxed);
  if (g_secret_size.load(std::memory_order_relaxed) == 0) {
    uintptr_t base = 0;
    size_t size = 0;
    secmem_reserved_range(&base, &size);
    g_secret_base.store(base, std::memory_order_relaxed);
    g_secret_size.store(size, std::memory_order_release);
  }
}

// Runs f with t_busy set: the heap's own start-up may call malloc.
template <typename F> auto in_heap(F f) {
  t_busy = true;
  auto result = f();
  t_busy = false;
  return result;
}

void *secret_alloc(size_t alignment, size_t n, Source source) {
  void *p = in_heap([&] { return alignment <= 16 ? secmem_malloc(n) : secmem_aligned_alloc(alignment, n); });
  note_secret(p, n, source);
  return p;
}

void secret_free(void *p) {
  t_busy = true;
  secmem_free(p);
  t_busy = false;
}

// Tags need every free to come here first; off when another allocator
// precedes the shim in LD_PRELOAD (see check_preload_order).
std::atomic<bool> g_tags_enabled{true};

inline bool tagged() {
  return __builtin_expect(secmem_tag_depth_tls != 0, 0) && !t_busy && g_tags_enabled.load(std::memory_order_relaxed);
}

// If the process's free() is not ours, another allocator comes first in
// LD_PRELOAD: tagged blocks would be freed by it. Tags go off, with one line;
// OpenSSL's secure heap still goes to secret memory (its frees come here).
void check_preload_order() {
  t_busy = true;
  Dl_info global_free{}, ours{};
  bool first = dladdr(dlsym(RTLD_DEFAULT, "free"), &global_free) != 0 &&
               dladdr(reinterpret_cast<void *>(&check_preload_order), &ours) != 0 &&
               global_free.dli_fbase == ours.dli_fbase;
  t_busy = false;
  if (first) return;
  g_tags_enabled.store(false, std::memory_order_relaxed);
  write_line("secmem: preload: another allocator comes before libsecmem_preload.so in LD_PRELOAD; "
             "secmem_tag_begin() is off (put libsecmem_preload.so first to use it)");
}

bool valid_alignment(size_t alignment) { return alignment != 0 && (alignment & (alignment - 1)) == 0; }


// ---- SECMEM_TAG_CALLERS=libfoo.so,libbar.so ---------------------------------------------
// Allocations whose return address lies in one of these libraries (loaded at
// start-up or dlopen'ed later) go to the secret heap. The calling object is
// found with _dl_find_object (lock-free, so safe inside malloc) and cached.

constexpr int kMaxCallerNames = 8;
constexpr int kMaxCachedObjects = 64;
char g_caller_names[kMaxCallerNames][64];
int g_caller_name_count = 0;
std::atomic<bool> g_callers_enabled{false};

struct CachedObject {
  uintptr_t start;
  uintptr_t end;
  bool tagged;
};
CachedObject g_objects[kMaxCachedObjects];
std::atomic<int> g_object_count{0};
std::atomic<bool> g_objects_lock{false};

void parse_tag_callers() {
  const char *value = env_value("SECMEM_TAG_CALLERS=");
  if (value == nullptr || getauxval(AT_SECURE) != 0) return;
  while (*value != '\0' && g_caller_name_count < kMaxCallerNames) {
    size_t n = strcspn(value, ",");
    if (n > 0 && n < sizeof g_caller_names[0]) {
      memcpy(g_caller_names[g_caller_name_count], value, n);
      g_caller_names[g_caller_name_count++][n] = '\0';
    } else if (n > 0) {
      write_line("secmem: preload: SECMEM_TAG_CALLERS: a name is too long; ignored");
    }
    value += n + (value[n] == ',' ? 1 : 0);
  }
  g_callers_enabled.store(g_caller_name_count > 0, std::memory_order_release);
}

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

bool from_tagged_caller(const void *return_address) {
  auto pc = reinterpret_cast<uintptr_t>(return_address);
  int count = g_object_count.load(std::memory_order_acquire);
  for (int i = 0; i < count; ++i)
    if (pc - g_objects[i].start < g_objects[i].end - g_objects[i].start) return g_objects[i].tagged;
  dl_find_object found{};
  if (_dl_find_object(const_cast<void *>(return_address), &found) != 0 || found.dlfo_link_map == nullptr) return false;
  bool tagged = listed(found.dlfo_link_map->l_name);
  if (!g_objects_lock.exchange(true, std::memory_order_acquire)) {
    int n = g_object_count.load(std::memory_order_relaxed);
    if (n < kMaxCachedObjects) {
      g_objects[n] = {reinterpret_cast<uintptr_t>(found.dlfo_map_start), reinterpret_cast<uintptr_t>(found.dlfo_map_end),
                      tagged};
      g_object_count.store(n + 1, std::memory_order_release);
    }
    g_objects_lock.store(false, std::memory_order_release);
  }
  return tagged;
}

inline bool caller_tagged(const void *return_address) {
  return __builtin_expect(g_callers_enabled.load(std::memory_order_relaxed), 0) && !t_busy &&
         g_tags_enabled.load(std::memory_order_relaxed) && from_tagged_caller(return_address);
}

// Resolving at start-up also checks the LD_PRELOAD order when another
// allocator serves every malloc call (so ours never runs).
void resolve_io(); // the I/O wrappers' next functions (end of this file)

__attribute__((constructor)) void start_shim() {
  parse_tag_callers();
  resolve();
  resolve_io(); // now, not at a first call that might come from a signal handler
}

// ---- report at exit ---------------------------------------------------------------

void append(char *line, size_t *n, size_t cap, const char *text) {
  for (; *text != '\0' && *n + 1 < cap; ++text) line[(*n)++] = *text;
}

void append_hex(char *line, size_t *n, size_t cap, uintptr_t value) {
  append(line, n, cap, "0x");
  int digits = 1;
  while (digits < 16 && (value >> (4 * digits)) != 0) ++digits;
  for (int d = digits - 1; d >= 0 && *n + 1 < cap; --d) line[(*n)++] = "0123456789abcdef"[(value >> (4 * d)) & 0xf];
}

void append_number(char *line, size_t *n, size_t cap, uint64_t value) {
  char digits[24];
  int count = 0;
  do {
    digits[count++] = static_cast<char>('0' + value % 10);
    value /= 10;
  } while (value != 0);
  while (count > 0 && *n + 1 < cap) line[(*n)++] = digits[--count];
}

// One line per process, at exit: what went to secret memory and from where.
__attribute__((destructor)) void write_report() {
  const char *target = env_value("SECMEM_REPORT="); // stderr or a path
  if (target == nullptr || getauxval(AT_SECURE) != 0) return;
  secmem_stats stats{};
  secmem_get_stats(&stats);
  char line[1024];
  size_t n = 0;
  const size_t cap = sizeof line;
  append(line, &n, cap, "secmem report: pid ");
  append_number(line, &n, cap, static_cast<uint64_t>(getpid()));
  append(line, &n, cap, " (");
  append(line, &n, cap, program_invocation_short_name);
  append(line, &n, cap, "): backend ");
  append(line, &n, cap, stats.backend);
  append(line, &n, cap, "; secret allocations");
  for (int source = 0; source < kNumSources; ++source) {
    append(line, &n, cap, source == 0 ? " " : ", ");
    append(line, &n, cap, kSourceNames[source]);
    append(line, &n, cap, " ");
    append_number(line, &n, cap, g_routed[source].allocations.load(std::memory_order_relaxed));
    append(line, &n, cap, " (");
    append_number(line, &n, cap, g_routed[source].bytes.load(std::memory_order_relaxed));
    append(line, &n, cap, " bytes)");
  }
  append(line, &n, cap, "; peak held ");
  append_number(line, &n, cap, stats.peak_held);
  append(line, &n, cap, " bytes; fallbacks ");
  append_number(line, &n, cap,
                stats.fallbacks_enosys + stats.fallbacks_eperm + stats.fallbacks_memlock + stats.fallbacks_other);
  append(line, &n, cap, "; failed ");
  append_number(line, &n, cap, stats.failed_chunks);
  line[n++] = '\n';
  bool to_stderr = strcmp(target, "stderr") == 0;
  int fd = to_stderr ? STDERR_FILENO : open(target, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) {
    write_line("secmem: cannot write the report to SECMEM_REPORT=", target, ": open failed");
    return;
  }
  (void)!write(fd, line, n); // O_APPEND: one write per process keeps lines whole
  if (!to_stderr) close(fd);
}

} // namespace

// ---- the malloc family --------------------------------------------------------------

namespace {
// Where an allocation made from return_address belongs: kTag, kCallers, or
// kNumSources for the next allocator.
inline Source secret_source(const void *return_address) {
  if (tagged()) return kTag;
  if (caller_tagged(return_address)) return kCallers;
  return kNumSources;
}
} // namespace

#define SECRET_SOURCE() secret_source(__builtin_return_address(0))

namespace {
__attribute__((noinline)) void *malloc_slow(size_t n, const void *return_address) {
  Source source = secret_source(return_address);
  if (source != kNumSources) return secret_alloc(16, n, source);
  if (!resolve()) return bootstrap_alloc(n, 16);
  return next_malloc.get()(n);
}

__attribute__((noinline)) void free_slow(void *p) {
  if (is_secret(p)) return secret_free(p);
  if (bootstrap_owns(p)) return; // never reused
  if (resolve()) next_free.get()(p);
}
} // namespace

// The fast paths have no stack frame: a few loads and a jump to the next allocator.
SHIM_API void *malloc(size_t n) {
  auto fn = next_malloc.get();
  if (__builtin_expect(fn != nullptr && secmem_tag_depth_tls == 0 && !g_callers_enabled.load(std::memory_order_relaxed), 1))
    return fn(n);
  return malloc_slow(n, __builtin_return_address(0));
}

SHIM_API void free(void *p) {
  auto fn = next_free.get();
  if (__builtin_expect(fn != nullptr && !is_secret(p) && !bootstrap_owns(p), 1)) return fn(p);
  free_slow(p);
}

SHIM_API void *calloc(size_t count, size_t size) {
  Source source = SECRET_SOURCE();
  if (__builtin_expect(source != kNumSources, 0)) {
    size_t total = 0;
    if (__builtin_mul_overflow(count, size, &total)) {
      errno = ENOMEM;
      return nullptr;
    }
    return secret_alloc(16, total, source); // secret memory is always zero
  }
  auto fn = next_calloc.get();
  if (__builtin_expect(fn == nullptr, 0)) {
    size_t total = 0;
    if (!resolve()) return __builtin_mul_overflow(count, size, &total) ? nullptr : bootstrap_alloc(total, 16);
    fn = next_calloc.get();
  }
  return fn(count, size);
}

// A block keeps the heap it came from; only realloc(NULL, n) is a new allocation.
SHIM_API void *realloc(void *p, size_t n) {
  if (is_secret(p)) return in_heap([&] { return secmem_realloc(p, n); });
  if (p == nullptr) {
    Source source = SECRET_SOURCE();
    if (source != kNumSources) return secret_alloc(16, n, source);
  }
  if (__builtin_expect(bootstrap_owns(p), 0)) {
    void *moved = malloc(n);
    if (moved != nullptr) memcpy(moved, p, bootstrap_size(p) < n ? bootstrap_size(p) : n);
    return moved;
  }
  if (!resolve()) return bootstrap_alloc(n, 16);
  return next_realloc.get()(p, n);
}

SHIM_API void *reallocarray(void *p, size_t count, size_t size) {
  size_t total = 0;
  if (__builtin_mul_overflow(count, size, &total)) {
    errno = ENOMEM;
    return nullptr;
  }
  return realloc(p, total);
}

namespace {
void *secret_aligned(size_t alignment, size_t n, Source source) {
  if (!valid_alignment(alignment)) {
    errno = EINVAL;
    return nullptr;
  }
  return secret_alloc(alignment, n, source);
}
} // namespace

SHIM_API void *memalign(size_t alignment, size_t n) {
  Source source = SECRET_SOURCE();
  if (source != kNumSources) return secret_aligned(alignment, n, source);
  if (!resolve()) return bootstrap_alloc(n, alignment);
  return next_memalign.get()(alignment, n);
}

SHIM_API void *aligned_alloc(size_t alignment, size_t n) {
  Source source = SECRET_SOURCE();
  if (source != kNumSources) return secret_aligned(alignment, n, source);
  if (!resolve()) return bootstrap_alloc(n, alignment);
  return next_aligned_alloc.get()(alignment, n);
}

SHIM_API int posix_memalign(void **out, size_t alignment, size_t n) {
  Source source = SECRET_SOURCE();
  if (source != kNumSources) {
    if (!valid_alignment(alignment) || alignment % sizeof(void *) != 0) return EINVAL;
    void *p = secret_alloc(alignment, n, source);
    if (p == nullptr) return ENOMEM;
    *out = p;
    return 0;
  }
  if (!resolve()) {
    *out = bootstrap_alloc(n, alignment);
    return *out != nullptr ? 0 : ENOMEM;
  }
  return next_posix_memalign.get()(out, alignment, n);
}

SHIM_API void *valloc(size_t n) {
  Source source = SECRET_SOURCE();
  if (source != kNumSources) return secret_alloc(4096, n, source);
  if (!resolve()) return bootstrap_alloc(n, 4096);
  return next_valloc.get()(n);
}

SHIM_API void *pvalloc(size_t n) {
  size_t rounded = (n + 4095) & ~size_t{4095};
  if (rounded < n) {
    errno = ENOMEM;
    return nullptr;
  }
  Source source = SECRET_SOURCE();
  if (source != kNumSources) return secret_alloc(4096, rounded == 0 ? 4096 : rounded, source);
  if (!resolve()) return bootstrap_alloc(rounded, 4096);
  return next_pvalloc.get()(n);
}

SHIM_API size_t malloc_usable_size(void *p) {
  if (is_secret(p)) return secmem_usable_size(p);
  if (p == nullptr) return 0;
  if (bootstrap_owns(p)) return bootstrap_size(p);
  if (!resolve()) return 0;
  return next_usable_size.get()(p);
}

SHIM_API void free_sized(void *p, size_t n) {
  if (is_secret(p) || bootstrap_owns(p) || !resolve() || next_free_sized.get() == nullptr) return free(p);
  next_free_sized.get()(p, n);
}

SHIM_API void free_aligned_sized(void *p, size_t alignment, size_t n) {
  if (is_secret(p) || bootstrap_owns(p) || !resolve() || next_free_aligned_sized.get() == nullptr) return free(p);
  next_free_aligned_sized.get()(p, alignment, n);
}

// ---- OpenSSL 3's secure heap ------------------------------------------------------------
// Defined without a symbol version: an unversioned definition satisfies
// libcrypto's references to CRYPTO_secure_*@OPENSSL_3.0.0, a named version
// node of ours would not (and the calls would silently stay in OpenSSL).

SHIM_API void *CRYPTO_secure_malloc(size_t num, const char *, int) { return secret_alloc(16, num, kOpenSSL); }

SHIM_API void *CRYPTO_secure_zalloc(size_t num, const char *, int) { return secret_alloc(16, num, kOpenSSL); }

// A pointer that is not ours can only come from OpenSSL's fallback, CRYPTO_malloc.
// Secret pointers never go through the global free: another allocator may be
// first in LD_PRELOAD.
SHIM_API void CRYPTO_secure_free(void *ptr, const char *, int) {
  if (is_secret(ptr)) return secret_free(ptr);
  if (ptr != nullptr) free(ptr);
}

SHIM_API void CRYPTO_secure_clear_free(void *ptr, size_t num, const char *, int) {
  if (is_secret(ptr)) return secret_free(ptr); // the heap zeroes its own blocks
  if (ptr == nullptr) return;
  explicit_bzero(ptr, num);
  free(ptr);
}

SHIM_API int CRYPTO_secure_allocated(const void *ptr) { return secmem_owns(ptr); }

SHIM_API size_t CRYPTO_secure_actual_size(void *ptr) { return secmem_usable_size(ptr); }

SHIM_API size_t CRYPTO_secure_used(void) {
  secmem_stats stats{};
  secmem_get_stats(&stats);
  return stats.in_use_secret + stats.in_use_locked + stats.in_use_unlocked;
}

// OpenSSL asks these before it uses the secure heap for some secrets: the
// answer is always yes, with no set-up by the application.
SHIM_API int CRYPTO_secure_malloc_initialized(void) { return 1; }

SHIM_API int CRYPTO_secure_malloc_init(size_t, size_t) { return 1; }

SHIM_API int CRYPTO_secure_malloc_done(void) { return CRYPTO_secure_used() == 0 ? 1 : 0; }

// OpenSSL frees decoded key material (DER buffers, PKCS#8 intermediates)
// with plain OPENSSL_free, uncleansed: the heap copies a memory scan finds.
// Under the shim every OPENSSL_free of ordinary memory is cleansed first.
// An application's own CRYPTO_set_mem_functions allocator is still used.
namespace {
std::atomic<void (*)(void *, const char *, int)> g_openssl_custom_free{nullptr};
} // namespace

SHIM_API int CRYPTO_set_mem_functions(void *(*m)(size_t, const char *, int),
                                      void *(*r)(void *, size_t, const char *, int),
                                      void (*f)(void *, const char *, int)) {
  using Set = int (*)(decltype(m), decltype(r), decltype(f));
  auto real = reinterpret_cast<Set>(dlsym(RTLD_NEXT, "CRYPTO_set_mem_functions"));
  if (real == nullptr || real(m, r, f) != 1) return 0;
  g_openssl_custom_free.store(f, std::memory_order_release);
  return 1;
}

SHIM_API void CRYPTO_free(void *ptr, const char *file, int line) {
  if (ptr == nullptr) return;
  auto custom = g_openssl_custom_free.load(std::memory_order_acquire);
  if (custom != nullptr && custom != &CRYPTO_free) return custom(ptr, file, line);
  if (is_secret(ptr)) return secret_free(ptr);
  if (!bootstrap_owns(ptr)) explicit_bzero(ptr, malloc_usable_size(ptr));
  free(ptr);
}

// ---- libsodium's guarded allocations ---------------------------------------------------
// sodium_malloc'd secrets go to the secret heap. sodium_mprotect_* cannot
// protect one block of a shared chunk: for our blocks they do nothing and
// return 0 (page-granular sealed secrets are a separate feature).

namespace {
template <typename F> F real_sodium(const char *name) { return reinterpret_cast<F>(dlsym(RTLD_NEXT, name)); }
} // namespace

SHIM_API void *sodium_malloc(size_t size) { return secret_alloc(16, size, kSodium); }

SHIM_API void *sodium_allocarray(size_t count, size_t size) {
  size_t total = 0;
  if (__builtin_mul_overflow(count, size, &total)) {
    errno = ENOMEM;
    return nullptr;
  }
  return secret_alloc(16, total, kSodium);
}

SHIM_API void sodium_free(void *ptr) {
  if (is_secret(ptr)) return secret_free(ptr);
  if (ptr == nullptr) return;
  if (auto real = real_sodium<void (*)(void *)>("sodium_free")) real(ptr);
}

SHIM_API int sodium_mprotect_noaccess(void *ptr) {
  if (is_secret(ptr)) return 0;
  auto real = real_sodium<int (*)(void *)>("sodium_mprotect_noaccess");
  return real != nullptr ? real(ptr) : -1;
}

SHIM_API int sodium_mprotect_readonly(void *ptr) {
  if (is_secret(ptr)) return 0;
  auto real = real_sodium<int (*)(void *)>("sodium_mprotect_readonly");
  return real != nullptr ? real(ptr) : -1;
}

SHIM_API int sodium_mprotect_readwrite(void *ptr) {
  if (is_secret(ptr)) return 0;
  auto real = real_sodium<int (*)(void *)>("sodium_mprotect_readwrite");
  return real != nullptr ? real(ptr) : -1;
}

// ---- I/O on secret buffers: clear errors ------------------------------------------
//
// The kernel refuses to pin memfd_secret pages, so calls that pin their user
// buffer (O_DIRECT reads and writes, vmsplice, MSG_ZEROCOPY sends) fail with
// EFAULT, "Bad address", on a perfectly good address. These wrappers pass
// every call through unchanged; only when one fails with EFAULT on a secret
// buffer do they say why, once per call name, and leave errno as it was.

namespace {

template <typename F> F next_io(std::atomic<F> &slot, const char *name) {
  F fn = slot.load(std::memory_order_acquire);
  if (__builtin_expect(fn == nullptr, 0)) {
    fn = reinterpret_cast<F>(dlsym(RTLD_NEXT, name));
    slot.store(fn, std::memory_order_release);
  }
  return fn;
}

enum IoCall { kRead, kWrite, kVmsplice, kSend, kNumIoCalls };
std::atomic<bool> g_io_explained[kNumIoCalls];

[[gnu::noinline]] void explain_io(IoCall call, const char *name, int fd, const void *buf) {
  int saved = errno;
  if (!g_io_explained[call].exchange(true)) {
    char line[128];
    size_t n = 0;
    append(line, &n, sizeof line, call == kRead ? " into secret memory at " : " from secret memory at ");
    append_hex(line, &n, sizeof line, reinterpret_cast<uintptr_t>(buf));
    line[n] = '\0';
    const char *why = "";
    if (call == kRead || call == kWrite) {
      int flags = fcntl(fd, F_GETFL);
      why = flags >= 0 && (flags & O_DIRECT) != 0
                ? "failed with EFAULT: the file is open with O_DIRECT, which pins the buffer's pages, and memfd_secret "
                  "pages cannot be pinned; use an ordinary buffer for direct I/O and copy the bytes"
                : "failed with EFAULT (the kernel could not pin or reach the secret pages)";
    } else if (call == kVmsplice) {
      why = "failed with EFAULT: vmsplice pins the pages, and memfd_secret pages cannot be pinned; use write()";
    } else {
      why = "failed with EFAULT: MSG_ZEROCOPY pins the pages, and memfd_secret pages cannot be pinned; send "
            "without MSG_ZEROCOPY";
    }
    write_line("secmem: ", name, line);
    write_line("secmem:   ", why);
  }
  errno = saved;
}

std::atomic<ssize_t (*)(int, void *, size_t)> g_next_read;
std::atomic<ssize_t (*)(int, const void *, size_t)> g_next_write;
std::atomic<ssize_t (*)(int, void *, size_t, off_t)> g_next_pread;
std::atomic<ssize_t (*)(int, const void *, size_t, off_t)> g_next_pwrite;
std::atomic<ssize_t (*)(int, const struct iovec *, unsigned long, unsigned int)> g_next_vmsplice;
std::atomic<ssize_t (*)(int, const void *, size_t, int)> g_next_send;

void resolve_io() {
  next_io(g_next_read, "read");
  next_io(g_next_write, "write");
  next_io(g_next_pread, "pread64");
  next_io(g_next_pwrite, "pwrite64");
  next_io(g_next_vmsplice, "vmsplice");
  next_io(g_next_send, "send");
}

inline bool refused_secret(ssize_t result, const void *buf) {
  return __builtin_expect(result < 0, 0) && errno == EFAULT && is_secret(buf);
}

} // namespace

SHIM_API ssize_t read(int fd, void *buf, size_t n) {
  ssize_t result = next_io(g_next_read, "read")(fd, buf, n);
  if (refused_secret(result, buf)) explain_io(kRead, "read", fd, buf);
  return result;
}

SHIM_API ssize_t write(int fd, const void *buf, size_t n) {
  ssize_t result = next_io(g_next_write, "write")(fd, buf, n);
  if (refused_secret(result, buf)) explain_io(kWrite, "write", fd, buf);
  return result;
}

SHIM_API ssize_t pread64(int fd, void *buf, size_t n, off_t offset) {
  ssize_t result = next_io(g_next_pread, "pread64")(fd, buf, n, offset);
  if (refused_secret(result, buf)) explain_io(kRead, "pread", fd, buf);
  return result;
}

SHIM_API ssize_t pwrite64(int fd, const void *buf, size_t n, off_t offset) {
  ssize_t result = next_io(g_next_pwrite, "pwrite64")(fd, buf, n, offset);
  if (refused_secret(result, buf)) explain_io(kWrite, "pwrite", fd, buf);
  return result;
}

// The same under their other names (off_t is 64-bit on the 64-bit targets we
// build for; this file's own headers map pread to pread64, hence asm labels).
SHIM_API ssize_t shim_pread(int fd, void *buf, size_t n, off_t offset) __asm__("pread");
SHIM_API ssize_t shim_pwrite(int fd, const void *buf, size_t n, off_t offset) __asm__("pwrite");
ssize_t shim_pread(int fd, void *buf, size_t n, off_t offset) { return pread64(fd, buf, n, offset); }
ssize_t shim_pwrite(int fd, const void *buf, size_t n, off_t offset) { return pwrite64(fd, buf, n, offset); }

SHIM_API ssize_t vmsplice(int fd, const struct iovec *iov, unsigned long count, unsigned int flags) {
  ssize_t result = next_io(g_next_vmsplice, "vmsplice")(fd, iov, count, flags);
  if (__builtin_expect(result < 0, 0) && errno == EFAULT)
    for (unsigned long i = 0; i < count; ++i)
      if (is_secret(iov[i].iov_base)) {
        explain_io(kVmsplice, "vmsplice", fd, iov[i].iov_base);
        break;
      }
  return result;
}

SHIM_API ssize_t send(int fd, const void *buf, size_t n, int flags) {
  ssize_t result = next_io(g_next_send, "send")(fd, buf, n, flags);
  if (refused_secret(result, buf)) explain_io(kSend, "send", fd, buf);
  return result;
}
