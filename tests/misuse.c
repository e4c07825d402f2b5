/* A program with a bug in its use of a secret, for the memory checkers the
 * user already runs (tests/checkers_test.cpp):
 *   misuse uaf       reads a secret after freeing it
 *   misuse overflow  reads one byte past a 20-byte secret
 *   misuse clean     uses a secret correctly
 *   misuse double-free SIZE [thread]
 *                    frees a secret of SIZE bytes twice; with "thread", after
 *                    a thread was made and joined (before it, the process has
 *                    only ever had one: heap/span.h clears the live mark with
 *                    an unlocked cmpxchg then). Says which first, on stdout.
 *   misuse double-free-signal SIZE
 *                    a 50 us timer's handler frees the block being freed
 *   misuse reenter-at-step large|small
 *                    a SIGUSR1 handler calls the heap (a large block, or
 *                    enough small ones to refill the thread's cache under
 *                    the heap lock) while the program runs a large
 *                    allocation and free that take the lock, between two
 *                    raise(SIGSTOP)s: checkers_test.cpp single-steps there
 *                    and sends the signal at one instruction of it. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/single_threaded.h>
#include <sys/time.h>
#include <unistd.h>

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

static int g_small_handler;

static void heap_call_from_handler(int sig) {
  (void)sig;
  enum { kSmall = 300 };
  void *blocks[kSmall];
  int count = g_small_handler ? kSmall : 1;
  for (int i = 0; i < count; ++i) {
    blocks[i] = secmem_malloc(g_small_handler ? 1024 : 100000);
    if (blocks[i] == NULL) _exit(5);
  }
  for (int i = 0; i < count; ++i) secmem_free(blocks[i]);
}

static int reenter_at_step(const char *handler) {
  g_small_handler = strcmp(handler, "small") == 0;
  struct sigaction action;
  memset(&action, 0, sizeof action);
  action.sa_handler = heap_call_from_handler;
  sigaction(SIGUSR1, &action, NULL);
  heap_call_from_handler(0); /* the heap, this thread's cache and its blocks made */
  raise(SIGSTOP);
  void *p = secmem_malloc(40000); /* no cached block of this size: the heap lock */
  if (p == NULL) return 2;
  secmem_free(p);
  raise(SIGSTOP);
  printf("reenter-at-step: done\n");
  return 0;
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "clean";
  if (strcmp(mode, "reenter-at-step") == 0 && argc > 2) return reenter_at_step(argv[2]);
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
