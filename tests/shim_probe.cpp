// A program for the preload tests, run with and without libsecmem_preload.so.
//   shim_probe owned KEY.pem...   loads each key through OpenSSL's PEM API and
//                                  prints, per key, whether its private
//                                  components are in secret memory
//   shim_probe hold KEY.pem...    loads the keys, prints "ready", waits for stdin
//   shim_probe hole                3 pages whose middle one cannot be read
//                                  (userfaultfd), a pattern before and after
//   shim_probe closed              a pattern on a PROT_NONE page, one across
//                                  two mappings, an empty 1 GiB reservation,
//                                  one in shared memory mapped PROT_NONE and
//                                  never touched, one across three mappings
//   shim_probe leaderless         a secret and a pattern (printed in hex); the
//                                  main thread exits, another holds until stdin ends
//   shim_probe fexecve PROG ARGS   runs /usr/bin/PROG with fexecve (by descriptor)
//   shim_probe execveat PROG ARGS  runs PROG by name in /usr/bin's descriptor (execveat)
//   shim_probe dropchild           forks a worker that retitles itself, drops
//                                  to nobody, allocates a secret and exits
//   shim_probe use KEY.pem [legacy|der]  loads the key, signs and verifies with it
//                                  (legacy: an RSA key also through
//                                  EVP_PKEY_get1_RSA and RSA_sign, as libcurl
//                                  and python3-cryptography 38 do; der: its
//                                  DER encoding kept in three buffers), then holds
//   shim_probe der-routing KEY.pem  which allocations after i2d_PrivateKey's
//                                  length are secret
//   shim_probe tsd-fork           a thread's thread-specific data after a fork,
//                                  once a failed i2d_PrivateKey made glibc
//                                  allocate its block for keys 32-63
//   shim_probe forkgen KEY.pem N  loads a key, forks N children that each make
//                                  and verify EC signatures; checks the key after
//   shim_probe threads            4 threads of malloc/free churn with checks
//   shim_probe secure-threads     20 threads of CRYPTO_secure_malloc/free (more
//                                  than the report's counter shards); prints
//                                  how many and how many bytes they asked for
//   shim_probe preinit             with SHIM_PROBE_PREINIT=1: 3 secret
//                                  allocations from .preinit_array (libc's
//                                  environ still NULL), then 1 in main
//   shim_probe report-late         SECMEM_REPORT unset around the first secret
//                                  allocation, set again before the second
//   shim_probe tag                malloc inside secmem_tag_begin/end is secret
//   shim_probe sodium             sodium_malloc'd keys are secret and usable
//   shim_probe callers LIB.so     allocations made inside LIB (dlopen'ed) vs. here
//   shim_probe exit-cleanse [vfork]  whether OPENSSL_free cleanses, before
//                                  exit, in an exit handler and in a child
//                                  forked there (exits 7); after a vfork
//                                  child's exit, and whether a fork child
//                                  then shares a secret block
// Exit status 0 when every check passed.
#define OPENSSL_SUPPRESS_DEPRECATED // RSA_get0_d/EC_KEY_get0_private_key: the only way to reach the BIGNUMs
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <fcntl.h>
#include <link.h>
#include <linux/userfaultfd.h>
#include <malloc.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <string>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include "secmem/secmem.h"
#include "sign_check.h"
#include <sodium.h>

namespace {

EVP_PKEY *load(const char *path) {
  FILE *file = fopen(path, "r");
  if (file == nullptr) return nullptr;
  EVP_PKEY *key = PEM_read_PrivateKey(file, nullptr, nullptr, nullptr);
  fclose(file);
  return key;
}

// A BIGNUM's words: its first member (struct bignum_st { BN_ULONG *d; ... },
// unchanged since OpenSSL 1.1). Read only to ask secmem_owns about it.
const void *bn_words(const BIGNUM *bn) {
  const void *words = nullptr;
  memcpy(&words, bn, sizeof words);
  return words;
}

// "secret" when the key's private components live in the secret heap.
const char *private_part_placement(EVP_PKEY *key) {
  const BIGNUM *priv = nullptr;
  switch (EVP_PKEY_get_base_id(key)) {
  case EVP_PKEY_RSA: priv = RSA_get0_d(EVP_PKEY_get0_RSA(key)); break;
  case EVP_PKEY_EC: priv = EC_KEY_get0_private_key(EVP_PKEY_get0_EC_KEY(key)); break;
  default: return "unknown";
  }
  if (priv == nullptr) return "none";
  return secmem_owns(bn_words(priv)) && BN_get_flags(priv, BN_FLG_SECURE) ? "secret" : "ordinary";
}

int owned(int argc, char **argv) {
  int status = 0;
  for (int i = 2; i < argc; ++i) {
    EVP_PKEY *key = load(argv[i]);
    if (key == nullptr) {
      printf("%s: cannot load\n", argv[i]);
      return 2;
    }
    const char *where = private_part_placement(key);
    printf("%s: %s\n", argv[i], where);
    if (strcmp(where, "secret") != 0) status = 1;
    EVP_PKEY_free(key);
  }
  return status;
}

int hold(int argc, char **argv) {
  std::vector<EVP_PKEY *> keys;
  for (int i = 2; i < argc; ++i) {
    keys.push_back(load(argv[i]));
    if (keys.back() == nullptr) return 2;
  }
  printf("ready\n");
  fflush(stdout);
  char c;
  (void)!read(STDIN_FILENO, &c, 1);
  for (EVP_PKEY *key : keys) EVP_PKEY_free(key);
  return 0;
}

using secmem::tool::sign_and_verify;

// A server's worker: forked, it rewrites its title over argv (as PostgreSQL
// does), drops to nobody, allocates a secret and exits normally (so its
// report line is written, through the report file the parent opened).
int dropchild(char **argv) {
  pid_t pid = fork();
  if (pid == 0) {
    memset(argv[0], 0, strlen(argv[0]));
    memcpy(argv[0], "retitled", 8);
    if (setgid(65534) != 0 || setuid(65534) != 0) _exit(3);
    void *secret = CRYPTO_secure_malloc(64, __FILE__, __LINE__);
    if (secret == nullptr || !secmem_owns(secret)) _exit(4);
    CRYPTO_secure_free(secret, __FILE__, __LINE__);
    exit(0);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 5;
}

// Memory a scan cannot read in the middle of a mapping: 3 pages, the middle
// one registered with userfaultfd (missing mode) and never served; a 32-byte
// pattern in the first and the last page. Prints the pattern in hex, then
// holds until stdin ends.
// A secret in secret memory and a 32-byte pattern in ordinary memory (both
// secmem_malloc'd and malloc'd); then the main thread exits while another
// thread holds until stdin ends. Prints the pattern in hex once the main
// thread is about to exit.
int leaderless() {
  unsigned char pattern[32];
  for (int i = 0; i < 32; ++i) pattern[i] = static_cast<unsigned char>(0x5a ^ (i * 41));
  auto *secret = static_cast<unsigned char *>(secmem_malloc(sizeof pattern));
  auto *plain = static_cast<unsigned char *>(malloc(sizeof pattern));
  if (secret == nullptr || plain == nullptr) return 2;
  memcpy(secret, pattern, sizeof pattern);
  memcpy(plain, pattern, sizeof pattern);
  pthread_t holder;
  if (pthread_create(
          &holder, nullptr,
          [](void *) -> void * {
            char c;
            while (read(STDIN_FILENO, &c, 1) > 0) {}
            exit(0);
          },
          nullptr) != 0)
    return 3;
  for (unsigned char byte : pattern) printf("%02x", byte);
  printf("\n");
  fflush(stdout);
  memset(pattern, 0, sizeof pattern);
  pthread_exit(nullptr);
}

int hole() {
  auto *pages =
      static_cast<unsigned char *>(mmap(nullptr, 3 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  if (pages == MAP_FAILED) return 2;
  unsigned char pattern[32];
  for (int i = 0; i < 32; ++i) pattern[i] = static_cast<unsigned char>(0xc3 ^ (i * 37));
  memcpy(pages + 100, pattern, sizeof pattern);
  memcpy(pages + 2 * 4096 + 100, pattern, sizeof pattern);
  int fd = static_cast<int>(syscall(SYS_userfaultfd, O_CLOEXEC));
  uffdio_api api{};
  api.api = UFFD_API;
  uffdio_register reg{};
  reg.range.start = reinterpret_cast<uintptr_t>(pages + 4096);
  reg.range.len = 4096;
  reg.mode = UFFDIO_REGISTER_MODE_MISSING;
  if (fd < 0 || ioctl(fd, UFFDIO_API, &api) != 0 || ioctl(fd, UFFDIO_REGISTER, &reg) != 0) return 3;
  for (unsigned char byte : pattern) printf("%02x", byte);
  printf("\n");
  fflush(stdout);
  char c;
  while (read(STDIN_FILENO, &c, 1) > 0) {}
  return 0;
}

// closed: a page holding a pattern made PROT_NONE; a second pattern across
// two mappings side by side (read-write, then read-only); a reservation of
// 1 GiB that holds no page. Prints the patterns (hex) and the reservation's
// address, one a line, then waits for stdin. Each pattern is written once,
// by getrandom, where it stays, and printed a byte at a time: no other copy.
int closed() {
  auto *pages =
      static_cast<unsigned char *>(mmap(nullptr, 4 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  void *reserved = mmap(nullptr, size_t{1} << 30, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (pages == MAP_FAILED || reserved == MAP_FAILED) return 2;
  unsigned char *shut = pages + 100, *across = pages + 3 * 4096 - 16;
  if (getrandom(shut, 32, 0) != 32 || getrandom(across, 32, 0) != 32) return 2;
  for (const unsigned char *pattern :
       {static_cast<const unsigned char *>(shut), const_cast<const unsigned char *>(across)}) {
    for (int i = 0; i < 32; ++i) printf("%02x", static_cast<const volatile unsigned char *>(pattern)[i]);
    printf("\n");
  }
  printf("%lx\n", reinterpret_cast<unsigned long>(reserved));
  // A pattern written into shared memory that this process maps PROT_NONE
  // and never touched (its page is in the file, not in the page tables),
  // the buffer it came from cleared.
  int shm = static_cast<int>(syscall(SYS_memfd_create, "k", 0));
  auto *staged = static_cast<unsigned char *>(malloc(32));
  if (shm < 0 || staged == nullptr || getrandom(staged, 32, 0) != 32 || write(shm, staged, 32) != 32 ||
      ftruncate(shm, 4096) != 0 || mmap(nullptr, 4096, PROT_NONE, MAP_SHARED, shm, 0) == MAP_FAILED)
    return 2;
  for (int i = 0; i < 32; ++i) printf("%02x", static_cast<volatile unsigned char *>(staged)[i]);
  printf("\n");
  explicit_bzero(staged, 32);
  free(staged);
  // One of 4300 bytes across three mappings (read-write, read-only, read-write).
  auto *three =
      static_cast<unsigned char *>(mmap(nullptr, 3 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  if (three == MAP_FAILED) return 2;
  unsigned char *long_one = three + 4096 - 100;
  if (getrandom(long_one, 4300, 0) != 4300) return 2;
  for (int i = 0; i < 4300; ++i) printf("%02x", static_cast<const volatile unsigned char *>(long_one)[i]);
  printf("\n");
  fflush(stdout);
  if (mprotect(pages, 2 * 4096, PROT_NONE) != 0 || mprotect(pages + 3 * 4096, 4096, PROT_READ) != 0 ||
      mprotect(three + 4096, 4096, PROT_READ) != 0)
    return 2;
  printf("ready\n");
  fflush(stdout);
  char c;
  while (read(STDIN_FILENO, &c, 1) > 0) {}
  return 0;
}

int use(int argc, char **argv) {
  if (argc < 3) return 2;
  EVP_PKEY *key = load(argv[2]);
  if (key == nullptr || !sign_and_verify(key)) return 2;
  RSA *legacy = nullptr;
  if (argc > 3 && strcmp(argv[3], "legacy") == 0 && EVP_PKEY_get_base_id(key) == EVP_PKEY_RSA) {
    legacy = EVP_PKEY_get1_RSA(key);
    unsigned char digest[32] = {1, 2, 3}, signature[512];
    unsigned int length = 0;
    if (legacy == nullptr || RSA_sign(NID_sha256, digest, sizeof digest, signature, &length, legacy) != 1 ||
        RSA_verify(NID_sha256, digest, sizeof digest, signature, length, legacy) != 1)
      return 2;
  }
  // der: the key's DER encoding (i2d_PrivateKey) held three ways, as
  // Apache's mod_ssl keeps a decrypted key: in a buffer allocated after
  // asking the length, in one grown to it with realloc, in one OpenSSL
  // allocates.
  unsigned char *ders[3] = {};
  if (argc > 3 && strcmp(argv[3], "der") == 0) {
    int length = i2d_PrivateKey(key, nullptr);
    void *note = malloc(24); // mod_ssl's table entry comes first
    ders[0] = static_cast<unsigned char *>(malloc(static_cast<size_t>(length)));
    unsigned char *at = ders[0];
    if (length <= 0 || ders[0] == nullptr || i2d_PrivateKey(key, &at) != length) return 2;
    free(note);
    ders[1] = static_cast<unsigned char *>(malloc(16));
    if (i2d_PrivateKey(key, nullptr) != length) return 2;
    ders[1] = static_cast<unsigned char *>(realloc(ders[1], static_cast<size_t>(length)));
    at = ders[1];
    if (ders[1] == nullptr || i2d_PrivateKey(key, &at) != length) return 2;
    if (i2d_PrivateKey(key, &ders[2]) != length) return 2;
  }
  printf("ready\n");
  fflush(stdout);
  char c;
  (void)!read(STDIN_FILENO, &c, 1);
  free(ders[0]);
  free(ders[1]);
  OPENSSL_free(ders[2]);
  RSA_free(legacy);
  EVP_PKEY_free(key);
  return 0;
}

// Which allocations after i2d_PrivateKey's length the shim sends to the
// secret heap: only the thread's next one of that length (or up to 64
// bytes more: a std::string's terminator) among its next 8 (malloc,
// calloc, realloc), and tags keep their depth meanwhile.
// A thread whose first use of a thread key from 32 up (OpenSSL's error
// state, after an i2d_PrivateKey that failed inside the shim's own tag
// scope) made glibc calloc its second-level block of thread-specific data;
// it then sets a key of the program's there, and the main thread forks. A
// fork child's glibc zeroes other threads' blocks before any fork handler
// runs: in the secret heap, that was the parent's block. Prints the value
// the thread reads after the fork.
int tsd_fork() {
  CRYPTO_secure_free(CRYPTO_secure_malloc(16, __FILE__, __LINE__), __FILE__, __LINE__); // secmem's key first
  pthread_key_t low[32], mine;
  for (pthread_key_t &key : low) pthread_key_create(&key, nullptr);
  pthread_key_create(&mine, nullptr);
  EVP_PKEY *empty = EVP_PKEY_new(); // OpenSSL's keys come after these: its error state's is above 32
  pthread_barrier_t forked, checked;
  pthread_barrier_init(&forked, nullptr, 2);
  pthread_barrier_init(&checked, nullptr, 2);
  void *after = nullptr;
  std::thread worker([&] {
    if (i2d_PrivateKey(empty, nullptr) > 0) printf("i2d_PrivateKey of an empty key did not fail\n");
    pthread_setspecific(mine, reinterpret_cast<void *>(0x1234));
    pthread_barrier_wait(&forked);
    pthread_barrier_wait(&checked);
    after = pthread_getspecific(mine);
  });
  pthread_barrier_wait(&forked);
  pid_t child = fork();
  if (child == 0) _exit(0);
  waitpid(child, nullptr, 0);
  pthread_barrier_wait(&checked);
  worker.join();
  EVP_PKEY_free(empty);
  printf("thread-specific data after the fork: %p\n", after);
  return after == reinterpret_cast<void *>(0x1234) ? 0 : 1;
}

int der_routing(const char *key_file) {
  EVP_PKEY *key = load(key_file);
  if (key == nullptr) return 2;
  int length = i2d_PrivateKey(key, nullptr);
  auto n = static_cast<size_t>(length);
  std::string line;
  auto note = [&line](const char *what, const void *p) {
    line += std::string(line.empty() ? "" : ", ") + what + " " + (secmem_owns(p) ? "secret" : "ordinary");
  };
  unsigned depth = secmem_tag_depth();
  void *other = malloc(n + 65), *smaller = malloc(n - 1), *matched = malloc(n), *after = malloc(n);
  note("other size", other);
  note("one byte less", smaller);
  note("the length", matched);
  note("the length again", after);
  i2d_PrivateKey(key, nullptr);
  auto *as_string = new std::string(n, '\0'); // n + 1 bytes: its terminator
  note("a string of the length", as_string->data());
  i2d_PrivateKey(key, nullptr);
  std::vector<void *> filler;
  for (int i = 0; i < 8; ++i) filler.push_back(malloc(n + 100));
  void *late = malloc(n);
  note("the length after 8 others", late);
  std::string text(n - 1, 'k');
  i2d_PrivateKey(key, nullptr);
  char *libc_own = strdup(text.c_str()); // n bytes, allocated by glibc: neither taken nor counted
  note("glibc's own of the length", libc_own);
  void *zeroed = calloc(1, n);
  note("calloc", zeroed);
  i2d_PrivateKey(key, nullptr);
  unsigned char buffer[4096];
  unsigned char *at = buffer;
  i2d_PrivateKey(key, &at); // its own buffer, on the stack: the wait ends
  void *unasked = malloc(n);
  note("the length after a write", unasked);
  i2d_PrivateKey(key, nullptr);
  secmem_tag_end(); // unbalanced: the wait goes on, the depth stays 0
  unsigned depth_pending = secmem_tag_depth();
  secmem_tag_begin();
  void *tagged = malloc(8);
  secmem_tag_end();
  note("tagged while waiting", tagged);
  void *still = malloc(n);
  note("the length after them", still);
  void *plain = malloc(8);
  note("plain", plain);
  printf("%s; depth %u, %u while waiting, %u after\n", line.c_str(), depth, depth_pending, secmem_tag_depth());
  for (void *p :
       {other, smaller, matched, after, late, static_cast<void *>(libc_own), zeroed, unasked, tagged, still, plain})
    free(p);
  delete as_string;
  for (void *p : filler) free(p);
  EVP_PKEY_free(key);
  return 0;
}

int forkgen(int argc, char **argv) {
  if (argc < 4) return 2;
  EVP_PKEY *key = load(argv[2]);
  int children = atoi(argv[3]);
  if (key == nullptr || !sign_and_verify(key)) return 2;
  std::vector<pid_t> pids;
  for (int i = 0; i < children; ++i) {
    pid_t pid = fork();
    if (pid == 0) {
      bool ok = sign_and_verify(key); // the inherited key still works in the child
      for (int j = 0; j < 5 && ok; ++j) {
        EVP_PKEY *fresh = EVP_EC_gen("P-256");
        ok = fresh != nullptr && sign_and_verify(fresh);
        EVP_PKEY_free(fresh);
      }
      _exit(ok ? 0 : 1);
    }
    pids.push_back(pid);
  }
  int failed = 0;
  for (pid_t pid : pids) {
    int status = 0;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) ++failed;
  }
  bool parent_ok = sign_and_verify(key);
  printf("children failed: %d, parent key %s\n", failed, parent_ok ? "intact" : "BROKEN");
  EVP_PKEY_free(key);
  return failed == 0 && parent_ok ? 0 : 1;
}

int threads() {
  std::vector<std::thread> workers;
  std::vector<int> failures(4, 0);
  for (int t = 0; t < 4; ++t) {
    workers.emplace_back([t, &failures] {
      std::vector<std::pair<unsigned char *, size_t>> live;
      for (int i = 0; i < 200000; ++i) {
        if (live.size() < 100 || i % 3 != 0) {
          size_t n = 1 + (i * 131 + t) % 2000;
          auto *p = static_cast<unsigned char *>(malloc(n));
          memset(p, (i + t) & 0xff, n);
          live.push_back({p, n});
        } else {
          auto [p, n] = live.back();
          live.pop_back();
          for (size_t j = 0; j < n; ++j)
            if (p[j] != p[0]) ++failures[t];
          free(p);
        }
      }
      for (auto &[p, n] : live) free(p);
    });
  }
  for (auto &worker : workers) worker.join();
  int total = failures[0] + failures[1] + failures[2] + failures[3];
  printf("threads: %d corrupted blocks\n", total);
  return total == 0 ? 0 : 1;
}

// direct DIR: O_DIRECT reads into an OpenSSL secure-heap buffer (secret
// memory under the shim), twice, then a vmsplice of it; prints each result.
int direct(const char *dir) {
  std::string path = std::string(dir) + "/direct.bin";
  int fd = open(path.c_str(), O_CREAT | O_RDWR | O_TRUNC | O_DIRECT, 0600);
  void *plain = nullptr;
  if (fd < 0 || posix_memalign(&plain, 4096, 4096) != 0) return 2;
  memset(plain, 'd', 4096);
  if (pwrite(fd, plain, 4096, 0) != 4096) return 3;
  auto *secret = static_cast<unsigned char *>(CRYPTO_secure_malloc(4096, __FILE__, __LINE__));
  if (secret == nullptr || reinterpret_cast<uintptr_t>(secret) % 4096 != 0) return 4;
  for (int i = 0; i < 2; ++i) {
    errno = 0;
    ssize_t n = pread(fd, secret, 4096, 0);
    printf("pread %zd %s\n", n, n < 0 ? strerrorname_np(errno) : "ok");
  }
  int p[2];
  if (pipe(p) != 0) return 5;
  iovec iov{secret, 64};
  errno = 0;
  ssize_t n = vmsplice(p[1], &iov, 1, 0);
  printf("vmsplice %zd %s\n", n, n < 0 ? strerrorname_np(errno) : "ok");
  // The iovec array itself unreadable: EFAULT, not a crash in the wrapper.
  void *gone = mmap(nullptr, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  for (const void *array : {static_cast<const void *>(nullptr), const_cast<const void *>(gone)}) {
    errno = 0;
    n = vmsplice(p[1], static_cast<const iovec *>(array), 1, 0);
    printf("vmsplice %zd %s\n", n, n < 0 ? strerrorname_np(errno) : "ok");
  }
  CRYPTO_secure_free(secret, __FILE__, __LINE__);
  free(plain);
  close(fd);
  return 0;
}

int tag() {
  secmem_tag_begin();
  void *tagged = malloc(64);
  void *tagged_calloc = calloc(4, 16);
  secmem_tag_end();
  void *plain = malloc(64);
  printf("tagged malloc: %s, tagged calloc: %s, plain malloc: %s\n", secmem_owns(tagged) ? "secret" : "ordinary",
         secmem_owns(tagged_calloc) ? "secret" : "ordinary", secmem_owns(plain) ? "secret" : "ordinary");
  bool ok = secmem_owns(tagged) && secmem_owns(tagged_calloc) && !secmem_owns(plain);
  free(tagged); // free() finds the secret heap by range
  free(tagged_calloc);
  free(plain);
  return ok ? 0 : 1;
}

int sodium() {
  if (sodium_init() < 0) return 2;
  auto *key = static_cast<unsigned char *>(sodium_malloc(crypto_secretbox_KEYBYTES));
  auto *keys = static_cast<unsigned char *>(sodium_allocarray(4, 32));
  if (key == nullptr || keys == nullptr) return 2;
  crypto_secretbox_keygen(key);
  unsigned char nonce[crypto_secretbox_NONCEBYTES] = {};
  const unsigned char message[] = "sealed";
  unsigned char boxed[sizeof message + crypto_secretbox_MACBYTES];
  unsigned char opened[sizeof message];
  bool works = crypto_secretbox_easy(boxed, message, sizeof message, nonce, key) == 0 &&
               crypto_secretbox_open_easy(opened, boxed, sizeof boxed, nonce, key) == 0 &&
               memcmp(opened, message, sizeof message) == 0;
  bool protect_ok = sodium_mprotect_readonly(key) == 0 && sodium_mprotect_readwrite(key) == 0;
  printf("sodium_malloc: %s, sodium_allocarray: %s, secretbox: %s, mprotect: %s\n",
         secmem_owns(key) ? "secret" : "ordinary", secmem_owns(keys) ? "secret" : "ordinary", works ? "ok" : "FAILED",
         protect_ok ? "ok" : "FAILED");
  sodium_free(key);
  sodium_free(keys);
  return works && protect_ok && secmem_owns(key) == 0 ? 0 : 1;
}

int callers(const char *library) {
  void *handle = dlopen(library, RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) return 2;
  auto lib_malloc = reinterpret_cast<void *(*)(size_t)>(dlsym(handle, "tagme_malloc"));
  auto lib_calloc = reinterpret_cast<void *(*)(size_t)>(dlsym(handle, "tagme_calloc"));
  void *from_lib = lib_malloc(64);
  void *zeroed = lib_calloc(64);
  void *from_here = malloc(64);
  printf("from the library: %s, %s; from here: %s\n", secmem_owns(from_lib) ? "secret" : "ordinary",
         secmem_owns(zeroed) ? "secret" : "ordinary", secmem_owns(from_here) ? "secret" : "ordinary");
  free(from_lib);
  free(zeroed);
  free(from_here);
  dlclose(handle);
  return 0;
}

// callers-reuse A B: A (not listed) then B (listed), each loaded, asked
// for a block, unloaded; again until B lands at A's address (both are built
// from the same source: the loader reuses the hole). One line per library,
// in order, then whether the addresses were reused.
int callers_reuse(const char *first, const char *second) {
  std::string line;
  for (int attempt = 0; attempt < 20; ++attempt) {
    line.clear();
    uintptr_t bases[2] = {};
    for (int i = 0; i < 2; ++i) {
      const char *path = i == 0 ? first : second;
      void *handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
      if (handle == nullptr) return 2;
      auto lib_malloc = reinterpret_cast<void *(*)(size_t)>(dlsym(handle, "tagme_malloc"));
      Dl_info info{};
      if (lib_malloc == nullptr || dladdr(reinterpret_cast<void *>(lib_malloc), &info) == 0) return 2;
      bases[i] = reinterpret_cast<uintptr_t>(info.dli_fbase);
      void *block = lib_malloc(64);
      line += std::string(i == 0 ? "" : ", ") + (secmem_owns(block) ? "secret" : "ordinary");
      free(block);
      dlclose(handle);
    }
    if (bases[0] == bases[1]) {
      printf("%s; same address\n", line.c_str());
      return 0;
    }
  }
  printf("%s; never at the same address\n", line.c_str());
  return 1;
}

// callers-unload-race A B: A is unloaded; its destructor wakes a SCHED_FIFO
// thread on the same CPU that loads B, which lands where A was and runs as
// soon as the unload lets go of the loader's lock, before dlclose returns.
// B's constructor's block and a block B allocates: their verdicts, and
// whether B took A's addresses.
namespace unload_race {
sem_t wake;
const char *second;
uintptr_t second_base = 0;
int ctor_owned = -1, alloc_owned = -1;

void pin_to_cpu0() {
  cpu_set_t cpus;
  CPU_ZERO(&cpus);
  CPU_SET(0, &cpus);
  pthread_setaffinity_np(pthread_self(), sizeof cpus, &cpus);
}

void woken_in_unload() { sem_post(&wake); }

void *load_second(void *) {
  pin_to_cpu0();
  sem_wait(&wake);                         // from the first library's destructor, inside dlclose
  void *handle = dlopen(second, RTLD_NOW); // waits for that dlclose's unmap, then runs first
  if (handle == nullptr) return nullptr;
  link_map *map = nullptr;
  if (dlinfo(handle, RTLD_DI_LINKMAP, &map) == 0) second_base = map->l_addr;
  ctor_owned = secmem_owns(*static_cast<void **>(dlsym(handle, "race_ctor_block")));
  auto lib_malloc = reinterpret_cast<void *(*)(size_t)>(dlsym(handle, "race_malloc"));
  void *block = lib_malloc(64);
  alloc_owned = secmem_owns(block);
  free(block);
  return nullptr;
}
} // namespace unload_race

int callers_unload_race(const char *first, const char *second) {
  using namespace unload_race;
  unload_race::second = second;
  sem_init(&wake, 0, 0);
  pin_to_cpu0();
  void *handle = dlopen(first, RTLD_NOW);
  if (handle == nullptr) return 2;
  link_map *map = nullptr;
  if (dlinfo(handle, RTLD_DI_LINKMAP, &map) != 0) return 2;
  uintptr_t first_base = map->l_addr;
  *static_cast<void (**)()>(dlsym(handle, "race_dtor_hook")) = woken_in_unload;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setinheritsched(&attr, PTHREAD_EXPLICIT_SCHED);
  pthread_attr_setschedpolicy(&attr, SCHED_FIFO);
  sched_param priority{};
  priority.sched_priority = 10;
  pthread_attr_setschedparam(&attr, &priority);
  pthread_t loader;
  if (int err = pthread_create(&loader, &attr, load_second, nullptr); err != 0) {
    printf("no SCHED_FIFO thread: %s\n", strerror(err));
    return 3;
  }
  dlclose(handle);
  pthread_join(loader, nullptr);
  printf("constructor's block %s, allocation %s; %s address\n", ctor_owned == 1 ? "secret" : "ordinary",
         alloc_owned == 1 ? "secret" : "ordinary", second_base == first_base ? "same" : "another");
  return 0;
}

} // namespace

// align: memalign, aligned_alloc and posix_memalign over awkward alignments,
// each called plainly (glibc answers) and in a tag scope (the secret heap
// answers): one line per call with both outcomes (ok, EINVAL, ENOMEM), and for
// the tagged block whether it is aligned as glibc would align it and secret.
int align() {
  using Memalign = void *(*)(size_t, size_t);
  using PosixMemalign = int (*)(void **, size_t, size_t);
  volatile Memalign fns[] = {memalign, aligned_alloc};
  volatile PosixMemalign posix = posix_memalign;
  const size_t alignments[] = {0,
                               1,
                               2,
                               3,
                               8,
                               16,
                               24,
                               48,
                               64,
                               100,
                               4096,
                               12288,
                               size_t{2} << 20,
                               size_t{3} << 20,
                               size_t{4} << 20,
                               size_t{1} << 30,
                               SIZE_MAX / 2 + 1,
                               SIZE_MAX / 2 + 2,
                               SIZE_MAX};
  auto outcome = [](void *p, int err) {
    return p != nullptr ? "ok" : err == EINVAL ? "EINVAL" : err == ENOMEM ? "ENOMEM" : "other";
  };
  for (size_t a : alignments) {
    for (int f = 0; f < 3; ++f) {
      const char *name = f == 0 ? "memalign" : f == 1 ? "aligned_alloc" : "posix_memalign";
      void *plain = nullptr, *tagged = nullptr;
      int plain_err = 0, tagged_err = 0;
      for (int tag = 0; tag < 2; ++tag) {
        if (tag) secmem_tag_begin();
        errno = 0;
        void *p = nullptr;
        int err = 0;
        if (f < 2) {
          p = fns[f](a, 100);
          err = errno;
        } else {
          err = posix(&p, a, 100);
          if (err != 0) p = nullptr;
        }
        if (tag) secmem_tag_end();
        (tag ? tagged : plain) = p;
        (tag ? tagged_err : plain_err) = err;
      }
      // glibc's own alignment for the request: a power of two at least a (and 16).
      size_t want = 16;
      while (want < a && want <= SIZE_MAX / 4) want <<= 1;
      bool aligned = tagged != nullptr && reinterpret_cast<uintptr_t>(tagged) % want == 0;
      printf("%s %zu: plain %s, tagged %s%s\n", name, a, outcome(plain, plain_err), outcome(tagged, tagged_err),
             tagged == nullptr                ? ""
             : aligned && secmem_owns(tagged) ? " aligned secret"
                                              : " MISALIGNED OR NOT SECRET");
      free(plain);
      free(tagged);
    }
  }
  return 0;
}

// memfns dlsym|reset|freefirst: OpenSSL's memory functions changed behind
// the shim's back. dlsym: the program's own allocator installed through
// dlsym(libcrypto, "CRYPTO_set_mem_functions"), which the shim never sees;
// reset: set through the shim, then set back to libcrypto's defaults through
// dlsym; freefirst: a CRYPTO_free (of malloc's memory) before OpenSSL's
// first allocation, then the program's allocator set through the shim (the
// shim had kept libcrypto's first answer, its default: abort). OPENSSL_malloc and OPENSSL_free (which the shim
// interposes) must go to the functions libcrypto uses: prints how many of the program's frees ran, and lives (glibc
// used to be handed the program's pointers: abort).
namespace memfns {
std::atomic<int> g_mallocs{0}, g_frees{0};
void *custom_malloc(size_t n, const char *, int) {
  g_mallocs++;
  auto *p = static_cast<char *>(malloc(n + 16));
  return p == nullptr ? nullptr : p + 16; // a pointer glibc's free would reject
}
void *custom_realloc(void *p, size_t n, const char *, int) {
  auto *q = static_cast<char *>(realloc(p == nullptr ? nullptr : static_cast<char *>(p) - 16, n + 16));
  return q == nullptr ? nullptr : q + 16;
}
void custom_free(void *p, const char *, int) {
  if (p == nullptr) return;
  g_frees++;
  free(static_cast<char *>(p) - 16);
}
} // namespace memfns

int memfns_probe(const std::string &how) {
  using Set = int (*)(void *(*)(size_t, const char *, int), void *(*)(void *, size_t, const char *, int),
                      void (*)(void *, const char *, int));
  void *crypto = dlopen("libcrypto.so.3", RTLD_NOW | RTLD_NOLOAD);
  auto real_set = crypto == nullptr ? nullptr : reinterpret_cast<Set>(dlsym(crypto, "CRYPTO_set_mem_functions"));
  if (real_set == nullptr) return 2;
  if (how == "dlsym") {
    if (real_set(memfns::custom_malloc, memfns::custom_realloc, memfns::custom_free) != 1) return 3;
  } else if (how == "freefirst") {
    CRYPTO_free(malloc(10), __FILE__, __LINE__);
    if (CRYPTO_set_mem_functions(memfns::custom_malloc, memfns::custom_realloc, memfns::custom_free) != 1) return 4;
  } else {
    if (CRYPTO_set_mem_functions(memfns::custom_malloc, memfns::custom_realloc, memfns::custom_free) != 1) return 4;
    auto real_malloc = reinterpret_cast<void *(*)(size_t, const char *, int)>(dlsym(crypto, "CRYPTO_malloc"));
    auto real_realloc = reinterpret_cast<void *(*)(void *, size_t, const char *, int)>(dlsym(crypto, "CRYPTO_realloc"));
    auto real_free = reinterpret_cast<void (*)(void *, const char *, int)>(dlsym(crypto, "CRYPTO_free"));
    if (real_set(real_malloc, real_realloc, real_free) != 1) return 5;
  }
  for (int i = 0; i < 10; ++i) OPENSSL_free(OPENSSL_malloc(100 + i));
  EVP_PKEY *key = EVP_EC_gen("P-256"); // OpenSSL's own allocations and frees
  if (key == nullptr) return 6;
  EVP_PKEY_free(key);
  // (OpenSSL keeps some of its allocations until exit: frees are fewer.)
  printf("%s: program's mallocs %s, frees %s\n", how.c_str(), memfns::g_mallocs > 0 ? "some" : "none",
         memfns::g_frees >= 10 ? "some"
         : memfns::g_frees > 0 ? "too few"
                               : "none");
  return 0;
}

// OPENSSL_free's cleansing, before exit and in an exit handler: a block of
// 256 bytes of 0x5a, freed, then read where glibc's free leaves it alone
// (past its first 16 bytes; read through an integer so that no compiler
// sees a use after free). Prints "before: cleansed|kept", and in the exit
// handler "exit: cleansed|kept"; exits with 7.
namespace exit_cleanse {
const char *freed_state() {
  auto *p = static_cast<unsigned char *>(OPENSSL_malloc(256));
  if (p == nullptr) return "no memory";
  memset(p, 0x5a, 256);
  volatile uintptr_t at = reinterpret_cast<uintptr_t>(p);
  OPENSSL_free(p);
  const volatile unsigned char *q = reinterpret_cast<const volatile unsigned char *>(at);
  int kept = 0, zero = 0;
  for (int i = 32; i < 256; ++i) {
    kept += q[i] == 0x5a;
    zero += q[i] == 0;
  }
  return kept == 224 ? "kept" : zero == 224 ? "cleansed" : "changed";
}
// In the exit handler: a child forked there is not exiting.
void at_exit() {
  fflush(stdout);
  pid_t pid = fork();
  if (pid == 0) {
    printf("child forked in exit: %s\n", freed_state());
    fflush(stdout);
    _exit(0);
  }
  if (pid > 0) waitpid(pid, nullptr, 0);
  printf("exit: %s\n", freed_state());
  fflush(stdout);
}
} // namespace exit_cleanse

int exit_cleanse_probe(const std::string &how) {
  if (how == "vfork") {
    // A vfork child that calls exit (before any exit handler of the
    // program's or OpenSSL's start: glibc then refuses new exit handlers in
    // the shared memory), then a fork child that writes a secret block of
    // the parent's: its own copy only while the parent's fork handlers are
    // still there.
    auto *secret = static_cast<char *>(secmem_malloc(32));
    if (secret == nullptr) return 2;
    strcpy(secret, "parent's");
    fflush(stdout);
    pid_t pid = vfork();
    if (pid == 0) exit(0);
    if (pid < 0 || waitpid(pid, nullptr, 0) != pid) return 2;
    pid_t child = fork();
    if (child == 0) {
      strcpy(secret, "child's");
      _exit(0);
    }
    if (child < 0 || waitpid(child, nullptr, 0) != child) return 2;
    printf("after a vfork child's exit: %s, a fork child's write %s\n", exit_cleanse::freed_state(),
           strcmp(secret, "parent's") == 0 ? "its own" : "shared");
    fflush(stdout);
    _exit(0);
  }
  if (atexit(exit_cleanse::at_exit) != 0) return 2;
  printf("before: %s\n", exit_cleanse::freed_state());
  exit(7);
}

// Every thread's secret allocations counted, in a report whose counters are
// shared out between threads (preload/shim.h): the totals it must give.
int secure_threads() {
  constexpr int kThreads = 20, kEach = 5000;
  std::vector<std::thread> workers;
  std::atomic<int> failed{0};
  for (int t = 0; t < kThreads; ++t)
    workers.emplace_back([&failed] {
      for (int i = 0; i < kEach; ++i) {
        void *p = CRYPTO_secure_malloc(32 + (i % 8) * 8, __FILE__, __LINE__);
        if (p == nullptr || CRYPTO_secure_allocated(p) == 0) ++failed;
        CRYPTO_secure_free(p, __FILE__, __LINE__);
      }
    });
  for (auto &worker : workers) worker.join();
  unsigned long long bytes = 0;
  for (int i = 0; i < kEach; ++i) bytes += 32 + (i % 8) * 8;
  printf("secure-threads: %d allocations (%llu bytes), %d failed\n", kThreads * kEach, bytes * kThreads, failed.load());
  return failed == 0 ? 0 : 1;
}

// Before every library's constructor, and before libc has set environ: the
// environment only through the third argument.
void preinit_allocations(int, char **, char **envp) {
  bool wanted = false;
  for (char **e = envp; e != nullptr && *e != nullptr; ++e) wanted = wanted || strcmp(*e, "SHIM_PROBE_PREINIT=1") == 0;
  if (!wanted) return;
  for (int i = 0; i < 3; ++i) CRYPTO_secure_free(CRYPTO_secure_malloc(16, __FILE__, __LINE__), __FILE__, __LINE__);
}
__attribute__((section(".preinit_array"), used)) void (*const preinit_entry)(int, char **,
                                                                             char **) = preinit_allocations;

int main(int argc, char **argv) {
  std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "preinit") {
    CRYPTO_secure_free(CRYPTO_secure_malloc(16, __FILE__, __LINE__), __FILE__, __LINE__);
    return 0;
  }
  if (mode == "report-late") {
    std::string report = getenv("SECMEM_REPORT") != nullptr ? getenv("SECMEM_REPORT") : "";
    unsetenv("SECMEM_REPORT");
    CRYPTO_secure_free(CRYPTO_secure_malloc(16, __FILE__, __LINE__), __FILE__, __LINE__);
    setenv("SECMEM_REPORT", report.c_str(), 1);
    CRYPTO_secure_free(CRYPTO_secure_malloc(16, __FILE__, __LINE__), __FILE__, __LINE__);
    return 0;
  }
  if (mode == "exit-cleanse") return exit_cleanse_probe(argc > 2 ? argv[2] : "");
  if (mode == "owned") return owned(argc, argv);
  if (mode == "hold") return hold(argc, argv);
  if (mode == "use") return use(argc, argv);
  if (mode == "dropchild") return dropchild(argv);
  if (mode == "fexecve" && argc > 2) { // runs /usr/bin/ARGV[2] through a descriptor, as a launcher might
    int program = open(("/usr/bin/" + std::string(argv[2])).c_str(), O_RDONLY | O_CLOEXEC);
    if (program < 0) return 2;
    fexecve(program, argv + 2, environ);
    return 3;
  }
  if (mode == "execveat" && argc > 2) { // runs PROG by its name in the descriptor of /usr/bin
    int bin = open("/usr/bin", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (bin < 0) return 2;
    syscall(SYS_execveat, bin, argv[2], argv + 2, environ, 0);
    return 3;
  }
  if (mode == "hole") return hole();
  if (mode == "closed") return closed();
  if (mode == "leaderless") return leaderless();
  if (mode == "forkgen") return forkgen(argc, argv);
  if (mode == "threads") return threads();
  if (mode == "secure-threads") return secure_threads();
  if (mode == "tag") return tag();
  if (mode == "der-routing" && argc > 2) return der_routing(argv[2]);
  if (mode == "tsd-fork") return tsd_fork();
  if (mode == "direct" && argc > 2) return direct(argv[2]);
  if (mode == "sodium") return sodium();
  if (mode == "align") return align();
  if (mode == "memfns" && argc > 2) return memfns_probe(argv[2]);
  if (mode == "callers" && argc > 2) return callers(argv[2]);
  if (mode == "callers-reuse" && argc > 3) return callers_reuse(argv[2], argv[3]);
  if (mode == "callers-unload-race" && argc > 3) return callers_unload_race(argv[2], argv[3]);
  fprintf(stderr, "usage: shim_probe owned|hold|forkgen|threads|tag ...\n");
  return 2;
}
