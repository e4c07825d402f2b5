// Whether the fork child that took a staging file is gone, asked without a
// system call (chunks/fork.cpp). Each staging slot has a robust,
// process-shared mutex in one page that parent and children share. The child
// takes its slot's mutex in its fork handler; the kernel marks the mutex
// owner-died when the thread that took it ends: when the child exits or is
// killed, and when it calls execve (which also drops the child's mapping of
// the file). The parent's trylock then tells it the file is free again.
//
// A child thread that took the mutex may end while the process goes on
// (pthread_exit on the thread that forked, from the main thread too): a
// thread-specific destructor marks the slot first, and the parent asks
// waitid instead (its old way, behind the seccomp check). So does a child
// that could not take its mutex.
#pragma once

#include <atomic>
#include <cstdint>
#include <pthread.h>

namespace secmem {

class ChildWatch {
public:
  static constexpr int kSlots = 4;
  enum class Verdict {
    kAlive, // the child holds its slot
    kGone,  // its taking thread ended with the process (exit, a signal, execve)
    kAsk,   // nothing certain: ask waitid
  };

  // Parent: the shared page, made at the first fork that stages. False when
  // it cannot be had (then every child is asked after with waitid).
  bool ready();
  // Parent: the child that took slot, and said so, is alive or gone. Makes
  // the slot's mutex free and consistent again when it is not kAlive.
  Verdict check(int slot);
  // Child, in its fork handler on the forking thread: takes slot (-1: none)
  // for this process and forgets the parent's page (this process's own
  // children get a page of their own). True when taken.
  bool take_in_child(int slot);

private:
  struct Page {
    pthread_mutex_t slot[kSlots];
    // Set by a thread-specific destructor when the thread that took the
    // slot ends while its process goes on.
    std::atomic<uint32_t> thread_left[kSlots];
  };
  Page *page_ = nullptr;
};

} // namespace secmem
