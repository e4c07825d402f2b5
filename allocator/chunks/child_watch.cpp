#include "chunks/child_watch.h"

#include <cerrno>
#include <new>

#include "platform/os.h"

namespace secmem {

namespace {

// One key for the process; a fork child inherits it with the memory.
pthread_key_t g_key;
bool g_key_made = false; // under the heap lock (the parent's fork handlers)

void thread_left(void *word) { static_cast<std::atomic<uint32_t> *>(word)->store(1, std::memory_order_release); }

// dlclose of libsecmem: no thread may call into the unloaded code when it exits.
__attribute__((destructor)) void unload_watch() {
  if (g_key_made) pthread_key_delete(g_key);
}

} // namespace

bool ChildWatch::ready() {
  if (page_ != nullptr) return true;
  if (!g_key_made) {
    if (pthread_key_create(&g_key, thread_left) != 0) return false;
    g_key_made = true;
  }
  void *mem = os::map_shared_metadata(sizeof(Page));
  if (mem == nullptr) return false;
  auto *page = static_cast<Page *>(mem);
  pthread_mutexattr_t attr;
  pthread_mutexattr_init(&attr);
  bool ok = pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED) == 0 &&
            pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST) == 0;
  for (int slot = 0; ok && slot < kSlots; ++slot) {
    ok = pthread_mutex_init(&page->slot[slot], &attr) == 0;
    new (&page->thread_left[slot]) std::atomic<uint32_t>(0);
  }
  pthread_mutexattr_destroy(&attr);
  if (!ok) {
    os::unmap(mem, sizeof(Page));
    return false;
  }
  page_ = page;
  return true;
}

ChildWatch::Verdict ChildWatch::check(int slot) {
  if (page_ == nullptr || slot < 0 || slot >= kSlots) return Verdict::kAsk;
  pthread_mutex_t *mutex = &page_->slot[slot];
  int rc = pthread_mutex_trylock(mutex);
  if (rc == EBUSY) return Verdict::kAlive;
  if (rc == EOWNERDEAD) {
    bool left = page_->thread_left[slot].exchange(0, std::memory_order_acquire) != 0;
    pthread_mutex_consistent(mutex);
    pthread_mutex_unlock(mutex);
    return left ? Verdict::kAsk : Verdict::kGone;
  }
  if (rc == 0) pthread_mutex_unlock(mutex); // not held: the child never took it
  return Verdict::kAsk;
}

bool ChildWatch::take_in_child(int slot) {
  Page *page = page_;
  page_ = nullptr;
  if (!g_key_made) return false;
  pthread_setspecific(g_key, nullptr); // one inherited from the fork that made this thread's parent
  if (page == nullptr || slot < 0 || slot >= kSlots) return false;
  pthread_mutex_t *mutex = &page->slot[slot];
  int rc = pthread_mutex_trylock(mutex);
  if (rc == EOWNERDEAD) rc = pthread_mutex_consistent(mutex);
  if (rc != 0) return false; // still held: an earlier child of this slot lives on
  page->thread_left[slot].store(0, std::memory_order_relaxed);
  if (pthread_setspecific(g_key, &page->thread_left[slot]) != 0) {
    pthread_mutex_unlock(mutex); // its thread's end would go unseen
    return false;
  }
  return true;
}

} // namespace secmem
