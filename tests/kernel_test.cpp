// What the kernel promises for memfd_secret pages, checked on the heap's
// blocks: secretmem mapping, locked and not dumpable, and unreadable through
// /proc/PID/mem, process_vm_readv and ptrace, even by root. Each check also
// reads an ordinary heap buffer the same way, so a broken probe cannot pass.
#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/ptrace.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "platform/linux_facts.h"
#include "secmem/secmem.h"
#include "test_support.h"

using namespace secmem::test;

namespace {

constexpr char kSecret[] = "correct horse battery staple";

// A child process holding kSecret in secret memory and in an ordinary buffer.
class Holder {
public:
  Holder() {
    int to_parent[2], to_child[2];
    EXPECT_EQ(pipe(to_parent), 0);
    EXPECT_EQ(pipe(to_child), 0);
    pid_ = fork();
    if (pid_ == 0) {
      close(to_child[1]); // so that the parent's close ends the wait below
      close(to_parent[0]);
      auto *secret = static_cast<char *>(secmem_malloc(sizeof kSecret));
      auto *plain = static_cast<char *>(malloc(sizeof kSecret));
      strcpy(secret, kSecret);
      strcpy(plain, kSecret);
      void *addrs[2] = {secret, plain};
      if (write(to_parent[1], addrs, sizeof addrs) != sizeof addrs) _exit(1);
      char c;
      (void)!read(to_child[0], &c, 1); // until the parent is done
      _exit(strcmp(secret, kSecret) == 0 ? 0 : 1);
    }
    void *addrs[2] = {};
    EXPECT_EQ(read(to_parent[0], addrs, sizeof addrs), static_cast<ssize_t>(sizeof addrs));
    secret_ = addrs[0];
    plain_ = addrs[1];
    release_fd_ = to_child[1];
    close(to_parent[0]);
    close(to_parent[1]);
    close(to_child[0]);
  }
  ~Holder() {
    close(release_fd_);
    int status = 0;
    waitpid(pid_, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  pid_t pid() const { return pid_; }
  void *secret() const { return secret_; }
  void *plain() const { return plain_; }

private:
  pid_t pid_ = -1;
  void *secret_ = nullptr;
  void *plain_ = nullptr;
  int release_fd_ = -1;
};

} // namespace

TEST(Kernel, SecretBlocksLieInLockedUndumpableSecretmemMappings) {
  SECMEM_REQUIRE_SECRETMEM();
  void *p = secmem_malloc(100);
  Mapping mapping;
  ASSERT_TRUE(find_mapping(p, &mapping, true));
  EXPECT_EQ(mapping.path, secmem::linux_facts::kSecretMapName);
  EXPECT_TRUE(mapping.has_vm_flag("lo"));
  EXPECT_TRUE(mapping.has_vm_flag("dd"));
  secmem_free(p);
}

TEST(Kernel, ProcSelfMemCannotReadASecret) {
  SECMEM_REQUIRE_SECRETMEM();
  auto *secret = static_cast<char *>(secmem_malloc(sizeof kSecret));
  auto *plain = static_cast<char *>(malloc(sizeof kSecret));
  strcpy(secret, kSecret);
  strcpy(plain, kSecret);
  int fd = open("/proc/self/mem", O_RDONLY);
  ASSERT_GE(fd, 0);
  char buf[sizeof kSecret] = {};
  EXPECT_EQ(pread(fd, buf, sizeof buf, reinterpret_cast<off_t>(plain)), static_cast<ssize_t>(sizeof buf));
  EXPECT_STREQ(buf, kSecret) << "control: an ordinary buffer is readable";
  memset(buf, 0, sizeof buf);
  errno = 0;
  EXPECT_EQ(pread(fd, buf, sizeof buf, reinterpret_cast<off_t>(secret)), -1);
  EXPECT_EQ(errno, EIO);
  EXPECT_EQ(memchr(buf, 'c', sizeof buf), nullptr);
  close(fd);
  free(plain);
  secmem_free(secret);
}

TEST(Kernel, AnotherProcessCannotReadASecret) {
  SECMEM_REQUIRE_SECRETMEM();
  Holder holder;
  char buf[sizeof kSecret] = {};
  // /proc/PID/mem
  std::string path = "/proc/" + std::to_string(holder.pid()) + "/mem";
  int fd = open(path.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(pread(fd, buf, sizeof buf, reinterpret_cast<off_t>(holder.plain())), static_cast<ssize_t>(sizeof buf));
  EXPECT_STREQ(buf, kSecret) << "control";
  errno = 0;
  EXPECT_EQ(pread(fd, buf, sizeof buf, reinterpret_cast<off_t>(holder.secret())), -1);
  EXPECT_EQ(errno, EIO);
  close(fd);
  // process_vm_readv
  memset(buf, 0, sizeof buf);
  iovec local{buf, sizeof buf};
  iovec remote{holder.plain(), sizeof buf};
  EXPECT_EQ(process_vm_readv(holder.pid(), &local, 1, &remote, 1, 0), static_cast<ssize_t>(sizeof buf));
  EXPECT_STREQ(buf, kSecret) << "control";
  remote.iov_base = holder.secret();
  errno = 0;
  EXPECT_EQ(process_vm_readv(holder.pid(), &local, 1, &remote, 1, 0), -1);
  EXPECT_EQ(errno, EFAULT);
  // ptrace
  ASSERT_EQ(ptrace(PTRACE_SEIZE, holder.pid(), nullptr, nullptr), 0);
  ASSERT_EQ(ptrace(PTRACE_INTERRUPT, holder.pid(), nullptr, nullptr), 0);
  int status = 0;
  waitpid(holder.pid(), &status, 0);
  errno = 0;
  long word = ptrace(PTRACE_PEEKDATA, holder.pid(), holder.plain(), nullptr);
  EXPECT_EQ(errno, 0) << "control";
  EXPECT_EQ(memcmp(&word, kSecret, sizeof word), 0) << "control";
  errno = 0;
  ptrace(PTRACE_PEEKDATA, holder.pid(), holder.secret(), nullptr);
  EXPECT_EQ(errno, EIO);
  ASSERT_EQ(ptrace(PTRACE_DETACH, holder.pid(), nullptr, nullptr), 0);
}
