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
#pragma once

#include <cstddef>

namespace secmem::cpu {

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
// were not measured). No system call, no allocation.
WideZero wide_zero();

// Zeroes n bytes at p, n >= width, with stores of width bytes, 32 or 64
// (the last one may overlap the one before). Only with what wide_zero()
// answered.
void zero_wide(void *p, size_t n, unsigned width);

} // namespace secmem::cpu
