// secmem demo: a real key in a signing program, read through /proc/PID/mem with and without the shim.
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <grp.h>
#include <iostream>
#include <iterator>
#include <pwd.h>
#include <sstream>
#include <string>
#include <sys/wait.h>
#include <unistd.h>

#include "commands.h"
#include "keys.h"
#include "output.h"

namespace secmem::tool {

namespace {

// The backend the shim's exit report names ("...; backend memfd_secret; ..."), or "-" without one.
std::string reported_backend(const std::string &report) {
  std::ifstream file(report);
  std::string text((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  size_t at = text.find("backend ");
  return at == std::string::npos ? "-" : text.substr(at + 8, text.find(';', at) - at - 8);
}

// The demo's files, removed at its end or when a signal interrupts it (the
// paths are set before the handler, and only read by it).
std::string g_cleanup_files[2];
std::string g_cleanup_dir;

void remove_demo_files() {
  for (const std::string &file : g_cleanup_files)
    if (!file.empty()) unlink(file.c_str());
  if (!g_cleanup_dir.empty()) rmdir(g_cleanup_dir.c_str());
}

void remove_and_die(int sig) {
  remove_demo_files(); // unlink and rmdir: async-signal-safe
  signal(sig, SIG_DFL);
  raise(sig);
}

// Who reads the signer: the demo's user, or nobody for a root demo.
struct Nobody {
  bool use = false;
  uid_t uid = 65534;
  gid_t gid = 65534;
};

// Runs the signer (under the shim or not) and reads its memory while it
// holds the key, from this process, the signer's parent: as another process
// of its user would (Yama's ptrace_scope=1 lets a parent read its child).
DemoRun sign_and_read(const std::string &key, bool under_shim, const std::string &report) {
  int to_child[2], from_child[2];
  if (pipe(to_child) != 0 || pipe(from_child) != 0) throw ToolError{3, "pipe failed"};
  std::string signer = signer_path(), shim = under_shim ? shim_path() : "";
  pid_t pid = fork();
  if (pid < 0) throw ToolError{3, "fork failed"};
  if (pid == 0) {
    dup2(to_child[0], 0);
    dup2(from_child[1], 1);
    for (int fd : {to_child[0], to_child[1], from_child[0], from_child[1]}) close(fd);
    unsetenv("LD_PRELOAD");
    if (under_shim) {
      setenv("LD_PRELOAD", shim.c_str(), 1);
      setenv("SECMEM_REPORT", report.c_str(), 1);
    }
    execl(signer.c_str(), signer.c_str(), key.c_str(), nullptr);
    _exit(127);
  }
  close(to_child[0]);
  close(from_child[1]);
  std::string line;
  char c;
  while (read(from_child[0], &c, 1) == 1 && c != '\n') line += c;
  DemoRun run;
  run.signed_ok = line == "ready signed";
  if (line.rfind("ready", 0) == 0) {
    try {
      ScanResult found = scan(pid, key_patterns(load_key_material(key)));
      run.copies = found.total();
      run.where = describe_copies(found);
      for (const Region &region : read_regions(pid))
        if (region.secret()) {
          ++run.secret_mappings;
          run.secret_bytes += region.end - region.start;
        }
    } catch (const ToolError &) {
      // Its own child, same user: refused only when it made itself
      // non-dumpable; any other failure is one.
      int fd = open(("/proc/" + std::to_string(pid) + "/mem").c_str(), O_RDONLY | O_CLOEXEC);
      int err = errno;
      if (fd >= 0) close(fd);
      if (fd >= 0 || (err != EACCES && err != EPERM)) {
        kill(pid, SIGKILL);
        waitpid(pid, nullptr, 0);
        throw;
      }
      run.refused = true;
    }
  }
  close(to_child[1]);
  close(from_child[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (line.rfind("ready", 0) != 0) throw ToolError{3, "the demo's signing program did not start (" + signer + ")"};
  return run;
}

// The reading is done in a child of the demo, as nobody when the demo runs
// as root (root could read any process): one line comes back,
// "signed refused copies mappings bytes where" or "error MESSAGE".
DemoRun run_signer(const std::string &key, bool under_shim, const std::string &report, const Nobody &nobody) {
  int result[2];
  if (pipe(result) != 0) throw ToolError{3, "pipe failed"};
  pid_t reader = fork();
  if (reader < 0) throw ToolError{3, "fork failed"};
  if (reader == 0) {
    close(result[0]);
    std::string line;
    if (nobody.use && (setgroups(0, nullptr) != 0 || setresgid(nobody.gid, nobody.gid, nobody.gid) != 0 ||
                       setresuid(nobody.uid, nobody.uid, nobody.uid) != 0)) {
      line = "error cannot become nobody to read the signer as a process of its own user";
    } else {
      try {
        DemoRun run = sign_and_read(key, under_shim, report);
        line = std::to_string(run.signed_ok) + " " + std::to_string(run.refused) + " " + std::to_string(run.copies) +
               " " + std::to_string(run.secret_mappings) + " " + std::to_string(run.secret_bytes) + " " + run.where;
      } catch (const ToolError &error) {
        line = "error " + error.message;
      }
    }
    ssize_t ignored = write(result[1], line.data(), line.size());
    (void)ignored;
    _exit(0);
  }
  close(result[1]);
  std::string line;
  char buf[512];
  for (ssize_t n; (n = read(result[0], buf, sizeof buf)) > 0;) line.append(buf, static_cast<size_t>(n));
  close(result[0]);
  int status = 0;
  waitpid(reader, &status, 0);
  if (line.rfind("error ", 0) == 0) throw ToolError{3, line.substr(6)};
  DemoRun run;
  std::istringstream in(line);
  int signed_ok = 0, refused = 0;
  if (!(in >> signed_ok >> refused >> run.copies >> run.secret_mappings >> run.secret_bytes))
    throw ToolError{3, "the demo's reader stopped (" + std::to_string(status) + ")"};
  std::getline(in >> std::ws, run.where);
  run.signed_ok = signed_ok != 0;
  run.refused = refused != 0;
  run.backend = under_shim ? reported_backend(report) : "ordinary heap";
  return run;
}

} // namespace

int cmd_demo() {
  // Descriptors 0 to 2 open: the pipes to the signer must not take them.
  for (int fd = 0; fd <= 2; ++fd)
    if (fcntl(fd, F_GETFD) < 0 && open("/dev/null", O_RDWR) < 0)
      throw ToolError{3, "cannot open /dev/null: " + std::string(strerror(errno))};
  const char *tmp = getenv("TMPDIR");
  std::string pattern = std::string(tmp != nullptr && *tmp == '/' ? tmp : "/tmp") + "/secmem-demo-XXXXXX";
  if (mkdtemp(pattern.data()) == nullptr)
    throw ToolError{3, "cannot make a temporary directory (" + pattern + "): " + strerror(errno)};
  std::string dir = pattern, key = dir + "/key.pem", report = dir + "/report";
  // The key is removed at the end, also when the demo is interrupted.
  g_cleanup_files[0] = key;
  g_cleanup_files[1] = report;
  g_cleanup_dir = dir;
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) signal(sig, remove_and_die);
  struct Cleanup {
    ~Cleanup() { remove_demo_files(); }
  } cleanup;
  std::cerr << "==> generating an EC P-256 key\n";
  write_ec_key(key);
  // As root, the signer and its reader run as nobody (the directory, the key
  // and the report theirs): a reader of the signer's own user, without root's
  // right to read every process.
  Nobody nobody;
  if (geteuid() == 0) {
    if (const passwd *entry = getpwnam("nobody")) {
      nobody.uid = entry->pw_uid;
      nobody.gid = entry->pw_gid;
    }
    nobody.use = chown(dir.c_str(), nobody.uid, nobody.gid) == 0 && chown(key.c_str(), nobody.uid, nobody.gid) == 0;
    if (!nobody.use) throw ToolError{3, "cannot give the demo's directory to nobody: " + std::string(strerror(errno))};
  }
  DemoReport demo;
  std::cerr << "==> running the signing program with plain OpenSSL, and reading its memory"
            << (nobody.use ? " (both as nobody)" : "") << "\n";
  demo.plain = run_signer(key, false, report, nobody);
  std::cerr << "==> running it again under secmem's preload, and reading its memory\n";
  demo.shimmed = run_signer(key, true, report, nobody);
  demo.probe_errno = run_probe().secret_errno;
  print_demo(demo);
  return demo.plain.signed_ok && demo.shimmed.signed_ok ? 0 : 3;
}

} // namespace secmem::tool
