// Configuration: parsed once from the environment without allocating,
// ignored in setuid programs, then sealed read-only with the heap's roots.
#pragma once

#include <cstdint>

namespace secmem {

// Each enum's enumerators follow the order of its option's values in options.inc.
enum class Backend : uint8_t { kAuto, kMemfdSecret, kMlock };
enum class OnExhaustion : uint8_t { kFallback, kFail };
enum class Release : uint8_t { kNever, kEmpty };
enum class NoDump : uint8_t { kFallback, kOff, kAlways }; // options.inc's order: the first is the default

struct Config {
#define SECMEM_OPTION(NAME, field, Type, values, doc) Type field{};
#include "config/options.inc"
  bool environment_ignored = false; // AT_SECURE: setuid program
};

// One option as the README and the parser see it.
struct OptionInfo {
  const char *name;
  const char *values; // "default|other|..."; nullptr for a text option (unset by default)
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
