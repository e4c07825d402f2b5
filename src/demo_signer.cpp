// The demo's signing program: loads a PEM private key through OpenSSL, signs
// and verifies a message, prints "ready", and holds the key until stdin
// closes (so that `secmem demo` can look at its memory meanwhile).
#include <cstdio>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <unistd.h>

#include "sign_check.h"

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: secmem-demo-signer KEY.pem\n");
    return 2;
  }
  FILE *file = fopen(argv[1], "r");
  EVP_PKEY *key = file != nullptr ? PEM_read_PrivateKey(file, nullptr, nullptr, nullptr) : nullptr;
  if (file != nullptr) fclose(file);
  if (key == nullptr) {
    fprintf(stderr, "secmem-demo-signer: cannot load %s\n", argv[1]);
    return 1;
  }
  bool ok = secmem::tool::sign_and_verify(key);
  printf("ready %s\n", ok ? "signed" : "failed");
  fflush(stdout);
  char c;
  while (read(STDIN_FILENO, &c, 1) > 0) {}
  EVP_PKEY_free(key);
  return ok ? 0 : 1;
}
