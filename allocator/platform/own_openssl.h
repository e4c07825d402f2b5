// An OpenSSL the preload shim cannot reach: one linked into the executable or
// into a library other than libcrypto.so (node from upstream builds, pip
// wheels of cryptography). Its secure heap calls stay inside that object, so
// its keys stay in ordinary memory. Found by a string its secure heap's
// source file leaves in it (OPENSSL_FILE in crypto/mem_sec.c), which a program
// that only calls a shared libcrypto does not hold; shared by the shim's
// report (over mapped segments) and the secmem command (over files).
#pragma once

#include <cstddef>
#include <cstring>

namespace secmem::own_openssl {

// The marker, kept reversed: spelled out, it would be found in the shim and
// the secmem command themselves.
inline constexpr char kMarkerReversed[] = "c.ces_mem/otpyrc";
inline constexpr size_t kMarkerLength = sizeof kMarkerReversed - 1;

// Whether path names OpenSSL's shared library, which the shim does reach.
inline bool is_shared_libcrypto(const char *path) {
  const char *base = strrchr(path, '/');
  base = base != nullptr ? base + 1 : path;
  return strncmp(base, "libcrypto.so", 12) == 0;
}

inline bool holds_marker(const void *data, size_t n) {
  char marker[kMarkerLength];
  for (size_t i = 0; i < kMarkerLength; ++i) marker[i] = kMarkerReversed[kMarkerLength - 1 - i];
  return memmem(data, n, marker, kMarkerLength) != nullptr;
}

// "OpenSSL 3.0.13" (the first version text in data) into out, or "" (an
// object that never calls OpenSSL_version may not hold its version text).
inline void find_version(const void *data, size_t n, char *out, size_t cap) {
  static const char kName[] = "OpenSSL ";
  const char *at = static_cast<const char *>(data), *end = at + n;
  if (cap > 0) out[0] = '\0';
  while (at < end) {
    const void *hit = memmem(at, static_cast<size_t>(end - at), kName, sizeof kName - 1);
    if (hit == nullptr) return;
    const char *v = static_cast<const char *>(hit) + sizeof kName - 1;
    size_t len = 0;
    while (v + len < end && len + 1 < cap &&
           ((v[len] >= '0' && v[len] <= '9') || v[len] == '.' || (len > 0 && v[len] >= 'a' && v[len] <= 'z')))
      ++len;
    if (len >= 5 && v[0] >= '1' && v[0] <= '9' && v[1] == '.') { // "3.0.1", "1.1.1w"
      size_t total = sizeof kName - 1 + len < cap ? sizeof kName - 1 + len : cap - 1;
      memcpy(out, hit, total);
      out[total] = '\0';
      return;
    }
    at = v;
  }
}

} // namespace secmem::own_openssl
