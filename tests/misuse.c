/* A program with a bug in its use of a secret, for the memory checkers the
 * user already runs (tests/checkers_test.cpp):
 *   misuse uaf       reads a secret after freeing it
 *   misuse overflow  reads one byte past a 20-byte secret
 *   misuse clean     uses a secret correctly */
#include <stdio.h>
#include <string.h>

#include "secmem/secmem.h"

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "clean";
  volatile unsigned char *key = secmem_malloc(32);
  unsigned char *name = secmem_malloc(20);
  if (key == NULL || name == NULL) return 2;
  for (int i = 0; i < 32; ++i) key[i] = (unsigned char)(i + 1);
  memcpy(name, "0123456789abcdefghi", 20);
  int sum = 0;
  if (strcmp(mode, "uaf") == 0) {
    secmem_free((void *)key);
    sum = key[16]; /* use after free */
  } else if (strcmp(mode, "overflow") == 0) {
    sum = ((volatile unsigned char *)name)[20]; /* one past the end */
    secmem_free((void *)key);
  } else {
    sum = key[3];
    secmem_free((void *)key);
  }
  secmem_free(name);
  printf("done %d\n", sum);
  return 0;
}
