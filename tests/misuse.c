/* A program with a bug in its use of a secret, for the memory checkers the
 * user already runs (tests/checkers_test.cpp):
 *   misuse uaf       reads a secret after freeing it
 *   misuse overflow  reads one byte past a 20-byte secret
 *   misuse clean     uses a secret correctly
 *   misuse double-free SIZE [thread]
 *                    frees a secret of SIZE bytes twice; with "thread", after
 *                    a thread was made and joined (before it, the process has
 *                    only ever had one: heap/span.h clears the live mark with
 *                    an unlocked cmpxchg then). Says which first, on stdout. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/single_threaded.h>
#include <sys/time.h>

#include "secmem/secmem.h"

static void *nothing(void *arg) { return arg; }

static int double_free(size_t size, int after_thread) {
  pthread_t thread;
  if (after_thread && (pthread_create(&thread, NULL, nothing, NULL) != 0 || pthread_join(thread, NULL) != 0)) return 2;
  void *volatile p = secmem_malloc(size);
  if (p == NULL) return 2;
  printf("%s\n", __libc_single_threaded ? "single-threaded" : "has had threads");
  fflush(stdout);
  secmem_free(p);
  secmem_free(p);
  return 0;
}

static void *volatile g_victim;

static void free_victim(int sig) {
  (void)sig;
  void *p = g_victim;
  if (p != NULL) {
    g_victim = NULL;
    secmem_free(p);
  }
}

static int double_free_in_handler(size_t size) {
  secmem_free(secmem_malloc(size)); /* the heap and this thread's cache made */
  struct sigaction action;
  memset(&action, 0, sizeof action);
  action.sa_handler = free_victim;
  sigaction(SIGALRM, &action, NULL);
  struct itimerval every = {{0, 50}, {0, 50}};
  setitimer(ITIMER_REAL, &every, NULL);
  for (long i = 0; i < 20000000; ++i) {
    void *p = secmem_malloc(size);
    if (p == NULL) return 2;
    g_victim = p;
    secmem_free(p);
    if (g_victim == NULL) return 3; /* the handler freed it too, and neither free aborted */
    g_victim = NULL;
  }
  return 4;
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "clean";
  if (strcmp(mode, "double-free-signal") == 0 && argc > 2) return double_free_in_handler(strtoul(argv[2], NULL, 10));
  if (strcmp(mode, "double-free") == 0 && argc > 2)
    return double_free(strtoul(argv[2], NULL, 10), argc > 3 && strcmp(argv[3], "thread") == 0);
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
