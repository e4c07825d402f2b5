#include "test_support.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <iterator>
#include <seccomp.h>
#include <sstream>
#include <sys/socket.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

#include "platform/linux_facts.h"

namespace secmem::test {

bool secretmem_available() {
  static const bool available = [] {
    int fd = linux_facts::memfd_secret_fd();
    if (fd < 0) return false;
    close(fd);
    return true;
  }();
  return available;
}

bool env_is(const char *name, const char *value) {
  const char *set = getenv(name);
  return set != nullptr && strcmp(set, value) == 0;
}

bool secretmem_required() { return env_is("SECMEM_REQUIRE_SECRETMEM", "1"); }

bool running_on_mlock_backend() { return env_is("SECMEM_BACKEND", "mlock"); }

std::string expected_backend() { return running_on_mlock_backend() ? "mlock" : "memfd_secret"; }

bool exhaustion_policy_fail() { return env_is("SECMEM_ON_EXHAUSTION", "fail"); }

bool filter_syscalls(uint32_t action, std::initializer_list<long> syscalls, bool all_threads) {
  scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
  bool ok = ctx != nullptr && (!all_threads || seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1) == 0);
  for (long syscall : syscalls) ok = ok && seccomp_rule_add(ctx, action, static_cast<int>(syscall), 0) == 0;
  ok = ok && seccomp_load(ctx) == 0;
  seccomp_release(ctx);
  return ok;
}

bool refuse_memfd_secret(int err, bool all_threads) {
  return filter_syscalls(SCMP_ACT_ERRNO(err), {linux_facts::kSysMemfdSecret}, all_threads);
}

bool Mapping::has_vm_flag(const std::string &flag) const {
  return std::find(vm_flags.begin(), vm_flags.end(), flag) != vm_flags.end();
}

std::vector<Mapping> read_mappings(int pid) {
  std::vector<Mapping> out;
  try {
    for (const tool::Region &region : tool::read_regions(pid == 0 ? getpid() : pid)) out.push_back({region, {}});
  } catch (const tool::ToolError &) {
    // gone or not ours to read: no mappings, as for a process without any
  }
  return out;
}

// The VmFlags of the smaps entry of mapping: found by its header, which starts
// "START-END " as in maps (hex, at least 8 digits), not parsed a second time.
static std::vector<std::string> vm_flags_of(int pid, const Mapping &mapping) {
  char header[64];
  snprintf(header, sizeof header, "%08lx-%08lx ", static_cast<unsigned long>(mapping.start),
           static_cast<unsigned long>(mapping.end));
  std::ifstream smaps(pid == 0 ? std::string("/proc/self/smaps") : "/proc/" + std::to_string(pid) + "/smaps");
  bool in_entry = false;
  std::vector<std::string> flags;
  for (std::string line; std::getline(smaps, line);) {
    if (line.rfind(header, 0) == 0) {
      in_entry = true;
    } else if (in_entry && line.rfind("VmFlags:", 0) == 0) {
      std::istringstream words(line.substr(8));
      for (std::string flag; words >> flag;) flags.push_back(flag);
      break;
    }
  }
  return flags;
}

bool find_mapping(const void *addr, Mapping *out, bool with_smaps, int pid) {
  auto value = reinterpret_cast<uintptr_t>(addr);
  for (const Mapping &mapping : read_mappings(pid)) {
    if (value >= mapping.start && value < mapping.end) {
      *out = mapping;
      if (with_smaps) out->vm_flags = vm_flags_of(pid, mapping);
      return true;
    }
  }
  return false;
}

int run_in_child(const std::function<bool()> &fn, std::string *stderr_text) {
  int pipe_fds[2] = {-1, -1};
  if (stderr_text != nullptr && pipe(pipe_fds) != 0) return -1;
  fflush(nullptr);
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    if (stderr_text != nullptr) {
      dup2(pipe_fds[1], STDERR_FILENO);
      close(pipe_fds[0]);
      close(pipe_fds[1]);
    }
    bool ok = fn();
    fflush(nullptr);
    _exit(ok ? 0 : 1);
  }
  if (stderr_text != nullptr) {
    close(pipe_fds[1]);
    char buf[4096];
    ssize_t n;
    while ((n = read(pipe_fds[0], buf, sizeof buf)) > 0) stderr_text->append(buf, static_cast<size_t>(n));
    close(pipe_fds[0]);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

testing::AssertionResult dies_saying(const std::function<void()> &fn, const std::string &pattern) {
  std::string err;
  int status = run_in_child(
      [&] {
        fn();
        return true;
      },
      &err);
  if (status == 0) return testing::AssertionFailure() << "the child did not die; its stderr: " << err;
  if (!testing::internal::RE::PartialMatch(err, testing::internal::RE(pattern)))
    return testing::AssertionFailure() << "the child died (status " << status << ") saying \"" << err
                                       << "\", which does not match " << pattern;
  return testing::AssertionSuccess();
}

std::string stderr_of(const std::function<void()> &fn) {
  fflush(stderr);
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return "(no pipe)";
  fcntl(fds[1], F_SETFL, O_NONBLOCK); // past 64 KiB the writes fail instead of blocking
  int saved = dup(STDERR_FILENO);
  dup2(fds[1], STDERR_FILENO);
  close(fds[1]);
  fn();
  fflush(stderr);
  dup2(saved, STDERR_FILENO);
  close(saved);
  std::string text;
  char buf[4096];
  ssize_t n;
  while ((n = read(fds[0], buf, sizeof buf)) > 0) text.append(buf, static_cast<size_t>(n));
  close(fds[0]);
  return text;
}

Child start(const std::vector<std::string> &argv, const std::vector<std::string> &env_extra,
            const std::function<void()> &in_child) {
  int in[2], out[2], err[2];
  if (pipe(in) != 0 || pipe(out) != 0 || pipe(err) != 0) return {};
  fflush(nullptr);
  pid_t pid = fork();
  if (pid == 0) {
    dup2(in[0], 0);
    dup2(out[1], 1);
    dup2(err[1], 2);
    for (int fd : {in[0], in[1], out[0], out[1], err[0], err[1]}) close(fd);
    for (const std::string &entry : env_extra) putenv(const_cast<char *>(entry.c_str()));
    if (in_child) in_child();
    std::vector<char *> args;
    for (const std::string &arg : argv) args.push_back(const_cast<char *>(arg.c_str()));
    args.push_back(nullptr);
    execvp(args[0], args.data());
    _exit(127);
  }
  close(in[0]);
  close(out[1]);
  close(err[1]);
  return {pid, in[1], out[0], err[0]};
}

static std::string drain(int fd) {
  std::string text;
  char buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) text.append(buf, static_cast<size_t>(n));
  close(fd);
  return text;
}

Result finish(Child child, const std::string &input) {
  if (!input.empty()) (void)!write(child.in, input.data(), input.size());
  close(child.in);
  Result result;
  std::thread err_reader([&] { result.err = drain(child.err); });
  result.out = drain(child.out);
  err_reader.join();
  int status = 0;
  waitpid(child.pid, &status, 0);
  result.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

Result run(const std::vector<std::string> &argv, const std::vector<std::string> &env_extra, const std::string &input) {
  return finish(start(argv, env_extra), input);
}

std::string read_file(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

__attribute__((no_sanitize("address"))) bool all_zero(const void *p, size_t n) {
  const auto *bytes = static_cast<const unsigned char *>(p);
  for (size_t i = 0; i < n; ++i)
    if (bytes[i] != 0) return false;
  return true;
}

int bound_loopback_socket(sockaddr_in *addr) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  *addr = sockaddr_in{};
  addr->sin_family = AF_INET;
  addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof *addr;
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr *>(addr), sizeof *addr) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr *>(addr), &len) != 0) {
    if (fd >= 0) close(fd);
    return -1;
  }
  return fd;
}

std::string free_loopback_port(sockaddr_in *addr) {
  int probe = bound_loopback_socket(addr);
  if (probe < 0) return "";
  close(probe);
  return std::to_string(ntohs(addr->sin_port));
}

bool wait_listening(const sockaddr_in &addr, int seconds) {
  for (int i = 0; i < seconds * 20; ++i) {
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bool ok = connect(s, reinterpret_cast<const sockaddr *>(&addr), sizeof addr) == 0;
    close(s);
    if (ok) return true;
    usleep(50000);
  }
  return false;
}

std::string genpkey_args(const std::string &type) {
  return type == "RSA"  ? "-algorithm RSA -pkeyopt rsa_keygen_bits:2048"
         : type == "EC" ? "-algorithm EC -pkeyopt ec_paramgen_curve:P-256"
                        : "-algorithm ED25519";
}

bool make_key_and_cert(const std::string &type, const std::string &key, const std::string &cert) {
  return system(("openssl genpkey " + genpkey_args(type) + " -out " + key + " 2>/dev/null && openssl req -x509 -key " +
                 key + " -subj /CN=localhost -addext subjectAltName=DNS:localhost -days 1 -out " + cert +
                 " 2>/dev/null")
                    .c_str()) == 0;
}

} // namespace secmem::test

namespace {

// The failures once more at the end of the program: a CI log that keeps only
// its last lines shows the failed tests' names and, with this, why.
class FailureRecap : public testing::EmptyTestEventListener {
public:
  // The test's name from here: asking the UnitTest in OnTestPartResult
  // would take the lock it holds while it calls this (a deadlock).
  void OnTestStart(const testing::TestInfo &test) override {
    current_ = std::string(test.test_suite_name()) + "." + test.name();
    if (test.value_param() != nullptr) current_ += std::string(" [") + test.value_param() + "]";
  }
  void OnTestEnd(const testing::TestInfo &) override { current_ = "(outside a test)"; }
  void OnTestPartResult(const testing::TestPartResult &result) override {
    if (!result.failed()) return;
    const std::string &where = current_;
    std::string message = result.message();
    if (message.size() > 1500) message = message.substr(0, 1500) + " ...";
    failures_.push_back(where + " at " + (result.file_name() != nullptr ? result.file_name() : "?") + ":" +
                        std::to_string(result.line_number()) + ": " + message);
  }
  void OnTestProgramEnd(const testing::UnitTest &) override {
    if (failures_.empty()) return;
    std::printf("\n==== the failures above, once more ====\n");
    for (const std::string &failure : failures_) std::printf("%s\n", failure.c_str());
    std::fflush(stdout);
  }

private:
  std::string current_ = "(outside a test)";
  std::vector<std::string> failures_;
};

const bool g_recap_installed = [] {
  testing::UnitTest::GetInstance()->listeners().Append(new FailureRecap);
  return true;
}();

} // namespace
