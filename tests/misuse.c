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
 *   misuse reenter-at-step large|small|fork [locked|cache|batch|batch-forkcache]
 *                    a SIGUSR1 handler calls the heap (a large block, or
 *                    enough small ones to refill the thread's cache under
 *                    the heap lock, or a fork whose handlers, registered
 *                    before secmem's, allocate and free) while the program
 *                    runs a large allocation and free that take the lock
 *                    (locked), or a small one from its cache (cache), or 300
 *                    small ones and back, refilling its cache and giving
 *                    halves of it back under the lock (batch; batch-forkcache: the thread's
 *                    cache made in a fork handler; batch comes after a fork
 *                    made with the thread's cache),
 *                    between two raise(SIGSTOP)s: checkers_test.cpp
 *                    single-steps there and sends the signal at one
 *                    instruction of it. Then (and in a fork's child) every
 *                    new block must be zero and handed out once. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/single_threaded.h>
#include <sys/time.h>
#include <sys/wait.h>
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

static void say(const char *what) {
  char line[160];
  int n = snprintf(line, sizeof line, "misuse[%d]: %s\n", (int)getpid(), what);
  if (n > 0) write(2, line, (size_t)n);
}

/* New blocks of the sizes the handlers use: each zero, none handed out
   twice; written, then freed. 0, or the exit code of what was wrong. */
static int heap_whole(void) {
  enum { kSmall = 150, kLarge = 4 };
  static unsigned char *blocks[2 * kSmall + kLarge];
  for (int i = 0; i < 2 * kSmall + kLarge; ++i) {
    size_t size = i < kSmall ? 1024 : i < 2 * kSmall ? 64 : 100000;
    unsigned char *p = blocks[i] = secmem_malloc(size);
    if (p == NULL) return say("no new block"), 11;
    for (size_t b = 0; b < size; ++b)
      if (p[b] != 0) return say("a new block is not zero"), 12;
    for (int j = 0; j < i; ++j)
      if (blocks[j] == p) return say("a block was handed out twice"), 13;
    memset(p, 0xa5, size);
  }
  for (int i = 0; i < 2 * kSmall + kLarge; ++i) secmem_free(blocks[i]);
  return 0;
}

static int g_small_handler, g_fork_handler;
static volatile sig_atomic_t g_fork_failed;

/* A fork handler registered before libsecmem's (misuse_preinit): it runs
   after secmem's prepare handler and before its parent and child ones,
   where the heap lets the forking thread in. */
static void fork_handler_heap_calls(void) {
  void *a = secmem_malloc(100000), *b = secmem_malloc(64);
  if (a == NULL || b == NULL) _exit(7);
  memset(a, 0x5a, 100000);
  memset(b, 0x5a, 64);
  secmem_free(a);
  secmem_free(b);
}

static void fork_from_handler(void) {
  int saved = errno;
  pid_t pid = fork();
  if (pid == 0) _exit(heap_whole());
  int status = 0;
  if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) g_fork_failed = 1;
  errno = saved;
}

static void heap_calls(int small) {
  enum { kSmall = 300 };
  void *blocks[kSmall]; /* each call its own: a handler's call inside the batch operation's */
  int count = small ? kSmall : 1;
  for (int i = 0; i < count; ++i) {
    blocks[i] = secmem_malloc(small ? 1024 : 100000);
    if (blocks[i] == NULL) _exit(5);
  }
  for (int i = 0; i < count; ++i) secmem_free(blocks[i]);
}

static void heap_call_from_handler(int sig) {
  (void)sig;
  if (g_fork_handler)
    fork_from_handler();
  else
    heap_calls(g_small_handler);
}

/* Runs before libsecmem's constructor (the executable's preinit array), so
   that these fork handlers are registered before secmem's: for a handler
   that forks, and for the batch-forkcache operation, whose thread makes its
   cache in one of them (its first block a cache may keep, the 100000-byte
   one), with the heap lock held. */
static void misuse_preinit(int argc, char **argv, char **envp) {
  (void)envp;
  if (argc > 2 && strcmp(argv[1], "reenter-at-step") == 0 &&
      (strcmp(argv[2], "fork") == 0 || (argc > 3 && strcmp(argv[3], "batch-forkcache") == 0)))
    pthread_atfork(fork_handler_heap_calls, fork_handler_heap_calls, fork_handler_heap_calls);
}
__attribute__((section(".preinit_array"), used)) static void (*const g_misuse_preinit)(int, char **,
                                                                                       char **) = misuse_preinit;

static int reenter_at_step(const char *handler, const char *op) {
  g_small_handler = strcmp(handler, "small") == 0;
  g_fork_handler = strcmp(handler, "fork") == 0;
  int cache_op = strcmp(op, "cache") == 0;
  int batch_op = strncmp(op, "batch", 5) == 0;
  if (strcmp(op, "batch-forkcache") == 0) {
    secmem_free(secmem_malloc(300000)); /* the heap started; no cache keeps so large a block */
    pid_t pid = fork();                 /* the prepare handler makes this thread's cache */
    if (pid == 0) _exit(0);
    if (pid < 0 || waitpid(pid, NULL, 0) != pid) return say("the first fork failed"), 16;
  }
  struct sigaction action;
  memset(&action, 0, sizeof action);
  action.sa_handler = heap_call_from_handler;
  sigaction(SIGUSR1, &action, NULL);
  /* the heap, this thread's cache and its blocks made (and a first fork) */
  heap_calls(1);
  heap_calls(0);
  if (g_fork_handler) {
    fork_from_handler(); /* which empties this thread's cache: filled again */
    heap_calls(1);
  }
  if (strcmp(op, "batch") == 0) {
    /* a fork with this thread's cache made: the fork's own acquisition of
       the heap lock leaves the cache's copy of the thread's lock count
       alone, detached until the lock is let go (heap/lock.h); the batch's
       locked refills must find it attached again */
    pid_t pid = fork();
    if (pid == 0) _exit(heap_whole());
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
      return say("the child of a fork before the stepped operation failed"), 14;
    heap_calls(1);
  }
  if (g_fork_failed) return say("the child of a fork before the stepped operation failed"), 14;
  raise(SIGSTOP);
  if (batch_op) {
    /* 300 blocks of 1024 bytes and back: refills of this thread's cache
       and halves of it given back, under the heap lock, for the class
       the handler's small blocks come from */
    heap_calls(1);
  } else {
    /* 1024 bytes: a block from this thread's cache, back to it (no lock);
       40000: no cached block of the size, the heap lock */
    unsigned char *p = secmem_malloc(cache_op ? 1024 : 40000);
    if (p == NULL) return 2;
    p[0] = 1;
    secmem_free(p);
  }
  raise(SIGSTOP);
  if (g_fork_failed) return say("the child of the signal handler's fork found its heap broken"), 15;
  int whole = heap_whole();
  if (whole != 0) return whole;
  printf("reenter-at-step: done\n");
  return 0;
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "clean";
  if (strcmp(mode, "reenter-at-step") == 0 && argc > 2) return reenter_at_step(argv[2], argc > 3 ? argv[3] : "locked");
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
