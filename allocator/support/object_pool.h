// Fixed-size metadata objects (chunks, spans, thread caches) carved from
// private anonymous mappings: allocator metadata never lives in the secret
// pages it describes, and never comes from the libc heap. A slab is carved
// one object at a time, so its pages are touched only as objects are taken
// (each page touched is one more for every fork to copy and every child to
// tear down). Not thread-safe: callers hold the heap lock.
#pragma once

#include <cstddef>
#include <new>

#include "platform/os.h"

namespace secmem {

template <typename T> class ObjectPool {
public:
  // A zero-initialised T, or nullptr when no memory could be mapped.
  T *take() {
    Node *node = free_;
    if (node != nullptr) {
      free_ = node->next;
    } else {
      if (next_ == end_ && !grow()) return nullptr;
      node = next_++;
    }
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
    next_ = slab;
    end_ = slab + kSlabBytes / sizeof(Node);
    return true;
  }

  Node *free_ = nullptr;
  Node *next_ = nullptr, *end_ = nullptr;
};

} // namespace secmem
