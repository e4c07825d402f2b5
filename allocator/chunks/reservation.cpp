#include "chunks/reservation.h"

#include <algorithm>
#include <cerrno>

#include "platform/diag.h"

namespace secmem {

namespace {
constexpr size_t kLargestReservation = size_t{64} << 30; // 64 GiB of address space
constexpr size_t kSmallestReservation = 2 * kChunkSize;  // slot 0 (the guard) and one chunk
// Under RLIMIT_AS (ulimit -v) the reservation takes at most this share of
// what is left, so that the program's own large mappings still fit.
constexpr size_t kAddressSpaceShare = 8;

// The largest power of two at or below n (n > 0).
size_t floor_power_of_two(size_t n) { return size_t{1} << (63 - __builtin_clzll(n)); }
} // namespace

bool Reservation::init() {
  if (base_ != 0) return true; // a fork child finishing its parent's start-up
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
  uintptr_t aligned = (reinterpret_cast<uintptr_t>(raw) + kChunkSize - 1) & ~(kChunkSize - 1);
  nslots_ = static_cast<uint32_t>(len / kChunkSize);
  slot_table_ = static_cast<std::atomic<Chunk *> *>(os::map_metadata(nslots_ * sizeof(*slot_table_)));
  slot_used_ = static_cast<uint64_t *>(os::map_metadata(bitmap::words_for(nslots_) * sizeof(uint64_t)));
  if (slot_table_ == nullptr || slot_used_ == nullptr) {
    diag::Line().add("cannot map the secret heap's slot table; every allocation will return NULL").emit();
    return false;
  }
  bitmap::set(slot_used_, 0); // slot 0 stays PROT_NONE: the guard before the first chunk
  base_ = aligned;
  size_ = len;
  return true;
}

long Reservation::take_slots(uint32_t count) {
  uint32_t first = 0;
  if (size_ == 0 || !bitmap::find_clear_run(slot_used_, nslots_, count, 1, &first)) return -1;
  bitmap::set_range(slot_used_, first, count);
  return first;
}

void Reservation::give_slots(uint32_t first, uint32_t count) { bitmap::clear_range(slot_used_, first, count); }

void Reservation::publish(const Chunk &chunk, Chunk *value) {
  uint32_t first = slot_of(chunk.base);
  for (uint32_t s = 0; s < chunk.slots; ++s) slot_table_[first + s].store(value, std::memory_order_release);
}

} // namespace secmem
