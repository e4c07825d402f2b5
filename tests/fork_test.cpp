// fork: parent and child never see each other's writes and are never handed
// the same block, on both backends (memfd_secret mappings are MAP_SHARED, so
// this is work the heap must do).
#include <gtest/gtest.h>

#include <atomic>
#include <csetjmp>
#include <csignal>
#include <cstring>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include "block_model.h"
#include "secmem/secmem.h"
#include "test_support.h"

using namespace secmem::test;

namespace {

// A one-byte signal between the two processes.
struct Signal {
  int fds[2] = {-1, -1};
  Signal() { EXPECT_EQ(pipe(fds), 0); }
  ~Signal() {
    close(fds[0]);
    close(fds[1]);
  }
  void raise() { EXPECT_EQ(write(fds[1], "x", 1), 1); }
  bool wait() {
    char c;
    return read(fds[0], &c, 1) == 1;
  }
};

int wait_child(pid_t pid) {
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

} // namespace

TEST(Fork, WritesDoNotCrossInEitherDirection) {
  auto *secret = static_cast<char *>(secmem_malloc(64));
  strcpy(secret, "parent key");
  Signal parent_wrote, child_wrote;
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    bool ok = strcmp(secret, "parent key") == 0;
    parent_wrote.wait();
    ok = ok && strcmp(secret, "parent key") == 0; // not "parent changed"
    strcpy(secret, "child wrote");
    child_wrote.raise();
    _exit(ok ? 0 : 1);
  }
  strcpy(secret, "parent changed");
  parent_wrote.raise();
  child_wrote.wait();
  EXPECT_EQ(wait_child(pid), 0) << "the child saw the parent's write";
  EXPECT_STREQ(secret, "parent changed") << "the parent saw the child's write";
  secmem_free(secret);
}

TEST(Fork, ParentAndChildAreNeverHandedTheSameBlock) {
  std::vector<void *> before;
  for (int i = 0; i < 100; ++i) before.push_back(secmem_malloc(48)); // leave partly used spans behind
  for (int i = 0; i < 100; i += 2) secmem_free(before[i]);
  Signal parent_filled, child_filled;
  auto fill_many = [](uint64_t seed, std::vector<unsigned char *> *out) {
    for (int i = 0; i < 2000; ++i) {
      size_t size = 16 + (i * 37) % 3000;
      auto *p = static_cast<unsigned char *>(secmem_malloc(size));
      fill_pattern(p, size, seed + i);
      out->push_back(p);
    }
  };
  auto intact = [](uint64_t seed, const std::vector<unsigned char *> &blocks) {
    for (size_t i = 0; i < blocks.size(); ++i)
      if (!holds_pattern(blocks[i], 16 + (i * 37) % 3000, seed + i)) return false;
    return true;
  };
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    std::vector<unsigned char *> mine;
    fill_many(1000000, &mine);
    child_filled.raise();
    parent_filled.wait();
    _exit(intact(1000000, mine) ? 0 : 1);
  }
  std::vector<unsigned char *> mine;
  fill_many(2000000, &mine);
  parent_filled.raise();
  child_filled.wait();
  EXPECT_EQ(wait_child(pid), 0) << "the child's blocks were overwritten";
  EXPECT_TRUE(intact(2000000, mine)) << "the parent's blocks were overwritten";
  for (void *p : mine) secmem_free(p);
  for (int i = 1; i < 100; i += 2) secmem_free(before[i]);
}

TEST(Fork, ChildKeepsTheBackendAndCountsPrivatisations) {
  void *p = secmem_malloc(128);
  secmem_stats parent{};
  secmem_get_stats(&parent);
  int status = run_in_child([&] {
    secmem_stats child{};
    secmem_get_stats(&child);
    Mapping mapping;
    if (!find_mapping(p, &mapping, true)) return false;
    bool locked = mapping.has_vm_flag("lo");
    bool no_dump = mapping.has_vm_flag("dd");
    if (running_on_mlock_backend()) {
      // mlock is not inherited: the heap locks the child's pages again.
      return locked && no_dump && child.fork_privatisations == 0 && std::string(child.backend) == "mlock";
    }
    return mapping.secret() && no_dump && child.fork_privatisations == parent.chunks &&
           std::string(child.backend) == "memfd_secret" && secmem_owns(p);
  });
  EXPECT_EQ(status, 0);
  secmem_free(p);
}

TEST(Fork, WhileAnotherThreadAllocates) {
  std::atomic<bool> stop{false};
  std::thread busy([&] {
    while (!stop) {
      void *p = secmem_malloc(200);
      memset(p, 0x77, 200);
      secmem_free(p);
    }
  });
  for (int round = 0; round < 20; ++round) {
    auto *mine = static_cast<char *>(secmem_malloc(32));
    strcpy(mine, "round");
    int status = run_in_child([&] {
      // Only this thread exists here; the heap must still work, and nest.
      std::vector<void *> blocks;
      for (int i = 0; i < 500; ++i) blocks.push_back(secmem_malloc(200));
      for (void *p : blocks) secmem_free(p);
      int grandchild = run_in_child([&] { return strcmp(mine, "round") == 0; });
      return strcmp(mine, "round") == 0 && grandchild == 0;
    });
    EXPECT_EQ(status, 0) << "round " << round;
    secmem_free(mine);
  }
  stop = true;
  busy.join();
}

namespace {
sigjmp_buf t_fault_jump;
thread_local bool t_probing = false;
void on_fault(int) {
  if (t_probing) siglongjmp(t_fault_jump, 1);
  signal(SIGSEGV, SIG_DFL);
}
} // namespace

// A sealed block stays closed to every thread while the process forks: the
// child's copy is made in the child, so nothing is opened in the parent (the
// old copy in the prepare handler made it PROT_READ for all threads).
TEST(Fork, SealedBlocksStayClosedToOtherThreadsDuringFork) {
  int status = run_in_child([] {
    auto *sealed = static_cast<volatile unsigned char *>(secmem_sealed_alloc(64));
    if (sealed == nullptr) return false;
    struct sigaction action {};
    action.sa_handler = on_fault;
    sigaction(SIGSEGV, &action, nullptr);
    std::atomic<bool> stop{false};
    std::atomic<long> reads_that_worked{0}, reads{0};
    std::thread reader([&] {
      t_probing = true;
      while (!stop.load()) {
        if (sigsetjmp(t_fault_jump, 1) == 0) {
          (void)sealed[0];
          reads_that_worked++;
        }
        reads++;
      }
      t_probing = false;
    });
    for (int i = 0; i < 30; ++i) {
      pid_t pid = fork();
      if (pid == 0) _exit(0);
      waitpid(pid, nullptr, 0);
    }
    stop = true;
    reader.join();
    secmem_free(const_cast<unsigned char *>(sealed));
    return reads.load() > 0 && reads_that_worked.load() == 0;
  });
  EXPECT_EQ(status, 0);
}
