// A program that uses the shared libcrypto nowhere itself, but loads a
// library that carries its own OpenSSL (own_openssl_lib.c) at start.
#include <stdio.h>

int own_openssl_lib_ready(void);

int main(void) {
  printf("%d\n", own_openssl_lib_ready());
  return 0;
}
