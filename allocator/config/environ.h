// Reading the process environment without allocating (getenv is not safe
// that early in a preloaded library), and whether to trust it at all.
// Header-only: the preload shim reads its own options the same way.
#pragma once

#include <cstring>
#include <sys/auxv.h>
#include <unistd.h> // environ (g++ defines _GNU_SOURCE)

namespace secmem {

// The value of NAME in env (a NULL-terminated environ-style array), or nullptr.
inline const char *env_value(const char *const *env, const char *name) {
  size_t len = strlen(name);
  for (; env != nullptr && *env != nullptr; ++env)
    if (strncmp(*env, name, len) == 0 && (*env)[len] == '=') return *env + len + 1;
  return nullptr;
}

inline const char *const *process_environment() { return environ; }

// AT_SECURE: a setuid/setgid/capability-elevated exec, whose environment is not ours to trust.
inline bool is_secure_exec() { return getauxval(AT_SECURE) != 0; }

} // namespace secmem
