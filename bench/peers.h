// The allocators bench/ compares, each behind one interface: a type with static alloc(n) and
// release(p, n).
//   GlibcBzero        glibc malloc + explicit_bzero + free (the floor)
//   OpenSSLSecureHeap CRYPTO_secure_malloc / CRYPTO_secure_clear_free (32 MiB arena)
//   Sodium            sodium_malloc / sodium_free (guard pages, mlock, canary)
//   NaiveMemfd        one memfd_secret file and mapping per allocation
//   Secmem            secmem_malloc / secmem_free
//   JemallocMemfd     a jemalloc arena on memfd_secret (jemalloc_peer.cpp, in jemalloc_bench only:
//                     linking jemalloc replaces the process's malloc)
// alloc_bench registers the first five (peers.cpp), jemalloc_bench the last.
#pragma once

#include <benchmark/benchmark.h>

#include <cstdlib>
#include <cstring>
#include <openssl/crypto.h>
#include <sodium.h>
#include <sys/mman.h>
#include <unistd.h>
#include <vector>

#include "platform/linux_facts.h"
#include "secmem/secmem.h"

namespace bench {

// A registered peer: as the one-process measurements (measure.cpp) call it, and its throughput
// benchmarks (throughput.h), registered size by size in main.
struct Peer {
  const char *name;
  void *(*alloc)(size_t);
  void (*release)(void *, size_t);
  void (*lifo)(benchmark::State &);
  void (*batch)(benchmark::State &);
};

// This executable's peers, in the order they were registered (register_peer, throughput.h).
inline std::vector<Peer> &peers() {
  static std::vector<Peer> list;
  return list;
}

// size bytes of a new memfd_secret file, mapped shared; nullptr when refused.
inline void *map_secret(size_t size) {
  int fd = secmem::linux_facts::memfd_secret_fd();
  if (fd < 0) return nullptr;
  void *p = MAP_FAILED;
  if (ftruncate(fd, static_cast<off_t>(size)) == 0) p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  return p == MAP_FAILED ? nullptr : p;
}

struct GlibcBzero {
  static void *alloc(size_t n) { return malloc(n); }
  static void release(void *p, size_t n) {
    explicit_bzero(p, n);
    free(p);
  }
};

struct OpenSSLSecureHeap {
  static void *alloc(size_t n) {
    static const bool ready = CRYPTO_secure_malloc_init(size_t{32} << 20, 16) != 0;
    return ready ? CRYPTO_secure_malloc(n, __FILE__, __LINE__) : nullptr;
  }
  static void release(void *p, size_t n) { CRYPTO_secure_clear_free(p, n, __FILE__, __LINE__); }
};

struct Sodium {
  static void *alloc(size_t n) {
    static const bool ready = sodium_init() >= 0;
    return ready ? sodium_malloc(n) : nullptr;
  }
  static void release(void *p, size_t) { sodium_free(p); }
};

struct NaiveMemfd {
  static size_t pages(size_t n) { return (n + 4095) & ~size_t{4095}; }
  static void *alloc(size_t n) { return map_secret(pages(n)); }
  static void release(void *p, size_t n) { munmap(p, pages(n)); } // secretmem pages are zeroed when freed
};

struct Secmem {
  static void *alloc(size_t n) { return secmem_malloc(n); }
  static void release(void *p, size_t) { secmem_free(p); }
};

} // namespace bench
