// A program with its own copy of OpenSSL (libcrypto.a linked in), as node
// from upstream builds and pip wheels of cryptography are: it loads a PEM key,
// prints "ready" and holds the key until its stdin ends. The preload shim
// cannot reach this OpenSSL; the secmem command and the report say so.
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <unistd.h>

int main(int argc, char **argv) {
  FILE *file = argc > 1 ? fopen(argv[1], "r") : NULL;
  EVP_PKEY *key = file != NULL ? PEM_read_PrivateKey(file, NULL, NULL, NULL) : NULL;
  if (file != NULL) fclose(file);
  if (key == NULL) return 2;
  printf("ready\n");
  fflush(stdout);
  char c;
  while (read(STDIN_FILENO, &c, 1) > 0) {}
  EVP_PKEY_free(key);
  return 0;
}
