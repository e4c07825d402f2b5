// The heap's start-up, its half of fork, and the public operations, which
// dispatch to small (thread_cache.cpp) or large (large.cpp) blocks.
#include "heap/heap.h"

#include <cerrno>
#include <cstring>
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <utility>

#include "config/environ.h"
#include "config/policy.h"
#include "heap/blocks.h"
#include "heap/cache_ops.h"
#include "heap/canary.h"
#include "heap/fork_gate.h"
#include "heap/pagemap.h"
#include "platform/checkers.h"
#include "platform/cpu.h"
#include "platform/linux_facts.h"
#include "platform/raw_syscall.h"

namespace secmem::heap {

alignas(os::kPageSize) constinit Heap g_heap;
static_assert(sizeof(Heap) <= os::kPageSize, "what a fork writes stays on one page (Heap's fork fields)");
// In .bss, writable until start-up seals it: a process whose mprotect is
// refused (a seccomp filter, RLIMIT_DATA spent: making a private file page
// writable is charged to it) still starts, unsealed, with one message. (In
// the library's RELRO segment, where sealing would not split a mapping, a
// refused mprotect left the page read-only and start-up's first write
// faulted.) Last in the library's writable segment (.lbss follows .bss in
// the linker's default layout): sealed in the middle of .bss it split the
// anonymous mapping in three, and each mapping costs every fork.
__attribute__((section(".lbss"))) constinit ReadOnly g_ro;
std::atomic<State> g_state{State::kUninitialised};

namespace {

// The start-up lock: one word, the owner's pid (high half) and thread number
// (low half), 0 when free, so that "this thread holds it" is one load (a
// signal handler on the owner's thread sees it at once). A fork child whose
// parent's starting thread is not in it finds the parent's pid there, takes
// the lock over and starts the heap from the step its parent had reached. A
// fork holds the start-up for its whole length (prepare_fork), so that no
// start-up completes between the prepare handlers and the copy of the
// process. (A prepare handler that runs after secmem's and waits for a lock
// that a starting thread holds deadlocks there, as one that waits for a
// thread in a heap operation does once the heap is ready: README, fork.)
std::atomic<uint64_t> g_init_owner{0};
enum InitStep : int { kNothing, kConfigured, kPoolReady };
int g_init_step = kNothing;
bool g_cache_key_created = false;

uint64_t owner_word(pid_t pid, pid_t tid) {
  return uint64_t{static_cast<uint32_t>(pid)} << 32 | static_cast<uint32_t>(tid);
}
pid_t owner_pid(uint64_t word) { return static_cast<pid_t>(word >> 32); }
// The thread: the number the heap lock knows it by (no system call: a strict
// seccomp allow-list may lack gettid); the same thread in a fork child.
uint64_t this_thread_word() { return owner_word(os::process_id(), static_cast<pid_t>(this_thread())); }

// Heap::own_process: a fork generation above a pid.
uint64_t process_word(uint64_t generation, pid_t pid) { return generation << 32 | static_cast<uint32_t>(pid); }

// The forking thread's hold (nested forks counted) and the word it holds
// the lock with.
std::atomic<unsigned> g_start_up_holds{0};
std::atomic<uint64_t> g_hold_word{0};
std::atomic<uint32_t> g_hold_thread{0}; // its number: the same in a fork child (not pthread_self: libc code)

SECMEM_FORK_CHILD_TEXT bool holding_start_up() {
  return g_start_up_holds.load(std::memory_order_acquire) > 0 &&
         g_hold_thread.load(std::memory_order_relaxed) == this_thread();
}

enum class InitLock { kTaken, kDone, kMine };
InitLock take_init_lock();
void release_init_lock();

// ---- fork: the lock, the gate and the caches (the chunk copies are the pool's, chunks/fork.cpp) ----

// Forks from several threads take turns: each forker holds the heap lock
// from its prepare handler to its parent or child handler (glibc does not
// keep them apart). A fork inside a fork (a handler registered before
// secmem's that forks) runs them again: g_fork_nest counts the forker's
// extra calls. (These are g_heap's, on the lock's page.)
unsigned &g_fork_nest = g_heap.fork_nest;
pid_t &g_fork_parent = g_heap.fork_parent;
// The fork came from a signal handler that interrupted this thread's own
// locked heap operation: the lock stays as it is, and the interrupted
// operation finishes (in parent and child) when the handler returns.
bool &g_lock_was_mine = g_heap.lock_was_mine;
bool &g_child_done = g_heap.child_done;
bool &g_nested_child_done = g_heap.nested_child_done; // the same, in the child of a nested fork

void finish_child();

// From the moment the forking thread holds the lock in its prepare handler
// (before the gate closes), so that a signal handler that forks on that
// thread meanwhile takes the nested path.
std::atomic<bool> &g_fork_handlers_running = g_heap.fork_handlers_running;

bool forking_here() {
  return (g_heap.forking.load(std::memory_order_relaxed) == kGateFork ||
          g_fork_handlers_running.load(std::memory_order_relaxed)) &&
         g_heap.lock.held_by_me();
}

void prepare_heap_fork();
void note_handlers_run();

// Registered when the library is loaded, so for every fork: before the heap
// is ready it holds the start-up off until the fork is done (another
// thread's start-up in progress finishes first).
void prepare_fork() {
  SignalsBlocked blocked; // secmem's fork handlers, all three (fork_gate.h, platform/signals.h)
  note_handlers_run();
  if (holding_start_up()) { // a fork inside this thread's fork
    g_start_up_holds.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  for (;;) {
    State state = g_state.load(std::memory_order_acquire);
    if (state == State::kReady) {
      prepare_heap_fork();
      return;
    }
    if (state == State::kFailed) return;
    switch (take_init_lock()) {
    case InitLock::kTaken:
      if (g_state.load(std::memory_order_acquire) != State::kUninitialised) {
        release_init_lock();
        continue;
      }
      g_hold_word.store(g_init_owner.load(std::memory_order_relaxed), std::memory_order_relaxed);
      g_hold_thread.store(this_thread(), std::memory_order_relaxed);
      g_start_up_holds.store(1, std::memory_order_release); // last: the after handlers go by it
      return;
    case InitLock::kDone: continue;
    case InitLock::kMine:
      // A fork inside this thread's fork counts; a signal handler that
      // interrupted this thread's start-up holds nothing (the start-up goes
      // on in parent and child when the handler returns).
      if (holding_start_up()) g_start_up_holds.fetch_add(1, std::memory_order_relaxed);
      return;
    }
  }
}

void prepare_heap_fork() NO_THREAD_SAFETY_ANALYSIS {
  if (forking_here()) {
    // A fork inside a fork: a handler registered before secmem's forks.
    // This process gets its own copy first, if
    // it is a fork child whose handler has not run; the inner child copies
    // from it, while this process waits.
    if (os::process_id() != g_fork_parent) finish_child();
    g_nested_child_done = false;
    g_heap.pool.prepare_nested_fork(g_fork_nest++);
    return;
  }
  bool was_mine = g_heap.lock.held_by_me();
  // From a signal handler that interrupted this thread's cache operation:
  // another thread's fork may be waiting for it while holding the lock.
  ThreadCache *mine = my_cache();
  bool interrupted = mine != nullptr && mine->in_op.load(std::memory_order_relaxed) == kInOp;
  if (!was_mine) {
    if (interrupted) mine->in_op.store(kInOpWaitingToFork, std::memory_order_release);
    detach_lock_entries_mirror(); // lock.h: the fork writes no page of the cache's
    g_heap.lock.lock();           // another thread's fork finishes first
    if (interrupted) mine->in_op.store(kInOp, std::memory_order_relaxed);
  }
  g_lock_was_mine = was_mine;
  g_fork_nest = 0;
  // Other fork handlers on this thread may use the heap, unless this fork
  // interrupted one of the thread's heap operations (the heap halfway
  // through a change): then their calls abort with HeapLock's line, as a
  // signal handler's do (they let a handler's allocation hand out a block
  // twice, or find a fresh block not zero).
  g_heap.lock.allow_reentry(!was_mine && !interrupted);
  g_fork_parent = os::process_id();
  g_child_done = false;
  g_fork_handlers_running.store(true, std::memory_order_relaxed); // after g_fork_parent: a nested fork reads it
  // This thread's cached blocks go back first, so that the copy leaves out
  // the spans and runs they alone held (not when a signal handler
  // interrupted this thread's own heap operation: the cache or the central
  // lists may be halfway through a change). Other threads' caches stay
  // (within their budgets, thread_cache.h): emptied at every fork, the pages
  // in use swung from fork to fork, and the staging files were given up and
  // made again (13 memfd_secret files in 40 forks against 4, forks twice as
  // long, with two threads bouncing 8 KiB blocks).
  // Other threads' kept large blocks go back to the pool, though: they are
  // zero, and their runs would be copied (thread_cache.cpp).
  ThreadCache *own = my_cache();
  size_t given_back = 0;
  if (!was_mine && (own == nullptr || own->in_op.load(std::memory_order_relaxed) == 0)) {
    empty_my_cache();
    given_back = drop_other_threads_kept_large();
    // Freed runs' guards, if the last fork found them free too (not the runs
    // those caches gave back just now: they were in use until now).
    g_heap.pool.open_free_guards();
  }
  // Makes pages: before the gate holds other threads. A signal handler that
  // interrupted this thread's heap operation finds the pool halfway through
  // a change: its child copies instead.
  g_heap.pool.stage_fork(was_mine, g_fork_parent, static_cast<uint32_t>(given_back / os::kPageSize));
  // A signal handler may fork while its thread holds the gate closed for a
  // reclaim: the gate is put back so after the fork, in parent and child.
  g_heap.gate_before_fork = g_heap.forking.load(std::memory_order_relaxed);
  close_gate(kGateFork);
  g_heap.pool.prepare_fork();
}

// The start-up held for this fork: the last of nested forks lets it go; a
// child keeps nested holds in its own name.
void after_fork_with_start_up_held(bool child) {
  if (g_start_up_holds.fetch_sub(1, std::memory_order_relaxed) == 1) {
    uint64_t held = g_hold_word.load(std::memory_order_relaxed);
    g_init_owner.compare_exchange_strong(held, 0, std::memory_order_release);
  } else if (child) {
    uint64_t held = g_hold_word.load(std::memory_order_relaxed), now = this_thread_word();
    g_hold_word.store(now, std::memory_order_relaxed);
    g_init_owner.compare_exchange_strong(held, now, std::memory_order_relaxed);
  }
}

// After the fork: the start-up's hold, the heap's half, or nothing (a heap
// that failed or has not started, or a signal handler's fork during this
// thread's start-up).
bool after_start_up_hold(bool child) {
  if (!holding_start_up()) return false;
  after_fork_with_start_up_held(child);
  return true;
}

void after_fork_parent() NO_THREAD_SAFETY_ANALYSIS {
  SignalsBlocked blocked;
  if (after_start_up_hold(false) || g_state.load(std::memory_order_acquire) != State::kReady) return;
  if (g_fork_nest != 0) {
    g_heap.pool.after_nested_fork_parent(--g_fork_nest);
    return;
  }
  // The count goes up once the child exists: a wait call that read it
  // before began after this child was made (ChunkPool::note_reaped).
  uint64_t done = g_heap.forks_done.load(std::memory_order_relaxed) + 1;
  g_heap.pool.after_fork_parent(done);
  g_heap.forks_done.store(done, std::memory_order_seq_cst);
  // Release: a thread that finds the gate open reads its cache as the
  // prepare handler's drain of kept blocks left it (kGateSeeOpen).
  g_heap.forking.store(g_heap.gate_before_fork, std::memory_order_release);
  g_fork_handlers_running.store(false, std::memory_order_relaxed);
  g_heap.lock.allow_reentry(false);
  if (!g_lock_was_mine) {
    g_heap.lock.unlock();
    attach_lock_entries_mirror();
  }
}

// In a fork child: the dead threads' caches go back, unless this thread's
// interrupted operation held the lock (the central lists may be halfway
// through a change: the caches stay listed, their gates cleared, their
// blocks lost to this child only).
void settle_dead_threads_caches() NO_THREAD_SAFETY_ANALYSIS {
  reset_shared_gate_in_child();
  reset_exiting_threads_in_child();
  if (!g_lock_was_mine) {
    g_heap.lock.settle_at_next_lock(this_thread());
  } else {
    g_heap.lock.settle_for_survivor(this_thread());
    clear_dead_threads_gates();
  }
}

// The child's copies and its dead threads' caches, once. The child of a
// nested fork (g_fork_nest counts the forks in progress it was made in)
// copies for itself, from the pages of the process that forked it.
SECMEM_FORK_CHILD_TEXT void finish_child() NO_THREAD_SAFETY_ANALYSIS {
  if (g_fork_nest != 0) {
    if (g_nested_child_done) return;
    g_nested_child_done = true;
    g_heap.pool.after_fork_child(static_cast<int>(g_fork_nest) - 1);
    settle_dead_threads_caches();
    return;
  }
  if (g_child_done) return;
  g_child_done = true;
  g_heap.pool.after_fork_child(-1);
  settle_dead_threads_caches();
}

SECMEM_FORK_CHILD_TEXT void after_fork_child() NO_THREAD_SAFETY_ANALYSIS {
  SignalsBlocked blocked;
  // A new process: one generation more, and its own pid (before the heap
  // has started the page is written for it alone: a copy-on-write fault in
  // every child).
  if (uint64_t own = g_heap.own_process.load(std::memory_order_relaxed); own != 0)
    g_heap.own_process.store(process_word((own >> 32) + 1, os::process_id()), std::memory_order_relaxed);
  if (after_start_up_hold(true) || g_state.load(std::memory_order_acquire) != State::kReady) return;
  if (g_fork_nest != 0) {
    finish_child();
    --g_fork_nest;
    return;
  }
  finish_child();
  g_heap.forking.store(g_heap.gate_before_fork, kGateOrder);
  g_fork_handlers_running.store(false, std::memory_order_relaxed);
  g_heap.lock.allow_reentry(false);
  if (!g_lock_was_mine) {
    g_heap.lock.reset_in_child(true);
    attach_lock_entries_mirror();
  }
}

// ---- start-up ----

// The fork gate's barrier (heap/fork_gate.h): membarrier, registered once,
// unless a seccomp filter in force kills or refuses it (tried in a child;
// not with the descriptor table full, where the status cannot say whether
// a filter kills on the trial's clone: each operation fences instead).
bool thread_barrier_available() {
  linux_facts::SeccompState sandbox = linux_facts::seccomp_state();
  if (sandbox.for_now) return false;
  if ((!sandbox.known || sandbox.filtered) &&
      linux_facts::probe_in_child(linux_facts::ProbeCall::kMembarrier) != linux_facts::ProbeOutcome::kWorked)
    return false;
  return os::register_thread_barrier() == 0;
}

void read_configuration() {
  // A parent that forked mid-start-up may have sealed the page already.
  os::protect(&g_ro, sizeof g_ro, PROT_READ | PROT_WRITE);
  g_ro.config = parse_config(process_environment(), is_secure_exec());
  const Config &config = g_ro.config;
  if (config.verbose) print_config(config);
  if (!os::random_bytes(&g_ro.canary_key, sizeof g_ro.canary_key)) // no entropy yet: ASLR's
    g_ro.canary_key = reinterpret_cast<uintptr_t>(&g_heap) ^ (reinterpret_cast<uintptr_t>(&config) << 17);
  // Thread caches need a key whose destructor hands an exiting thread's blocks back.
  int err = pthread_key_create(&g_heap.cache_key, thread_exit);
  g_cache_key_created = err == 0;
  if (!g_cache_key_created)
    diag::Line()
        .add("cannot create a thread key for the thread caches (")
        .err(err)
        .add("); every operation takes the heap lock (slower)")
        .emit();
  for (int cls = 0; cls < kNumClasses; ++cls)
    g_ro.cache_cap[cls] = g_cache_key_created ? policy::cache_capacity(config, kClassSizes[cls], kCacheSlots) : 0;
  g_ro.fence_each_op = !thread_barrier_available();
  checkers::detect();
  g_ro.plain_ops = !g_ro.fence_each_op && !checkers::g_active;
  g_ro.wide_zero = cpu::wide_zero();
  if (int seal_err = os::seal_readonly(&g_ro, sizeof g_ro); seal_err != 0)
    diag::Line().add("cannot make the configuration read-only (").err(seal_err).add(")").emit();
}

// Without its fork handlers a child would write the parent's secret pages:
// the heap does not start. They are registered when the library is loaded
// (a constructor): registered at start-up, they would miss a fork whose
// prepare handlers had run before, and they run after every handler
// registered later (a program's prepare handler that frees secret memory
// runs before secmem's). Start-up registers them itself if it comes first
// (a static constructor elsewhere in a program linked with libsecmem.a).
enum HandlerState : int { kNotRegistered, kRegistering, kRegistered, kNotAllowed };
// The state, and while it is kRegistering the registering thread (its pid
// and the heap lock's number for it): a fork by another thread meanwhile
// gives a child in which no thread will ever finish the registration, and
// the child registers the handlers itself. When that fork ran them (they
// were listed before it), prepare_fork marked them registered first. A fork
// that did not run them although they were listed (a pthread_atfork that
// glibc let in while that fork ran earlier prepare handlers, or a _Fork
// child) gives a child with two sets listed, and a fork there may overlap
// the second registration: each fork's first prepare handler acts, and the
// parent and child handlers of its set (below).
std::atomic<uint64_t> g_handlers{kNotRegistered};
int g_handlers_err = 0;
// Set numbers are spent by each registration in a line of processes, listed
// or not (a child cannot tell whether its parent's was listed before a _Fork).
constexpr int kHandlerSets = 8;
std::atomic<int> g_handler_sets_used{0}; // taken before each registration: a child never lists one twice

uint64_t handler_word(HandlerState state, pid_t pid = 0, uint32_t thread = 0) {
  return uint64_t{thread} << 32 | uint64_t{static_cast<uint32_t>(pid)} << 8 | static_cast<uint8_t>(state);
}
HandlerState handler_state(uint64_t word) { return static_cast<HandlerState>(word & 0xff); }
pid_t handler_pid(uint64_t word) { return static_cast<pid_t>(static_cast<uint32_t>(word) >> 8); }
uint32_t handler_thread(uint64_t word) { return static_cast<uint32_t>(word >> 32); }

// Called in the prepare handler: the handlers are in glibc's list.
void note_handlers_run() {
  uint64_t word = g_handlers.load(std::memory_order_relaxed);
  if (handler_state(word) == kRegistering)
    g_handlers.compare_exchange_strong(word, handler_word(kRegistered), std::memory_order_release);
}

// The set that acts for each fork in progress on this thread, innermost
// last (forks made inside fork handlers or signal handlers). glibc runs a
// fork's prepare handlers newest first, each once, and a fork made inside
// one of them runs them again from the newest: a set older than the one
// acting for the fork in progress is that fork's, and does nothing. The
// parent and child handlers of the acting set finish the fork.
constexpr int kForkNesting = 16;
constinit __attribute__((tls_model("initial-exec"))) thread_local int t_fork_sets[kForkNesting] = {};
constinit __attribute__((tls_model("initial-exec"))) thread_local int t_fork_depth = 0;

// The stack is this thread's alone, but a signal handler on it may fork
// between any two stores: the entry is written before the depth that shows
// it and again after (a fork in between wrote its own there and took it off
// again), and taken off with one store.
template <int Set> void prepare_set() {
  int depth = t_fork_depth;
  if (depth > 0 && Set < t_fork_sets[depth - 1]) return;
  if (depth == kForkNesting) diag::fatal_errno("fork: forks nested too deep inside fork or signal handlers", EDEADLK);
  t_fork_sets[depth] = Set;
  asm volatile("" : : : "memory");
  t_fork_depth = depth + 1;
  asm volatile("" : : : "memory");
  t_fork_sets[depth] = Set;
  prepare_fork();
}
template <int Set> bool finishes_fork() {
  int depth = t_fork_depth;
  if (depth == 0 || t_fork_sets[depth - 1] != Set) return false;
  t_fork_depth = depth - 1;
  asm volatile("" : : : "memory");
  return true;
}
template <int Set> void parent_set() {
  if (finishes_fork<Set>()) after_fork_parent();
}
// Specialised one by one: GCC drops the section attribute from a template's
// implicit instantiations.
template <int Set> void child_set();
#define SECMEM_CHILD_SET(N)                                \
  template <> SECMEM_FORK_CHILD_TEXT void child_set<N>() { \
    if (finishes_fork<N>()) after_fork_child();            \
  }
SECMEM_CHILD_SET(0)
SECMEM_CHILD_SET(1)
SECMEM_CHILD_SET(2)
SECMEM_CHILD_SET(3)
SECMEM_CHILD_SET(4)
SECMEM_CHILD_SET(5)
SECMEM_CHILD_SET(6)
SECMEM_CHILD_SET(7)
#undef SECMEM_CHILD_SET
static_assert(kHandlerSets == 8, "one child_set specialisation for each set");
template <int... Set> int register_set(int set, std::integer_sequence<int, Set...>) {
  int err = EAGAIN; // no set left: forks during registrations, kHandlerSets times in one line of processes
  ((set == Set ? (err = pthread_atfork(prepare_set<Set>, parent_set<Set>, child_set<Set>)) : 0), ...);
  return err;
}

// Registers a set of handlers not listed in this process yet, unless the
// word is no longer mine: in the child of a fork made meanwhile by a signal
// handler on this thread, that handler may have registered them already.
// Signals stay blocked from that check until the set is listed, so that sets
// are listed in the order of their numbers (a signal handler's fork and
// registration in between listed a newer set first, and a fork there ran
// the heap's handlers twice).
int register_handlers(uint64_t mine) {
  SignalsBlocked blocked;
  if (g_handlers.load(std::memory_order_acquire) != mine) return 0;
  int set = g_handler_sets_used.fetch_add(1, std::memory_order_relaxed);
  return register_set(set, std::make_integer_sequence<int, kHandlerSets>{});
}

// kOwnThread: a signal handler on the registering thread, which cannot wait for it.
enum class Handlers { kIn, kRefused, kOwnThread };

Handlers fork_handlers_registered() {
  pid_t me = os::process_id();
  uint32_t thread = this_thread();
  uint64_t word = g_handlers.load(std::memory_order_acquire);
  for (unsigned round = 0; handler_state(word) != kRegistered && handler_state(word) != kNotAllowed; ++round) {
    bool registering = handler_state(word) == kRegistering;
    bool orphaned = registering && handler_pid(word) != me; // a fork child's
    if (registering && !orphaned && handler_thread(word) == thread) return Handlers::kOwnThread;
    uint64_t mine = handler_word(kRegistering, me, thread);
    if ((handler_state(word) == kNotRegistered || orphaned) &&
        g_handlers.compare_exchange_strong(word, mine, std::memory_order_acquire)) {
      // The mark first: a fork as soon as the handlers are in gives its child one.
      g_heap.own_process.store(process_word(0, me), std::memory_order_relaxed);
      g_handlers_err = register_handlers(mine);
      HandlerState state = g_handlers_err == 0 ? kRegistered : kNotAllowed;
      if (g_handlers.compare_exchange_strong(mine, handler_word(state), std::memory_order_release) &&
          state != kRegistered)
        g_heap.own_process.store(0, std::memory_order_relaxed);
      word = g_handlers.load(std::memory_order_acquire);
      return handler_state(word) == kRegistered ? Handlers::kIn : Handlers::kRefused;
    }
    if (registering && !orphaned) {
      if (round < 64)
        sched_yield();
      else
        os::sleep_us(20);
      word = g_handlers.load(std::memory_order_acquire);
    }
  }
  return handler_state(word) == kRegistered ? Handlers::kIn : Handlers::kRefused;
}

__attribute__((constructor)) void register_fork_handlers_at_load() {
  os::pin_shared_library();
  fork_handlers_registered();
}

// A start-up on a thread that holds the start-up or is registering the fork
// handlers (in a fork handler, or a signal handler): this allocation fails.
bool cannot_start_here() {
  static std::atomic<bool> said{false};
  diag::say_once(said, "the secret heap cannot start inside a fork handler or a signal handler on the thread that "
                       "holds its start-up or registers its fork handlers; this allocation fails (ENOMEM)");
  return false;
}

// Takes the start-up lock; kDone when another thread of this process has
// finished starting the heap meanwhile, kMine when this thread holds it (a
// fork handler or a signal handler on the thread that is starting the heap
// or holds the start-up for a fork). Waits back off to sleeps, so that a
// waiter of higher priority lets the owner run.
InitLock take_init_lock() NO_THREAD_SAFETY_ANALYSIS {
  uint64_t mine = this_thread_word();
  pid_t me = owner_pid(mine);
  for (unsigned round = 0;; ++round) {
    uint64_t owner = 0;
    if (g_init_owner.compare_exchange_strong(owner, mine, std::memory_order_acquire)) return InitLock::kTaken;
    if (owner == mine) return InitLock::kMine;
    // A fork child whose parent was starting up: the starting thread is not
    // here, nor is any other that could hold the heap lock yet; unless it is
    // this thread, whose start-up a fork from its signal handler cut short
    // (the start-up goes on when the handler returns).
    if (owner_pid(owner) != me) {
      if (static_cast<uint32_t>(owner) == static_cast<uint32_t>(mine)) return InitLock::kMine;
      if (g_init_owner.compare_exchange_strong(owner, mine, std::memory_order_acquire)) {
        g_heap.lock.reset_in_child(false);
        return InitLock::kTaken;
      }
      continue;
    }
    if (g_state.load(std::memory_order_acquire) != State::kUninitialised) return InitLock::kDone;
    if (round < 64) {
      sched_yield();
    } else {
      os::sleep_us(round < 128 ? 20 : 1000); // raw nanosleep: not a cancellation point, as nanosleep(3) is
    }
  }
}

void release_init_lock() { g_init_owner.store(0, std::memory_order_release); }

// Exit, or the unload of a copy that can go: a plugin that carries
// libsecmem.a, or libsecmem.so in a namespace made by dlmopen (in the
// program's own it is never unloaded: os::pin_shared_library). No thread
// may call into unloaded code when it exits (glibc drops the fork handlers
// itself).
__attribute__((destructor)) void unload() {
  if (!g_cache_key_created) return;
  pthread_key_delete(g_heap.cache_key);
  wait_for_exiting_threads(); // one that began before the key went finishes first
}

} // namespace

// Called on the forking thread, which holds the lock (a re-entry).
void finish_fork_in_child_now() NO_THREAD_SAFETY_ANALYSIS {
  if (g_heap.forking.load(std::memory_order_relaxed) != kGateFork) return;
  if (os::process_id() != g_fork_parent)
    finish_child();
  else
    g_heap.pool.fork_reentered(static_cast<int>(g_fork_nest)); // the staged copy would miss what this changes
}

namespace {
// The pool's reap log is lock-free (atomics written from any thread or
// signal handler): reached without the heap lock.
ChunkPool &reap_log_owner() NO_THREAD_SAFETY_ANALYSIS { return g_heap.pool; }
} // namespace

void watch_reaping() { reap_log_owner().watch_reaping(); }

uint64_t forks_done() { return g_heap.forks_done.load(std::memory_order_seq_cst); }

uint64_t process_mark(bool ask_kernel) {
  uint64_t own = g_heap.own_process.load(std::memory_order_relaxed);
  if (own == 0 || !ask_kernel) return own;
  return process_word(own >> 32, os::process_id());
}

void child_reaped(int pid, uint64_t forks_done_before) { reap_log_owner().note_reaped(pid, forks_done_before); }

bool init_slow() {
  switch (take_init_lock()) {
  case InitLock::kTaken: break;
  case InitLock::kDone: return is_ready();
  case InitLock::kMine: return cannot_start_here();
  }
  // Not cancelled half-way (start-up opens and reads /proc, cancellation
  // points): the lock would stay taken, and every fork would wait for it.
  int cancel_state = 0;
  pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &cancel_state);
  if (g_state.load(std::memory_order_acquire) == State::kUninitialised) {
    Handlers handlers = fork_handlers_registered();
    if (handlers == Handlers::kOwnThread) { // the registration goes on when the signal handler returns
      release_init_lock();
      pthread_setcancelstate(cancel_state, nullptr);
      return cannot_start_here();
    }
    bool ok = handlers == Handlers::kIn;
    if (!ok) {
      diag::Line line;
      line.add("cannot register the fork handlers");
      if (g_handlers_err == EAGAIN) // register_set: no set left
        line.add(": every set of them was taken by registrations that forks cut short, in this process or its "
                 "parents");
      else
        line.add(" (").err(g_handlers_err).add(")");
      line.add("; every allocation will return NULL").emit();
    }
    if (ok && g_init_step < kConfigured) {
      read_configuration();
      g_init_step = kConfigured;
    }
    if (ok && g_init_step < kPoolReady) {
      ScopedLock lock(g_heap.lock);
      g_heap.central.init(policy::keeps_memory(g_ro.config));
      ok = g_heap.pool.init(g_ro.config);
      g_heap.pool.set_reclaimer(reclaim_caches);
      g_heap.pool.set_own_returner(give_back_own_kept);
      if (ok && policy::undumpable_from_start(g_ro.config)) g_heap.pool.make_undumpable();
      if (ok) g_init_step = kPoolReady;
    }
    g_state.store(ok ? State::kReady : State::kFailed, std::memory_order_release);
  }
  release_init_lock();
  pthread_setcancelstate(cancel_state, nullptr);
  return g_state.load(std::memory_order_acquire) == State::kReady;
}

namespace {

// The smallest class at or above size whose blocks are all aligned, or -1.
int aligned_class(size_t size, size_t alignment) {
  if (size > kMaxSmallSize || alignment > os::kPageSize) return -1; // spans are only page-aligned
  for (int cls = size_to_class(size); cls < kNumClasses; ++cls)
    if (kClassSizes[cls] % alignment == 0) return cls;
  return -1;
}

void *fail_enomem() {
  errno = ENOMEM;
  return nullptr;
}

// A live block's new size fits where it is: same class, or a large block that stays more than half full.
bool resizes_in_place(const BlockRef &ref, size_t size) {
  size_t block = ref.span->block_size;
  if (size > block) return false;
  return ref.span->cls >= 0 ? size <= kMaxSmallSize && size_to_class(size) == ref.span->cls
                            : size > block / 2 && size > kMaxSmallSize;
}

void rewrite_in_place(void *p, const BlockRef &ref, size_t size) {
  size_t block = ref.span->block_size, old = ref.requested_size();
  checkers::expose(p, block);
  canary::check(g_ro.canary_key, p, old, block);
  // Shrinking keeps no stale tail; the old canary goes (the rest of the slack is zero).
  size_t keep = size < old ? size : old;
  zero(static_cast<char *>(p) + keep, old + canary::span_after(old, block) - keep);
  ref.set_requested(old, size);
  canary::write(g_ro.canary_key, p, size, block);
  checkers::resized(p, old, size, block);
}

// The new size (in the span, ordinary memory) and the canary and tail (in
// the block) change together for a fork: inside the gate (as release_large).
void resize_in_place(void *p, const BlockRef &ref, size_t size) {
  WriteGate gate(t_cache);
  rewrite_in_place(p, ref, size);
}

} // namespace

namespace {

[[gnu::noinline]] void *allocate_slow(size_t size) {
  if (size <= kMaxSmallSize) return ready() ? allocate_small(size_to_class(size), size == 0 ? 1 : size) : fail_enomem();
  if (size > kMaxRequest || !ready()) return fail_enomem();
  if (void *p = pop_large(size)) return p;
  return allocate_large(size, os::kPageSize, false, true);
}

// The rest of release: large blocks, and small ones whose push release
// tried already (no cache, a full one or one of no slots for the class, a
// gate closed, the plain operations off), to release_small. A block no
// longer live is a double free, said so first: a signal handler's free of
// the block whose free it interrupted inside the cache's gate, after its
// live mark was cleared, would otherwise abort with the re-entry line.
[[gnu::noinline]] void release_slow(void *p, Span *span, uint32_t index) {
  BlockRef ref{span, index};
  if (!ref.is_live()) diag::fatal_pointer("double free of", p, nullptr);
  if (span->cls < 0)
    release_large(p, ref);
  else
    release_small(p, ref);
}

} // namespace

// The fast paths (a small block from or to this thread's cache) end in a
// tail call when they cannot finish: allocate saves no registers; release
// saves six (its inlined lookup and push, and the memset or zero_wide call
// for blocks over kInlineZeroBytes), which measured no slower than none at 16 bytes.
void *allocate(size_t size) {
  if (__builtin_expect(size <= kMaxSmallSize, 1))
    if (void *p = pop_cached(size_to_class(size), size == 0 ? 1 : size)) return p; // the heap is ready
  return allocate_slow(size);
}

void *allocate_aligned(size_t alignment, size_t size) {
  if (alignment <= 16) return allocate(size);
  if (size > kMaxRequest || !ready()) return fail_enomem();
  int cls = aligned_class(size, alignment);
  if (cls >= 0) return allocate_small(cls, size == 0 ? 1 : size);
  return allocate_large(size == 0 ? 1 : size, alignment, false);
}

void *allocate_sealed(size_t size) {
  if (size > kMaxRequest || !ready()) return fail_enomem();
  return allocate_large(size == 0 ? 1 : size, os::kPageSize, true);
}

void release(void *p) {
  if (p == nullptr) return;
  BlockRef ref = checked_block(p, Misuse::kFree);
  int cls = ref.span->cls;
  // Every small class is pushed here, blocks over kInlineZeroBytes zeroed
  // with a call to memset (or zero_wide) from this frame. (Pushed from release_slow, a
  // second call away, alloc+free of 256 and 1024 bytes took 1.5 and 1.0 ns
  // more: 1.29x and 1.28x glibc + explicit_bzero, against 1.13x and 1.18x;
  // random batches of 1024 bytes took 8% less, and of 4096 bytes 5% less:
  // there free waits at the live mark's locked exchange for the previous
  // free's zeroing stores to drain, and the second call gave them time.)
  if (cls >= 0 && push_cached(p, ref)) return;
  release_slow(p, ref.span, ref.index);
}

void *reallocate(void *p, size_t size) {
  if (p == nullptr) return allocate(size);
  BlockRef ref = checked_block(p, Misuse::kRealloc);
  if (!ref.is_live()) diag::fatal_pointer("invalid realloc of", p, "block already freed");
  if (ref.span->sealed) { // its pages may be inaccessible; it keeps its place
    errno = EINVAL;
    return nullptr;
  }
  if (size == 0) {
    release(p);
    return nullptr;
  }
  if (resizes_in_place(ref, size)) {
    resize_in_place(p, ref, size);
    return p;
  }
  size_t old = ref.requested_size();
  void *moved = allocate(size);
  if (moved == nullptr) return nullptr;
  memcpy(moved, p, size < old ? size : old);
  release(p);
  return moved;
}

size_t usable_size(const void *p) {
  BlockRef ref;
  if (p == nullptr || find_block(p, &ref) != Found::kBlock || !ref.is_live()) return 0;
  return ref.requested_size();
}

// The allocation's bytes, not its block's: the slack after them (the
// canary's, and any rounding) answers 0, as usable_size says.
bool owns(const void *p) {
  BlockRef ref;
  Found found = find_block(p, &ref);
  if (found == Found::kBlock) return ref.is_live();
  if (found != Found::kInterior || !ref.is_live()) return false;
  uintptr_t offset = reinterpret_cast<uintptr_t>(p) - reinterpret_cast<uintptr_t>(ref.address());
  return offset < ref.requested_size();
}

} // namespace secmem::heap
