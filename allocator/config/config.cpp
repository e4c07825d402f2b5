#include "config/config.h"

#include <cstring>

#include "config/environ.h"
#include "platform/diag.h"

namespace secmem {

const OptionInfo kOptions[] = {
#define SECMEM_OPTION(NAME, field, Type, values, doc) {#NAME, values, doc},
#define SECMEM_TEXT_OPTION(NAME, doc) {#NAME, nullptr, doc},
#include "config/options.inc"
};
const int kOptionCount = sizeof kOptions / sizeof kOptions[0];

namespace {

// Index of value in "a|b|c", or -1.
int choice_index(const char *values, const char *value) {
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

template <typename T> void parse_one(const char *const *env, const char *name, const char *values, T *field) {
  const char *value = env_value(env, name);
  if (value == nullptr) return;
  int index = choice_index(values, value);
  if (index >= 0) {
    *field = static_cast<T>(index);
    return;
  }
  diag::Line().add(name).add("=").value(value, 64).add(" is not one of ").add(values).add("; using the default").emit();
}

// The name of choice index in "a|b|c" (into a caller buffer).
const char *choice_name(const char *values, int index, char *out, size_t out_len) {
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

} // namespace

Config parse_config(const char *const *env, bool secure_exec) {
  Config config;
  if (secure_exec) {
    for (int k = 0; k < kOptionCount; ++k)
      if (kOptions[k].values != nullptr && env_value(env, kOptions[k].name) != nullptr)
        config.environment_ignored = true;
    return config;
  }
#define SECMEM_OPTION(NAME, field, Type, values, doc) parse_one(env, #NAME, values, &config.field);
#include "config/options.inc"
  return config;
}

void print_config(const Config &config) {
  diag::Line line;
  line.add("config");
  char name[32];
#define SECMEM_OPTION(NAME, field, Type, values, doc) \
  line.add(" " #NAME "=").add(choice_name(values, static_cast<int>(config.field), name, sizeof name));
#include "config/options.inc"
  if (config.environment_ignored) line.add(" (environment ignored: setuid program)");
  line.emit();
}

} // namespace secmem
