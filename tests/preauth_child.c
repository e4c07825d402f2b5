// As OpenSSH's pre-auth child: keys made first, then a strict allow-list with
// a kill default (open and stat refused with EACCES, no memfd_secret, no
// mlock, no /proc), then ECDSA signatures, ECDH and X25519 derivations, and
// enough secure-heap memory to need a new chunk, under the preload shim.
// Prints "ok" and exits 0 when every operation worked and the process lived.
#define _GNU_SOURCE
#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(const char *what) {
  printf("FAIL %s\n", what);
  return 1;
}

static int derive(EVP_PKEY *mine, EVP_PKEY *peer, unsigned char *out, size_t *len) {
  EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(mine, NULL);
  int ok = ctx != NULL && EVP_PKEY_derive_init(ctx) == 1 && EVP_PKEY_derive_set_peer(ctx, peer) == 1 &&
           EVP_PKEY_derive(ctx, out, len) == 1;
  EVP_PKEY_CTX_free(ctx);
  return ok;
}

static int sign_and_verify(EVP_PKEY *key) {
  unsigned char sig[128];
  size_t sig_len = sizeof sig;
  const unsigned char msg[] = "session identifier";
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  int ok = md != NULL && EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key) == 1 &&
           EVP_DigestSign(md, sig, &sig_len, msg, sizeof msg) == 1;
  EVP_MD_CTX_free(md);
  md = EVP_MD_CTX_new();
  ok = ok && md != NULL && EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, key) == 1 &&
       EVP_DigestVerify(md, sig, sig_len, msg, sizeof msg) == 1;
  EVP_MD_CTX_free(md);
  return ok;
}

static int strict_sandbox(void) {
  scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_KILL_PROCESS);
  if (ctx == NULL) return 0;
  const char *refused[] = {"open", "openat", "stat", "fstat", "lstat", "newfstatat"};
  const char *allowed[] = {"brk",          "clock_gettime",  "close",        "exit",
                           "exit_group",   "futex",          "getpid",       "getrandom",
                           "gettimeofday", "madvise",        "mmap",         "mprotect",
                           "mremap",       "munmap",         "nanosleep",    "clock_nanosleep",
                           "read",         "rt_sigprocmask", "rt_sigreturn", "write",
                           "writev",       "ppoll",          "poll",         "select",
                           "pselect6"};
  int ok = 1;
  for (size_t i = 0; i < sizeof refused / sizeof *refused; ++i) {
    int nr = seccomp_syscall_resolve_name(refused[i]);
    if (nr >= 0) ok = ok && seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EACCES), nr, 0) == 0;
  }
  for (size_t i = 0; i < sizeof allowed / sizeof *allowed; ++i) {
    int nr = seccomp_syscall_resolve_name(allowed[i]);
    if (nr >= 0) ok = ok && seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0) == 0;
  }
  ok = ok && seccomp_load(ctx) == 0;
  seccomp_release(ctx);
  return ok;
}

int main(void) {
  setvbuf(stdout, NULL, _IONBF, 0);
  EVP_PKEY *host = EVP_EC_gen("P-256");
  EVP_PKEY *kex = EVP_EC_gen("P-256");
  EVP_PKEY *kex_peer = EVP_EC_gen("P-256");
  EVP_PKEY *x = EVP_PKEY_Q_keygen(NULL, NULL, "X25519");
  EVP_PKEY *x_peer = EVP_PKEY_Q_keygen(NULL, NULL, "X25519");
  if (host == NULL || kex == NULL || kex_peer == NULL || x == NULL || x_peer == NULL) return fail("keygen");
  if (!strict_sandbox()) return fail("seccomp");
  for (int round = 0; round < 20; ++round) {
    unsigned char a[64], b[64];
    size_t a_len = sizeof a, b_len = sizeof b;
    if (!sign_and_verify(host)) return fail("sign");
    if (!derive(kex, kex_peer, a, &a_len) || !derive(kex_peer, kex, b, &b_len) || a_len != b_len ||
        memcmp(a, b, a_len) != 0)
      return fail("ecdh");
    a_len = b_len = sizeof a;
    if (!derive(x, x_peer, a, &a_len) || !derive(x_peer, x, b, &b_len) || memcmp(a, b, a_len) != 0)
      return fail("x25519");
  }
  // More secure-heap memory than the first chunk holds: a new chunk, made
  // under the filter (the heap must not call what it may kill on).
  void *big[3];
  for (int i = 0; i < 3; ++i) {
    big[i] = OPENSSL_secure_malloc(1 << 20);
    if (big[i] == NULL || !CRYPTO_secure_allocated(big[i])) return fail("secure_malloc");
    memset(big[i], 0x5a, 1 << 20);
  }
  for (int i = 0; i < 3; ++i) OPENSSL_secure_free(big[i]);
  printf("ok\n");
  // Through the shim's exit (returning from main exits inside libc): it may
  // make no call the filter kills on (gettid would be).
  exit(0);
}
