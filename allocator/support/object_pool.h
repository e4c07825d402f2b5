// Fixed-size metadata objects (chunks, spans, thread caches) carved from
// private anonymous mappings: allocator metadata never lives in the secret
// pages it describes, and never comes from the libc heap. Not thread-safe:
// callers hold the heap lock.
#pragma once

#include <cstddef>
#include <new>

#include "platform/os.h"

namespace secmem {

template <typename T> class ObjectPool {
public:
  // A zero-initialised T, or nullptr when no memory could be mapped.
  T *take() {
    if (free_ == nullptr && !grow()) return nullptr;
    Node *node = free_;
    free_ = node->next;
    return new (node) T();
  }

  void give(T *object) {
    object->~T();
    Node *node = reinterpret_cast<Node *>(object);
    node->next = free_;
    free_ = node;
  }

private:
  union Node {
    Node *next;
    alignas(T) unsigned char storage[sizeof(T)];
  };
  static constexpr size_t kSlabBytes = 64 * 1024 > sizeof(Node) * 8 ? 64 * 1024 : sizeof(Node) * 8;

  bool grow() {
    auto *slab = static_cast<Node *>(os::map_metadata(kSlabBytes));
    if (slab == nullptr) return false;
    size_t n = kSlabBytes / sizeof(Node);
    for (size_t i = 0; i < n; ++i) {
      slab[i].next = free_;
      free_ = &slab[i];
    }
    return true;
  }

  Node *free_ = nullptr;
};

} // namespace secmem
