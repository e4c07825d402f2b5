// The next allocator: one table of RTLD_NEXT symbols, resolved once; the
// bootstrap arena that serves dlsym's own allocations meanwhile; start-up.
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <link.h>
#include <sched.h>

#include "platform/diag.h"
#include "shim.h"

namespace secmem::shim {

NextTable g_next;

std::atomic<int> g_resolve_state{0};

namespace {

template <typename F> void look_up(Next<F> &next, const char *name) {
  next.fn.store(reinterpret_cast<F>(dlsym(RTLD_NEXT, name)), std::memory_order_release);
}

} // namespace

// dlsym may allocate: those calls are served from the bootstrap arena (t_in_secret_heap).
bool resolve_slow() {
  if (g_resolve_state.load(std::memory_order_acquire) == 2) return true;
  if (t_in_secret_heap) return false;
  int expected = 0;
  if (g_resolve_state.compare_exchange_strong(expected, 1)) {
    t_in_secret_heap = true;
#define SECMEM_SHIM_LOOK_UP(field, type, name) look_up(g_next.field, name);
    SECMEM_SHIM_NEXT_SYMBOLS(SECMEM_SHIM_LOOK_UP)
#undef SECMEM_SHIM_LOOK_UP
    t_in_secret_heap = false;
    if (g_next.malloc.get() == nullptr || g_next.free.get() == nullptr) {
      diag::Line().add("preload: no next malloc/free in this process; aborting").emit();
      abort();
    }
    g_resolve_state.store(2, std::memory_order_seq_cst);
    update_fast_paths();
    return true;
  }
  while (g_resolve_state.load(std::memory_order_acquire) != 2) sched_yield();
  return true;
}

// ---- bootstrap arena: allocations made while dlsym runs ----

alignas(64) __attribute__((visibility("hidden"))) unsigned char g_bootstrap[kBootstrapBytes];

namespace {
std::atomic<size_t> g_bootstrap_used{0};
} // namespace

// Blocks carry their size in the 8 bytes just before them (for realloc). Never reused.
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

size_t bootstrap_size(const void *p) {
  size_t n;
  memcpy(&n, static_cast<const unsigned char *>(p) - sizeof n, sizeof n);
  return n;
}

void *caller_scope_symbol(const char *name, const void *caller, const void *self) {
  Dl_info info{};
  link_map *object = nullptr;
  if (dladdr1(caller, &info, reinterpret_cast<void **>(&object), RTLD_DL_LINKMAP) == 0 || object == nullptr ||
      object->l_name == nullptr || object->l_name[0] == '\0') // the executable: its scope is the global one
    return nullptr;
  void *handle = dlopen(object->l_name, RTLD_LAZY | RTLD_NOLOAD);
  if (handle == nullptr) return nullptr;
  void *fn = dlsym(handle, name);
  next_fn(g_next.dlclose, "dlclose")(handle); // glibc's: a reference dropped, nothing unloaded
  return fn == self ? nullptr : fn;
}

namespace {

// Everything the shim forwards is known before main, so that no wrapper
// (read() in a signal handler, say) calls dlsym later. The LD_PRELOAD order is
// checked here too, also when another allocator serves every malloc call.
__attribute__((constructor)) void start_shim() {
  parse_tag_callers();
  resolve();
  secmem_interpose_watch_reaping(); // reaping.cpp
  check_preload_order();
  open_report();
}

} // namespace

} // namespace secmem::shim
