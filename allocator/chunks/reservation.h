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

class Reservation {
public:
  // Reserves the range. False (with one diagnostic) if none can be had.
  bool init();

  bool in_range(const void *p) const { return reinterpret_cast<uintptr_t>(p) - base_ < size_; }
  // The chunk whose slot holds p, or nullptr (outside the range, or unmapped).
  Chunk *chunk_of(const void *p) const {
    uintptr_t offset = reinterpret_cast<uintptr_t>(p) - base_;
    if (offset >= size_) return nullptr;
    return slot_table_[offset / kChunkSize].load(std::memory_order_acquire);
  }

  // count free slots in a row: their first index, or -1.
  long take_slots(uint32_t count);
  void give_slots(uint32_t first, uint32_t count);
  uintptr_t slot_address(uint32_t slot) const { return base_ + uintptr_t{slot} * kChunkSize; }
  uint32_t slot_of(uintptr_t addr) const { return static_cast<uint32_t>((addr - base_) / kChunkSize); }

  // Makes chunk (or nullptr) what chunk_of answers for its slots.
  void publish(const Chunk &chunk, Chunk *value);

  uintptr_t base() const { return base_; }
  size_t size() const { return size_; }

private:
  uintptr_t base_ = 0;
  size_t size_ = 0;
  uint32_t nslots_ = 0;
  std::atomic<Chunk *> *slot_table_ = nullptr;
  uint64_t *slot_used_ = nullptr;
};

} // namespace secmem
