// Configuration: parsed once from the environment without allocating,
// ignored in setuid programs, then sealed read-only with the heap's roots.
#pragma once

#include <cstdint>

namespace secmem {

enum class Backend : uint8_t { kAuto, kMemfdSecret, kMlock };
enum class OnExhaustion : uint8_t { kFallback, kFail };
enum class Release : uint8_t { kNever, kEmpty };
enum class NoDump : uint8_t { kOff, kFallback, kAlways };

struct Config {
#define SECMEM_OPTION(NAME, field, values, doc) uint8_t field = 0;
#include "options.inc"
#undef SECMEM_OPTION
  bool environment_ignored = false; // AT_SECURE: setuid program

  Backend backend_kind() const { return static_cast<Backend>(backend); }
  OnExhaustion exhaustion_kind() const { return static_cast<OnExhaustion>(on_exhaustion); }
  Release release_kind() const { return static_cast<Release>(release); }
  NoDump nodump_kind() const { return static_cast<NoDump>(nodump); }
};

// One option as the README and the parser see it.
struct OptionInfo {
  const char *name;
  const char *values; // "default|other|..."
  const char *doc;
};
extern const OptionInfo kOptions[];
extern const int kOptionCount;

// Parses env (a NULL-terminated environ-style array). Unknown values keep the
// default and print one "secmem:" line naming the variable and the choices.
Config parse_config(const char *const *env, bool secure_exec);

// Prints the effective configuration (SECMEM_VERBOSE=1).
void print_config(const Config &config);

} // namespace secmem
