// Which sanitizer instruments this build, for the few places that must
// take a path it can see: SECMEM_TSAN under ThreadSanitizer (GCC defines
// __SANITIZE_THREAD__, Clang answers __has_feature).
#pragma once

#if defined(__SANITIZE_THREAD__)
#define SECMEM_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define SECMEM_TSAN 1
#endif
#endif
