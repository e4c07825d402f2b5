#include "platform/cpu.h"

#include <cstdint>
#include <cstring>

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#endif

namespace secmem::cpu {

#if defined(__x86_64__)

namespace {

// The register state the kernel saves (XCR0).
uint64_t saved_state() {
  uint32_t low = 0;
  uint32_t high = 0;
  asm volatile("xgetbv" : "=a"(low), "=d"(high) : "c"(0));
  return (uint64_t{high} << 32) | low;
}

} // namespace

bool wide_stores_fast() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid(0, &a, &b, &c, &d) == 0) return false;
  char vendor[12];
  memcpy(vendor, &b, 4);
  memcpy(vendor + 4, &d, 4);
  memcpy(vendor + 8, &c, 4);
  if (memcmp(vendor, "GenuineIntel", sizeof vendor) != 0) return false;
  if (__get_cpuid(1, &a, &b, &c, &d) == 0 || (c & bit_OSXSAVE) == 0) return false;
  constexpr uint64_t kSseAvxAvx512 = 0x2 | 0x4 | 0x20 | 0x40 | 0x80; // XMM, YMM, opmask, ZMM 0-15 upper, ZMM 16-31
  if ((saved_state() & kSseAvxAvx512) != kSseAvxAvx512) return false;
  // Sub-leaf 0 of leaf 7 says how many sub-leaves follow (EAX); AVX-VNNI is in sub-leaf 1.
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d) == 0 || (b & bit_AVX512F) == 0 || a < 1) return false;
  if (__get_cpuid_count(7, 1, &a, &b, &c, &d) == 0) return false;
  constexpr unsigned kAvxVnni = 1u << 4; // CPUID.(EAX=7,ECX=1):EAX
  return (a & kAvxVnni) != 0;
}

__attribute__((target("avx512f"))) void zero_wide(void *p, size_t n) {
  char *q = static_cast<char *>(p);
  char *last = q + n - 64;
  const __m512i none = _mm512_setzero_si512();
  for (; q < last; q += 64) {
    _mm512_storeu_si512(q, none);
    asm volatile("" : : : "memory"); // the stores as written, not turned into a call to memset
  }
  _mm512_storeu_si512(last, none);
}

#else

bool wide_stores_fast() { return false; }
void zero_wide(void *p, size_t n) { memset(p, 0, n); }

#endif

} // namespace secmem::cpu
