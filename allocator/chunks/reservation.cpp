#include "chunks/reservation.h"

#include <algorithm>
#include <cerrno>

#include "platform/diag.h"

namespace secmem {

namespace {
constexpr size_t kSmallestReservation = 2 * kChunkSize; // slot 0 (the guard) and one chunk
// Under RLIMIT_AS (ulimit -v) the reservation takes at most this share of
// what is left, so that the program's own large mappings still fit.
constexpr size_t kAddressSpaceShare = 8;

// The largest power of two at or below n (n > 0).
size_t floor_power_of_two(size_t n) { return size_t{1} << (63 - __builtin_clzll(n)); }
} // namespace

constexpr uint32_t kMaxSlots = kLargestReservation / kChunkSize;

bool Reservation::init() {
  // A fork child finishing its parent's start-up: done if the parent got as far
  // as the size (stored last); if the fork cut it short, the child starts over
  // (what the parent had mapped stays reserved here, unused).
  if (size_.load(std::memory_order_acquire) != 0) return true;
  top_ = window_ = 0;
  slot_table_ = nullptr;
  slot_used_ = nullptr;
  void *raw = nullptr;
  size_t len = kLargestReservation;
  if (size_t left = os::address_space_left(); left != SIZE_MAX) {
    size_t share = left / kAddressSpaceShare;
    len = share < kSmallestReservation ? kSmallestReservation : std::min(len, floor_power_of_two(share));
  }
  for (; len >= kSmallestReservation && raw == nullptr; len /= 2) raw = os::reserve(len + kChunkSize);
  if (raw == nullptr) {
    diag::Line()
        .add("cannot reserve address space for the secret heap (")
        .err(errno)
        .add("); every allocation will return NULL")
        .emit();
    return false;
  }
  len *= 2; // undo the last halving
  uintptr_t start = reinterpret_cast<uintptr_t>(raw);
  uintptr_t aligned = (start + kChunkSize - 1) & ~(kChunkSize - 1);
  // Exactly [aligned, aligned + len): the range grows from its bottom.
  if (aligned != start) os::unmap(raw, aligned - start);
  os::unmap(reinterpret_cast<void *>(aligned + len), start + kChunkSize - aligned);
  // Tables for the largest range: their pages are made when first written.
  // One mapping for both (each mapping a fork copies costs it time).
  size_t table_bytes = kMaxSlots * sizeof(*slot_table_);
  static_assert(kMaxSlots * sizeof(std::atomic<Chunk *>) % alignof(uint64_t) == 0);
  auto *tables = static_cast<char *>(os::map_metadata(table_bytes + bitmap::words_for(kMaxSlots) * sizeof(uint64_t)));
  slot_table_ = reinterpret_cast<std::atomic<Chunk *> *>(tables);
  slot_used_ = tables != nullptr ? reinterpret_cast<uint64_t *>(tables + table_bytes) : nullptr;
  if (slot_table_ == nullptr) {
    diag::Line().add("cannot map the secret heap's slot table; every allocation will return NULL").emit();
    return false;
  }
  top_ = aligned + len;
  window_ = top_ - kLargestReservation;
  // Slots below the range count as used, and so does its lowest slot: the
  // guard below the first chunk.
  bitmap::set_range(slot_used_, 0, slot_of(aligned) + 1);
  size_.store(len, std::memory_order_release);
  return true;
}

// Grows the range downwards by at least count slots (doubling it where
// RLIMIT_AS leaves eight times that). False if it cannot.
bool Reservation::grow(uint32_t count) {
  size_t size = size_.load(std::memory_order_relaxed);
  size_t need = size_t{count + 1} * kChunkSize; // and a new guard slot below them
  if (size == 0 || size + need > kLargestReservation) return false;
  size_t left = os::address_space_left();
  if (left != SIZE_MAX && left < need) return false;
  size_t add = std::max(need, std::min(size, kLargestReservation - size));
  if (left != SIZE_MAX && add > left / kAddressSpaceShare) add = std::max(need, left / kAddressSpaceShare);
  add &= ~(kChunkSize - 1);
  uintptr_t bottom = top_ - size;
  if (!os::reserve_at(reinterpret_cast<void *>(bottom - add), add)) {
    if (add == need || !os::reserve_at(reinterpret_cast<void *>(bottom - need), need)) return false;
    add = need;
  }
  uint32_t first_new = slot_of(bottom - add);
  bitmap::clear_range(slot_used_, first_new + 1, static_cast<uint32_t>(add / kChunkSize) - 1);
  size_.store(size + add, std::memory_order_release);
  return true;
}

long Reservation::take_slots(uint32_t count, size_t alignment) {
  uint32_t first = 0;
  if (size_.load(std::memory_order_relaxed) == 0) return -1;
  // A run whose address is a multiple of alignment (a power of two): every
  // slot is one of kChunkSize; a larger alignment steps through the
  // candidates (rare: blocks aligned to more than a slot).
  size_t step = alignment > kChunkSize ? alignment / kChunkSize : 1;
  if (step > kMaxSlots) return -1;
  auto find = [&] {
    if (step == 1) return bitmap::find_clear_run(slot_used_, kMaxSlots, count, 1, &first);
    uintptr_t aligned = (window_ + alignment - 1) & ~(alignment - 1);
    for (size_t slot = (aligned - window_) / kChunkSize; slot + count <= kMaxSlots; slot += step)
      if (bitmap::find_set_in(slot_used_, static_cast<uint32_t>(slot), count) == UINT32_MAX) {
        first = static_cast<uint32_t>(slot);
        return true;
      }
    return false;
  };
  if (!find() && (count + step - 1 > kMaxSlots || !grow(static_cast<uint32_t>(count + step - 1)) || !find())) return -1;
  bitmap::set_range(slot_used_, first, count);
  return first;
}

void Reservation::give_slots(uint32_t first, uint32_t count) { bitmap::clear_range(slot_used_, first, count); }

void Reservation::publish(const Chunk &chunk, Chunk *value) {
  uint32_t first = slot_of(chunk.base);
  for (uint32_t s = 0; s < chunk.slots; ++s) slot_table_[first + s].store(value, std::memory_order_release);
}

} // namespace secmem
