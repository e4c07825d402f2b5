// What each option does, in one place: the layers below ask these questions
// instead of reading Config fields themselves.
#pragma once

#include <cstddef>
#include <cstdint>

#include "config/config.h"

namespace secmem {

// The protection tiers a chunk can land in, strongest first.
enum class Tier : uint8_t { kSecret = 0, kLocked = 1, kUnlocked = 2 };
inline constexpr int kNumTiers = 3;

namespace policy {

// The tier every chunk tries first.
inline Tier top_tier(const Config &config) { return config.backend == Backend::kMlock ? Tier::kLocked : Tier::kSecret; }

// Whether a refusal of the top tier may send a chunk to a weaker one.
inline bool may_degrade(const Config &config) {
  return config.backend != Backend::kMemfdSecret && config.on_exhaustion == OnExhaustion::kFallback;
}

// Whether chunks (and one empty span per class) stay mapped for reuse.
inline bool keeps_memory(const Config &config) { return config.release == Release::kNever; }

// Per-thread cache slots for blocks of class_bytes (0: every operation takes the lock).
inline uint32_t cache_capacity(const Config &config, uint32_t class_bytes, uint32_t max_slots) {
  if (!keeps_memory(config)) return 0;
  uint32_t slots = 16384 / class_bytes; // about 16 KiB per class
  return slots > max_slots ? max_slots : slots < 2 ? 2 : slots;
}

// Whether the process turns non-dumpable from the start, or once a chunk lands in tier.
inline bool undumpable_from_start(const Config &config) { return config.nodump == NoDump::kAlways; }
inline bool undumpable_once_in(const Config &config, Tier tier) {
  return config.nodump == NoDump::kFallback && tier != Tier::kSecret;
}

} // namespace policy
} // namespace secmem
