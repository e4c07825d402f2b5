// The preload shim's shared declarations: the table of next-allocator
// symbols, the routing decision, and the re-entrancy guard.
//
// Rules for every file of the shim: no allocation from any heap on these
// paths, no exceptions, initial-exec TLS only, no call into the secret heap
// while it is already running on this thread (its own start-up calls
// malloc), and diagnostics through diag::Line (the raw write system call,
// never the shim's own write interposer).
//
// Files: next.cpp (the symbol table, the bootstrap arena, start-up),
// routing.cpp (where an allocation goes, tags, SECMEM_TAG_CALLERS, counters),
// malloc.cpp (the malloc family), openssl.cpp, sodium.cpp, io_explain.cpp
// (EFAULT explanations), report.cpp (SECMEM_REPORT at exit), reaping.cpp
// (the wait calls: which fork children are gone).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <dlfcn.h>
#include <link.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/wait.h>

#include "secmem/internal/interpose.h"
#include "secmem/secmem.h"

#define SHIM_API extern "C" __attribute__((visibility("default")))
#define SHIM_TLS __attribute__((tls_model("initial-exec"))) thread_local

namespace secmem::shim {

// ---- the next allocator (next.cpp) ----

template <typename F> struct Next {
  std::atomic<F> fn{nullptr};
  F get() const { return fn.load(std::memory_order_acquire); }
};

// Every libc function the shim forwards, with its type and its name, once.
// Resolved with dlsym(RTLD_NEXT) at start-up (or at the first malloc, if that
// comes first); glibc never unloads, so the pointers stay valid. malloc comes
// last: until it is known, allocations made by dlsym itself (its error
// strings for the optional ones) go to the bootstrap arena, not to glibc.
#define SECMEM_SHIM_NEXT_SYMBOLS(X)                                                               \
  X(free, void (*)(void *), "free")                                                               \
  X(calloc, void *(*)(size_t, size_t), "calloc")                                                  \
  X(realloc, void *(*)(void *, size_t), "realloc")                                                \
  X(memalign, void *(*)(size_t, size_t), "memalign")                                              \
  X(posix_memalign, int (*)(void **, size_t, size_t), "posix_memalign")                           \
  X(aligned_alloc, void *(*)(size_t, size_t), "aligned_alloc")                                    \
  X(valloc, void *(*)(size_t), "valloc")                                                          \
  X(pvalloc, void *(*)(size_t), "pvalloc")                                                        \
  X(malloc_usable_size, size_t (*)(void *), "malloc_usable_size")                                 \
  X(free_sized, void (*)(void *, size_t), "free_sized")                         /* glibc 2.41+ */ \
  X(free_aligned_sized, void (*)(void *, size_t, size_t), "free_aligned_sized") /* glibc 2.41+ */ \
  X(read, ssize_t (*)(int, void *, size_t), "read")                                               \
  X(write, ssize_t (*)(int, const void *, size_t), "write")                                       \
  X(pread64, ssize_t (*)(int, void *, size_t, off_t), "pread64")                                  \
  X(pwrite64, ssize_t (*)(int, const void *, size_t, off_t), "pwrite64")                          \
  X(vmsplice, ssize_t (*)(int, const struct iovec *, unsigned long, unsigned int), "vmsplice")    \
  X(send, ssize_t (*)(int, const void *, size_t, int), "send")                                    \
  X(dlclose, int (*)(void *), "dlclose")                                                          \
  X(wait, pid_t (*)(int *), "wait")                                                               \
  X(waitpid, pid_t (*)(pid_t, int *, int), "waitpid")                                             \
  X(wait3, pid_t (*)(int *, int, struct rusage *), "wait3")                                       \
  X(wait4, pid_t (*)(pid_t, int *, int, struct rusage *), "wait4")                                \
  X(waitid, int (*)(idtype_t, id_t, siginfo_t *, int), "waitid")                                  \
  X(exit, void (*)(int), "exit")                                                                  \
  X(malloc, void *(*)(size_t), "malloc")

struct NextTable {
#define SECMEM_SHIM_DECLARE_NEXT(field, type, name) Next<type> field;
  SECMEM_SHIM_NEXT_SYMBOLS(SECMEM_SHIM_DECLARE_NEXT)
#undef SECMEM_SHIM_DECLARE_NEXT
};
extern NextTable g_next;

// Fills g_next once. False when called recursively (dlsym itself allocates):
// the caller then serves the request from the bootstrap arena.
extern std::atomic<int> g_resolve_state; // 0: not yet, 1: resolving, 2: done
bool resolve_slow();
inline bool resolve() { return g_resolve_state.load(std::memory_order_acquire) == 2 || resolve_slow(); }

// A table function, resolved now if it is called before start-up (by another
// library's constructor, say).
template <typename F> F next_fn(Next<F> &next, const char *name) {
  F fn = next.get();
  if (__builtin_expect(fn == nullptr, 0)) {
    fn = reinterpret_cast<F>(dlsym(RTLD_NEXT, name));
    next.fn.store(fn, std::memory_order_release);
  }
  return fn;
}

// A function of a library that can be loaded and unloaded at any time
// (libsodium, libcrypto): looked up at each call, never cached, so that a
// dlclose and a later dlopen elsewhere leave no dangling pointer.
template <typename F> F next_in_loaded_library(const char *name) { return reinterpret_cast<F>(dlsym(RTLD_NEXT, name)); }

// The same for an interposer of such a library's function, called from
// caller: when RTLD_NEXT cannot see it (a library dlopen'ed with RTLD_LOCAL,
// as Python's _ssl module loads libcrypto), it is looked up in the calling
// object's own scope (the object and its dependencies). Never self; null
// when neither finds it.
void *caller_scope_symbol(const char *name, const void *caller, const void *self);
template <typename F> F next_for_caller(const char *name, const void *caller, F self) {
  F fn = next_in_loaded_library<F>(name);
  if (fn != nullptr && fn != self) return fn;
  return reinterpret_cast<F>(caller_scope_symbol(name, caller, reinterpret_cast<const void *>(self)));
}

// The same, kept from one call to the next: a TLS handshake calls
// BN_MONT_CTX_set dozens of times, and each lookup (dlsym across every loaded
// object) cost a few microseconds, 0.3 ms of server CPU per connection. Kept
// until a dlclose (routing.cpp's generations: a new one as each dlclose
// begins and ends, none while one is under way), and only while the object
// that defines it is still the one mapped there (_dl_find_object, lock-free:
// a dlclose that bypasses the shim's wrapper, through libc's own symbol or
// from a library loaded with RTLD_DEEPBIND, unloads unseen). Only what the
// next objects in the global scope define is kept; a lookup in the caller's
// own scope (a libcrypto loaded with RTLD_LOCAL) depends on the caller and is
// made each time.
inline constexpr uint64_t kNoGeneration = ~uint64_t{0};
uint64_t unload_generation(); // kNoGeneration while a dlclose is under way
struct NextCache {
  std::atomic<uint64_t> generation{kNoGeneration};
  std::atomic<void *> fn{nullptr};
  std::atomic<void *> object{nullptr}; // fn's object (its link_map)
  std::atomic<bool> writing{false};    // between threads that store a lookup
};
inline void *defining_object(const void *fn) {
  dl_find_object found{};
  return _dl_find_object(const_cast<void *>(fn), &found) == 0 ? found.dlfo_link_map : nullptr;
}
template <typename F> F next_for_caller(NextCache &cache, const char *name, const void *caller, F self) {
  uint64_t now = unload_generation();
  if (now != kNoGeneration && cache.generation.load(std::memory_order_acquire) == now) {
    void *fn = cache.fn.load(std::memory_order_acquire);
    void *object = cache.object.load(std::memory_order_acquire);
    if (cache.generation.load(std::memory_order_acquire) == now && object != nullptr && defining_object(fn) == object)
      return reinterpret_cast<F>(fn);
  }
  F fn = next_in_loaded_library<F>(name);
  if (fn == nullptr || fn == self)
    return reinterpret_cast<F>(caller_scope_symbol(name, caller, reinterpret_cast<const void *>(self)));
  if (now != kNoGeneration && !cache.writing.exchange(true, std::memory_order_acquire)) {
    cache.generation.store(kNoGeneration, std::memory_order_release);
    cache.fn.store(reinterpret_cast<void *>(fn), std::memory_order_release);
    cache.object.store(defining_object(reinterpret_cast<const void *>(fn)), std::memory_order_release);
    // Kept only if no dlclose began meanwhile (the object may be gone).
    if (unload_generation() == now) cache.generation.store(now, std::memory_order_release);
    cache.writing.store(false, std::memory_order_release);
  }
  return fn;
}

// Allocations made while dlsym runs, before the next allocator is known.
inline constexpr size_t kBootstrapBytes = 256 * 1024;
extern __attribute__((visibility("hidden"))) unsigned char g_bootstrap[kBootstrapBytes];
void *bootstrap_alloc(size_t n, size_t alignment);
size_t bootstrap_size(const void *p);
inline bool bootstrap_owns(const void *p) { // inline: free's fast path has no call
  return reinterpret_cast<uintptr_t>(p) - reinterpret_cast<uintptr_t>(g_bootstrap) < kBootstrapBytes;
}

// ---- routing (routing.cpp) ----

// Inside the secret heap or the symbol resolver on this thread: every
// allocation goes to the next allocator (or the bootstrap arena).
extern __thread bool t_in_secret_heap __attribute__((tls_model("initial-exec")));

enum class Source : uint8_t { kOpenSSL, kTag, kCallers, kSodium, kNone };
inline constexpr int kNumSources = static_cast<int>(Source::kNone);
extern const char *const kSourceNames[kNumSources];

// What went to the secret heap from each source, for SECMEM_REPORT
// (routing.cpp counts it, only where a report is wanted).
struct RoutedTotal {
  uint64_t allocations, bytes;
};
RoutedTotal routed_total(Source source);
// False when the process did not count: SECMEM_REPORT was not set at its
// first secret allocation (set later, by the program): the report says so.
bool routed_counted();
const char *report_target(); // report.cpp: SECMEM_REPORT's value, null if unset or a secure exec

extern std::atomic<uintptr_t> g_secret_top; // the range's end, fixed once set
extern std::atomic<size_t> g_secret_size;
// Tags need every free to come here first; off when another allocator
// precedes the shim in LD_PRELOAD (check_preload_order).
extern std::atomic<bool> g_tags_enabled;
// The shim's malloc family is the first in the process (check_preload_order
// found it so): what its malloc does not keep is the next allocator's, whose
// own free and malloc_usable_size can be called for it directly.
extern std::atomic<bool> g_shim_is_first;
extern std::atomic<bool> g_callers_enabled; // SECMEM_TAG_CALLERS names a library
// malloc's fast path in one load: the next allocator's malloc once it is
// known and SECMEM_TAG_CALLERS names no library, else null (the routed
// path). free's call for a pointer not the shim's, never null: free_slow
// until the next allocator is known, then its free. Both recomputed after
// each of the two changes (update_fast_paths).
extern std::atomic<void *(*)(size_t)> g_untagged_malloc;
extern std::atomic<void (*)(void *)> g_plain_free;
void free_slow(void *p);
void update_fast_paths();

// p lies in the secret heap's reserved range, [top - size, top): a
// subtraction and a compare. The top is fixed and the range only grows
// downwards, so a stale size only leaves out blocks not yet returned.
inline bool is_secret(const void *p) {
  size_t size = g_secret_size.load(std::memory_order_acquire);
  return g_secret_top.load(std::memory_order_relaxed) - 1 - reinterpret_cast<uintptr_t>(p) < size;
}

// No block of the shim's lies below this address: the lowest of the secret
// range (as is_secret knows it) and the bootstrap arena. Only ever lowered,
// before a block below it is returned. free's fast path: a pointer below it
// (glibc's main heap, and what was mapped after the secret range) goes to
// the next allocator after one compare.
// (A pointer: the arena's address is a constant, so the floor is set before
// any constructor runs.)
extern std::atomic<const unsigned char *> g_ours_floor;
inline bool below_ours(const void *p) {
  return reinterpret_cast<uintptr_t>(p) < reinterpret_cast<uintptr_t>(g_ours_floor.load(std::memory_order_relaxed));
}

bool from_tagged_caller(const void *return_address);
void forget_tagged_callers(); // at each dlclose
void unloading(bool begins);  // a dlclose begins or ends

// The tag scopes the shim opened itself on this thread, around an OpenSSL
// call that makes key material (openssl.cpp's TagScope), as opposed to the
// program's own (secmem_tag_begin). Inside only the shim's, glibc's own
// allocations are not the key's and stay ordinary: a thread's
// thread-specific-data block (pthread_setspecific's calloc, reached through
// OpenSSL's error state when the call failed) went to the secret heap, and
// a fork child's glibc zeroes other threads' blocks before any fork handler
// runs, there still in the parent's pages: the parent's thread lost its
// values (found by the adversarial review).
extern __thread uint32_t t_shim_scopes __attribute__((tls_model("initial-exec")));
bool from_libc(const void *return_address);

// Where an allocation made from return_address belongs.
inline Source secret_source(const void *return_address) {
  if (__builtin_expect((secmem_tag_depth_tls & SECMEM_INTERPOSE_TAG_DEPTH) != 0, 0) && !t_in_secret_heap &&
      g_tags_enabled.load(std::memory_order_relaxed))
    return (secmem_tag_depth_tls & SECMEM_INTERPOSE_TAG_DEPTH) == t_shim_scopes && from_libc(return_address)
               ? Source::kNone
               : Source::kTag;
  if (__builtin_expect(g_callers_enabled.load(std::memory_order_relaxed), 0) && !t_in_secret_heap &&
      g_tags_enabled.load(std::memory_order_relaxed) && from_tagged_caller(return_address))
    return Source::kCallers;
  return Source::kNone;
}

// The buffer a program is about to allocate for a private key's DER
// encoding (openssl.cpp: it has just asked i2d_PrivateKey for the length,
// as Apache's mod_ssl does to keep a decrypted key across restarts): true
// if this allocation, of n bytes, is it. Only the thread's next few
// allocations are looked at (SECMEM_INTERPOSE_TAG_PENDING, interpose.h).
// (glibc's own allocations are neither looked at nor counted: from_libc.)
bool take_pending_der(size_t n);
inline bool pending_der(size_t n, const void *return_address) {
  return __builtin_expect((secmem_tag_depth_tls & SECMEM_INTERPOSE_TAG_PENDING) != 0, 0) && !t_in_secret_heap &&
         !from_libc(return_address) && take_pending_der(n);
}

// n bytes with alignment (a power of two) from the secret heap, counted for source.
void *secret_alloc(size_t alignment, size_t n, Source source);
void *secret_realloc(void *p, size_t n);
void secret_free(void *p);

// The shim's own variables, named from the one option table (config/options.inc).
#define SECMEM_TEXT_OPTION(NAME, doc) inline constexpr const char k##NAME[] = #NAME;
#include "config/options.inc"

void parse_tag_callers();   // SECMEM_TAG_CALLERS, at start-up
void check_preload_order(); // at start-up, once the table is resolved
void open_report();         // at start-up: the name, and SECMEM_REPORT's file (report.cpp)

} // namespace secmem::shim
