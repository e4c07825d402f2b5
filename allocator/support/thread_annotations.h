// Clang's thread-safety attributes (-Wthread-safety): which lock guards
// what, checked by the compiler. No-ops for other compilers.
#pragma once

#if defined(__clang__)
#define SECMEM_TSA(x) __attribute__((x))
#else
#define SECMEM_TSA(x)
#endif

#define CAPABILITY(name) SECMEM_TSA(capability(name))
#define SCOPED_CAPABILITY SECMEM_TSA(scoped_lockable)
#define GUARDED_BY(lock) SECMEM_TSA(guarded_by(lock))
#define PT_GUARDED_BY(lock) SECMEM_TSA(pt_guarded_by(lock))
#define REQUIRES(...) SECMEM_TSA(requires_capability(__VA_ARGS__))
#define EXCLUDES(...) SECMEM_TSA(locks_excluded(__VA_ARGS__))
#define ACQUIRE(...) SECMEM_TSA(acquire_capability(__VA_ARGS__))
#define RELEASE(...) SECMEM_TSA(release_capability(__VA_ARGS__))
#define NO_THREAD_SAFETY_ANALYSIS SECMEM_TSA(no_thread_safety_analysis)
