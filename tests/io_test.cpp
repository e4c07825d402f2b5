// Which system calls accept secret memory as their buffer, and which refuse
// it and how: the table in README.md ("I/O with secret buffers") is this
// test's output. Buffers come from the secret heap on memfd_secret; each
// case runs beside a control with an ordinary buffer, which must work.
#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <liburing.h>
#include <netinet/in.h>
#include <string>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>
#include <vector>

#include "platform/linux_facts.h"
#include "secmem/secmem.h"
#include "test_support.h"

using namespace secmem::test;

namespace {

constexpr size_t kSize = 4096;

// "ok", or the errno's name.
std::string outcome(long rc, int err) {
  if (rc >= 0) return "ok";
  const char *name = strerrorname_np(err);
  return name != nullptr ? name : std::to_string(err);
}

struct Fixture {
  std::string dir;
  Fixture() {
    char pattern[] = "/var/tmp/secmem-io-XXXXXX"; // O_DIRECT needs a disk file system, not tmpfs
    dir = mkdtemp(pattern);
    std::vector<char> data(kSize * 4, 'x');
    int fd = open((dir + "/data").c_str(), O_CREAT | O_WRONLY, 0600);
    EXPECT_EQ(write(fd, data.data(), data.size()), static_cast<ssize_t>(data.size()));
    fsync(fd);
    close(fd);
  }
  ~Fixture() { (void)!system(("rm -rf " + dir).c_str()); }
  std::string file() const { return dir + "/data"; }
};

// Each case gets a page-aligned buffer of kSize bytes and says what happened.
using Case = std::string (*)(const Fixture &, void *buf);

// One read (O_RDONLY) or write of kSize bytes on a file opened with flags.
std::string file_io(const std::string &path, int flags, void *buf) {
  int fd = open(path.c_str(), flags, 0600);
  if (fd < 0) return "open " + outcome(-1, errno);
  long rc = (flags & O_ACCMODE) == O_RDONLY ? read(fd, buf, kSize) : write(fd, buf, kSize);
  int err = errno;
  close(fd);
  return outcome(rc, err);
}

std::string do_read(const Fixture &fx, void *buf) { return file_io(fx.file(), O_RDONLY, buf); }
std::string do_write(const Fixture &fx, void *buf) {
  return file_io(fx.dir + "/out", O_CREAT | O_WRONLY | O_TRUNC, buf);
}

std::string do_send_recv(const Fixture &, void *buf) {
  int sv[2];
  socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
  long sent = send(sv[0], buf, 64, 0);
  int err = errno;
  if (sent < 0) {
    close(sv[0]);
    close(sv[1]);
    return "send " + outcome(sent, err);
  }
  long got = recv(sv[1], static_cast<char *>(buf) + 64, 64, 0);
  err = errno;
  close(sv[0]);
  close(sv[1]);
  return got < 0 ? "recv " + outcome(got, err) : "ok";
}

std::string do_direct_read(const Fixture &fx, void *buf) { return file_io(fx.file(), O_RDONLY | O_DIRECT, buf); }
std::string do_direct_write(const Fixture &fx, void *buf) {
  return file_io(fx.dir + "/direct", O_CREAT | O_WRONLY | O_TRUNC | O_DIRECT, buf);
}

std::string do_vmsplice(const Fixture &, void *buf) {
  int p[2];
  if (pipe(p) != 0) return "pipe failed";
  iovec iov{buf, 64};
  long rc = vmsplice(p[1], &iov, 1, 0);
  int err = errno;
  close(p[0]);
  close(p[1]);
  return outcome(rc, err);
}

// One io_uring read of the data file into buf: plain, or from registered buffer 0.
std::string uring_read(const Fixture &fx, void *buf, bool registered) {
  io_uring ring;
  int rc = io_uring_queue_init(4, &ring, 0);
  if (rc < 0) return "io_uring_queue_init " + outcome(-1, -rc);
  iovec iov{buf, kSize};
  if (registered && (rc = io_uring_register_buffers(&ring, &iov, 1)) < 0) {
    io_uring_queue_exit(&ring);
    return "io_uring_register_buffers " + outcome(-1, -rc);
  }
  int fd = open(fx.file().c_str(), O_RDONLY);
  io_uring_sqe *sqe = io_uring_get_sqe(&ring);
  if (registered)
    io_uring_prep_read_fixed(sqe, fd, buf, kSize, 0, 0);
  else
    io_uring_prep_read(sqe, fd, buf, kSize, 0);
  io_uring_submit(&ring);
  io_uring_cqe *cqe = nullptr;
  io_uring_wait_cqe(&ring, &cqe);
  int res = cqe->res;
  io_uring_cqe_seen(&ring, cqe);
  close(fd);
  io_uring_queue_exit(&ring);
  return outcome(res, -res);
}

std::string do_uring_read(const Fixture &fx, void *buf) { return uring_read(fx, buf, false); }
std::string do_uring_fixed(const Fixture &fx, void *buf) { return uring_read(fx, buf, true); }

std::string do_zerocopy_send(const Fixture &, void *buf) {
  sockaddr_in addr{};
  int listener = bound_loopback_socket(&addr);
  listen(listener, 1);
  int client = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(client, SOL_SOCKET, SO_ZEROCOPY, &one, sizeof one);
  connect(client, reinterpret_cast<sockaddr *>(&addr), sizeof addr);
  int server = accept(listener, nullptr, nullptr);
  long rc = send(client, buf, kSize, MSG_ZEROCOPY);
  int err = errno;
  std::string result = outcome(rc, err);
  if (rc == static_cast<long>(kSize)) {
    std::vector<char> in(kSize);
    size_t got = 0;
    while (got < kSize) {
      long n = recv(server, in.data() + got, kSize - got, 0);
      if (n <= 0) break;
      got += static_cast<size_t>(n);
    }
    if (got != kSize || memcmp(in.data(), buf, kSize) != 0) result = "data differs";
  }
  close(server);
  close(client);
  close(listener);
  return result;
}

// sendfile has no user buffer: the question is whether a memfd_secret file
// can be its source (secmem closes its fds, but a program could make one).
// The control is an ordinary memfd.
std::string do_sendfile(const Fixture &fx, void *buf) {
  bool secret = secmem_owns(buf) != 0;
  int fd = secret ? secmem::linux_facts::memfd_secret_fd() : memfd_create("control", MFD_CLOEXEC);
  if (fd < 0) return "memfd_secret " + outcome(-1, errno);
  if (ftruncate(fd, kSize) != 0) return "ftruncate failed";
  void *map = mmap(nullptr, kSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  memset(map, 'k', kSize);
  int out = open((fx.dir + "/sent").c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0600);
  off_t offset = 0;
  long rc = sendfile(out, fd, &offset, kSize);
  int err = errno;
  close(out);
  munmap(map, kSize);
  close(fd);
  return outcome(rc, err);
}

struct Row {
  const char *call;
  Case run;
  const char *expected; // with a secret buffer, on this project's kernels
  const char *why;
};

const Row kRows[] = {
    {"read(2) from a file", do_read, "ok", "copied by the kernel through the process's own page tables"},
    {"write(2) to a file", do_write, "ok", "copied"},
    {"send(2) / recv(2), Unix socket", do_send_recv, "ok", "copied"},
    {"read(2), O_DIRECT", do_direct_read, "EFAULT",
     "direct I/O pins the pages (GUP); secretmem pages cannot be pinned"},
    {"write(2), O_DIRECT", do_direct_write, "EFAULT", "same"},
    {"vmsplice(2) into a pipe", do_vmsplice, "EFAULT", "pins the pages"},
    {"send(2), MSG_ZEROCOPY, TCP", do_zerocopy_send, "EFAULT", "pins the pages"},
    {"io_uring read", do_uring_read, "ok", "copied (io-wq workers share the process's memory)"},
    {"io_uring registered buffer", do_uring_fixed, "io_uring_register_buffers EFAULT", "registering pins the pages"},
    {"sendfile(2) from the memfd (secret: a memfd_secret fd)", do_sendfile, "ESPIPE",
     "a secretmem file cannot be read as a file; secmem closes its fds anyway"},
};

} // namespace

TEST(SecretBuffers, WhichCallsAcceptThem) {
  SECMEM_REQUIRE_SECRETMEM();
  Fixture fx;
  void *secret = secmem_aligned_alloc(kSize, kSize);
  void *plain = aligned_alloc(kSize, kSize);
  ASSERT_NE(secret, nullptr);
  ASSERT_STREQ(secmem_backend_name(), "memfd_secret");
  memset(secret, 's', kSize);
  memset(plain, 'p', kSize);
  std::printf("| call | ordinary buffer | secret buffer | why |\n| --- | --- | --- | --- |\n");
  for (const Row &row : kRows) {
    std::string with_plain = row.run(fx, plain), with_secret = row.run(fx, secret);
    std::printf("| %s | %s | %s | %s |\n", row.call, with_plain.c_str(), with_secret.c_str(), row.why);
    EXPECT_EQ(with_plain, "ok") << row.call;
    EXPECT_EQ(with_secret, row.expected) << row.call;
  }
  free(plain);
  secmem_free(secret);
}
