// The reserved address range: PROT_NONE address space carved into 2 MiB
// slots, and the table from slot to chunk that makes "is this pointer ours,
// and in which chunk?" a subtraction, a compare and a load.
//
// Not thread-safe for writers (the heap lock); chunk_of is lock-free: a slot
// is published before any block in it is handed out.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "chunks/chunk.h"

namespace secmem {

// The most address space the range ever takes (it may start smaller, under
// RLIMIT_AS, and grow).
inline constexpr size_t kLargestReservation = size_t{64} << 30;

// The range is [top - size, top): its top is fixed, and it grows downwards,
// where the kernel's top-down layout leaves address space free. Slots are
// numbered from top - kLargestReservation, so a slot keeps its number (and
// its entry in the table) as the range grows.
class Reservation {
public:
  // Reserves the range. False (with one diagnostic) if none can be had.
  bool init();

  bool in_range(const void *p) const {
    size_t size = size_.load(std::memory_order_acquire); // then top_ and window_ are set
    return size != 0 && top_ - 1 - reinterpret_cast<uintptr_t>(p) < size;
  }
  // The chunk whose slot holds p, or nullptr (outside the range, or unmapped).
  Chunk *chunk_of(const void *p) const {
    if (!in_range(p)) return nullptr;
    Chunk *chunk = slot_table_[(reinterpret_cast<uintptr_t>(p) - window_) / kChunkSize].load(std::memory_order_acquire);
    return chunk == freed_huge_mark() ? nullptr : chunk;
  }
  // p's page within its slot, from p alone: a chunk that is not huge fills
  // its slot from the slot's start, so this is p's page in the chunk, known
  // without waiting for a load of the chunk's base (free's lookup is a chain
  // of dependent loads: one fewer took alloc+free of 16 bytes from 13.4 to 11.1 ns).
  uint32_t page_in_slot(const void *p) const {
    return static_cast<uint32_t>((reinterpret_cast<uintptr_t>(p) - window_) / os::kPageSize %
                                 (kChunkSize / os::kPageSize));
  }
  // A released huge chunk's first slot keeps a mark until a chunk takes the
  // slot again: a second free of its block (which started there) is then a
  // double free, not a pointer to nothing.
  void mark_freed_huge(const Chunk &chunk) {
    slot_table_[slot_of(chunk.base)].store(freed_huge_mark(), std::memory_order_release);
  }
  bool freed_huge_at(const void *p) const {
    auto addr = reinterpret_cast<uintptr_t>(p);
    return in_range(p) && (addr - window_) % kChunkSize == 0 &&
           slot_table_[(addr - window_) / kChunkSize].load(std::memory_order_acquire) == freed_huge_mark();
  }

  // count free slots in a row, the first at an address that is a multiple of
  // alignment (a power of two): their first number, or -1. When the range has
  // no such run it grows, where the address space below it is free and
  // RLIMIT_AS leaves room.
  long take_slots(uint32_t count, size_t alignment = kChunkSize);
  void give_slots(uint32_t first, uint32_t count);
  uintptr_t slot_address(uint32_t slot) const { return window_ + uintptr_t{slot} * kChunkSize; }
  uint32_t slot_of(uintptr_t addr) const { return static_cast<uint32_t>((addr - window_) / kChunkSize); }

  // Makes chunk (or nullptr) what chunk_of answers for its slots.
  void publish(const Chunk &chunk, Chunk *value);

  uintptr_t top() const { return top_; }
  size_t size() const { return size_.load(std::memory_order_acquire); }

private:
  bool grow(uint32_t count);
  static Chunk *freed_huge_mark() { return reinterpret_cast<Chunk *>(uintptr_t{alignof(Chunk)}); } // never a chunk

  uintptr_t top_ = 0;
  uintptr_t window_ = 0;        // top_ - kLargestReservation: slot 0
  std::atomic<size_t> size_{0}; // grows (under the heap lock); read without it
  std::atomic<Chunk *> *slot_table_ = nullptr;
  uint64_t *slot_used_ = nullptr; // slots outside the range count as used
};

} // namespace secmem
