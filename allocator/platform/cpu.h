// What the processor offers the heap: 64-byte stores to zero freed blocks,
// where they cost the core no clock speed.
//
// glibc's memset zeroes 2 KiB and more with `rep stosb`, whose start-up
// costs more than the stores themselves at the sizes of small blocks: a
// loop of 64-byte stores frees a hot 4 KiB block in 39 ns instead of 47,
// 8 KiB in 58 instead of 68 (LIFO alloc+free, pinned, medians of 9). For
// large blocks of 12 and 16 KiB `rep stosb` was faster, and below 2 KiB
// memset's own 64-byte stores are as fast, so the heap uses the loop for
// small blocks of 2 to 8 KiB only (zero_small in heap/cache_ops.h).
#pragma once

#include <cstddef>

namespace secmem::cpu {

// True on an Intel processor where AVX-512 is usable (the processor has it
// and the kernel saves its registers) and that also has AVX-VNNI: on those
// (Sapphire Rapids and later) 512-bit stores do not lower the core's
// frequency. The rule glibc applies to Intel processors before it uses
// them itself (Prefer_No_AVX512 in its sysdeps/x86/cpu-features.c); other
// vendors' processors were not measured and keep memset. No system call,
// no allocation.
bool wide_stores_fast();

// Zeroes n bytes at p, n >= 64, with 64-byte stores (the last one may
// overlap the one before). Only where wide_stores_fast() said true.
void zero_wide(void *p, size_t n);

} // namespace secmem::cpu
