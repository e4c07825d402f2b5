// jemalloc_bench's one peer, JemallocMemfd: a jemalloc arena whose extents come from memfd_secret
// through extent hooks, + explicit_bzero (what a user would assemble from jemalloc). Linking
// jemalloc replaces the process's malloc, so this peer has an executable of its own; bench/run
// runs both.
#include <jemalloc/jemalloc.h>

#include <cstdint>
#include <cstring>
#include <sys/mman.h>

#include "peers.h"
#include "throughput.h"

namespace bench {
namespace {

// The arena, made on first use.
struct Arena {
  int flags = 0;
  bool ok = false;

  static void *extent_alloc(extent_hooks_t *, void *new_addr, size_t size, size_t alignment, bool *zero, bool *commit,
                            unsigned) {
    if (new_addr != nullptr) return nullptr;
    auto *raw = static_cast<char *>(map_secret(size + alignment));
    if (raw == nullptr) return nullptr;
    uintptr_t aligned = (reinterpret_cast<uintptr_t>(raw) + alignment - 1) & ~(uintptr_t{alignment} - 1);
    size_t head = aligned - reinterpret_cast<uintptr_t>(raw);
    if (head != 0) munmap(raw, head);
    if (alignment - head != 0) munmap(reinterpret_cast<char *>(aligned) + size, alignment - head);
    *zero = true;
    *commit = true;
    return reinterpret_cast<void *>(aligned);
  }
  static bool opt_out(extent_hooks_t *, void *, size_t, bool, unsigned) { return true; } // keep extents
  static void destroy(extent_hooks_t *, void *addr, size_t size, bool, unsigned) { munmap(addr, size); }
  static bool commit(extent_hooks_t *, void *, size_t, size_t, size_t, unsigned) { return false; }
  static bool refuse(extent_hooks_t *, void *, size_t, size_t, size_t, unsigned) { return true; } // no purge
  static bool split(extent_hooks_t *, void *, size_t, size_t, size_t, bool, unsigned) { return false; }
  static bool merge(extent_hooks_t *, void *, size_t, void *, size_t, bool, unsigned) { return false; }

  Arena() {
    static extent_hooks_t hooks = {extent_alloc, opt_out, destroy, commit, refuse, refuse, refuse, split, merge};
    unsigned arena = 0;
    size_t arena_size = sizeof arena;
    extent_hooks_t *hooks_ptr = &hooks;
    if (mallctl("arenas.create", &arena, &arena_size, &hooks_ptr, sizeof hooks_ptr) != 0) return;
    flags = MALLOCX_ARENA(arena);
    ok = true;
  }
  static Arena &get() {
    static Arena instance;
    return instance;
  }
};

struct JemallocMemfd {
  static void *alloc(size_t n) { return Arena::get().ok ? mallocx(n, Arena::get().flags) : nullptr; }
  static void release(void *p, size_t n) {
    explicit_bzero(p, n);
    dallocx(p, Arena::get().flags);
  }
};

const bool registered = register_peer<JemallocMemfd>("JemallocMemfd");

} // namespace
} // namespace bench
