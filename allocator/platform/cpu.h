// What the processor offers the heap: a loop of wide stores that zeroes a
// freed block faster than memset, where there is one.
//
// glibc's memset zeroes 2 KiB and more with `rep stosb`, whose start-up
// costs more than the stores themselves at the sizes of small blocks. On an
// Intel processor a loop of 64-byte stores frees a hot 4 KiB block in 39 ns
// instead of 47, 8 KiB in 58 instead of 68 (LIFO alloc+free, pinned,
// medians of 9); for large blocks of 12 and 16 KiB `rep stosb` was faster
// there, and below 2 KiB memset's own 64-byte stores are as fast. On an AMD
// processor (EPYC, Zen 4: one 32-byte store a cycle, which 64-byte stores
// do not beat) a loop of 32-byte stores, four a turn, zeroes a hot block as
// fast as memset at 2 KiB and up to 9% faster from 4 KiB to 32 KiB, as fast
// at 64 KiB (36.0 against 39.5 ns at 4 KiB, 72.4 against 73.9 at 8 KiB,
// 140.7 against 147.3 at 16 KiB, 281.9 against 287.9 at 32 KiB; pinned,
// best of 5).
//
// What the processor has is read from glibc's record of CPUID, which it
// fills once before any library's constructor runs
// (<sys/platform/x86.h>), and from XCR0 (`xgetbv`): in a virtual machine
// each CPUID instruction exits to the hypervisor (4.5 us here, under
// Firecracker). libgcc's __builtin_cpu_init, which the shim used, brought
// its own constructor into every process the shim was preloaded into,
// with about a dozen of them (a program's start took 55-70 us more); the
// heap's choice below asked ten more at its start. Now one, the vendor's.
#pragma once

#include <cstddef>
#include <cstdint>

#if defined(__x86_64__)
#include <features.h>
#if defined(__GLIBC__) && __GLIBC_PREREQ(2, 33)
#define SECMEM_GLIBC_CPU_FEATURES 1
// glibc's record of what CPUID answered at its start-up (exported since
// 2.33; declared here because <sys/platform/x86.h>'s inline helpers are C,
// returning _Bool, which clang++ does not take): for the index of a group of
// leaves, the four registers as the processor answered, then as glibc uses
// them.
struct secmem_cpuid_leaf {
  unsigned registers[4]; // EAX, EBX, ECX, EDX
  unsigned active[4];
};
extern "C" const secmem_cpuid_leaf *__x86_get_cpuid_feature_leaf(unsigned index) __attribute__((pure));
#else
#include <cpuid.h>
#endif
#endif

namespace secmem::cpu {

#if defined(__x86_64__)

// The processor's feature bits that the heap and the shim ask for (CPUID
// leaf 1 ECX, leaf 7 sub-leaf 0 EBX and sub-leaf 1 EAX), as it reports
// them: not glibc's "active" set, which its tunables can narrow while the
// registers still exist (the shim clears what exists).
struct Features {
  bool osxsave = false;
  bool avx = false;
  bool avx2 = false;
  bool avx512f = false;
  bool avx_vnni = false;
};

inline Features features() {
#if defined(SECMEM_GLIBC_CPU_FEATURES)
  // glibc's indices (its CPUID_INDEX_*, part of its ABI): leaf 1, leaf 7, leaf 7 sub-leaf 1.
  const secmem_cpuid_leaf *leaf1 = __x86_get_cpuid_feature_leaf(0);
  const secmem_cpuid_leaf *leaf7 = __x86_get_cpuid_feature_leaf(1);
  const secmem_cpuid_leaf *leaf7_1 = __x86_get_cpuid_feature_leaf(6);
  auto bit = [](unsigned reg, int n) { return (reg >> n & 1u) != 0; };
  return {bit(leaf1->registers[2], 27), bit(leaf1->registers[2], 28), bit(leaf7->registers[1], 5),
          bit(leaf7->registers[1], 16), bit(leaf7_1->registers[0], 4)};
#else
  Features f;
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid(1, &a, &b, &c, &d) == 0) return f;
  f.osxsave = (c & bit_OSXSAVE) != 0;
  f.avx = (c & bit_AVX) != 0;
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d) == 0) return f;
  f.avx2 = (b & bit_AVX2) != 0;
  f.avx512f = (b & bit_AVX512F) != 0;
  // Sub-leaf 0 says how many sub-leaves follow (EAX); AVX-VNNI is bit 4 of sub-leaf 1's EAX.
  if (a >= 1 && __get_cpuid_count(7, 1, &a, &b, &c, &d) != 0) f.avx_vnni = (a & (1u << 4)) != 0;
  return f;
#endif
}

// The register state the kernel saves (XCR0); only where OSXSAVE is set.
inline uint64_t saved_state() {
  uint32_t low = 0;
  uint32_t high = 0;
  asm volatile("xgetbv" : "=a"(low), "=d"(high) : "c"(0));
  return (uint64_t{high} << 32) | low;
}

inline constexpr uint64_t kSseAvx = 0x2 | 0x4;                          // XMM, YMM
inline constexpr uint64_t kSseAvxAvx512 = kSseAvx | 0x20 | 0x40 | 0x80; // and opmask, ZMM 0-15 upper, ZMM 16-31

// Which vector registers a thread has: 2 with AVX-512 (zmm0-31), 1 with
// AVX (ymm0-15), 0 with SSE only (xmm0-15). No CPUID, no system call.
inline int vector_registers() {
  Features f = features();
  if (!f.osxsave) return 0;
  uint64_t state = saved_state();
  if (f.avx512f && (state & kSseAvxAvx512) == kSseAvxAvx512) return 2;
  if (f.avx && (state & kSseAvx) == kSseAvx) return 1;
  return 0;
}

#endif

// Where the heap zeroes with zero_wide instead of memset: blocks of 2 KiB
// to max_bytes, with stores of width bytes. Width 0: memset everywhere.
struct WideZero {
  unsigned width = 0;
  size_t max_bytes = 0;
};

// 64-byte stores for blocks up to 8 KiB on an Intel processor where AVX-512
// is usable (the processor has it and the kernel saves its registers) and
// that also has AVX-VNNI: on those (Sapphire Rapids and later) 512-bit
// stores do not lower the core's frequency (the rule glibc applies to Intel
// processors before it uses them itself: Prefer_No_AVX512 in its
// sysdeps/x86/cpu-features.c). 32-byte stores for blocks up to 64 KiB on an
// AMD processor where AVX2 is usable. Memset elsewhere (other processors
// were not measured). No system call, no allocation, one CPUID (the
// vendor's).
WideZero wide_zero();

// Zeroes n bytes at p, n >= width, with stores of width bytes, 32 or 64
// (the last one may overlap the one before). Only with what wide_zero()
// answered.
void zero_wide(void *p, size_t n, unsigned width);

} // namespace secmem::cpu
