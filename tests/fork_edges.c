// fork at the edges of a process's life, each in a fresh process (the heap
// must not have started before some of them): fork_test.cpp runs each mode
// under a time limit and reads the exit status and the last line.
//
//   init-race N     fork while another thread starts the heap, N rounds: the
//                   child's first allocation must not hang
//   signal-fork S   fork from a SIGALRM handler that interrupts heap
//                   operations, for S seconds: no deadlock, child writes stay
//                   in the child
//   signal-fork-continue S [no-fds]
//                   the same, but each child returns from the handler and
//                   goes on allocating, resizing and freeing large blocks:
//                   every child exits 0; no-fds: with every descriptor
//                   taken (no pipe: the parent stages the copies itself)
//   signal-fork-new-chunk F
//                   F forks from a SIGALRM handler while the heap makes
//                   chunks (huge blocks): parent and child each write their
//                   own bytes and find them (no chunk shared)
//   mprotect-window N [no-fds]
//                   N forks from a SIGSYS handler inside the heap's own
//                   mprotect calls (a seccomp filter traps them), children
//                   going on as in signal-fork-continue
//   refused N [early] [fstat] [mprotect|sealed]
//                   N forks under a filter that refuses fstat, mprotect or
//                   both (EPERM), installed after forks with staging files
//                   (early: before the first fork), a guarded block in the
//                   heap: children whole, no fork waits for its child, no
//                   descriptor left behind; sealed: mprotect refused and a
//                   sealed block in the heap: each child stops with a line
//                   on memfd_secret, goes on on the mlock tier
//   reentered-without-pipe N
//                   (fork_edges_late) a prepare handler that runs after
//                   secmem's writes a block, under a filter that refuses
//                   fstat (no pipe): every child stops with a line on
//                   memfd_secret, rather than use the stale copy
//   signal-reenter S
//                   a SIGALRM handler calls the heap while its thread holds
//                   the heap lock: one line and an abort, not a hang
//                   (fork_test.cpp expects the abort)
//   exit-during-fork S
//                   threads exit (retiring their caches) while the main
//                   thread forks children that return through exit(): no
//                   child hangs in libsecmem's destructor
//   fork-in-own-fork S
//                   for S seconds the main thread forks in a loop while
//                   another thread sends it signals whose handler forks
//                   (some land inside secmem's fork handlers): no hang, every
//                   child has its copy
//   reclaim-signal-fork
//                   a fork from a SIGALRM handler that interrupts the
//                   emptying of every cache under a spent memlock budget
//                   (fork_test.cpp runs it under setpriv and prlimit, a few
//                   times: it says whether the reclaim was caught)
//   atfork-order    fork handlers registered before the heap started use it:
//                   a prepare handler that frees and allocates, a parent
//                   handler that allocates and frees, a child handler that
//                   frees the parent's block and writes a new one (first, in
//                   turn: frees a large and a huge block, shrinks a large
//                   one in place: the parent's stay whole); a child that
//                   lives through 20 forks keeps its own block; the prepare
//                   and parent handlers find every staging mapping PROT_NONE
//   atfork-parent   the same with the parent handler only (it uses the heap
//                   after the fork, before secmem's parent handler)
//   dead-caches-in-handler
//                   threads keep blocks in their caches (small and large)
//                   while the main thread forks; a child handler (under
//                   fork_edges_late registered before secmem's, so running
//                   before secmem's child handler) allocates: the dead
//                   threads' blocks serve it (the child has no more chunks
//                   than the parent)
//   atfork-parent-frees [sealed|nested|stray]
//                   a parent handler frees the block each child checks and
//                   writes a new one; sealed: a sealed block in the heap
//                   (the child copies for itself, after the kernel's fork);
//                   nested: sealed, and a prepare handler forks first (whose
//                   parent handler uses the heap before the outer fork);
//                   stray: sealed, and a prepare handler makes a process
//                   with _Fork that lives 3 s, then uses the heap (3 forks:
//                   none may take 2.7 s)
//   all-tiers-refused (under a small memlock budget) the mapping count at its
//                   limit, then a block past the budget: NULL, every tier refused
//   guard-budget    large and sealed blocks until their guards would take half
//                   of vm.max_map_count, then freed: the heap's guards never
//                   take more than a quarter, a thread can still be made
//   map-limit H     fork with the mapping count H below vm.max_map_count (-1:
//                   one past it, where every mmap fails): the child gets
//                   its copy, the parent's secret is untouched
//   map-limit-free  blocks of every size, then the mapping count one past
//                   vm.max_map_count (where every mmap fails): freeing them
//                   aborts nothing, a huge block's range is left PROT_NONE
//                   (not unmapped, not read-write); growing blocks and new
//                   ones fail with NULL and ENOMEM, or work
//   two-forkers N   two threads fork N times each, at once (glibc runs their
//                   fork handlers side by side): every child has its own copy
//                   and a working heap
//   copy-race S SEALED
//                   for S seconds two threads free large blocks and resize
//                   one in place while the main thread forks (holding a
//                   sealed block if SEALED is 1, so that the child copies for
//                   itself): every child finds the blocks published before
//                   the fork whole and frees them (canary checked)
//   resize-stall S  (without thread caches) for S seconds a thread resizes an
//                   8 MB block in place and another allocates small blocks
//                   while the main thread forks: no fork stalls
//   signal-and-thread-fork S
//                   for S seconds a thread forks in a loop while another,
//                   allocating, is sent signals whose handler forks: no
//                   deadlock (each fork used to wait for the other)
//   range-grow      (under the preload shim) tagged blocks larger than the
//                   reserved range, which grows for them: realloc and free
//                   go to the secret heap
//   closed-fds D    closes every descriptor from 3 up after a fork, opens data
//                   files in D under those numbers, forks again: the files
//                   stay as written, and the children see the parent's key
//   no-fds          a fork while no descriptor is free, then forks and a new
//                   chunk once they are: in the backend the heap started in
//   pid-namespace   (root) the parent enters a new pid namespace; a child
//                   that lives on keeps its heap while the parent forks more
//   data-stderr P   closes stderr, opens the file P (it takes fd 2), writes
//                   "DATA", allocates, exits (the shim's report must not land in P)
//   closed-stderr   closes stderr, allocates, exits
//   log-on-fd2 P    started with stderr closed: opens the log P for appending
//                   (it takes fd 2), writes "LOG", allocates, exits (the
//                   shim's report must not land in P)
//   null-stderr     points fd 2 at /dev/null (as a daemon does), allocates, exits
//   staging-reuse N [grow]
//                   N children one after another, each leaving a secret of
//                   its own in its heap: no child finds the previous one's,
//                   and the parent keeps a few staging files, not one per child;
//                   grow: each child also takes 200 KiB more than the parent
//                   holds, zero, in its copy's chunk (no chunk of its own)
//   child-budget    (run under a tight RLIMIT_MEMLOCK, without CAP_IPC_LOCK)
//                   a child of a process holding one small secret: what the
//                   kernel charges it right after the fork is what its
//                   memlock_charged says, it can still make 1.5 MB of
//                   secrets, and the page after its chunk's pages faults
//   fork-in-handler prepare|parent|child
//                   a fork handler registered before the heap started forks:
//                   every process keeps its own heap
//   live-children   children that live on (one closing every descriptor, one
//                   exec'ing) while the parent forks more: each keeps its heap
//   foreign-reaper [nested]  a process sharing this one's memory, in a pid
//                   namespace of its own, reaps a child of its own numbered as
//                   a live child of ours (root): the live child keeps its
//                   heap; nested: the reaper is made by such a process in its
//                   namespace, under this one's number
//   forged-message  a child opens the parent's message channel again through
//                   /proc/PPID/fd and names a short-lived sibling as the
//                   holder of every file (root): it keeps its heap
//   no-status       a filter before the first allocation that refuses open
//                   and kills on memfd_secret: the process lives
//   late-filter W   a filter that kills on mlock and memfd_secret, installed
//                   by a handler of the program's where secmem's prepare
//                   handler could not see it (in fork_edges_late: a child
//                   handler, W 0 and 2, or a prepare handler, W 1): the child
//                   lives with its secrets (W 0, 1: the mlock tier; W 2:
//                   memfd_secret with a sealed block, which the child copies;
//                   W 3: the mlock tier under SECMEM_ON_EXHAUSTION=fail, child
//                   handler: the child stops, SIGABRT; W 4: as 1, with
//                   no descriptor free for the child to read its status)
//   published-blocks S
//                   for S seconds threads allocate blocks (most of 8000 bytes,
//                   whose class's cache holds 2: refills under the lock),
//                   fill them and publish them while a thread forks: every
//                   child frees every published block (live in it) without
//                   an abort (a block made live after the parent's copy of
//                   the secret pages used to lack its canary in the child)
//   socketpair-killed  a filter that kills socketpair(SOCK_NONBLOCK) before
//                   the first fork: the process forks on
//   reaped-reuse    children reaped with waitpid under a filter added after
//                   start-up that refuses memfd_secret and waitid: under the
//                   preload shim each keeps its copy in memfd_secret (exit 2
//                   when one does not: the library alone)
//   thread-left [1] children whose forking (main) thread ends while a thread
//                   it started lives on (pthread_exit, or with 1 a raw exit
//                   system call that runs no destructor): the parent forks
//                   more, and each such child keeps its heap (the end of the
//                   thread that forked is not the end of the child)
//   start-up-in-fork
//                   another thread starts the heap and writes a secret while a
//                   fork runs its prepare handlers (a slow one of the
//                   program's): the child has a copy of its own and a working
//                   heap
//   first-in-prepare
//                   the process's first secret allocation comes from a fork
//                   prepare handler: no hang; NULL (ENOMEM) where secmem's
//                   prepare ran first (it holds the start-up), and the heap
//                   works after the fork in parent and child
//   quiesce         a prepare handler that waits for a lock another thread
//                   holds while it makes the process's first secret
//                   allocation (libraries that quiesce their threads for
//                   fork do this), registered after secmem's: no deadlock
//                   (not run with fork_edges_late: secmem's prepare handler
//                   would run first and hold the start-up, and it deadlocks)
//   register-race [after|_Fork|_Fork-overlap|signal|signal-fork]
//                   (fork_edges_late only) another thread forks while the
//                   thread that loads libsecmem is inside its constructor's
//                   pthread_atfork (held there 200 ms; after: once the
//                   handlers are in glibc's list; _Fork: the same, with
//                   _Fork, which runs no handler; _Fork-overlap: then in
//                   that child a fork while another thread's first
//                   allocation registers the handlers again): the child's first
//                   allocation must not wait for a registration no thread of
//                   its own will finish, and its forks and the parent's run
//                   secmem's handlers, once (each child's copy is its own);
//                   signal: no fork, a signal handler on the loading thread
//                   makes the first allocation (NULL and ENOMEM, or a block;
//                   not a hang); signal-fork: the handler forks, and the
//                   child allocates there and forks (one set acts)
//
// fork_edges_late (the same modes, tests/late_secmem.c) loads libsecmem with
// dlopen at its first secmem call, after the mode registered its own fork
// handlers: those run around secmem's (prepare after it, child and parent
// handlers before it) instead of inside them.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <seccomp.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "secmem/secmem.h"

static int fail(const char *what) {
  printf("FAIL %s\n", what);
  return 1;
}

static int wait_status(pid_t pid) {
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int all_bytes(const void *p, int byte, size_t n) {
  const unsigned char *c = p;
  for (size_t i = 0; i < n; ++i)
    if (c[i] != byte) return 0;
  return 1;
}

// n short-lived children, one after another, while other children live on:
// before each fork the 64-byte key becomes first + i % 8, and each child must
// see its own. 0 (after fail's line) when one saw another key.
static int short_lived_children_see_their_key(unsigned char *key, int first, int n) {
  for (int i = 0; i < n; ++i) {
    memset(key, first + i % 8, 64);
    pid_t pid = fork();
    if (pid == 0) _exit(all_bytes(key, first + i % 8, 64) ? 0 : 1);
    if (wait_status(pid) != 0) {
      fail("a short-lived child saw another key");
      return 0;
    }
  }
  return 1;
}

// A child that lives on: a block of its own (own_len bytes of own_byte),
// ready set once it is written; until stop is set it checks that the key is
// still key_byte and its block its own. Exits 0 when both held, 1 when not.
__attribute__((noreturn)) static void live_child(const unsigned char *key, int key_byte, size_t own_len, int own_byte,
                                                 volatile int *ready, volatile int *stop) {
  prctl(PR_SET_PDEATHSIG, SIGKILL); // a parent that failed never says stop
  unsigned char *own = secmem_malloc(own_len);
  if (own == NULL) _exit(3);
  memset(own, own_byte, own_len);
  *ready = 1;
  int ok = 1;
  while (ok && *stop == 0) {
    ok = all_bytes(key, key_byte, 64) && all_bytes(own, own_byte, own_len);
    usleep(200);
  }
  _exit(ok && all_bytes(key, key_byte, 64) && all_bytes(own, own_byte, own_len) ? 0 : 1);
}

// ---- register-race ----

static atomic_int g_registering;
static _Thread_local int t_hold_registration;
static int g_hold_after;       // hold the thread once the handlers are in glibc's list
static int g_hold_for_handler; // signal: raise a signal on it instead
static atomic_int g_handler_done;

// The calls a check makes: the program's (late_secmem.c's, which load
// libsecmem at the first), or libsecmem's own, looked up by the loading
// thread (a _Fork child of a process inside dlopen cannot look them up: glibc
// resets its loader lock in fork children only).
struct api {
  void *(*malloc)(size_t);
  void (*free)(void *);
  int (*get_stats)(struct secmem_stats *);
};
static struct api g_api = {secmem_malloc, secmem_free, secmem_get_stats};

static void look_up_own_api(void) { // on the loading thread, inside dlopen (the loader lock is recursive)
#ifdef SECMEM_LIBRARY_PATH          // fork_edges_late
  void *lib = dlopen(SECMEM_LIBRARY_PATH, RTLD_NOW | RTLD_NOLOAD);
#else
  void *lib = NULL;
#endif
  if (lib == NULL) return;
  g_api.malloc = (void *(*)(size_t))dlsym(lib, "secmem_malloc");
  g_api.free = (void (*)(void *))dlsym(lib, "secmem_free");
  g_api.get_stats = (int (*)(struct secmem_stats *))dlsym(lib, "secmem_get_stats");
}

// Instrumented (the wrapper below is not): the sanitizers see the look-up
// published by the flag.
static void enter_window(void) {
  if (g_hold_after) look_up_own_api();
  atomic_store(&g_registering, 1);
}

// glibc's pthread_atfork (libc_nonshared.a, linked into libsecmem) calls
// this: the program's own (fork_edges_late exports it) holds the loading
// thread inside the registration. Not instrumented: the sanitizers' runtimes
// register their own handlers through it while they start.
int __register_atfork(void (*prepare)(void), void (*parent)(void), void (*child)(void), void *dso);
__attribute__((no_sanitize("address", "thread", "undefined"))) int
__register_atfork(void (*prepare)(void), void (*parent)(void), void (*child)(void), void *dso) {
  // Looked up once (a _Fork child of a process inside dlopen cannot: the
  // loader lock stays held there).
  static int (*real)(void (*)(void), void (*)(void), void (*)(void), void *);
  if (real == NULL)
    real = (int (*)(void (*)(void), void (*)(void), void (*)(void), void *))dlsym(RTLD_NEXT, "__register_atfork");
  if (real == NULL) return ENOSYS;
  int err = g_hold_after ? real(prepare, parent, child, dso) : 0;
  static int raised;
  if (t_hold_registration && g_hold_for_handler) {
    if (!raised) {
      raised = 1;
      raise(SIGUSR1); // its handler runs on this thread before raise returns (unless blocked)
    }
  } else if (t_hold_registration) {
    enter_window();
    struct timespec hold = {0, 200 * 1000 * 1000};
    nanosleep(&hold, NULL);
  }
  return g_hold_after ? err : real(prepare, parent, child, dso);
}

// The first allocation, on a thread whose registration of secmem's fork
// handlers the program's __register_atfork holds.
static void *hold_and_allocate(void *arg) {
  t_hold_registration = 1;
  *(void **)arg = g_api.malloc(64);
  t_hold_registration = 0;
  return NULL;
}

static int g_in_handler_child;
static int child_writes_its_own_copy(unsigned char *secret);
static void *load_and_allocate(void *arg) { // libsecmem is loaded at this first call
  hold_and_allocate(arg);
  if (g_in_handler_child) { // signal-fork's child, its registration over
    unsigned char *secret = secmem_malloc(64);
    _exit(secret != NULL && child_writes_its_own_copy(secret) ? 0 : 2);
  }
  return NULL;
}

// A child of this process writes over a 64-byte secret: 1 if the secret
// here kept its bytes (the child had its own copy) and the child's handlers
// ran once (a chunk privatised twice: the handlers were registered twice).
static int child_writes_its_own_copy(unsigned char *secret) {
  memset(secret, 0x5a, 64);
  struct secmem_stats before; // the count goes on from the parent's
  g_api.get_stats(&before);
  pid_t pid = fork();
  if (pid < 0) return 0;
  if (pid == 0) {
    memset(secret, 0x11, 64);
    struct secmem_stats stats;
    g_api.get_stats(&stats);
    if (stats.fork_privatisations - before.fork_privatisations > stats.chunks) {
      printf("FAIL %llu chunks privatised in a child of %zu chunks\n",
             (unsigned long long)(stats.fork_privatisations - before.fork_privatisations), stats.chunks);
      _exit(1);
    }
    _exit(0);
  }
  return wait_status(pid) == 0 && all_bytes(secret, 0x5a, 64);
}

// A signal handler on the registering thread that makes the first secret
// allocation: it cannot wait for its own thread.
static void *g_handler_block;
static int g_handler_errno;
static void allocate_in_handler(int sig) {
  (void)sig;
  int saved = errno;
  g_handler_block = secmem_malloc(32);
  g_handler_errno = errno;
  atomic_store(&g_handler_done, 1);
  errno = saved;
}

// The _Fork child of register_race (secmem's handlers listed, not run for
// that _Fork, the registration not finished): its first allocation, on
// another thread, registers a second set and is held inside it while this
// thread forks. The fork must run one set's handlers, all three (a first
// version switched sets under it: the prepare handler ran, the parent
// handler did not, and the heap lock stayed taken).
static int overlap_in_raw_child(void) {
  g_hold_after = 0;
  atomic_store(&g_registering, 0);
  void *first = NULL;
  pthread_t thread;
  if (pthread_create(&thread, NULL, hold_and_allocate, &first) != 0) return 0;
  for (uint64_t until = now_ns() + 5000000000u; !atomic_load(&g_registering);)
    if (now_ns() > until) return fail("the _Fork child's registration was not seen") == 0;
  pid_t pid = fork();
  if (pid < 0) return 0;
  if (pid == 0) {
    unsigned char *secret = g_api.malloc(64);
    _exit(secret != NULL && child_writes_its_own_copy(secret) ? 0 : 1);
  }
  int status = wait_status(pid);
  pthread_join(thread, NULL);
  if (status != 0) printf("FAIL the fork during the _Fork child's registration: status %d\n", status);
  unsigned char *secret = g_api.malloc(64);
  return status == 0 && first != NULL && secret != NULL && child_writes_its_own_copy(secret);
}

// The same signal handler forks, and the child allocates in it: the child
// registers a set of its own while the loading thread's may not be listed
// yet (unless signals are blocked there), then goes back into that
// registration, and once it is over its forks must run one set.
static int g_fork_in_handler_status = -1;
static void fork_and_allocate_in_handler(int sig) {
  (void)sig;
  int saved = errno;
  pid_t pid = fork();
  if (pid == 0) {
    alarm(10);
    g_in_handler_child = 1;
    unsigned char *secret = secmem_malloc(64);
    if (secret == NULL || !child_writes_its_own_copy(secret)) _exit(1);
    errno = saved;
    return; // (load_and_allocate ends this process)
  }
  g_fork_in_handler_status = pid < 0 ? 255 : wait_status(pid);
  atomic_store(&g_handler_done, 1);
  errno = saved;
}

static int register_race(const char *variant) {
  int overlap = strcmp(variant, "_Fork-overlap") == 0;
  int raw = overlap || strcmp(variant, "_Fork") == 0;
  g_hold_after = raw || strcmp(variant, "after") == 0;
  int forking_handler = strcmp(variant, "signal-fork") == 0;
  int in_handler = g_hold_for_handler = forking_handler || strcmp(variant, "signal") == 0;
  void *first = NULL;
  pthread_t thread;
  if (in_handler) signal(SIGUSR1, forking_handler ? fork_and_allocate_in_handler : allocate_in_handler);
  if (pthread_create(&thread, NULL, load_and_allocate, &first) != 0) return fail("pthread_create");
  if (in_handler) {
    alarm(10);
    pthread_join(thread, NULL);
    alarm(0);
    if (!atomic_load(&g_handler_done)) return fail("the signal handler did not run");
    if (forking_handler && g_fork_in_handler_status != 0) {
      printf("FAIL the child forked by the signal handler: status %d\n", g_fork_in_handler_status);
      return 1;
    }
    // Signals are blocked while the set is listed: the handler runs when
    // they are let through, before the registration is marked done (NULL,
    // ENOMEM: its own thread's), or after (a block).
    if (!forking_handler && g_handler_block == NULL && g_handler_errno != ENOMEM) {
      printf("FAIL the handler's allocation: NULL, errno %d (expected ENOMEM)\n", g_handler_errno);
      return 1;
    }
    if (g_handler_block != NULL) {
      memset(g_handler_block, 0x33, 32);
      secmem_free(g_handler_block);
    }
    unsigned char *secret = secmem_malloc(64);
    if (first == NULL || secret == NULL || !child_writes_its_own_copy(secret)) {
      printf("FAIL the heap after the load: the loading thread's block %p, the next %p (errno %d)\n", first,
             (void *)secret, errno);
      return 1;
    }
    secmem_free(secret);
    secmem_free(first);
    printf("register-race: ok\n");
    return 0;
  }
  for (uint64_t until = now_ns() + 5000000000u; !atomic_load(&g_registering);)
    if (now_ns() > until) return fail("no registration seen (libsecmem was loaded already: run fork_edges_late)");
  pid_t pid = raw ? _Fork() : fork();
  if (pid < 0) return fail("fork");
  if (pid == 0) {
    alarm(10);
    if (overlap) _exit(overlap_in_raw_child() ? 0 : 1);
    unsigned char *secret = g_api.malloc(64);
    if (secret == NULL) {
      printf("FAIL the child's first allocation failed (errno %d)\n", errno);
      _exit(1);
    }
    if (!child_writes_its_own_copy(secret)) {
      printf("FAIL the child's child wrote the child's secret\n");
      _exit(1);
    }
    g_api.free(secret);
    _exit(0);
  }
  int status = wait_status(pid);
  pthread_join(thread, NULL);
  if (status != 0) {
    printf("FAIL child forked during the registration: status %d\n", status);
    return 1;
  }
  if (first == NULL) return fail("the loading thread's allocation");
  unsigned char *secret = secmem_malloc(64);
  if (secret == NULL || !child_writes_its_own_copy(secret)) return fail("the parent's child wrote the parent's secret");
  secmem_free(secret);
  secmem_free(first);
  printf("register-race: ok\n");
  return 0;
}

// ---- init-race ----

static atomic_int g_starting;

static void *first_use(void *arg) {
  (void)arg;
  atomic_store(&g_starting, 1);
  void *p = secmem_malloc(32);
  secmem_free(p);
  return NULL;
}

// One round in a fresh process: returns the grandchild's status.
static int init_race_round(uint64_t delay_ns) {
  pthread_t thread;
  pthread_create(&thread, NULL, first_use, NULL);
  while (!atomic_load(&g_starting)) {}
  uint64_t until = now_ns() + delay_ns;
  while (now_ns() < until) {}
  pid_t pid = fork();
  if (pid == 0) {
    alarm(10);
    char *p = secmem_malloc(64);
    if (p == NULL) {
      int err = errno;
      struct secmem_stats stats;
      secmem_get_stats(&stats);
      printf("init-race child: secmem_malloc failed (errno %d, backend %s, chunks failed %llu)\n", err, stats.backend,
             (unsigned long long)stats.failed_chunks);
      fflush(stdout);
      _exit(2);
    }
    memset(p, 0x5a, 64);
    secmem_free(p);
    _exit(0);
  }
  int status = wait_status(pid);
  pthread_join(thread, NULL);
  return status;
}

static int init_race(int rounds) {
  // How long a start-up takes here, measured in a throwaway process.
  int pipefd[2];
  if (pipe(pipefd) != 0) return fail("pipe");
  pid_t probe = fork();
  if (probe == 0) {
    uint64_t start = now_ns();
    secmem_free(secmem_malloc(32));
    uint64_t took = now_ns() - start;
    if (write(pipefd[1], &took, sizeof took) != sizeof took) _exit(1);
    _exit(0);
  }
  uint64_t init_ns = 0;
  if (read(pipefd[0], &init_ns, sizeof init_ns) != sizeof init_ns) return fail("no start-up time");
  wait_status(probe);
  int failed = 0;
  for (int i = 0; i < rounds; ++i) {
    uint64_t delay = (uint64_t)i * (init_ns + init_ns / 2) / (uint64_t)rounds;
    pid_t pid = fork();
    if (pid == 0) _exit(init_race_round(delay));
    int status = wait_status(pid);
    if (status != 0) {
      printf("round %d (fork %llu ns into a %llu ns start-up): child status %d\n", i, (unsigned long long)delay,
             (unsigned long long)init_ns, status);
      failed++;
    }
  }
  printf("init-race: %d rounds, %d failed, start-up %llu ns\n", rounds, failed, (unsigned long long)init_ns);
  return failed == 0 ? 0 : 1;
}

// ---- signal-fork ----

// handler on SIGALRM (sa_flags flags), every interval_us from now on, until stop_alarms.
static void alarm_every(void (*handler)(int), int flags, long interval_us) {
  struct sigaction action;
  memset(&action, 0, sizeof action);
  action.sa_handler = handler;
  action.sa_flags = flags;
  sigaction(SIGALRM, &action, NULL);
  struct itimerval timer = {{0, interval_us}, {0, interval_us}};
  setitimer(ITIMER_REAL, &timer, NULL);
}

static void stop_alarms(void) {
  struct itimerval off = {{0, 0}, {0, 0}};
  setitimer(ITIMER_REAL, &off, NULL);
}

static char *g_keep;
static volatile sig_atomic_t g_forks, g_bad, g_last_status, g_last_keep;
static volatile unsigned long g_ops, g_ops_at_fork;

static void fork_from_handler(int sig) {
  (void)sig;
  if (g_ops == g_ops_at_fork) return; // forks that take longer than the timer must not starve the loop
  g_ops_at_fork = g_ops;
  int saved = errno;
  pid_t pid = fork();
  if (pid == 0) {
    memset(g_keep, 'c', 64); // the child's own copy
    _exit(0);
  }
  if (pid > 0) {
    int status = wait_status(pid);
    if (status != 0 || !all_bytes(g_keep, 'K', 64)) {
      g_bad++;
      g_last_status = status;
      g_last_keep = g_keep[0];
    }
    g_forks++;
  }
  errno = saved;
}

static int signal_fork(int seconds) {
  g_keep = secmem_malloc(64);
  memset(g_keep, 'K', 64);
  alarm_every(fork_from_handler, 0, 700);
  // The seconds asked for, and up to ten times as long until 20 forks were
  // made: a sanitizer's build on a loaded machine made 18 in 3 s.
  uint64_t until = now_ns() + (uint64_t)seconds * 1000000000u;
  uint64_t give_up = now_ns() + (uint64_t)seconds * 10000000000u;
  unsigned long dirty = 0;
  unsigned seed = 1;
  for (uint64_t t = now_ns(); t < until || (g_forks < 20 && t < give_up); t = now_ns()) {
    size_t size = (rand_r(&seed) % 8 == 0) ? 20000 + rand_r(&seed) % 100000 : 16 + rand_r(&seed) % 3000;
    unsigned char *p = secmem_calloc(1, size);
    if (p == NULL) return fail("calloc");
    if (!all_bytes(p, 0, size)) dirty++;
    memset(p, 0x33, size);
    secmem_free(p);
    g_ops++;
  }
  stop_alarms();
  printf("signal-fork: %lu operations, %d forks, %d bad children or copies (last: status %d, parent's block '%c'), "
         "%lu dirty blocks\n",
         g_ops, (int)g_forks, (int)g_bad, (int)g_last_status, (char)g_last_keep, dirty);
  return g_bad == 0 && dirty == 0 && g_forks >= 20 ? 0 : 1;
}

// ---- signal-fork-continue ----
//
// As signal-fork, but the child returns from the handler: the operation the
// signal interrupted finishes in the child, which then goes on for
// kContinueRounds rounds of the same loop (large blocks of 2 to 17 pages,
// resized, their pages made and given back with guards moving) and exits 0.
// The heap's record of each page's protection and the pages themselves must
// agree in the child: a run over a former guard page whose protection had
// been changed for the parent but not yet recorded at the fork came back in
// the child with the guard in its middle (10-29% of children died in
// memset or memcpy, single-threaded, with thread caches).

enum { kContinueRounds = 50 };
static volatile sig_atomic_t g_in_child;

static void fork_and_continue(int sig) {
  (void)sig;
  if (g_ops == g_ops_at_fork) return;
  g_ops_at_fork = g_ops;
  int saved = errno;
  pid_t pid = fork();
  if (pid == 0) {
    g_in_child = 1; // the interrupted operation and kContinueRounds more follow
    errno = saved;
    return;
  }
  if (pid > 0) {
    int status = wait_status(pid);
    if (status != 0) {
      g_bad++;
      g_last_status = status;
    }
    g_forks++;
  }
  errno = saved;
}

// no_fds: every descriptor is taken first, so that no fork has a pipe for
// the child's copies, and the parent copies its chunks itself, protections
// perhaps halfway changed by the operation its handler interrupted (it read
// a page recorded read-write whose mprotect had not yet run: SIGSEGV).
// One round of the loop: a large block allocated (zero), written, resized
// (its bytes kept) and freed; false (with a line) if the heap refused.
static int large_round(unsigned *seed, unsigned long *dirty) {
  size_t size = 8192 + rand_r(seed) % 60000;
  unsigned char *p = secmem_calloc(1, size);
  if (p == NULL) return fail("calloc") == 0;
  if (!all_bytes(p, 0, size)) ++*dirty;
  memset(p, 0x44, size);
  size_t bigger = 8192 + rand_r(seed) % 70000;
  unsigned char *q = secmem_realloc(p, bigger);
  if (q == NULL) return fail("realloc") == 0;
  if (!all_bytes(q, 0x44, size < bigger ? size : bigger)) ++*dirty;
  secmem_free(q);
  g_ops++;
  return 1;
}

// Takes every descriptor there is, and gives them back (LeakSanitizer's
// check at exit reads /proc).
static int g_taken_fds[1 << 20];
static int g_taken_count;
static void take_every_fd(void) {
  struct rlimit files;
  if (getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur > 1024) { // a few to take, not a million
    files.rlim_cur = 1024;
    setrlimit(RLIMIT_NOFILE, &files);
  }
  int fd;
  while (g_taken_count < (1 << 20) && (fd = open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0)
    g_taken_fds[g_taken_count++] = fd;
}
static void give_back_fds(void) {
  while (g_taken_count > 0) close(g_taken_fds[--g_taken_count]);
}

static int signal_fork_continue(int seconds, int no_fds) {
  if (no_fds) {
    secmem_free(secmem_malloc(20000)); // the heap and its first chunk, while descriptors are free
    take_every_fd();
  }
  alarm_every(fork_and_continue, SA_RESTART, 20000);
  // As in signal-fork: up to ten times the seconds until 20 forks.
  uint64_t until = now_ns() + (uint64_t)seconds * 1000000000u;
  uint64_t give_up = now_ns() + (uint64_t)seconds * 10000000000u;
  unsigned seed = 99;
  int left = -1;
  unsigned long dirty = 0;
  for (uint64_t t = now_ns(); t < until || (g_forks < 20 && t < give_up) || g_in_child; t = now_ns()) {
    if (!large_round(&seed, &dirty)) return 1;
    if (g_in_child) {
      if (left < 0) left = kContinueRounds;
      if (--left == 0) _exit(dirty == 0 ? 0 : 3);
    }
  }
  stop_alarms();
  give_back_fds();
  printf("signal-fork-continue: %lu operations, %d forks, %d children failed (last: status %d), %lu dirty blocks\n",
         g_ops, (int)g_forks, (int)g_bad, (int)g_last_status, dirty);
  return g_bad == 0 && dirty == 0 && g_forks >= 20 ? 0 : 1;
}

// ---- signal-fork-new-chunk ----
//
// A fork from a SIGALRM handler that lands while the heap makes a chunk (a
// huge block's, each one new: the previous is freed first, its chunk given
// back). The child returns from the handler, the interrupted allocation
// finishes in both, and each writes its own byte into the block it got and
// into two more it makes, in turn (pipes): each must find its own bytes.
// The chunk was mapped but not yet listed when such a fork came, and the
// child, whose copies go by the list, kept the parent's memfd_secret
// mapping: shared, each wrote over the other's block (all 20 rounds of
// 3 MB blocks). Unless SECMEM_BACKEND=mlock (private mappings: never
// shared, the run checks the child goes on), the blocks must be in
// memfd_secret. Rounds go on until F forks landed inside an allocation (up
// to 4 F rounds).

enum { kNewChunkBlock = 3000000 };
static int in_secret_mapping(const void *p);
static volatile sig_atomic_t g_in_alloc, g_chunk_forked, g_fork_in_alloc;
static volatile pid_t g_chunk_child;

static void fork_while_making_chunks(int sig) {
  (void)sig;
  int saved = errno;
  g_fork_in_alloc = g_in_alloc;
  g_chunk_forked = 1;
  g_chunk_child = fork();
  errno = saved;
}

// 0: this process's blocks held its own bytes; else 1 (a line said which).
static int own_bytes(unsigned char **blocks, int n, unsigned char mine) {
  for (int i = 0; i < n; ++i)
    if (!all_bytes(blocks[i], mine, kNewChunkBlock)) {
      printf("signal-fork-new-chunk: %s's block %d of %d (%p) holds the other process's bytes\n",
             mine == 'c' ? "the child" : "the parent", i, n, (void *)blocks[i]);
      return 1;
    }
  return 0;
}

static int new_chunk_round(long delay_us, int *inside) {
  int to_parent[2], to_child[2];
  if (pipe(to_parent) != 0 || pipe(to_child) != 0) return fail("pipe");
  struct sigaction action;
  memset(&action, 0, sizeof action);
  action.sa_handler = fork_while_making_chunks;
  action.sa_flags = SA_RESTART;
  sigaction(SIGALRM, &action, NULL);
  g_chunk_forked = g_fork_in_alloc = 0;
  g_chunk_child = -1;
  struct itimerval once = {{0, 0}, {0, delay_us}};
  setitimer(ITIMER_REAL, &once, NULL);
  unsigned char *blocks[3] = {NULL, NULL, NULL};
  // Until the fork and a block: on a loaded machine the signal can come
  // before the first allocation (the round then counts as not inside one).
  while (!g_chunk_forked || blocks[0] == NULL) {
    secmem_free(blocks[0]);
    g_in_alloc = 1;
    blocks[0] = secmem_malloc(kNewChunkBlock);
    g_in_alloc = 0;
    if (blocks[0] == NULL) {
      if (g_chunk_forked && g_chunk_child == 0) _exit(3);
      return fail("malloc");
    }
  }
  int child = g_chunk_child == 0;
  if (g_chunk_child < 0) return fail("fork");
  // Each keeps only its own ends: a child that dies gives its parent an
  // end of file, not a read that waits for ever.
  close(child ? to_parent[0] : to_parent[1]);
  close(child ? to_child[1] : to_child[0]);
  unsigned char mine = child ? 'c' : 'p', token = 0;
  for (int i = 1; i < 3; ++i)
    if ((blocks[i] = secmem_malloc(kNewChunkBlock)) == NULL) {
      if (child) _exit(3);
      return fail("malloc after the fork");
    }
  if (child) { // first, then the parent writes
    for (int i = 0; i < 3; ++i) memset(blocks[i], mine, kNewChunkBlock);
    if (write(to_parent[1], &token, 1) != 1 || read(to_child[0], &token, 1) != 1) _exit(4);
    _exit(own_bytes(blocks, 3, mine));
  }
  int ok = read(to_parent[0], &token, 1) == 1;
  // Where the backend is memfd_secret (the case that was shared), the
  // blocks must be in it, or the round tests nothing.
  const char *backend = getenv("SECMEM_BACKEND");
  if (backend == NULL || strcmp(backend, "mlock") != 0)
    for (int i = 0; i < 3; ++i)
      if (in_secret_mapping(blocks[i]) != 1) {
        printf("signal-fork-new-chunk: block %d (%p) is not in a secretmem mapping\n", i, (void *)blocks[i]);
        ok = 0;
      }
  for (int i = 0; i < 3; ++i) memset(blocks[i], mine, kNewChunkBlock);
  ok = ok && write(to_child[1], &token, 1) == 1;
  int status = wait_status(g_chunk_child);
  int bad = !ok || own_bytes(blocks, 3, mine) || status != 0;
  if (status != 0) printf("signal-fork-new-chunk: a child exited with %d\n", status);
  for (int i = 0; i < 3; ++i) secmem_free(blocks[i]);
  close(to_parent[0]);
  close(to_child[1]);
  *inside += g_fork_in_alloc;
  return bad;
}

static int signal_fork_new_chunk(int forks) {
  int bad = 0, inside = 0, round = 0;
  for (; inside < forks && round < forks * 4; ++round) bad += new_chunk_round(300 + round * 137 % 2000, &inside);
  printf("signal-fork-new-chunk: %d rounds, %d forks inside an allocation, %d bad\n", round, inside, bad);
  return bad == 0 && inside >= forks ? 0 : 1;
}

// ---- mprotect-window ----
//
// The same, with the signal delivered exactly where it hurts: a seccomp
// filter traps (SIGSYS) every mprotect that makes whole pages read-write,
// and the handler forks there (the first `forks` times), between the heap's
// record of the change (protection::set records first) and the kernel's
// change, then makes the call itself (one byte short: the kernel rounds the
// length up to pages, and the filter lets it through). Every child goes on
// for kContinueRounds rounds and exits 0; the parent, which the fork copy
// must not fault (no-fds: no descriptor is free, so the parent copies its
// chunks itself), goes on too. Each round also writes and reads a sealed
// block in access scopes. x86-64 (the handler reads the call's registers).

#if defined(__x86_64__)
static volatile sig_atomic_t g_window_forks_left;
// The calls trapped: whole pages, less than 256 KiB, not from the start of a
// chunk (a block's run, not a whole chunk, which secmem's fork handlers open
// with signals blocked: a trapped call there kills the process, SIGSYS being
// blocked). The prepare handler also opens freed runs' guards (whole pages,
// read-write), but not in these forks: each comes from a handler that
// interrupted the heap, where the pool is left as it is.
static const uint64_t kTrappedLengths = 0x3f000;

static void mprotect_trap(int sig, siginfo_t *info, void *context) {
  (void)sig;
  (void)info;
  greg_t *regs = ((ucontext_t *)context)->uc_mcontext.gregs;
  int saved = errno;
  if (!g_in_child && g_window_forks_left > 0) {
    g_window_forks_left--;
    pid_t pid = fork();
    if (pid == 0) {
      g_in_child = 1;
    } else if (pid > 0) {
      int status = wait_status(pid);
      if (status != 0) {
        g_bad++;
        g_last_status = status;
      }
      g_forks++;
    }
  }
  long done = syscall(SYS_mprotect, regs[REG_RDI], regs[REG_RSI] - 1, regs[REG_RDX]);
  regs[REG_RAX] = done == -1 ? -errno : done;
  errno = saved;
}

// A sealed block written and read in access scopes (each opening is an
// mprotect the filter traps), then freed.
static int sealed_round(unsigned long *dirty) {
  unsigned char *key = secmem_sealed_alloc(100);
  if (key == NULL) return fail("secmem_sealed_alloc") == 0;
  if (secmem_access_begin(key, SECMEM_WRITE) != 0) return fail("secmem_access_begin") == 0;
  if (!all_bytes(key, 0, 100)) ++*dirty;
  memset(key, 0x55, 100);
  if (secmem_access_end(key, SECMEM_WRITE) != 0 || secmem_access_begin(key, SECMEM_READ) != 0)
    return fail("access scopes") == 0;
  if (!all_bytes(key, 0x55, 100)) ++*dirty;
  if (secmem_access_end(key, SECMEM_READ) != 0) return fail("secmem_access_end") == 0;
  secmem_free(key);
  return 1;
}

static int mprotect_window(int forks, int no_fds) {
  unsigned seed = 7;
  unsigned long dirty = 0;
  if (!large_round(&seed, &dirty)) return 1; // the heap started, before the filter
  struct sigaction action;
  memset(&action, 0, sizeof action);
  action.sa_sigaction = mprotect_trap;
  action.sa_flags = SA_SIGINFO;
  if (sigaction(SIGSYS, &action, NULL) != 0) return fail("sigaction");
  scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
  if (ctx == NULL) return fail("seccomp");
  for (int bit = 12; bit < 21; ++bit) // an address with one of these bits set: not a chunk's start
    if (seccomp_rule_add(
            ctx, SCMP_ACT_TRAP, SCMP_SYS(mprotect), 3, SCMP_A0(SCMP_CMP_MASKED_EQ, 1ull << bit, 1ull << bit),
            SCMP_A1(SCMP_CMP_MASKED_EQ, ~kTrappedLengths, 0), SCMP_A2(SCMP_CMP_EQ, PROT_READ | PROT_WRITE)) != 0)
      return fail("seccomp_rule_add");
  if (seccomp_load(ctx) != 0) return fail("seccomp_load");
  seccomp_release(ctx);
  // With no descriptor free, a parent on memfd_secret stages each child's
  // copy itself, in anonymous memory (no file can be made): the child's
  // heap is then on a weaker tier, which shows that path was taken.
  int parent_stages = no_fds && strcmp(secmem_backend_name(), "memfd_secret") == 0;
  if (no_fds) take_every_fd();
  g_window_forks_left = forks;
  uint64_t until = now_ns() + 60ull * 1000000000u;
  int left = -1;
  while ((g_window_forks_left > 0 && now_ns() < until) || g_in_child) {
    if (!large_round(&seed, &dirty) || !sealed_round(&dirty)) return 1;
    if (g_in_child) {
      if (left < 0) left = kContinueRounds;
      if (--left == 0)
        _exit(dirty != 0 ? 3 : parent_stages && strcmp(secmem_backend_name(), "memfd_secret") == 0 ? 4 : 0);
    }
  }
  for (int i = 0; i < kContinueRounds; ++i)
    if (!large_round(&seed, &dirty)) return 1;
  give_back_fds();
  printf("mprotect-window: %lu operations, %d forks inside the heap's mprotect, %d children failed (last: status %d), "
         "%lu dirty blocks\n",
         g_ops, (int)g_forks, (int)g_bad, (int)g_last_status, dirty);
  return g_bad == 0 && dirty == 0 && g_forks == forks ? 0 : 1;
}
#else
static int mprotect_window(int forks, int no_fds) {
  (void)forks;
  (void)no_fds;
  return fail("mprotect-window reads x86-64 registers");
}
#endif

// ---- refused ----
//
// A seccomp filter that refuses fstat (newfstatat on a descriptor, EPERM),
// as an allow-list written for fstat alone does under glibc 2.33 and later,
// mprotect, or both, installed once the heap has forked with staging files
// (or, with "early", before its first fork). Without mprotect the copy of a
// chunk cannot open the large block's guard pages: the parent, which
// stages each child's copy itself where it cannot fstat, read them anyway
// and died of SIGSEGV (at the first fork, or at the second where the failed
// re-protection had recorded the guards read-write); a child that copies
// for itself, likewise. secmem tells its own descriptors (staging files,
// the message socket, the pipes a child that copies for itself answers on)
// from others by their fstat identity: unknown, they counted as changed. N
// forks, each child checking the parent's blocks, writing its own and
// exiting; the parent's blocks stay whole, no fork waits for a child, and
// the parent's open descriptors do not grow.

// Forks before the filter (none when early): staging files are made then.
static int forks_before_filter(int early) {
  for (int i = 0; i < (early ? 0 : 3); ++i) {
    pid_t pid = fork();
    if (pid == 0) _exit(0);
    if (pid < 0 || wait_status(pid) != 0) return 0;
  }
  return 1;
}

// fstat (newfstatat on a descriptor, and fstat), mprotect, or both, refused with EPERM.
static int refuse_calls(int refuse_fstat, int refuse_mprotect) {
  scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
  int ok = ctx != NULL &&
           (!refuse_fstat || (seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(newfstatat), 1,
                                               SCMP_A3(SCMP_CMP_EQ, AT_EMPTY_PATH)) == 0 &&
                              seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(fstat), 0) == 0)) &&
           (!refuse_mprotect || seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(mprotect), 0) == 0) &&
           seccomp_load(ctx) == 0;
  if (ctx != NULL) seccomp_release(ctx);
  return ok;
}

static int open_fd_count(void) {
  int count = 0;
  for (int fd = 0; fd < 1024; ++fd) count += fcntl(fd, F_GETFD) != -1;
  return count;
}

// With "sealed" (and mprotect refused), a sealed block in the parent's heap
// too: on memfd_secret no copy can read it, and every child stops with a
// line (status 134, counted); on the mlock tier the child's copy-on-write
// pages hold it, and children go on.
static int sealed_children_stopped(int forks, int early, int refuse_fstat) {
  unsigned char *key = secmem_sealed_alloc(100);
  if (key == NULL || secmem_access_begin(key, SECMEM_WRITE) != 0) return fail("secmem_sealed_alloc");
  memset(key, 0x5a, 100);
  if (secmem_access_end(key, SECMEM_WRITE) != 0) return fail("secmem_access_end");
  if (!forks_before_filter(early)) return fail("fork before the filter");
  if (!refuse_calls(refuse_fstat, 1)) return fail("seccomp filter");
  int memfd = strcmp(secmem_backend_name(), "memfd_secret") == 0, stopped = 0, lived = 0;
  for (int i = 0; i < forks; ++i) {
    alarm(20);
    pid_t pid = fork();
    if (pid == 0) _exit(0);
    if (pid < 0) return fail("fork");
    int status = wait_status(pid);
    stopped += status == 128 + SIGABRT;
    lived += status == 0;
  }
  printf("refused: sealed: %d forks on %s, %d children stopped, %d lived\n", forks, secmem_backend_name(), stopped,
         lived);
  fflush(stdout);
  _exit(memfd ? (stopped == forks ? 0 : 1) : (lived == forks ? 0 : 1)); // (LeakSanitizer: below)
}

static int calls_refused(int forks, int early, int refuse_fstat, int refuse_mprotect) {
  enum { kSmall = 96, kLarge = 70000 };
  char *small = secmem_malloc(kSmall), *large = secmem_malloc(kLarge);
  if (small == NULL || large == NULL) return fail("secmem_malloc");
  memset(small, 'p', kSmall);
  memset(large, 'P', kLarge);
  if (!forks_before_filter(early)) return fail("fork before the filter");
  if (!refuse_calls(refuse_fstat, refuse_mprotect)) return fail("seccomp filter");
  int fds_before = -1;
  uint64_t slowest = 0;
  for (int i = 0; i < forks; ++i) {
    alarm(20);
    uint64_t start = now_ns();
    pid_t pid = fork();
    if (pid == 0) {
      int ok = all_bytes(small, 'p', kSmall) && all_bytes(large, 'P', kLarge);
      memset(small, 'c', kSmall);
      memset(large, 'C', kLarge);
      char *mine = secmem_malloc(kLarge);
      ok = ok && mine != NULL && all_bytes(mine, 0, kLarge);
      // The parent's block's run again, guard pages and all, in blocks of
      // other sizes (where mprotect is refused, the former guards stay out
      // of use: chunks/chunk_pool.cpp, keep_closed_pages_out).
      secmem_free(large);
      for (int k = 0; k < 16 && ok; ++k) {
        size_t size = k < 8 ? 4096 : 4096 + (size_t)(k - 8) * 16384;
        char *again = secmem_malloc(size);
        ok = again != NULL && all_bytes(again, 0, size);
        if (again != NULL) memset(again, 'c', size);
      }
      if (refuse_fstat) usleep(800000); // alive while the parent goes on: fork must not wait for it
      _exit(ok ? 0 : 1);
    }
    if (pid < 0) return fail("fork");
    uint64_t took = now_ns() - start;
    if (took > slowest) slowest = took;
    int status = wait_status(pid);
    if (status != 0) {
      printf("refused: child %d exited with status %d\n", i, status);
      return 1;
    }
    if (!all_bytes(small, 'p', kSmall) || !all_bytes(large, 'P', kLarge))
      return fail("the child wrote the parent's blocks");
    if (i == 1) fds_before = open_fd_count(); // after the first forks have made what they keep
  }
  int fds_after = open_fd_count();
  printf("refused: %d forks, the slowest %llu ms, open descriptors %d then %d\n", forks,
         (unsigned long long)(slowest / 1000000), fds_before, fds_after);
  // Well under the child's 800 ms: a fork that waited for its child took
  // that long; a slow one does not (384 ms under ASan beside another suite).
  int result = slowest < 600000000ull && fds_after <= fds_before ? 0 : 1;
  // LeakSanitizer's check at exit stops the world with an mprotect of its
  // own, which this filter refuses (a CHECK failure): not secmem's.
  fflush(stdout);
  if (refuse_mprotect) _exit(result);
  return result;
}

// ---- reentered-without-pipe ----
//
// fork_edges_late: a prepare handler registered before secmem's (it runs
// after secmem's copy, before the kernel's fork) writes a new block, under a
// filter that refuses fstat: no pipe can be had for the child to copy for
// itself, so the copy the parent took before that write is stale, and every
// child must stop with a line (status 134) rather than go on with it (its
// heap's bookkeeping, copied by the kernel, names a block the copy does not
// hold). On the mlock tier nothing is copied: children go on.

static char *g_written_in_prepare;

static void prepare_writes(void) {
  secmem_free(g_written_in_prepare);
  g_written_in_prepare = secmem_malloc(48);
  if (g_written_in_prepare != NULL) memset(g_written_in_prepare, 'W', 48);
}

static int reentered_without_pipe(int forks) {
  if (pthread_atfork(prepare_writes, NULL, NULL) != 0) return fail("pthread_atfork");
  char *kept = secmem_malloc(64);
  if (kept == NULL) return fail("secmem_malloc");
  memset(kept, 'K', 64);
  if (!refuse_calls(1, 0)) return fail("seccomp filter");
  int memfd = strcmp(secmem_backend_name(), "memfd_secret") == 0, stopped = 0, whole = 0;
  for (int i = 0; i < forks; ++i) {
    alarm(20);
    pid_t pid = fork();
    if (pid == 0)
      _exit(g_written_in_prepare != NULL && all_bytes(g_written_in_prepare, 'W', 48) && all_bytes(kept, 'K', 64) ? 0
                                                                                                                 : 1);
    if (pid < 0) return fail("fork");
    int status = wait_status(pid);
    stopped += status == 128 + SIGABRT;
    whole += status == 0;
  }
  printf("reentered-without-pipe: %d forks on %s, %d children stopped, %d whole\n", forks, secmem_backend_name(),
         stopped, whole);
  return memfd ? (stopped == forks ? 0 : 1) : (whole == forks ? 0 : 1);
}

// ---- signal-reenter ----
//
// A SIGALRM handler that allocates and frees, every 50 us, while the main
// thread allocates, resizes and frees large blocks (under the heap lock, or
// in its cache): once the handler lands inside a locked operation its call
// would wait for its own thread for ever, and inside an operation on the
// thread's cache it would find the cache halfway through a change (a block
// freed twice); it aborts with one line instead. Exits 0 only if that never
// happened in S seconds.

static volatile sig_atomic_t g_handler_calls;

static void allocate_from_handler(int sig) {
  (void)sig;
  int saved = errno;
  void *p = secmem_malloc(20000 + (size_t)(g_handler_calls % 50000));
  secmem_free(p);
  g_handler_calls++;
  errno = saved;
}

static int signal_reenter(int seconds) {
  alarm_every(allocate_from_handler, SA_RESTART, 50);
  uint64_t until = now_ns() + (uint64_t)seconds * 1000000000u;
  unsigned long rounds = 0;
  while (now_ns() < until) {
    void *p = secmem_malloc(8192 + (rounds * 4096) % 200000);
    void *q = secmem_realloc(p, 100 + (rounds * 777) % 300000);
    secmem_free(q);
    rounds++;
  }
  printf("signal-reenter: %lu rounds, %d handler calls, never inside a locked operation\n", rounds,
         (int)g_handler_calls);
  return 0;
}

// ---- exit-during-fork ----
//
// Threads that used the heap exit all the time (each in its key destructor,
// retiring its cache, which waits for the heap lock a fork holds) while the
// main thread forks; each child returns through exit(), which runs
// libsecmem's destructor: it waits for threads still retiring their caches,
// and must not wait for ones the child does not have (children hung in
// exit() for ever when the parent's count came with them).

static atomic_int g_churn_stop;

static void *short_lived(void *arg) {
  (void)arg;
  void *p = secmem_malloc(16 + (size_t)(rand() % 20000));
  secmem_free(p);
  return NULL;
}

static void *spawn_short_lived(void *arg) {
  (void)arg;
  while (!atomic_load(&g_churn_stop)) {
    pthread_t threads[4];
    for (int i = 0; i < 4; i++) pthread_create(&threads[i], NULL, short_lived, NULL);
    for (int i = 0; i < 4; i++) pthread_join(threads[i], NULL);
  }
  return NULL;
}

static int exit_during_fork(int seconds) {
  void *held = secmem_malloc(64); /* the heap has pages to copy */
  pthread_t spawner;
  pthread_create(&spawner, NULL, spawn_short_lived, NULL);
  uint64_t until = now_ns() + (uint64_t)seconds * 1000000000u;
  int forks = 0, bad = 0;
  while (now_ns() < until) {
    pid_t pid = fork();
    if (pid == 0) exit(0); /* destructors run: libsecmem's unload among them */
    if (pid < 0) return fail("fork");
    if (wait_status(pid) != 0) bad++;
    forks++;
  }
  atomic_store(&g_churn_stop, 1);
  pthread_join(spawner, NULL);
  secmem_free(held);
  printf("exit-during-fork: %d forks while threads exited, %d children failed\n", forks, bad);
  return bad == 0 && forks >= 1 ? 0 : 1; /* about 2,300 in 3 s; 3 under ThreadSanitizer, whose forks are slow */
}

// ---- fork-in-own-fork ----

// Forks from a signal handler that lands on the forking thread while it runs
// secmem's own fork handlers (another process sends the signal every few
// hundred microseconds): a few instructions there had the handler's fork
// take the lock for one that an interrupted operation held, and the outer
// fork then never let it go (the next allocation waited for ever). Single
// threaded, as glibc's fork is only then safe to call from a handler that
// interrupts a fork (with threads it takes locks of its own). An alarm that
// each round puts off fails the run when the loop stops moving.
static volatile sig_atomic_t g_own_handler_forks, g_own_bad;
static volatile unsigned g_own_seed = 1;

static void fork_in_own_fork_handler(int sig) {
  (void)sig;
  g_own_seed = g_own_seed * 1103515245u + 12345u;
  if ((g_own_seed >> 16) % 4 != 0) return; // the loop goes on between forks
  int saved = errno;
  pid_t pid = fork();
  if (pid == 0) { // (the handler may have interrupted a heap operation: no allocation here)
    memset(g_keep, 'c', 64);
    _exit(all_bytes(g_keep, 'c', 64) ? 0 : 1);
  }
  if (pid < 0 || wait_status(pid) != 0) g_own_bad++;
  g_own_handler_forks++;
  errno = saved;
}

static void own_fork_hung(int sig) {
  (void)sig;
  static const char said[] = "fork-in-own-fork: the fork loop stopped for 10 s: hung\n";
  if (write(STDOUT_FILENO, said, sizeof said - 1) < 0) _exit(2);
  _exit(1);
}

static int fork_in_own_fork(int seconds) {
  g_keep = secmem_malloc(64);
  if (g_keep == NULL) return fail("malloc");
  memset(g_keep, 'K', 64);
  struct sigaction action;
  memset(&action, 0, sizeof action);
  action.sa_handler = fork_in_own_fork_handler;
  action.sa_flags = SA_RESTART;
  sigaction(SIGUSR1, &action, NULL);
  action.sa_handler = own_fork_hung;
  sigaction(SIGALRM, &action, NULL);
  pid_t parent = getpid(), spammer = fork();
  if (spammer < 0) return fail("fork");
  if (spammer == 0) {
    unsigned seed = 3;
    // Pauses: the kernel restarts a fork while a signal is pending.
    while (getppid() == parent && kill(parent, SIGUSR1) == 0)
      for (volatile unsigned spin = rand_r(&seed) % 200000; spin != 0; --spin) {}
    _exit(0);
  }
  int bad = 0;
  unsigned long rounds = 0;
  for (time_t end = time(NULL) + seconds; time(NULL) < end; ++rounds) {
    alarm(10);
    pid_t pid = fork();
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL); // a child that hangs does not outlive a failed run
      secmem_free(secmem_malloc(100000));
      _exit(all_bytes(g_keep, 'K', 64) ? 0 : 1);
    }
    if (pid < 0 || wait_status(pid) != 0) bad++;
    secmem_free(secmem_malloc(100000)); // takes the heap lock
  }
  alarm(0);
  kill(spammer, SIGKILL);
  wait_status(spammer);
  int whole = all_bytes(g_keep, 'K', 64);
  printf("fork-in-own-fork: %lu forks, %d from the handler, %d bad children, parent's block %s\n", rounds,
         (int)g_own_handler_forks, bad + (int)g_own_bad, whole ? "whole" : "changed");
  return bad == 0 && g_own_bad == 0 && whole && g_own_handler_forks > 0 ? 0 : 1;
}

// ---- reclaim-signal-fork ----

// A thread that allocates and frees small blocks without end, stopped by
// SIGUSR1 wherever the signal lands (often inside a cache operation, its
// gate entered) until g_resume is posted.
static sem_t g_churn_stopped, g_resume;
static atomic_int g_churn_done;
static atomic_long g_churn_allocations;

static void stop_here(int sig) {
  (void)sig;
  int saved = errno;
  sem_post(&g_churn_stopped);
  while (sem_wait(&g_resume) != 0) {}
  errno = saved;
}

// The allocations the two threads below made (not those refused), and that
// each has made its first ones (the main thread waits for it before it
// spends the budget: a thread that a loaded machine started later had all
// its allocations refused, and the count the test expected was 128 + the
// churn's loops too many).
static atomic_long g_idle_allocations;
static atomic_int g_churn_started, g_idle_started;

static void *small_churn(void *arg) {
  (void)arg;
  void *kept = secmem_malloc(16); // its span stays when caches are emptied
  long made = kept != NULL;
  for (int first = 1; !atomic_load(&g_churn_done); first = 0) {
    void *p = secmem_malloc(16);
    made += p != NULL;
    secmem_free(p);
    if (first) atomic_store(&g_churn_started, 1);
  }
  secmem_free(kept);
  atomic_store(&g_churn_allocations, made);
  return NULL;
}

// A thread with blocks in its cache that waits, out of any operation, then
// uses its cache again and exits (its cache goes back).
static atomic_int g_idle_go;
static void *idle_cache(void *arg) {
  (void)arg;
  void *blocks[64];
  long made = 0;
  for (int i = 0; i < 64; ++i) made += (blocks[i] = secmem_malloc(32)) != NULL;
  for (int i = 1; i < 64; ++i) secmem_free(blocks[i]); // the first stays: its span too
  atomic_store(&g_idle_started, 1);
  while (!atomic_load(&g_idle_go)) usleep(1000);
  secmem_free(blocks[0]);
  for (int i = 0; i < 64; ++i) made += (blocks[i] = secmem_malloc(32)) != NULL;
  for (int i = 0; i < 64; ++i) secmem_free(blocks[i]);
  atomic_store(&g_idle_allocations, made);
  return NULL;
}

static void *release_after(void *arg) {
  usleep((useconds_t)(uintptr_t)arg);
  sem_post(&g_resume);
  return NULL;
}

// Run under a spent RLIMIT_MEMLOCK budget (fork_test.cpp: setpriv, prlimit
// --memlock=1048576, SECMEM_ON_EXHAUSTION=fail), in a process that has not
// forked: the main thread fills the budget with 60 KiB blocks and asks for
// one more, which empties every cache first (reclaim_caches: the lock held,
// the gate closed; a third thread keeps blocks in its cache). Another thread, stopped by a signal inside its cache
// operation (most times), holds that reclaim in its wait for 200 ms; at
// 100 ms a SIGALRM on the main thread forks from its handler. The gate
// closed for a reclaim used to look like a fork in progress: the handler's
// fork ran the child's half in the parent, which aborted (no budget for a
// copy of its own heap). Prints whether the reclaim was held (the case
// tested); the exit status says whether all went well.
static int reclaim_signal_fork(void) {
  g_keep = secmem_malloc(64);
  if (g_keep == NULL) return fail("malloc");
  memset(g_keep, 'K', 64);
  sem_init(&g_churn_stopped, 0, 0);
  sem_init(&g_resume, 0, 0);
  struct sigaction action;
  memset(&action, 0, sizeof action);
  action.sa_handler = stop_here;
  sigaction(SIGUSR1, &action, NULL);
  action.sa_handler = fork_from_handler;
  sigaction(SIGALRM, &action, NULL);
  // The threads first: their blocks' spans are made before the budget is spent.
  pthread_t churn, releaser, idle;
  if (pthread_create(&idle, NULL, idle_cache, NULL) != 0) return fail("pthread_create");
  if (pthread_create(&churn, NULL, small_churn, NULL) != 0) return fail("pthread_create");
  while (!atomic_load(&g_idle_started) || !atomic_load(&g_churn_started)) usleep(1000);
  usleep(20000);
  static unsigned char *held[64];
  int n = 0;
  for (; n < 64 && (held[n] = secmem_malloc(60000)) != NULL; ++n) memset(held[n], 0x44, 60000);
  if (n == 64) return fail("the memlock budget was not spent (run me under prlimit --memlock=1048576)");
  usleep(20000); // the other thread back in its loop (the refusal above emptied its cache)
  pthread_kill(churn, SIGUSR1);
  while (sem_wait(&g_churn_stopped) != 0) {}
  g_ops_at_fork = (unsigned long)-1; // the one signal forks wherever it lands
  struct itimerval timer = {{0, 0}, {0, 100000}};
  setitimer(ITIMER_REAL, &timer, NULL);
  if (pthread_create(&releaser, NULL, release_after, (void *)(uintptr_t)200000) != 0) return fail("pthread_create");
  uint64_t start = now_ns();
  void *more = secmem_malloc(60000); // refused: the caches are emptied first
  uint64_t took_ms = (now_ns() - start) / 1000000;
  while (g_forks == 0 && now_ns() - start < 5000000000u) usleep(1000);
  atomic_store(&g_churn_done, 1);
  atomic_store(&g_idle_go, 1);
  pthread_join(releaser, NULL);
  pthread_join(churn, NULL);
  pthread_join(idle, NULL);
  int intact = 1;
  for (int i = 0; i < n; ++i) intact = intact && all_bytes(held[i], 0x44, 60000);
  for (int i = 0; i < n; ++i) secmem_free(held[i]);
  unsigned char *again = secmem_calloc(1, 60000); // the heap still works, and gives zeroed blocks
  int zero = again != NULL && all_bytes(again, 0, 60000);
  // Every allocation counted once: a cache retired under its living thread
  // (the child's half run in the parent did that) loses or doubles counts.
  struct secmem_stats stats;
  secmem_get_stats(&stats);
  uint64_t made = 1 + (uint64_t)n + (more != NULL) + (again != NULL) + (uint64_t)atomic_load(&g_idle_allocations) +
                  (uint64_t)atomic_load(&g_churn_allocations);
  int counted = stats.allocations == made;
  printf("reclaim-signal-fork: the reclaim %s (%lu ms), %d forks, %d bad children or copies (last: status %d, "
         "parent's block '%c'), blocks intact %d, the next block zero %d, %llu allocations counted of %llu\n",
         took_ms >= 150 ? "held" : "not held", (unsigned long)took_ms, (int)g_forks, (int)g_bad, (int)g_last_status,
         (char)g_last_keep, intact, zero, (unsigned long long)stats.allocations, (unsigned long long)made);
  return more == NULL && g_bad == 0 && g_forks == 1 && intact && zero && counted && all_bytes(g_keep, 'K', 64) ? 0 : 1;
}

// ---- atfork-order ----

static char *g_parent_block, *g_prepare_block, *g_parent_large, *g_parent_huge, *g_parent_resized;
static char *g_prepare_large;
static int g_fork_round;
#define LARGE_BLOCK 30001
#define HUGE_BLOCK (5u << 20)

// The fork staging files' mappings (secretmem, left out of children: "dc"
// in smaps) that are open to reads or writes. secmem closes them again as
// soon as the copy is in them, before the kernel's fork: every handler that
// runs after secmem's prepare handler finds them PROT_NONE. -1: smaps
// cannot be read.
static int g_open_staging, g_staging_seen;
static int open_staging_mappings(void) {
  FILE *smaps = fopen("/proc/self/smaps", "r");
  if (smaps == NULL) return 1; // cannot tell: counted as open
  char line[512], perms[8] = "";
  int secret = 0, open = 0;
  while (fgets(line, sizeof line, smaps) != NULL) {
    unsigned long start, end;
    if (sscanf(line, "%lx-%lx %7s", &start, &end, perms) == 3) {
      secret = strstr(line, "/secretmem") != NULL;
      continue;
    }
    if (!secret || strncmp(line, "VmFlags:", 8) != 0 || strstr(line, " dc") == NULL) continue;
    g_staging_seen++;
    open += perms[0] == 'r' || perms[1] == 'w';
  }
  fclose(smaps);
  return open;
}

static void early_prepare(void) { // runs after secmem's prepare handler (registered before it)
  if (open_staging_mappings() != 0) g_open_staging++;
  secmem_free(g_prepare_large); // zeroed after secmem staged the child's copy: it must be free and zero there
  g_prepare_large = NULL;
  secmem_free(g_prepare_block);
  g_prepare_block = secmem_malloc(48);
  if (g_prepare_block != NULL) memset(g_prepare_block, 'Q', 48);
}

static void early_parent(void) { // runs before secmem's parent handler, after the fork
  if (open_staging_mappings() != 0) g_open_staging++;
  secmem_free(secmem_malloc(40));
}

static void early_child(void) { // runs before secmem's child handler
  // Each first in its turn: it writes the block outside the lock and the
  // gate, before secmem's child handler has made the child's copy.
  if (g_fork_round % 3 == 0) secmem_free(g_parent_large);
  if (g_fork_round % 3 == 1) secmem_free(g_parent_huge);
  if (g_fork_round % 3 == 2) (void)secmem_realloc(g_parent_resized, LARGE_BLOCK - 100); // in place
  secmem_free(g_parent_block); // the child's copy: the parent's block stays
  char *mine = secmem_malloc(64);
  if (mine != NULL) memset(mine, 'C', 64);
}

static int atfork_order(int parent_only) {
  if ((parent_only ? pthread_atfork(NULL, early_parent, NULL)
                   : pthread_atfork(early_prepare, early_parent, early_child)) != 0)
    return fail("pthread_atfork");
  g_parent_block = secmem_malloc(64);
  g_prepare_block = secmem_malloc(48);
  g_parent_large = secmem_malloc(LARGE_BLOCK);
  g_parent_huge = secmem_malloc(HUGE_BLOCK);
  g_parent_resized = secmem_malloc(LARGE_BLOCK);
  if (g_parent_block == NULL || g_prepare_block == NULL || g_parent_large == NULL || g_parent_huge == NULL ||
      g_parent_resized == NULL)
    return fail("malloc");
  memset(g_parent_block, 'P', 64);
  memset(g_parent_large, 'L', LARGE_BLOCK);
  memset(g_parent_huge, 'H', HUGE_BLOCK);
  memset(g_parent_resized, 'R', LARGE_BLOCK);
  // A child that lives through the forks below keeps a heap of its own.
  volatile int *board = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (board == MAP_FAILED) return fail("mmap");
  pid_t keeper = fork();
  if (keeper == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL); // a parent that failed never says stop
    memset(g_parent_block, 'K', 64);
    board[0] = 1;
    while (board[1] == 0) usleep(200);
    _exit(all_bytes(g_parent_block, 'K', 64) ? 0 : 1);
  }
  while (board[0] == 0) usleep(100);
  for (int i = 0; i < 20; ++i) {
    alarm(20);
    g_fork_round = i;
    if (!parent_only && (g_prepare_large = secmem_malloc(LARGE_BLOCK)) == NULL) return fail("malloc");
    if (!parent_only) memset(g_prepare_large, 'Z', LARGE_BLOCK);
    pid_t pid = fork();
    if (pid == 0) {
      char *reused = parent_only ? NULL : secmem_malloc(LARGE_BLOCK); // the block the prepare handler freed
      _exit(parent_only || (g_prepare_block != NULL && all_bytes(g_prepare_block, 'Q', 48) && reused != NULL &&
                            all_bytes(reused, 0, LARGE_BLOCK))
                ? 0
                : 1);
    }
    if (pid < 0) return fail("fork");
    if (wait_status(pid) != 0) return fail("child");
    if (!all_bytes(g_parent_block, 'P', 64)) return fail("the child's handler changed the parent's block");
    if (!all_bytes(g_parent_large, 'L', LARGE_BLOCK) || !all_bytes(g_parent_huge, 'H', HUGE_BLOCK) ||
        !all_bytes(g_parent_resized, 'R', LARGE_BLOCK))
      return fail("the child's handler changed a large block of the parent's");
    if (!parent_only && (g_prepare_block == NULL || !all_bytes(g_prepare_block, 'Q', 48))) return fail("prepare block");
  }
  board[1] = 1;
  if (wait_status(keeper) != 0) return fail("the child that lived through the forks lost its block");
  if (g_open_staging != 0) return fail("a staging mapping was open to the program's fork handlers");
  if (strcmp(secmem_backend_name(), "memfd_secret") == 0 && g_staging_seen == 0)
    return fail("no staging mapping seen from the program's fork handlers");
  printf("atfork-order: 20 forks\n");
  return 0;
}

// ---- atfork-parent-frees ----

static char *g_handed;
static int g_handler_writes, g_prepare_forks, g_inside, g_stray;

// fork_edges_late: after secmem's prepare handler, before the kernel's fork.
static void prepare_forks(void) {
  if (g_stray) { // a process made without fork handlers, which lives on; then heap use
    pid_t stray = _Fork();
    if (stray == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      sleep(3);
      _exit(0);
    }
    secmem_free(secmem_malloc(16));
    return;
  }
  if (!g_prepare_forks || g_inside) return;
  g_inside = 1;
  pid_t inner = fork(); // every handler runs again, inside this fork
  if (inner == 0) _exit(0);
  if (inner > 0) wait_status(inner);
  g_inside = 0;
}

// fork_edges_late: before secmem's parent handler, after the kernel's fork.
static void parent_frees(void) {
  if (g_inside) { // the inner fork's: the outer fork has not happened yet
    secmem_free(secmem_malloc(16));
    return;
  }
  secmem_free(g_handed); // zeroed here: the child must still find it whole
  g_handed = secmem_malloc(9000);
  if (g_handed != NULL) memset(g_handed, 'X', 9000), g_handler_writes++;
}

// A parent handler that frees a block and writes a new one (often the same
// pages) while the child makes its own copy of the heap: with a sealed block
// in the heap (sealed) the child copies for itself, from this process's
// pages, after the kernel's fork. Every child must find the block as it was
// at fork() and free it.
static int atfork_parent_frees(int argc, char **argv) {
  g_prepare_forks = argc > 2 && strcmp(argv[2], "nested") == 0;
  g_stray = argc > 2 && strcmp(argv[2], "stray") == 0;
  int sealed = g_prepare_forks || g_stray || (argc > 2 && strcmp(argv[2], "sealed") == 0);
  int rounds = g_stray ? 3 : 300;
  uint64_t slowest = 0;
  if (pthread_atfork(prepare_forks, parent_frees, NULL) != 0) return fail("pthread_atfork");
  if (sealed && secmem_sealed_alloc(64) == NULL) return fail("sealed_alloc");
  int forks = 0, bad = 0;
  for (int i = 0; i < rounds; ++i) {
    alarm(20);
    if (g_handed == NULL && (g_handed = secmem_malloc(9000)) == NULL) return fail("malloc");
    memset(g_handed, 'B', 9000);
    uint64_t start = now_ns();
    pid_t pid = fork();
    if (pid != 0 && now_ns() - start > slowest) slowest = now_ns() - start;
    if (pid == 0) {
      int whole = all_bytes(g_handed, 'B', 9000);
      secmem_free(g_handed);
      _exit(whole ? 0 : 1);
    }
    if (pid < 0) return fail("fork");
    bad += wait_status(pid) != 0;
    ++forks;
  }
  alarm(0);
  const char *variant = g_stray ? " stray" : g_prepare_forks ? " nested" : sealed ? " sealed" : "";
  printf("atfork-parent-frees%s: %d forks, %d children found the block changed, %d handler writes, slowest fork "
         "%.3f s\n",
         variant, forks, bad, g_handler_writes, slowest / 1e9);
  // A stray process holds the wait for its 2 s bound, not for its life (3 s).
  return bad == 0 && g_handler_writes == forks && slowest < 2700000000u ? 0 : 1;
}

// ---- map-limit ----

// vm.max_map_count, or 0 when it cannot be read.
static long max_map_count(void) {
  FILE *f = fopen("/proc/sys/vm/max_map_count", "r");
  long max = 0;
  if (f == NULL) return 0;
  if (fscanf(f, "%ld", &max) != 1) max = 0;
  fclose(f);
  return max;
}

static int map_limit(long headroom) {
  char *secret = secmem_malloc(64);
  // Past the limit (headroom -1: the count one over, where every mmap
  // fails) the child cannot seal a sealed block again (it stops, saying
  // so); its guards go without: a guarded block instead.
  unsigned char *sealed = headroom >= 0 ? secmem_sealed_alloc(64) : secmem_malloc(30000);
  if (secret == NULL || sealed == NULL) return fail("malloc");
  memset(secret, 'S', 64);
  if (headroom < 0) memset(sealed, 'G', 30000);
  long max = max_map_count();
  if (max <= 0) return fail("vm.max_map_count");
  size_t slots = (size_t)max + 16;
  void **pages = mmap(NULL, slots * sizeof(void *), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (pages == MAP_FAILED) return fail("mmap");
  size_t n = 0;
  // Single pages of alternating protection never merge: one mapping each.
  for (; n < slots; ++n) {
    void *p = mmap(NULL, 4096, n % 2 ? PROT_READ : PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) break;
    pages[n] = p;
  }
  if (n == slots) return fail("the mapping count never reached its limit");
  // mmap may take the count one past the limit: headroom counts from the limit.
  for (long i = 0; i < headroom + 1 && n > 0; ++i) munmap(pages[--n], 4096);
  alarm(30);
  pid_t pid = fork();
  if (pid == 0) {
    int ok = all_bytes(secret, 'S', 64) && (headroom >= 0 || all_bytes(sealed, 'G', 30000));
    memset(secret, 'c', 64);
    char *more = secmem_malloc(64);
    ok = ok && more != NULL;
    _exit(ok ? 0 : 1);
  }
  if (pid < 0) return fail("fork");
  int status = wait_status(pid);
  printf("map-limit: %zu mappings added, headroom %ld, child status %d\n", n, headroom, status);
  if (!all_bytes(secret, 'S', 64)) return fail("the child wrote the parent's secret");
  return status == 0 ? 0 : 1;
}

// ---- guard-budget ----

static long mapping_count(void) {
  FILE *f = fopen("/proc/self/maps", "r");
  if (f == NULL) return -1;
  long n = 0;
  for (int c; (c = fgetc(f)) != EOF;) n += c == '\n';
  fclose(f);
  return n;
}

static void *idle_thread(void *arg) { return arg; }

static int thread_starts(void) {
  pthread_t thread;
  if (pthread_create(&thread, NULL, idle_thread, NULL) != 0) return 0;
  pthread_join(thread, NULL);
  return 1;
}

// Large blocks, each between guard pages (two mappings more apiece), made
// until they would take half of vm.max_map_count; a sealed block then (it
// would split its unguarded neighbours' mapping: refused); then all freed;
// sealed blocks made until refused, a scope opened on each until refused,
// then all freed. The heap's share never passes a quarter of the count
// (said once), so the program can still make a thread, and a block made
// again is zero.
static int guard_budget(void) {
  long max = max_map_count();
  if (max <= 0) return fail("vm.max_map_count");
  // The slack: the chunks' own mappings and the bookkeeping's, and under
  // ThreadSanitizer its shadow's for them (about 640 more here); without the
  // share, these blocks took twice the ceiling.
  long start = mapping_count(), blocks = max / 4 + 64, slack = 2048, ceiling = max / 4 + slack;
  enum { kBytes = 9000 };
  char **live = calloc((size_t)blocks, sizeof *live);
  if (live == NULL) return fail("calloc");
  for (long i = 0; i < blocks; ++i) {
    if ((live[i] = secmem_malloc(kBytes)) == NULL) return fail("secmem_malloc");
    live[i][0] = live[i][kBytes - 1] = 'k';
  }
  long during = mapping_count();
  if (during - start > ceiling) {
    fprintf(stderr, "mappings: %ld at start, %ld with the blocks live, ceiling %ld\n", start, during, ceiling);
    return fail("the guards took more than a quarter of the mappings");
  }
  errno = 0;
  if (secmem_sealed_alloc(kBytes) != NULL || errno != ENOMEM) return fail("a sealed block past the share was made");
  if (!thread_starts()) return fail("no thread with the blocks live");
  for (long i = 0; i < blocks; ++i) secmem_free(live[i]);
  long freed = mapping_count();
  if (freed - start > ceiling) return fail("freed blocks' guards kept more than a quarter of the mappings");
  long sealed = 0, scoped = 0;
  for (; sealed < blocks && (live[sealed] = secmem_sealed_alloc(kBytes)) != NULL; ++sealed) {}
  if (sealed < blocks && errno != ENOMEM) return fail("a sealed block refused without ENOMEM");
  long sealed_made = mapping_count();
  for (; scoped < sealed && secmem_access_begin(live[scoped], SECMEM_WRITE) == 0; ++scoped) live[scoped][0] = 's';
  if (scoped < sealed && errno != ENOMEM) return fail("a scope refused without ENOMEM");
  long scopes_open = mapping_count();
  if (sealed_made - start > ceiling || scopes_open - start > ceiling)
    return fail("sealed blocks or their scopes took more than a quarter of the mappings");
  for (long i = 0; i < scoped; ++i) secmem_access_end(live[i], SECMEM_WRITE);
  for (long i = 0; i < sealed; ++i) secmem_free(live[i]);
  long sealed_freed = mapping_count();
  if (sealed_freed - start > ceiling) return fail("freed sealed blocks kept more than a quarter of the mappings");
  if (!thread_starts()) return fail("no thread after the frees");
  char *again = secmem_malloc(kBytes);
  if (again == NULL || !all_bytes(again, 0, kBytes)) return fail("a block made again is not zero");
  secmem_free(again);
  free(live);
  printf("mappings: %ld at start, %ld with %ld blocks live, %ld freed; %ld sealed blocks (%ld), %ld scopes (%ld), "
         "freed (%ld); limit %ld\n",
         start, during, blocks, freed, sealed, sealed_made, scoped, scopes_open, sealed_freed, max);
  return 0;
}

// ---- all-tiers-refused ----

static int exhaust_mappings(void);

// Under a small memlock budget without CAP_IPC_LOCK: a secret made, then the
// mapping count taken to its limit, then a block larger than the budget:
// NULL with ENOMEM (every tier refused: the budget, then the mapping count).
static int all_tiers_refused(void) {
  void *first = secmem_malloc(32);
  if (first == NULL) return fail("the first secret");
  if (exhaust_mappings() != 0) return fail("set-up");
  errno = 0;
  void *big = secmem_malloc(3 << 20);
  if (big != NULL || errno != ENOMEM) return fail("a block past the budget and the mapping count was made");
  secmem_free(first);
  return 0;
}

// ---- map-limit-free ----

// The mapping count to one past vm.max_map_count, as a program's own mmap
// loop leaves it (mmap checks the count before it adds one).
static int exhaust_mappings(void) {
  long max = max_map_count();
  if (max <= 0) return fail("vm.max_map_count");
  for (long n = 0; n < max + 16; ++n) {
    // Single pages of alternating protection never merge: one mapping each.
    if (mmap(NULL, 4096, n % 2 ? PROT_READ : PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) == MAP_FAILED) return 0;
  }
  return fail("the mapping count never reached its limit");
}

// The permissions ("rw-s", "---p", ...) of the mapping that holds p, or "" if none does.
static const char *perms_at(const void *p, char out[8]) {
  out[0] = '\0';
  FILE *f = fopen("/proc/self/maps", "r");
  if (f == NULL) return out;
  char line[512];
  while (fgets(line, sizeof line, f) != NULL) {
    unsigned long lo, hi;
    char perms[8];
    if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) == 3 && (uintptr_t)p >= lo && (uintptr_t)p < hi) {
      strcpy(out, perms);
      break;
    }
  }
  fclose(f);
  return out;
}

static int map_limit_free(void) {
  enum { kBig = 4, kMid = 16, kBigSize = 1500000 };
  char *big[kBig], *mid[kMid];
  for (int i = 0; i < kBig; ++i) {
    if ((big[i] = secmem_malloc(kBigSize)) == NULL) return fail("malloc");
    memset(big[i], 'b', kBigSize);
  }
  for (int i = 0; i < kMid; ++i) {
    if ((mid[i] = secmem_malloc(20000 + i * 4096)) == NULL) return fail("malloc");
    memset(mid[i], 'm', 20000);
  }
  unsigned char *sealed = secmem_sealed_alloc(64);
  if (sealed == NULL || exhaust_mappings() != 0) return fail("set-up");
  alarm(30);
  // Freed where every mmap fails, a huge block's chunk is made PROT_NONE in
  // place (unmapping it would leave a hole that another thread's mapping
  // could take, inside the range whose addresses the heap claims).
  int covered = 0;
  for (int i = 0; i < kBig; ++i) {
    secmem_free(big[i]);
    char perms[8];
    covered += strncmp(perms_at(big[i], perms), "---", 3) == 0;
  }
  int grown = 0, refused = 0, wrong = 0;
  for (int i = 0; i < kMid; ++i) {
    errno = 0;
    char *q = secmem_realloc(mid[i], 200000 + (size_t)i);
    if (q == NULL) {
      refused++;
      wrong += errno != ENOMEM || !all_bytes(mid[i], 'm', 20000);
    } else {
      grown++;
      wrong += !all_bytes(q, 'm', 20000);
      mid[i] = q;
    }
  }
  int small = 0;
  for (; small < 20000; ++small) {
    errno = 0;
    if (secmem_malloc(1 + (size_t)small % 8000) == NULL) break;
  }
  int small_errno = errno;
  for (int i = 0; i < kMid; ++i) secmem_free(mid[i]);
  secmem_free(sealed);
  printf("map-limit-free: %d of %d freed huge blocks' ranges PROT_NONE; realloc: %d grown, %d refused, %d wrong; %d "
         "small blocks, then errno %d\n",
         covered, kBig, grown, refused, wrong, small, small_errno);
  int small_ok = small == 20000 || small_errno == ENOMEM;
  return covered == kBig && wrong == 0 && small_ok ? 0 : 1;
}

// ---- two-forkers ----

static char *g_shared_secret;
static atomic_int g_crossed, g_hung;

static void *forker(void *arg) {
  int rounds = *(int *)arg;
  for (int i = 0; i < rounds; ++i) {
    pid_t pid = fork();
    if (pid == 0) {
      alarm(10);
      memset(g_shared_secret, 0xcc, 64); // the child's own copy
      char *mine = secmem_malloc(100);
      _exit(mine != NULL ? 0 : 2);
    }
    int status = wait_status(pid);
    if (status == 128 + SIGALRM) atomic_fetch_add(&g_hung, 1);
    if (!all_bytes(g_shared_secret, 0xaa, 64)) atomic_fetch_add(&g_crossed, 1);
  }
  return NULL;
}

static int two_forkers(int rounds) {
  g_shared_secret = secmem_malloc(64);
  memset(g_shared_secret, 0xaa, 64);
  pthread_t threads[2];
  for (int t = 0; t < 2; ++t) pthread_create(&threads[t], NULL, forker, &rounds);
  for (int t = 0; t < 2; ++t) pthread_join(threads[t], NULL);
  printf("two-forkers: %d forks, %d children wrote the parent's secret, %d hung\n", 2 * rounds, atomic_load(&g_crossed),
         atomic_load(&g_hung));
  return atomic_load(&g_crossed) == 0 && atomic_load(&g_hung) == 0 ? 0 : 1;
}

// ---- published-blocks ----

enum { kPublishedSlots = 512 };
static _Atomic(uintptr_t) g_published[kPublishedSlots];
static atomic_int g_publishing_stop;

static void *publisher(void *arg) {
  unsigned seed = (unsigned)(uintptr_t)arg;
  while (!atomic_load(&g_publishing_stop)) {
    size_t n = rand_r(&seed) % 4 == 0 ? 1 + rand_r(&seed) % 1000 : 8000 + rand_r(&seed) % 190;
    unsigned char *p = secmem_malloc(n);
    if (p == NULL) continue;
    memset(p, 0x5c, n);
    uintptr_t old = atomic_exchange(&g_published[rand_r(&seed) % kPublishedSlots], (uintptr_t)p);
    if (old != 0) secmem_free((void *)old);
  }
  return NULL;
}

static int published_blocks(int seconds) {
  enum { kThreads = 4 };
  pthread_t threads[kThreads];
  for (int t = 0; t < kThreads; ++t) pthread_create(&threads[t], NULL, publisher, (void *)(uintptr_t)(t + 1));
  int forks = 0, failed = 0;
  time_t end = time(NULL) + seconds;
  while (time(NULL) < end) {
    pid_t pid = fork();
    if (pid < 0) return fail("fork");
    if (pid == 0) {
      for (int i = 0; i < kPublishedSlots; ++i) {
        void *p = (void *)atomic_load(&g_published[i]);
        if (p != NULL) secmem_free(p);
      }
      _exit(0);
    }
    int status = wait_status(pid);
    ++forks;
    if (status != 0 && ++failed == 1) printf("published-blocks: a child ended with status %d\n", status);
  }
  atomic_store(&g_publishing_stop, 1);
  for (int t = 0; t < kThreads; ++t) pthread_join(threads[t], NULL);
  printf("published-blocks: %d forks, %d children failed\n", forks, failed);
  return failed == 0 && forks > 0 ? 0 : 1;
}

// ---- copy-race ----

// Where the child copies its secret pages for itself (a sealed block in the
// heap, or no memlock budget left for a staging file), the parent's other
// threads run until it has. A large block freed then (zeroed) or resized in
// place (its canary moved) was live in the child but zero, or its canary
// did not match its size: the child aborted at its free ("heap buffer
// overflow", a few children in a hundred).
enum { kCopyRaceThreads = 2, kCopyRaceSlots = 8 };
static _Atomic(uintptr_t) g_race_slots[kCopyRaceThreads][kCopyRaceSlots];
static _Atomic(uintptr_t) g_resizing[kCopyRaceThreads];
static atomic_int g_race_stop, g_race_ready;
// A block counts as written before a fork when its thread, once it had
// written it, still read an older fork number than the one the main thread
// set before that fork (its writes came before the fork() call). Ordinary
// memory: in the child it is as it was at the kernel's copy.
static atomic_ulong g_fork_number;
static unsigned long g_slot_fork[kCopyRaceThreads][kCopyRaceSlots];

// A published block: its size in the first 8 bytes, then one byte repeated.
static unsigned char race_byte(size_t n) { return (unsigned char)(n | 1); }

static void *race_worker(void *arg) {
  int me = (int)(uintptr_t)arg;
  unsigned seed = (unsigned)me + 7;
  // Resized in place back and forth (a large block stays where it is while
  // more than half full): its first 12000 bytes never change.
  unsigned char *r = secmem_malloc(20000);
  if (r == NULL) {
    atomic_fetch_add(&g_race_ready, 1);
    return (void *)"malloc";
  }
  memset(r, 0xa7, 20000);
  atomic_store(&g_resizing[me], (uintptr_t)r);
  atomic_fetch_add(&g_race_ready, 1);
  for (unsigned i = 0; !atomic_load(&g_race_stop); ++i) {
    size_t n = 8200 + rand_r(&seed) % 40000;
    unsigned char *p = secmem_malloc(n);
    if (p == NULL) return (void *)"malloc";
    memset(p, race_byte(n), n);
    memcpy(p, &n, sizeof n);
    atomic_thread_fence(memory_order_seq_cst);
    g_slot_fork[me][i % kCopyRaceSlots] = atomic_load(&g_fork_number);
    uintptr_t old = atomic_exchange(&g_race_slots[me][i % kCopyRaceSlots], (uintptr_t)p);
    if (old != 0) secmem_free((void *)old);
    if (secmem_realloc(r, i % 2 ? 20000 : 12000) != r) return (void *)"realloc moved a block it could resize in place";
  }
  return NULL;
}

static int race_child(unsigned long fork_number) {
  for (int t = 0; t < kCopyRaceThreads; ++t) {
    for (int i = 0; i < kCopyRaceSlots; ++i) {
      unsigned char *p = (unsigned char *)atomic_load(&g_race_slots[t][i]);
      if (p == NULL) continue;
      size_t n;
      memcpy(&n, p, sizeof n);
      int whole = n >= 8200 && n < 48200 && all_bytes(p + sizeof n, race_byte(n), n - sizeof n);
      if (!whole && g_slot_fork[t][i] < fork_number) return 2;
      secmem_free(p); // checks the canary (a block being written at the fork may be torn, not freed)
    }
    unsigned char *r = (unsigned char *)atomic_load(&g_resizing[t]);
    if (!all_bytes(r, 0xa7, 12000)) return 3;
    secmem_free(r);
  }
  return 0;
}

static int copy_race(int seconds, int sealed) {
  void *held = sealed ? secmem_sealed_alloc(64) : NULL;
  if (sealed && held == NULL) return fail("secmem_sealed_alloc");
  pthread_t threads[kCopyRaceThreads];
  for (int t = 0; t < kCopyRaceThreads; ++t) pthread_create(&threads[t], NULL, race_worker, (void *)(uintptr_t)t);
  while (atomic_load(&g_race_ready) != kCopyRaceThreads) sched_yield();
  int forks = 0, failed = 0, last = 0;
  for (int t = 0; t < kCopyRaceThreads; ++t)
    if (atomic_load(&g_resizing[t]) == 0) seconds = 0; // its thread failed: no fork
  for (time_t end = time(NULL) + seconds; time(NULL) < end;) {
    unsigned long number = atomic_fetch_add(&g_fork_number, 1) + 1;
    pid_t pid = fork();
    if (pid < 0) return fail("fork");
    if (pid == 0) _exit(race_child(number));
    int status = wait_status(pid);
    ++forks;
    if (status != 0) ++failed, last = status;
  }
  atomic_store(&g_race_stop, 1);
  const char *err = NULL;
  for (int t = 0; t < kCopyRaceThreads; ++t) {
    void *r;
    pthread_join(threads[t], &r);
    if (r != NULL) err = r;
  }
  secmem_free(held);
  printf("copy-race: %d forks, %d bad children (last: status %d)%s%s\n", forks, failed, last, err ? ", parent: " : "",
         err ? err : "");
  return failed == 0 && forks > 0 && err == NULL ? 0 : 1;
}

// ---- resize-stall ----

// Without thread caches (fork_test.cpp sets SECMEM_RELEASE=empty) a thread
// shrinks and grows an 8 MB block in place without a pause while another
// allocates small blocks and the main thread forks every 5 ms: every fork
// and every small allocation goes on. (Zeroing the tail under the heap lock,
// the resizing thread took the lock again ahead of the waiters: forks and
// small allocations waited 6-10 s.)
static atomic_int g_stall_stop;
static atomic_ulong g_stall_small;

static void *stall_resizer(void *arg) {
  (void)arg;
  enum { kBig = 8000000 };
  unsigned seed = 5;
  unsigned char *r = secmem_malloc(kBig);
  if (r == NULL) return (void *)"malloc";
  while (!atomic_load(&g_stall_stop)) {
    size_t n = kBig / 2 + 4096 + rand_r(&seed) % (kBig / 2 - 8192);
    unsigned char *q = secmem_realloc(r, n);
    if (q == NULL) return (void *)"realloc";
    r = q;
  }
  secmem_free(r);
  return NULL;
}

static void *stall_small(void *arg) {
  (void)arg;
  while (!atomic_load(&g_stall_stop)) {
    void *p = secmem_malloc(64);
    if (p == NULL) return (void *)"malloc";
    memset(p, 1, 64);
    secmem_free(p);
    atomic_fetch_add(&g_stall_small, 1);
  }
  return NULL;
}

static int resize_stall(int seconds) {
  pthread_t resizer, small;
  pthread_create(&resizer, NULL, stall_resizer, NULL);
  pthread_create(&small, NULL, stall_small, NULL);
  int forks = 0, bad = 0;
  uint64_t longest = 0, start = now_ns(), end = start + (uint64_t)seconds * 1000000000u;
  while (now_ns() < end) {
    uint64_t before = now_ns();
    pid_t pid = fork();
    if (pid < 0) return fail("fork");
    if (pid == 0) _exit(0);
    uint64_t took = now_ns() - before;
    if (took > longest) longest = took;
    if (wait_status(pid) != 0) bad++;
    forks++;
    usleep(5000);
  }
  atomic_store(&g_stall_stop, 1);
  void *a, *b;
  pthread_join(resizer, &a);
  pthread_join(small, &b);
  unsigned long small_ops = atomic_load(&g_stall_small);
  printf("resize-stall: %d forks (longest %llu ms), %d bad children, %lu small allocations%s%s\n", forks,
         (unsigned long long)(longest / 1000000), bad, small_ops, a || b ? ", failed: " : "",
         a   ? (const char *)a
         : b ? (const char *)b
             : "");
  // Each fork waits for the resize in flight (a few ms): a fork over 2 s, or
  // fewer than 5 in the run, is a stall.
  return forks >= 5 && longest < 2000000000u && bad == 0 && small_ops > 0 && a == NULL && b == NULL ? 0 : 1;
}

// ---- signal-and-thread-fork ----

static atomic_int g_stop_all, g_worker_running;
static atomic_long g_handler_forks_done, g_loop_forks_done;

static void fork_in_handler(int sig) {
  (void)sig;
  int saved = errno;
  pid_t pid = fork();
  if (pid == 0) _exit(0);
  if (pid > 0) wait_status(pid);
  atomic_fetch_add(&g_handler_forks_done, 1);
  errno = saved;
}

static void *allocating_worker(void *arg) {
  (void)arg;
  void *held[64] = {0};
  for (unsigned i = 0; !atomic_load(&g_stop_all); ++i) {
    secmem_free(held[i % 64]);
    held[i % 64] = secmem_malloc(16 + (i * 7) % 512);
    if (i == 0) atomic_store(&g_worker_running, 1);
  }
  for (int k = 0; k < 64; ++k) secmem_free(held[k]);
  return NULL;
}

static void *looping_forker(void *arg) {
  (void)arg;
  while (!atomic_load(&g_stop_all)) {
    pid_t pid = fork();
    if (pid == 0) _exit(0);
    wait_status(pid);
    atomic_fetch_add(&g_loop_forks_done, 1);
  }
  return NULL;
}

static int signal_and_thread_fork(int seconds) {
  secmem_free(secmem_malloc(1));
  struct sigaction action;
  memset(&action, 0, sizeof action);
  action.sa_handler = fork_in_handler;
  action.sa_flags = SA_RESTART;
  sigaction(SIGUSR1, &action, NULL);
  pthread_t worker, forker_thread;
  pthread_create(&worker, NULL, allocating_worker, NULL);
  pthread_create(&forker_thread, NULL, looping_forker, NULL);
  // Signals only once the worker runs its loop: a fork from a handler that
  // interrupted the thread's start-up inside a sanitizer's runtime (which
  // holds its allocator's lock there) leaves a child that hangs in it.
  while (!atomic_load(&g_worker_running)) usleep(100);
  uint64_t until = now_ns() + (uint64_t)seconds * 1000000000u;
  while (now_ns() < until) {
    pthread_kill(worker, SIGUSR1);
    usleep(200);
  }
  atomic_store(&g_stop_all, 1);
  pthread_join(worker, NULL);
  pthread_join(forker_thread, NULL);
  printf("signal-and-thread-fork: %ld handler forks, %ld loop forks\n", atomic_load(&g_handler_forks_done),
         atomic_load(&g_loop_forks_done));
  return atomic_load(&g_handler_forks_done) > 0 ? 0 : 1;
}

// ---- child-budget ----

// VmLck of this process, in bytes (-1: unknown).
static long locked_bytes(void) {
  FILE *status = fopen("/proc/self/status", "r");
  if (status == NULL) return -1;
  char line[256];
  long kib = -1;
  while (fgets(line, sizeof line, status) != NULL)
    if (sscanf(line, "VmLck: %ld kB", &kib) == 1) break;
  fclose(status);
  return kib < 0 ? -1 : kib * 1024;
}

// A fork child maps only its copy and the room after it (a mapping over the
// chunk's whole range was tried: the kernel charges a memfd_secret mapping's
// whole length to RLIMIT_MEMLOCK, and the child, charged 2 MiB for a copy of
// a few pages, had its next chunk refused and its secrets degraded to
// unlocked memory; its memlock_charged said less than the kernel's count;
// and the pages past its copy were writable, where a linear overflow off a
// chunk's end must fault). Status bits: 1 the charge and the figure differ,
// 2 no 1.5 MB of secrets, 4 the page after the chunk's pages is writable, 8 set-up.
static int child_budget(void) {
  char *small = secmem_malloc(100);
  if (small == NULL) return fail("malloc");
  strcpy(small, "secret");
  int bad = 0;
  for (int round = 0; round < 3; ++round) { // the first fork may find no staging file ready
    pid_t child = fork();
    if (child == 0) {
      struct secmem_stats stats;
      secmem_get_stats(&stats);
      long locked = locked_bytes();
      int status = locked < 0 ? 8 : (size_t)locked != stats.memlock_charged ? 1 : 0;
      // The heap's one chunk starts at the 2 MiB boundary below the block;
      // the page after its pages is in no writable mapping.
      unsigned long base = (unsigned long)small & ~((2UL << 20) - 1);
      if (in_secret_mapping((void *)base) != 1 || stats.chunks != 1) _exit(status | 8);
      char perms[8];
      if (perms_at((void *)(base + stats.mapped_secret), perms)[1] == 'w') status |= 4;
      char *big = secmem_malloc(1500000);
      secmem_get_stats(&stats);
      if (big == NULL || stats.in_use_secret < 1500000 || strcmp(small, "secret") != 0) status |= 2;
      secmem_free(big);
      _exit(status);
    }
    int status = wait_status(child);
    if (status != 0) {
      printf("round %d: child status %d (bits: 1 VmLck differs from memlock_charged, 2 no 1.5 MB of secrets, 4 the "
             "page after the chunk's pages is writable, 8 set-up)\n",
             round, status);
      bad = 1;
    }
  }
  printf("child-budget: 3 rounds\n");
  return bad;
}

// ---- staging-reuse ----

// The secretmem files this process holds open (its fork staging files).
static int secret_fds(void) {
  int count = 0;
  char path[64], target[128];
  for (int fd = 0; fd < 1024; ++fd) {
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(path, target, sizeof target - 1);
    if (n <= 0) continue;
    target[n] = '\0';
    count += strstr(target, "secretmem") != NULL;
  }
  return count;
}

// Whether the 32-byte pattern is anywhere in this process's readable
// secretmem mappings: raw reads, unseen by AddressSanitizer (the heap marks
// its free memory as poisoned for it).
__attribute__((no_sanitize_address)) static int holds_at(const unsigned char *p, const unsigned char *pattern) {
  for (int i = 0; i < 32; ++i)
    if (((const volatile unsigned char *)p)[i] != pattern[i]) return 0;
  return 1;
}

static int secret_mappings_hold(const unsigned char *pattern) {
  FILE *maps = fopen("/proc/self/maps", "r");
  if (maps == NULL) return -1;
  char line[512];
  int found = 0;
  while (!found && fgets(line, sizeof line, maps) != NULL) {
    unsigned long start, end;
    char perms[8];
    if (strstr(line, "/secretmem") == NULL || sscanf(line, "%lx-%lx %7s", &start, &end, perms) != 3) continue;
    if (perms[0] != 'r') continue;
    for (const unsigned char *p = (const unsigned char *)start; p + 32 <= (const unsigned char *)end; p += 8)
      if (holds_at(p, pattern)) {
        found = 1;
        break;
      }
  }
  fclose(maps);
  return found;
}

// A parent forks child after child, each waited for: the staging file one
// child had is used again for the next. Each child leaves its own secret
// (a random pattern) in blocks it never frees, in the pages of its copy;
// the next two children (the files take turns) must find no trace of it
// anywhere in their secret mappings, and the parent's key, block for block.
// The parent keeps at most a few staging files open however many children
// it makes. With grow, each child also takes 100 blocks of 2000 bytes, past
// the pages the parent holds: they come from the room after its copy in the
// staging file (no chunk of its own), zero, though an earlier child left
// its secret in them.
static int staging_reuse(int rounds, int grow) {
  unsigned char *key = secmem_malloc(64);
  if (key == NULL) return fail("malloc");
  memset(key, 'K', 64);
  unsigned char previous[2][32] = {{0}}; // the last two children's: the files take turns
  int have_previous = 0;
  for (int round = 0; round < rounds; ++round) {
    unsigned char mine[32];
    for (int i = 0; i < 32; ++i) mine[i] = (unsigned char)(rand() | 0x80);
    int fds[2];
    if (pipe(fds) != 0) return fail("pipe");
    pid_t pid = fork();
    if (pid == 0) {
      struct secmem_stats before, after;
      secmem_get_stats(&before);
      int bad = !all_bytes(key, 'K', 64);
      for (int i = 0; i < have_previous; ++i)
        if (secret_mappings_hold(previous[i]) != 0) bad |= 2;
      // Secrets of this child, left behind: small blocks in the copied pages.
      for (int i = 0; i < 40; ++i) {
        unsigned char *p = secmem_malloc(32 + (size_t)(i % 4) * 48);
        if (p != NULL) memcpy(p, mine, 32);
      }
      unsigned char *q = secmem_malloc(3000);
      if (q != NULL) memcpy(q + 1000, mine, 32);
      if (grow) {
        for (int i = 0; i < 100; ++i) {
          unsigned char *p = secmem_malloc(2000);
          if (p == NULL || !all_bytes(p, 0, 2000)) bad |= 4;
          if (p != NULL)
            for (int at = 0; at + 32 <= 2000; at += 250) memcpy(p + at, mine, 32);
        }
        secmem_get_stats(&after);
        if (after.chunks != before.chunks) bad |= 8;
      }
      memset(key, 'c', 64);
      char verdict = "0123456789abcdef"[bad & 15];
      _exit(write(fds[1], &verdict, 1) == 1 ? 0 : 9);
    }
    close(fds[1]);
    char verdict = '?';
    if (read(fds[0], &verdict, 1) != 1) verdict = '?';
    close(fds[0]);
    int status = wait_status(pid);
    if (status != 0 || verdict != '0') {
      printf("round %d: child status %d, verdict %c (bits: 1 the key, 2 the previous child's secret, 4 a block "
             "not zero, 8 a chunk of its own)\n",
             round, status, verdict);
      return 1;
    }
    if (!all_bytes(key, 'K', 64)) return fail("the parent's key changed");
    memcpy(previous[1], previous[0], 32);
    memcpy(previous[0], mine, 32);
    have_previous = have_previous < 2 ? have_previous + 1 : 2;
    // The parent's heap moves between forks: blocks come and go.
    void *churn[8];
    for (int i = 0; i < 8; ++i) churn[i] = secmem_malloc((size_t)(16 << (round % 6)));
    for (int i = 0; i < 8; ++i) secmem_free(churn[i]);
  }
  int open_files = secret_fds();
  printf("staging-reuse: %d rounds, %d secretmem files open in the parent\n", rounds, open_files);
  return open_files <= 2 ? 0 : fail("a new staging file for every child");
}

// ---- reaped-reuse ----

// 1 when p lies in a /secretmem mapping of this process, 0 when not, -1 when
// the maps cannot be read.
static int in_secret_mapping(const void *p) {
  FILE *maps = fopen("/proc/self/maps", "r");
  if (maps == NULL) return -1;
  char line[512];
  int found = 0;
  while (!found && fgets(line, sizeof line, maps) != NULL) {
    unsigned long start, end;
    if (sscanf(line, "%lx-%lx", &start, &end) == 2 && (unsigned long)p >= start && (unsigned long)p < end)
      found = strstr(line, "/secretmem") != NULL;
  }
  fclose(maps);
  return found;
}

// A program that reaps its children (waitpid), under a filter installed
// after start-up that refuses memfd_secret and waitid: the staging file of a
// child it reaped must serve its next child, so that every child keeps its
// copy in memfd_secret. Under the preload shim its waitpid says which child
// is gone. The library alone cannot ask the kernel (a filter came after
// start-up) nor make a new file: its later children copy into the next tier
// (exit 2).
static int reaped_reuse(void) {
  unsigned char *key = secmem_malloc(64);
  if (key == NULL) return fail("malloc");
  memset(key, 'P', 64);
  if (!short_lived_children_see_their_key(key, 'p', 2)) return 1;
  scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
  if (ctx == NULL || seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(memfd_secret), 0) != 0 ||
      seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(waitid), 0) != 0 || seccomp_load(ctx) != 0)
    return fail("seccomp");
  seccomp_release(ctx);
  enum { kChildren = 12 };
  for (int i = 0; i < kChildren; ++i) {
    memset(key, 'a' + i, 64);
    pid_t pid = fork();
    if (pid < 0) return fail("fork");
    if (pid == 0) _exit(!all_bytes(key, 'a' + i, 64) ? 1 : in_secret_mapping(key) == 1 ? 0 : 2);
    int status = wait_status(pid);
    if (status != 0) {
      printf("reaped-reuse: child %d %s\n", i,
             status == 2 ? "holds its copy outside memfd_secret" : "saw another key or failed");
      return status == 2 ? 2 : 1;
    }
  }
  printf("reaped-reuse: %d children, each reaped, kept their copies in memfd_secret under the filter\n", kChildren);
  return 0;
}

// ---- foreign-reaper ----

static pid_t g_foreign_target, g_foreign_owner;
static int g_foreign_nested;

static int raw_wait(pid_t pid) { // behind the shim's wrappers
  int status = 0;
  while (syscall(SYS_wait4, pid, &status, 0, NULL) < 0 && errno == EINTR) {}
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// The next pid in the caller's pid namespace is pid (root).
static int next_pid_is(pid_t pid) {
  int fd = open("/proc/sys/kernel/ns_last_pid", O_WRONLY);
  if (fd < 0) return 0;
  char number[32];
  int n = snprintf(number, sizeof number, "%d", (int)pid - 1);
  int wrote = write(fd, number, (size_t)n) == n;
  close(fd);
  return wrote;
}

// Makes a child under the number a live child of the program has in the
// program's namespace, and reaps it with waitpid (the shim's, whose log is
// in the shared memory). 0 when the child got the number.
static int reap_numbered_child(void) {
  if (!next_pid_is(g_foreign_target)) return 3;
  long child = syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0); // raw: no fork handlers
  if (child == 0) syscall(SYS_exit_group, 0);
  int status = 0;
  return waitpid((pid_t)child, &status, 0) == g_foreign_target ? 0 : 4;
}

static int nested_reaper(void *arg) {
  (void)arg;
  return reap_numbered_child();
}

// Shares the memory of the process that made it (CLONE_VM), as pid 1 of a
// pid namespace of its own, and reaps as above; nested: it makes another
// process sharing the memory in its namespace, numbered as the program there
// (its parent, this one, is in the namespace: getppid() is 1, not 0), which
// reaps. 0 when the numbers were had.
static int foreign_reaper(void *arg) {
  (void)arg;
  if (!g_foreign_nested) return reap_numbered_child();
  static char stack[1 << 16];
  if (!next_pid_is(g_foreign_owner)) return 3;
  pid_t inner = clone(nested_reaper, stack + sizeof stack, CLONE_VM | SIGCHLD, NULL);
  if (inner < 0) return 5;
  int status = raw_wait(inner);
  return inner == g_foreign_owner ? status : 6;
}

// A live child's pid, reaped by a process that shares this one's memory in
// another pid namespace, says nothing about that child: its staging file
// stays its own while the parent forks on with a new key.
static int foreign_reaper_mode(int nested) {
  unsigned char *key = secmem_malloc(64);
  if (key == NULL) return fail("malloc");
  memset(key, 'A', 64);
  volatile int *board = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (board == MAP_FAILED) return fail("mmap");
  pid_t live = fork();
  if (live == 0) live_child(key, 'A', 200, 'o', &board[2], &board[1]);
  while (board[2] == 0) usleep(100);
  memset(key, 'X', 64);
  pid_t other = fork(); // this fork reads the live child's pid from its message
  if (other == 0) _exit(0);
  raw_wait(other);
  g_foreign_target = live;
  g_foreign_owner = getpid();
  g_foreign_nested = nested;
  static char stack[1 << 16];
  pid_t helper = clone(foreign_reaper, stack + sizeof stack, CLONE_VM | CLONE_NEWPID | SIGCHLD, NULL);
  if (helper < 0) return fail("clone");
  int helper_status = raw_wait(helper);
  if (helper_status != 0) {
    printf("foreign-reaper: the helper's child did not get pid %d (status %d)\n", (int)live, helper_status);
    return 1;
  }
  memset(key, 'B', 64);
  if (!short_lived_children_see_their_key(key, 'b', 4)) return 1;
  board[1] = 1;
  int status = wait_status(live);
  printf("foreign-reaper: the live child %s\n", status == 0 ? "kept its key" : "saw a later key");
  return status == 0 ? 0 : 1;
}

// ---- forged-message ----

// A child that can read its parent's /proc/PID/fd (same user, the parent
// dumpable; here root) opens the parent's message channel again and says, for
// every slot and hand-out, that its file is held by a short-lived sibling: once
// the parent reaps that sibling, the next fork must not give this live child's
// file away. Exit 0: the live child kept its key; 1: it saw a later one.
static int forged_message(void) {
  unsigned char *key = secmem_malloc(64);
  if (key == NULL) return fail("malloc");
  memset(key, 'A', 64);
  volatile int *board = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (board == MAP_FAILED) return fail("mmap");
  pid_t liar = fork();
  if (liar == 0) {
    while (board[3] == 0) usleep(100); // the sibling's pid
    pid_t parent = getppid();
    int forged = 0, opened = 0;
    for (int fd = 3; fd < 256; ++fd) {
      char path[64], target[64];
      snprintf(path, sizeof path, "/proc/%d/fd/%d", (int)parent, fd);
      ssize_t n = readlink(path, target, sizeof target - 1);
      if (n <= 0) continue;
      target[n] = '\0';
      if (strncmp(target, "pipe:", 5) != 0 && strncmp(target, "socket:", 7) != 0) continue;
      int channel = open(path, O_WRONLY | O_NONBLOCK);
      if (channel < 0) continue;
      opened++;
      for (uint32_t slot = 0; slot < 4; ++slot)
        for (uint32_t handout = 1; handout <= 8; ++handout) {
          struct {
            uint32_t slot, handout;
            int32_t pid;
          } message = {slot, handout, board[3]};
          forged += write(channel, &message, sizeof message) == (ssize_t)sizeof message;
        }
      close(channel);
    }
    board[4] = opened;
    board[2] = 1;
    int ok = 1;
    while (ok && board[1] == 0) {
      ok = all_bytes(key, 'A', 64);
      usleep(200);
    }
    _exit(ok && all_bytes(key, 'A', 64) ? 0 : 1);
  }
  usleep(20000);
  memset(key, 'X', 64);
  pid_t sibling = fork();
  if (sibling == 0) {
    while (board[2] == 0) usleep(100); // until the lies are told
    _exit(0);
  }
  board[3] = sibling;
  wait_status(sibling); // reaped as programs do
  memset(key, 'B', 64);
  if (!short_lived_children_see_their_key(key, 'b', 4)) return 1;
  board[1] = 1;
  int status = wait_status(liar);
  printf("forged-message: the child %s (it opened %d of the parent's channels again)\n",
         status == 0 ? "kept its key" : "saw a later key", board[4]);
  return status == 0 ? 0 : 1;
}

// ---- socketpair-killed ----

// A filter in force before the first fork that kills socketpair with the
// flags the heap uses (SOCK_NONBLOCK): the process forks on, its children
// see their keys (the heap used to try the call in a child without that
// flag, find it allowed, and die of it itself).
static int socketpair_killed(void) {
  unsigned char *key = secmem_malloc(64);
  if (key == NULL) return fail("malloc");
  memset(key, 'P', 64);
  scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
  if (ctx == NULL ||
      seccomp_rule_add(ctx, SCMP_ACT_KILL_PROCESS, SCMP_SYS(socketpair), 1,
                       SCMP_A1(SCMP_CMP_MASKED_EQ, SOCK_NONBLOCK, SOCK_NONBLOCK)) != 0 ||
      seccomp_load(ctx) != 0)
    return fail("seccomp");
  seccomp_release(ctx);
  if (!short_lived_children_see_their_key(key, 'p', 6)) return 1;
  printf("socketpair-killed: 6 children under the filter\n");
  return 0;
}

// ---- late-filter ----

// The child decides for itself whether it may call mlock (to lock its copy
// of the mlock tier again) and memfd_secret (for a copy it makes): a
// filter may reach it after secmem's prepare handler ran, from a handler of
// the program's or another thread's TSYNC. Asked in the parent instead, the
// child died of SIGSYS.
static int g_late_filter_where, g_late_filter_armed;

static void kill_mlock_and_memfd_secret(void) {
  scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
  if (ctx == NULL || seccomp_rule_add(ctx, SCMP_ACT_KILL_PROCESS, SCMP_SYS(mlock), 0) != 0 ||
      seccomp_rule_add(ctx, SCMP_ACT_KILL_PROCESS, SCMP_SYS(mlock2), 0) != 0 ||
      seccomp_rule_add(ctx, SCMP_ACT_KILL_PROCESS, SCMP_SYS(memfd_secret), 0) != 0 || seccomp_load(ctx) != 0)
    _exit(90);
  seccomp_release(ctx);
}

static void late_filter_prepare(void) {
  if (g_late_filter_armed && g_late_filter_where == 1) kill_mlock_and_memfd_secret();
}

static void late_filter_child(void) {
  if (g_late_filter_armed && g_late_filter_where == 0) kill_mlock_and_memfd_secret();
}

static int late_filter(long where) {
  setenv("SECMEM_BACKEND", where == 2 ? "auto" : "mlock", 1); // whatever the suite's configuration
  if (where == 3) setenv("SECMEM_ON_EXHAUSTION", "fail", 1);
  g_late_filter_where = where == 1 || where == 4;
  if (pthread_atfork(late_filter_prepare, NULL, late_filter_child) != 0) return fail("pthread_atfork");
  unsigned char *key = secmem_malloc(64); // fork_edges_late loads libsecmem here, after the handlers
  unsigned char *sealed = where == 2 ? secmem_sealed_alloc(32) : NULL;
  if (key == NULL || (where == 2 && sealed == NULL)) return fail("malloc");
  memset(key, 'K', 64);
  if (sealed != NULL) {
    if (secmem_access_begin(sealed, SECMEM_WRITE) != 0) return fail("access_begin");
    memset(sealed, 'S', 32);
    secmem_access_end(sealed, SECMEM_WRITE);
  }
  if (strcmp(secmem_backend_name(), where == 2 ? "memfd_secret" : "mlock") != 0) return fail(secmem_backend_name());
  // W 4: and no descriptor free in the child to read its status with (the
  // parent's verdict, from before the filter, must not stand).
  int first_dup = -1, last_dup = -1;
  if (where == 4) {
    struct rlimit few = {64, 64};
    if (setrlimit(RLIMIT_NOFILE, &few) != 0) return fail("setrlimit");
    for (int fd; (fd = dup(1)) >= 0; last_dup = fd)
      if (first_dup < 0) first_dup = fd;
  }
  g_late_filter_armed = 1;
  pid_t pid = fork();
  if (pid == 0) {
    int ok = all_bytes(key, 'K', 64);
    if (sealed != NULL) {
      ok = ok && secmem_access_begin(sealed, SECMEM_READ) == 0 && all_bytes(sealed, 'S', 32);
      secmem_access_end(sealed, SECMEM_READ);
    }
    _exit(ok ? 0 : 1);
  }
  if (pid < 0) return fail("fork");
  for (int fd = first_dup; first_dup >= 0 && fd <= last_dup; ++fd) close(fd);
  int status = wait_status(pid);
  if (where == 3) { // SECMEM_ON_EXHAUSTION=fail: no unlocked copy; the child stops, and says why
    if (status != 128 + SIGABRT) return fail("the child did not stop (it lived on unlocked memory)");
    printf("late-filter 3: the child stopped\n");
    return 0;
  }
  if (status != 0) return fail("the child died, or lost its secrets");
  printf("late-filter %ld: the child lives\n", where);
  return 0;
}

// ---- no-status ----

// A sandbox in force before the first secret allocation that refuses open
// (EACCES, as OpenSSH's does) and kills on memfd_secret: the status file
// that says whether a filter is in force was never readable, and the heap
// used to take that for "no filter" and die of its first memfd_secret. It
// tries the call in a child first: the process lives, on the next tier.
static int no_status(void) {
  scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
  if (ctx == NULL || seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EACCES), SCMP_SYS(open), 0) != 0 ||
      seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EACCES), SCMP_SYS(openat), 0) != 0 ||
      seccomp_rule_add(ctx, SCMP_ACT_KILL_PROCESS, SCMP_SYS(memfd_secret), 0) != 0 || seccomp_load(ctx) != 0)
    return fail("seccomp");
  seccomp_release(ctx);
  unsigned char *key = secmem_malloc(64);
  if (key == NULL) return fail("malloc");
  memset(key, 'P', 64);
  if (!short_lived_children_see_their_key(key, 'p', 3)) return 1;
  printf("no-status: alive on %s\n", secmem_backend_name());
  return 0;
}

// ---- live-children ----

// Children that live on while the parent forks more: more of them than the
// parent keeps staging files for (so it gives some up while their children
// still use them), the first closing every descriptor it inherited (as
// daemons do), one exec'ing. The parent forks a dozen more and writes its
// key between forks; every live child keeps its own heap, untouched by the
// copies made for the others.
static int live_children(void) {
  enum { kSleepers = 6 };
  unsigned char *key = secmem_malloc(64);
  if (key == NULL) return fail("malloc");
  memset(key, 'P', 64);
  volatile int *board = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (board == MAP_FAILED) return fail("mmap");
  pid_t sleepers[kSleepers];
  for (int s = 0; s < kSleepers; ++s) {
    memset(key, 'A' + s, 64);
    sleepers[s] = fork();
    if (sleepers[s] == 0) {
      if (s == 0)
        for (int fd = 3; fd < 1024; ++fd) close(fd);
      live_child(key, 'A' + s, 200, 'a' + s, &board[2 + s], &board[1]);
    }
    while (board[2 + s] == 0) usleep(100);
  }
  pid_t execer = fork();
  if (execer == 0) {
    execl("/bin/sleep", "sleep", "0.3", (char *)NULL);
    _exit(4);
  }
  if (!short_lived_children_see_their_key(key, 'p', 12)) return 1;
  board[1] = 1;
  int bad = 0;
  for (int s = 0; s < kSleepers; ++s) {
    int status = wait_status(sleepers[s]);
    if (status != 0) printf("live child %d%s: status %d\n", s, s == 0 ? " (closed its descriptors)" : "", status);
    bad |= status != 0;
  }
  int execer_status = wait_status(execer);
  printf("live-children: %d children lived on while 12 more were forked; the exec'd one: %d\n", kSleepers,
         execer_status);
  return bad == 0 && execer_status == 0 ? 0 : 1;
}

// ---- thread-left ----

static unsigned char *g_left_key, *g_left_own;
static int *g_left_board; // shared with the children: atomics (the watcher is a thread too)
static int g_left_index;

static void *left_watcher(void *arg) {
  (void)arg;
  int s = g_left_index, ok = 1;
  __atomic_store_n(&g_left_board[2 + s], 1, __ATOMIC_RELEASE); // ready: the forking thread may leave
  while (ok && __atomic_load_n(&g_left_board[1], __ATOMIC_ACQUIRE) == 0) {
    ok = all_bytes(g_left_key, 'A' + s, 64) && all_bytes(g_left_own, 'a' + s, 200);
    usleep(200);
  }
  _exit(ok && all_bytes(g_left_key, 'A' + s, 64) && all_bytes(g_left_own, 'a' + s, 200) ? 0 : 1);
}

static int thread_left(int raw_exit) {
  enum { kChildren = 3 };
  g_left_key = secmem_malloc(64);
  if (g_left_key == NULL) return fail("malloc");
  g_left_board = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (g_left_board == MAP_FAILED) return fail("mmap");
  pid_t children[kChildren];
  for (int s = 0; s < kChildren; ++s) {
    memset(g_left_key, 'A' + s, 64);
    children[s] = fork();
    if (children[s] == 0) {
      g_left_index = s;
      g_left_own = secmem_malloc(200);
      if (g_left_own == NULL) _exit(3);
      memset(g_left_own, 'a' + s, 200);
      pthread_t watcher;
      if (pthread_create(&watcher, NULL, left_watcher, NULL) != 0) _exit(4);
      while (__atomic_load_n(&g_left_board[2 + s], __ATOMIC_ACQUIRE) == 0) usleep(100);
      if (raw_exit) syscall(SYS_exit, 0); // this thread only, no destructor
      pthread_exit(NULL);                 // the process lives on in the watcher
    }
    while (__atomic_load_n(&g_left_board[2 + s], __ATOMIC_ACQUIRE) == 0) usleep(100);
    usleep(20000); // the forking thread has ended
  }
  if (!short_lived_children_see_their_key(g_left_key, 'p', 12)) return 1;
  __atomic_store_n(&g_left_board[1], 1, __ATOMIC_RELEASE);
  int bad = 0;
  for (int s = 0; s < kChildren; ++s) {
    int status = wait_status(children[s]);
    if (status != 0) printf("child %d (its forking thread left): status %d\n", s, status);
    bad |= status != 0;
  }
  printf("thread-left: %d children lived on without their forking thread while 12 more were forked\n", kChildren);
  return bad == 0 ? 0 : 1;
}

// ---- fork-in-handler ----

static const char *g_nest_mode;
static unsigned char *g_nest_key;
static int g_nested_status = -1, g_nesting;

// A child's view of its heap: the key it inherited, and fresh blocks zero.
static int heap_looks_right(void) {
  if (!all_bytes(g_nest_key, 0x5A, 32)) return 0;
  for (int i = 0; i < 300; ++i) {
    size_t size = 100 + (size_t)i * 13;
    unsigned char *p = secmem_calloc(1, size);
    if (p == NULL || !all_bytes(p, 0, size)) return 0;
    memset(p, 0xEE, size);
    if (i % 2) secmem_free(p);
  }
  return 1;
}

static void fork_inside(void) {
  if (g_nesting) return;
  g_nesting = 1;
  pid_t pid = fork();
  if (pid == 0) {
    int ok = heap_looks_right();
    memset(g_nest_key, 0xCC, 32); // its own copy only
    _exit(ok ? 0 : 40);
  }
  g_nested_status = pid > 0 ? wait_status(pid) : -2;
  g_nesting = 0;
}

static void nest_prepare(void) {
  if (strcmp(g_nest_mode, "prepare") == 0) fork_inside();
}
static void nest_parent(void) {
  if (strcmp(g_nest_mode, "parent") == 0) fork_inside();
}
static void nest_child(void) {
  if (strcmp(g_nest_mode, "child") == 0) fork_inside();
}

// Fork handlers registered before the heap started (so run around secmem's)
// that fork: the inner child gets a copy of its own (it used to get none, or
// share the outer child's), and neither child nor the parent sees another's
// writes.
static int fork_inside_a_handler(const char *mode) {
  g_nest_mode = mode;
  if (pthread_atfork(nest_prepare, nest_parent, nest_child) != 0) return fail("pthread_atfork");
  g_nest_key = secmem_malloc(32);
  if (g_nest_key == NULL) return fail("malloc");
  memset(g_nest_key, 0x5A, 32);
  pid_t pid = fork();
  if (pid == 0) {
    int ok = heap_looks_right();
    memset(g_nest_key, 0xCC, 32);
    // In "child" mode the inner fork ran in this process.
    if (strcmp(mode, "child") == 0 && g_nested_status != 0) ok = 0;
    _exit(ok ? 0 : 41);
  }
  int outer = wait_status(pid);
  int parent_ok = heap_looks_right();
  int inner_ok = strcmp(mode, "child") == 0 || g_nested_status == 0;
  printf("fork-in-handler %s: outer child %d, inner child %d, parent %s\n", mode, outer, g_nested_status,
         parent_ok ? "ok" : "BAD");
  return outer == 0 && inner_ok && parent_ok ? 0 : 1;
}

// ---- range-grow ----

static size_t vm_size(void) {
  FILE *status = fopen("/proc/self/status", "r");
  if (status == NULL) return 0;
  char line[256];
  size_t kib = 0;
  while (fgets(line, sizeof line, status) != NULL)
    if (sscanf(line, "VmSize: %zu kB", &kib) == 1) break;
  fclose(status);
  return kib << 10;
}

// Under the preload shim, with RLIMIT_AS leaving 200 MiB: tagged malloc of
// a block larger than the reserved range (which grows downwards for it), a
// realloc that grows it again, and free of both. The shim must know each
// block as secret (it used to pass the second to glibc's realloc: SIGSEGV).
static int range_grow(void) {
  size_t used = vm_size();
  struct rlimit limit = {used + (200u << 20), used + (200u << 20)};
  if (used == 0 || setrlimit(RLIMIT_AS, &limit) != 0) return fail("setrlimit");
  secmem_tag_begin();
  char *small = malloc(32);
  secmem_tag_end();
  uintptr_t base = 0;
  size_t size = 0;
  secmem_reserved_range(&base, &size);
  if (small == NULL || !secmem_owns(small) || size == 0) return fail("a tagged block in the secret heap");
  size_t big = size + (8u << 20);
  secmem_tag_begin();
  char *p = malloc(big);
  secmem_tag_end();
  if (p == NULL || !secmem_owns(p)) return fail("a tagged block larger than the range");
  memset(p, 'S', big);
  char *q = realloc(p, big + (8u << 20));
  if (q == NULL || !secmem_owns(q) || !all_bytes(q, 'S', big)) return fail("realloc");
  free(q);
  free(small);
  uintptr_t grown_base = 0;
  size_t grown = 0;
  secmem_reserved_range(&grown_base, &grown);
  printf("range-grow: %zu MiB, then %zu MiB\n", size >> 20, grown >> 20);
  return grown > size && grown_base + grown == base + size ? 0 : fail("the range did not grow downwards");
}

// ---- closed-fds ----

// A parent that closes every descriptor it did not open (as daemons do) and
// opens data files under the numbers secmem's staging descriptors had, then
// forks: the child's heap must not be those files (the staging file and
// pipe used to be trusted by number: the child mapped a data file as its
// secret heap, and its pid message was appended to another), and the files
// stay as they were.
static int closed_fds(const char *dir) {
  unsigned char *key = secmem_malloc(64);
  if (key == NULL) return fail("malloc");
  memset(key, 'K', 64);
  pid_t first = fork(); // makes the staging file and pipe
  if (first == 0) _exit(all_bytes(key, 'K', 64) ? 0 : 1);
  if (wait_status(first) != 0) return fail("first child");
  for (int fd = 3; fd < 1024; ++fd) close(fd);
  char path[4096];
  int files[6];
  static char data[1 << 16];
  memset(data, 'D', sizeof data);
  for (int i = 0; i < 6; ++i) {
    snprintf(path, sizeof path, "%s/data%d.bin", dir, i);
    files[i] = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (files[i] < 0 || write(files[i], data, sizeof data) != (ssize_t)sizeof data) return fail("data file");
  }
  for (int round = 0; round < 3; ++round) {
    pid_t pid = fork();
    if (pid == 0) {
      int ok = all_bytes(key, 'K', 64);
      memset(key, 'X', 64); // the child's own secret
      unsigned char *more = secmem_malloc(3000);
      if (more != NULL) memset(more, 'X', 3000);
      _exit(ok ? 0 : 1);
    }
    if (wait_status(pid) != 0) return fail("a child did not see the parent's key");
  }
  for (int i = 0; i < 6; ++i) {
    static char back[(1 << 16) + 1];
    ssize_t n = pread(files[i], back, sizeof back, 0);
    if (n != (ssize_t)sizeof data || !all_bytes(back, 'D', sizeof data)) {
      printf("data file %d: %zd bytes after the forks\n", i, n);
      return 1;
    }
  }
  printf("closed-fds: 3 forks after the descriptors were closed and reused; the data files are as written\n");
  return all_bytes(key, 'K', 64) ? 0 : fail("the parent's key");
}

// ---- no-fds ----

// A fork while no descriptor is free (no pipe, no staging file, no /proc):
// the child still gets its copy; once descriptors are free again, children
// and new chunks are in memfd_secret again (the heap used to take the
// unreadable status file for a seccomp filter installed late, for good).
static int no_fds(void) {
  char *key = secmem_malloc(100);
  if (key == NULL) return fail("malloc");
  strcpy(key, "S");
  char configured[64]; // memfd_secret, or mlock under SECMEM_BACKEND=mlock
  snprintf(configured, sizeof configured, "%s", secmem_backend_name());
  static int opened[1 << 20];
  int count = 0, fd;
  while (count < (1 << 20) && (fd = open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0) opened[count++] = fd;
  pid_t pid = fork();
  if (pid == 0) _exit(strcmp(key, "S") == 0 ? 0 : 1);
  int full = wait_status(pid);
  while (count > 0) close(opened[--count]);
  int fds[2];
  if (pipe(fds) != 0) return fail("pipe");
  pid = fork();
  if (pid == 0) {
    const char *backend = secmem_backend_name();
    _exit(strcmp(key, "S") == 0 && write(fds[1], backend, strlen(backend)) > 0 ? 0 : 1);
  }
  close(fds[1]);
  char child_backend[64] = {0};
  if (read(fds[0], child_backend, sizeof child_backend - 1) < 0) child_backend[0] = '\0';
  int again = wait_status(pid);
  char *big = secmem_malloc(3 << 20);
  const char *parent_backend = secmem_backend_name();
  printf("no-fds: child with no descriptor free: %d; then a child: %d (%s); the parent after a new chunk: %s\n", full,
         again, child_backend, parent_backend);
  return full == 0 && again == 0 && big != NULL && strcmp(child_backend, configured) == 0 &&
                 strcmp(parent_backend, configured) == 0
             ? 0
             : 1;
}

// ---- pid-namespace ----

// The parent enters a new pid namespace (as sandboxing launchers do): its
// children see other pids for themselves than it sees. A child that lives
// on keeps its heap while the parent forks more (its pid, said from inside
// the namespace, used to name no child of the parent's, which made its
// staging file look free).
static int pid_namespace(void) {
  unsigned char *key = secmem_malloc(64);
  if (key == NULL) return fail("malloc");
  if (unshare(CLONE_NEWPID) != 0) return fail("unshare(CLONE_NEWPID) (needs root)");
  volatile int *board = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (board == MAP_FAILED) return fail("mmap");
  pid_t init = fork(); // pid 1 there: it must outlive the others
  if (init == 0) {
    while (board[2] == 0) usleep(200);
    _exit(0);
  }
  memset(key, 'L', 64);
  pid_t keeper = fork();
  if (keeper == 0) live_child(key, 'L', 300, 'o', &board[0], &board[1]);
  while (board[0] == 0) usleep(100);
  if (!short_lived_children_see_their_key(key, 'a', 8)) return 1;
  board[1] = 1;
  int kept = wait_status(keeper);
  board[2] = 1;
  wait_status(init);
  printf("pid-namespace: the child that lived on: %d\n", kept);
  fflush(stdout);
  // _exit: LeakSanitizer's exit-time scan fails in a process whose children
  // are in another pid namespace.
  _exit(kept == 0 ? 0 : 1);
}

// ---- start-up-in-fork ----

static atomic_int g_go, g_started;
static char *volatile g_late_block;

static void *start_and_write(void *arg) {
  (void)arg;
  while (!atomic_load(&g_go)) usleep(100);
  char *p = secmem_malloc(64);
  if (p != NULL) memset(p, 'B', 64);
  g_late_block = p;
  atomic_store(&g_started, 1);
  return NULL;
}

// The program's own prepare handler, slow: the other thread starts the heap
// meanwhile (or, where secmem's prepare handler ran first, waits for the
// fork to end: then it cannot finish here, and this waits 50 ms only, less
// than a waiting thread's patience with a fork's hold on the start-up).
static void slow_prepare(void) {
  if (atomic_load(&g_go)) return;
  atomic_store(&g_go, 1);
  for (int i = 0; i < 500 && !atomic_load(&g_started); ++i) usleep(100);
  usleep(2000);
}

static int start_up_in_fork(void) {
  if (pthread_atfork(slow_prepare, NULL, NULL) != 0) return fail("pthread_atfork");
  (void)secmem_owns(NULL); // fork_edges_late: loads libsecmem (a load during a fork is not this test's case)
  pthread_t thread;
  if (pthread_create(&thread, NULL, start_and_write, NULL) != 0) return fail("pthread_create");
  alarm(30);
  pid_t pid = fork();
  if (pid == 0) {
    // The heap must work here, and be this child's own.
    char *mine = secmem_malloc(64);
    if (mine == NULL) _exit(2);
    memset(mine, 'C', 64);
    if (g_late_block != NULL) memset(g_late_block, 'C', 64);
    secmem_free(mine);
    _exit(0);
  }
  if (pid < 0) return fail("fork");
  int before = atomic_load(&g_started);
  int status = wait_status(pid);
  pthread_join(thread, NULL);
  int kept = g_late_block != NULL && all_bytes(g_late_block, 'B', 64);
  printf("start-up-in-fork: block written %s the fork, child status %d, parent's block %s\n",
         before ? "before" : "after", status, kept ? "kept" : "CHANGED");
  return status == 0 && kept ? 0 : 1;
}

// ---- first-in-prepare ----

static void *g_prepare_first = (void *)1;
static int g_prepare_errno;

static void first_in_prepare(void) {
  errno = 0;
  g_prepare_first = secmem_malloc(32);
  g_prepare_errno = errno;
}

static int first_allocation_in_prepare(void) {
  if (pthread_atfork(first_in_prepare, NULL, NULL) != 0) return fail("pthread_atfork");
  (void)secmem_owns(NULL); // fork_edges_late: loads libsecmem
  alarm(30);
  pid_t pid = fork();
  if (pid == 0) {
    char *p = secmem_malloc(64);
    _exit(p != NULL && secmem_owns(p) ? 0 : 1);
  }
  if (pid < 0) return fail("fork");
  int status = wait_status(pid);
  char *after = secmem_malloc(64);
  printf("first-in-prepare: prepare's allocation %s (errno %d), child %d, parent's next allocation %s\n",
         g_prepare_first != NULL ? "made" : "NULL", g_prepare_errno, status, after != NULL ? "made" : "NULL");
  if (g_prepare_first == NULL && g_prepare_errno != ENOMEM) return fail("NULL without ENOMEM");
  return status == 0 && after != NULL ? 0 : 1;
}

// ---- quiesce ----

static pthread_mutex_t g_quiesce = PTHREAD_MUTEX_INITIALIZER;
static atomic_int g_quiesce_locked, g_quiesce_done;
static char *volatile g_quiesce_block;

static void quiesce_prepare(void) { pthread_mutex_lock(&g_quiesce); }
static void quiesce_after(void) { pthread_mutex_unlock(&g_quiesce); }

static void *quiesce_thread(void *arg) {
  (void)arg;
  pthread_mutex_lock(&g_quiesce);
  atomic_store(&g_quiesce_locked, 1);
  usleep(30000); // the fork is in its prepare handlers by now
  char *p = secmem_malloc(64);
  if (p != NULL) memset(p, 'A', 64);
  g_quiesce_block = p;
  pthread_mutex_unlock(&g_quiesce);
  atomic_store(&g_quiesce_done, 1);
  return NULL;
}

static int quiesce(void) {
  if (pthread_atfork(quiesce_prepare, quiesce_after, quiesce_after) != 0) return fail("pthread_atfork");
  (void)secmem_owns(NULL); // fork_edges_late: libsecmem loads now, its handlers registered after these
  pthread_t thread;
  if (pthread_create(&thread, NULL, quiesce_thread, NULL) != 0) return fail("pthread_create");
  while (!atomic_load(&g_quiesce_locked)) usleep(100);
  alarm(30);
  pid_t pid = fork();
  if (pid == 0) {
    char *mine = secmem_malloc(64); // NULL where the heap was given up
    if (mine != NULL) memset(mine, 'C', 64);
    _exit(mine != NULL ? 10 : 11);
  }
  if (pid < 0) return fail("fork");
  int status = wait_status(pid);
  pthread_join(thread, NULL);
  char *after = secmem_malloc(64);
  int kept = g_quiesce_block != NULL && all_bytes(g_quiesce_block, 'A', 64);
  printf("quiesce: child %s, the thread's block %s, the parent's next allocation %s\n",
         status == 10   ? "had a heap"
         : status == 11 ? "had no heap"
                        : "FAILED",
         kept ? "kept" : "LOST", after != NULL ? "made" : "NULL");
  return (status == 10 || status == 11) && kept && after != NULL ? 0 : 1;
}

// ---- data-stderr ----

static int data_stderr(const char *path) {
  close(STDERR_FILENO);
  int data = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (data != STDERR_FILENO) return fail("the data file did not take fd 2");
  if (write(data, "DATA", 4) != 4) return fail("write");
  secmem_free(secmem_malloc(32));
  return 0;
}

// Started with stderr closed: a log the program opens for appending takes fd 2.
static int log_on_fd2(const char *path) {
  if (fcntl(STDERR_FILENO, F_GETFD) != -1) return fail("stderr was open at start");
  int log = open(path, O_WRONLY | O_CREAT | O_APPEND, 0600);
  if (log != STDERR_FILENO) return fail("the log did not take fd 2");
  if (write(log, "LOG\n", 4) != 4) return fail("write");
  secmem_free(secmem_malloc(32));
  return 0;
}

static int other_stderr(int to_null) {
  if (to_null) {
    int null = open("/dev/null", O_WRONLY);
    if (null < 0 || dup2(null, STDERR_FILENO) != STDERR_FILENO) return fail("/dev/null");
    close(null);
  } else {
    close(STDERR_FILENO);
  }
  secmem_free(secmem_malloc(32));
  return 0;
}

// dead-caches-in-handler: see the list at the top.
static struct secmem_stats g_handler_stats;
static void *g_handler_small, *g_handler_large;
static void dead_caches_child(void) {
  g_handler_small = secmem_malloc(100);
  g_handler_large = secmem_malloc(70000);
  secmem_get_stats(&g_handler_stats);
  secmem_free(g_handler_large);
  secmem_free(g_handler_small);
}

static volatile int g_idlers_ready, g_idlers_stop;
static void *cache_keeper(void *unused) {
  (void)unused;
  void *held[106];
  for (int i = 0; i < 100; ++i) held[i] = secmem_malloc((size_t)16 << (i % 8));
  for (int i = 100; i < 106; ++i) held[i] = secmem_malloc(65536);
  for (int i = 0; i < 106; ++i) secmem_free(held[i]); // kept in this thread's cache
  __atomic_add_fetch(&g_idlers_ready, 1, __ATOMIC_SEQ_CST);
  while (!__atomic_load_n(&g_idlers_stop, __ATOMIC_SEQ_CST)) usleep(1000);
  return NULL;
}

static int dead_caches_in_handler(void) {
  if (pthread_atfork(NULL, NULL, dead_caches_child) != 0) return fail("pthread_atfork");
  secmem_free(secmem_malloc(32)); // the heap started (under fork_edges_late, after the handler was registered)
  pthread_t idlers[4];
  for (int t = 0; t < 4; ++t)
    if (pthread_create(&idlers[t], NULL, cache_keeper, NULL) != 0) return fail("pthread_create");
  while (__atomic_load_n(&g_idlers_ready, __ATOMIC_SEQ_CST) < 4) usleep(1000);
  struct secmem_stats parent;
  secmem_get_stats(&parent);
  int bad = 0;
  for (int round = 0; round < 5; ++round) {
    pid_t pid = fork();
    if (pid < 0) return fail("fork");
    if (pid == 0) {
      if (g_handler_small == NULL || g_handler_large == NULL) _exit(2);
      _exit(g_handler_stats.chunks > parent.chunks ? 3 : 0);
    }
    int status = wait_status(pid);
    if (status != 0)
      printf("round %d: child %s\n", round,
             status == 2   ? "handler's allocation refused"
             : status == 3 ? "handler's allocations made a chunk"
                           : "failed");
    bad |= status != 0;
  }
  __atomic_store_n(&g_idlers_stop, 1, __ATOMIC_SEQ_CST);
  for (int t = 0; t < 4; ++t) pthread_join(idlers[t], NULL);
  return bad;
}

int main(int argc, char **argv) {
  if (argc < 2) return fail("usage: fork_edges MODE [ARG]");
  long arg = argc > 2 ? strtol(argv[2], NULL, 10) : 0;
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (strcmp(argv[1], "init-race") == 0) return init_race((int)arg);
  if (strcmp(argv[1], "register-race") == 0) return register_race(argc > 2 ? argv[2] : "");
  if (strcmp(argv[1], "map-limit-free") == 0) return map_limit_free();
  if (strcmp(argv[1], "guard-budget") == 0) return guard_budget();
  if (strcmp(argv[1], "all-tiers-refused") == 0) return all_tiers_refused();
  if (strcmp(argv[1], "signal-fork") == 0) return signal_fork((int)arg);
  if (strcmp(argv[1], "signal-fork-continue") == 0)
    return signal_fork_continue((int)arg, argc > 3 && strcmp(argv[3], "no-fds") == 0);
  if (strcmp(argv[1], "signal-fork-new-chunk") == 0) return signal_fork_new_chunk((int)arg);
  if (strcmp(argv[1], "mprotect-window") == 0)
    return mprotect_window((int)arg, argc > 3 && strcmp(argv[3], "no-fds") == 0);
  if (strcmp(argv[1], "refused") == 0) {
    int early = 0, fstat = 0, mprotect = 0, sealed = 0;
    for (int i = 3; i < argc; ++i) {
      early = early || strcmp(argv[i], "early") == 0;
      fstat = fstat || strcmp(argv[i], "fstat") == 0;
      mprotect = mprotect || strcmp(argv[i], "mprotect") == 0;
      sealed = sealed || strcmp(argv[i], "sealed") == 0;
    }
    if (sealed) return sealed_children_stopped((int)arg, early, fstat);
    return calls_refused((int)arg, early, fstat, mprotect);
  }
  if (strcmp(argv[1], "reentered-without-pipe") == 0) return reentered_without_pipe((int)arg);
  if (strcmp(argv[1], "signal-reenter") == 0) return signal_reenter((int)arg);
  if (strcmp(argv[1], "exit-during-fork") == 0) return exit_during_fork((int)arg);
  if (strcmp(argv[1], "reclaim-signal-fork") == 0) return reclaim_signal_fork();
  if (strcmp(argv[1], "fork-in-own-fork") == 0) return fork_in_own_fork((int)arg);
  if (strcmp(argv[1], "atfork-order") == 0) return atfork_order(0);
  if (strcmp(argv[1], "atfork-parent") == 0) return atfork_order(1);
  if (strcmp(argv[1], "atfork-parent-frees") == 0) return atfork_parent_frees(argc, argv);
  if (strcmp(argv[1], "dead-caches-in-handler") == 0) return dead_caches_in_handler();
  if (strcmp(argv[1], "map-limit") == 0) return map_limit(arg);
  if (strcmp(argv[1], "two-forkers") == 0) return two_forkers((int)arg);
  if (strcmp(argv[1], "signal-and-thread-fork") == 0) return signal_and_thread_fork((int)arg);
  if (strcmp(argv[1], "data-stderr") == 0 && argc > 2) return data_stderr(argv[2]);
  if (strcmp(argv[1], "closed-stderr") == 0) return other_stderr(0);
  if (strcmp(argv[1], "log-on-fd2") == 0 && argc > 2) return log_on_fd2(argv[2]);
  if (strcmp(argv[1], "null-stderr") == 0) return other_stderr(1);
  if (strcmp(argv[1], "child-budget") == 0) return child_budget();
  if (strcmp(argv[1], "staging-reuse") == 0) return staging_reuse((int)arg, argc > 3 && strcmp(argv[3], "grow") == 0);
  if (strcmp(argv[1], "live-children") == 0) return live_children();
  if (strcmp(argv[1], "reaped-reuse") == 0) return reaped_reuse();
  if (strcmp(argv[1], "foreign-reaper") == 0) return foreign_reaper_mode(argc > 2 && strcmp(argv[2], "nested") == 0);
  if (strcmp(argv[1], "forged-message") == 0) return forged_message();
  if (strcmp(argv[1], "published-blocks") == 0) return published_blocks((int)arg);
  if (strcmp(argv[1], "copy-race") == 0 && argc > 3) return copy_race((int)arg, atoi(argv[3]));
  if (strcmp(argv[1], "resize-stall") == 0) return resize_stall((int)arg);
  if (strcmp(argv[1], "socketpair-killed") == 0) return socketpair_killed();
  if (strcmp(argv[1], "no-status") == 0) return no_status();
  if (strcmp(argv[1], "late-filter") == 0) return late_filter(arg);
  if (strcmp(argv[1], "thread-left") == 0) return thread_left(arg == 1);
  if (strcmp(argv[1], "range-grow") == 0) return range_grow();
  if (strcmp(argv[1], "closed-fds") == 0 && argc > 2) return closed_fds(argv[2]);
  if (strcmp(argv[1], "no-fds") == 0) return no_fds();
  if (strcmp(argv[1], "pid-namespace") == 0) return pid_namespace();
  if (strcmp(argv[1], "fork-in-handler") == 0 && argc > 2) return fork_inside_a_handler(argv[2]);
  if (strcmp(argv[1], "start-up-in-fork") == 0) return start_up_in_fork();
  if (strcmp(argv[1], "first-in-prepare") == 0) return first_allocation_in_prepare();
  if (strcmp(argv[1], "quiesce") == 0) return quiesce();
  return fail("unknown mode");
}
