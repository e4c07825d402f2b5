#include "config.h"

#include <cstring>

#include "diag.h"

namespace secmem {

const OptionInfo kOptions[] = {
#define SECMEM_OPTION(NAME, field, values, doc) {#NAME, values, doc},
#include "options.inc"
#undef SECMEM_OPTION
};
const int kOptionCount = sizeof kOptions / sizeof kOptions[0];

// Value of NAME in env, or nullptr.
static const char *lookup(const char *const *env, const char *name) {
  size_t len = strlen(name);
  for (; env != nullptr && *env != nullptr; ++env)
    if (strncmp(*env, name, len) == 0 && (*env)[len] == '=') return *env + len + 1;
  return nullptr;
}

// Index of value in "a|b|c", or -1.
static int choice_index(const char *values, const char *value) {
  size_t len = strlen(value);
  int index = 0;
  for (const char *p = values; *p != '\0'; ++index) {
    const char *end = strchr(p, '|');
    size_t n = end != nullptr ? static_cast<size_t>(end - p) : strlen(p);
    if (n == len && strncmp(p, value, n) == 0) return index;
    p += n + (end != nullptr ? 1 : 0);
  }
  return -1;
}

static void parse_one(const char *const *env, const OptionInfo &option, uint8_t *field) {
  const char *value = lookup(env, option.name);
  if (value == nullptr) return;
  int index = choice_index(option.values, value);
  if (index >= 0) {
    *field = static_cast<uint8_t>(index);
    return;
  }
  diag::Line().add(option.name).add("=").add(value).add(" is not one of ").add(option.values)
      .add("; using the default").emit();
}

Config parse_config(const char *const *env, bool secure_exec) {
  Config config;
  if (secure_exec) {
    for (int k = 0; k < kOptionCount; ++k)
      if (lookup(env, kOptions[k].name) != nullptr) config.environment_ignored = true;
    return config;
  }
  int i = 0;
#define SECMEM_OPTION(NAME, field, values, doc) parse_one(env, kOptions[i++], &config.field);
#include "options.inc"
#undef SECMEM_OPTION
  return config;
}

// The name of choice index in "a|b|c" (into a caller buffer).
static const char *choice_name(const char *values, int index, char *out, size_t out_len) {
  const char *p = values;
  for (int i = 0; i < index && p != nullptr; ++i) {
    p = strchr(p, '|');
    if (p != nullptr) ++p;
  }
  size_t n = 0;
  while (p != nullptr && p[n] != '\0' && p[n] != '|' && n + 1 < out_len) {
    out[n] = p[n];
    ++n;
  }
  out[n] = '\0';
  return out;
}

void print_config(const Config &config) {
  diag::Line line;
  line.add("config");
  int i = 0;
  char name[32];
#define SECMEM_OPTION(NAME, field, choices, doc)                                                   \
  line.add(" " #NAME "=").add(choice_name(kOptions[i].values, config.field, name, sizeof name));    \
  ++i;
#include "options.inc"
#undef SECMEM_OPTION
  if (config.environment_ignored) line.add(" (environment ignored: setuid program)");
  line.emit();
}

} // namespace secmem
