// secmem: run programs with secret memory, and check what a process holds.
//
// Exit status: 0 success (probe: memfd_secret works; scan: no readable
// copy), 1 a negative answer (probe: it does not; scan: copies found),
// 2 bad usage or input, 3 a failure while doing the work; `run` exits with
// the command's status (127 when it cannot be started).
#include <CLI/CLI.hpp>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <elf.h>
#include <fcntl.h>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

#include "keys.h"
#include "platform/linux_facts.h"
#include "proc.h"

using namespace secmem::tool;

namespace {

// ---- small helpers -------------------------------------------------------------------

std::string self_dir() {
  char path[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", path, sizeof path - 1);
  if (n <= 0) return ".";
  path[n] = '\0';
  std::string dir(path);
  return dir.substr(0, dir.rfind('/'));
}

bool exists(const std::string &path) { return access(path.c_str(), F_OK) == 0; }

// A file shipped with secmem: next to the build tree's binary, else installed.
std::string shipped(const std::string &build_relative, const std::string &installed) {
  std::string candidate = self_dir() + "/" + build_relative;
  if (exists(candidate)) return candidate;
  if (exists(installed)) return installed;
  throw ToolError{3, "cannot find " + installed + " (nor " + candidate + "): is secmem installed?"};
}

std::string shim_path() { return shipped("../preload/libsecmem_preload.so", SECMEM_INSTALLED_PRELOAD); }
std::string signer_path() { return shipped("secmem-demo-signer", SECMEM_INSTALLED_SIGNER); }

std::string json_string(const std::string &text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') out += '\\';
    if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

std::string kib(uint64_t bytes) { return std::to_string(bytes / 1024) + " KiB"; }

// linux_facts names the errno values; the number stands in for one it does not name.
std::string errno_name(int err) {
  std::string name = secmem::linux_facts::errno_name(err);
  return name == "errno" ? "errno " + std::to_string(err) : name;
}

int parse_pid(const std::string &text) {
  char *end = nullptr;
  long pid = strtol(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || pid <= 0 || pid > INT_MAX) throw ToolError{2, "'" + text + "' is not a PID"};
  return static_cast<int>(pid);
}

// ---- probe -------------------------------------------------------------------------------

struct Probe {
  std::string kernel;
  int secret_errno = 0; // 0: memfd_secret works (fd, mmap and first touch)
  std::string secret_step;
  int seccomp_mode = 0;
  bool cap_ipc_lock = false;
  rlimit memlock{};
  uint64_t locked_now = 0;
  std::string auto_backend;
};

// Tries what the heap does for one page: memfd_secret, ftruncate, mmap, first touch.
int try_secret_page(std::string *step) {
  *step = "memfd_secret";
  int fd = secmem::linux_facts::memfd_secret_fd();
  if (fd < 0) return errno;
  int err = 0;
  *step = "ftruncate";
  if (ftruncate(fd, 4096) != 0) err = errno;
  void *page = MAP_FAILED;
  if (err == 0) {
    *step = "mmap";
    page = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (page == MAP_FAILED) err = errno;
  }
  if (err == 0) {
    *step = "first touch";
    int zero = open("/dev/zero", O_RDONLY | O_CLOEXEC);
    if (zero >= 0 && read(zero, page, 4096) != 4096) err = errno;
    if (zero >= 0) close(zero);
  }
  if (page != MAP_FAILED) munmap(page, 4096);
  close(fd);
  return err;
}

Probe run_probe() {
  Probe probe;
  utsname name{};
  uname(&name);
  probe.kernel = name.release;
  probe.secret_errno = try_secret_page(&probe.secret_step);
  auto status = read_status(getpid());
  probe.seccomp_mode = atoi(status["Seccomp"].c_str());
  probe.locked_now = secmem::linux_facts::vmlck_bytes();
  probe.cap_ipc_lock = secmem::linux_facts::has_cap_ipc_lock();
  getrlimit(RLIMIT_MEMLOCK, &probe.memlock);
  bool budget = probe.cap_ipc_lock || probe.memlock.rlim_cur == RLIM_INFINITY || probe.memlock.rlim_cur >= probe.locked_now + 4096;
  probe.auto_backend = probe.secret_errno == 0 ? "memfd_secret" : budget ? "mlock" : "unlocked";
  return probe;
}

std::string limit_text(rlim_t value) { return value == RLIM_INFINITY ? "unlimited" : std::to_string(value) + " bytes"; }

std::vector<std::string> probe_advice(const Probe &probe) {
  std::vector<std::string> advice;
  switch (probe.secret_errno) {
  case 0: break;
  case ENOSYS:
    advice.push_back("this kernel has no memfd_secret: it needs Linux 5.14 or later built with CONFIG_SECRETMEM "
                     "(and, on 5.14 to 6.4, secretmem.enable=1 on the kernel command line)");
    break;
  case EPERM:
  case EACCES:
    advice.push_back(probe.seccomp_mode == 2
                         ? "a seccomp filter refuses memfd_secret (syscall " +
                               std::to_string(secmem::linux_facts::kSysMemfdSecret) + " on x86_64), as many container "
                               "runtimes' default profiles do: allow it in the profile (docker/podman: --security-opt "
                               "seccomp=FILE)"
                         : "memfd_secret was refused (EPERM) without a seccomp filter here: check LSM policies (SELinux, AppArmor)");
    break;
  case EAGAIN:
  case ENOMEM:
  case EFAULT:
    advice.push_back("the RLIMIT_MEMLOCK budget is spent: raise it (ulimit -l, LimitMEMLOCK= in a systemd unit, "
                     "--ulimit memlock= for docker) or grant CAP_IPC_LOCK");
    break;
  default: advice.push_back("memfd_secret failed at " + probe.secret_step + " with " + errno_name(probe.secret_errno));
  }
  if (probe.secret_errno == 0 && !probe.cap_ipc_lock && probe.memlock.rlim_cur != RLIM_INFINITY &&
      probe.memlock.rlim_cur < (rlim_t{8} << 20))
    advice.push_back("RLIMIT_MEMLOCK is small (" + limit_text(probe.memlock.rlim_cur) +
                     "): every secret byte counts against it; secmem falls back (or fails, with "
                     "SECMEM_ON_EXHAUSTION=fail) once it is spent");
  return advice;
}

int cmd_probe(bool json) {
  Probe probe = run_probe();
  std::vector<std::string> advice = probe_advice(probe);
  if (json) {
    std::cout << "{\"kernel\": " << json_string(probe.kernel) << ", \"memfd_secret\": "
              << (probe.secret_errno == 0 ? "true" : "false") << ", \"memfd_secret_error\": "
              << (probe.secret_errno == 0 ? "null" : json_string(errno_name(probe.secret_errno)))
              << ", \"seccomp_filter\": " << (probe.seccomp_mode == 2 ? "true" : "false")
              << ", \"cap_ipc_lock\": " << (probe.cap_ipc_lock ? "true" : "false") << ", \"memlock_soft\": "
              << (probe.memlock.rlim_cur == RLIM_INFINITY ? "null" : std::to_string(probe.memlock.rlim_cur))
              << ", \"locked_bytes\": " << probe.locked_now << ", \"auto_backend\": " << json_string(probe.auto_backend)
              << ", \"advice\": [";
    for (size_t i = 0; i < advice.size(); ++i) std::cout << (i ? ", " : "") << json_string(advice[i]);
    std::cout << "]}\n";
  } else {
    std::cout << "kernel:            " << probe.kernel << "\n"
              << "memfd_secret:      "
              << (probe.secret_errno == 0 ? "works (a page created, mapped and touched)"
                                          : "refused at " + probe.secret_step + " (" + errno_name(probe.secret_errno) + ")")
              << "\n"
              << "seccomp:           " << (probe.seccomp_mode == 2 ? "a filter is active" : probe.seccomp_mode == 1 ? "strict" : "none") << "\n"
              << "CAP_IPC_LOCK:      " << (probe.cap_ipc_lock ? "yes (RLIMIT_MEMLOCK does not apply)" : "no") << "\n"
              << "RLIMIT_MEMLOCK:    " << limit_text(probe.memlock.rlim_cur) << " (hard " << limit_text(probe.memlock.rlim_max)
              << "), " << probe.locked_now << " bytes locked now\n"
              << "auto backend:      " << probe.auto_backend << "\n";
    for (const std::string &line : advice) std::cout << "advice:            " << line << "\n";
  }
  return probe.secret_errno == 0 ? 0 : 1;
}

// ---- stat --------------------------------------------------------------------------------

int cmd_stat(const std::string &pid_text, bool json) {
  int pid = parse_pid(pid_text);
  std::vector<Region> regions = read_regions(pid);
  auto status = read_status(pid);
  uint64_t secret_bytes = 0;
  std::vector<Region> secret;
  bool shim = false, library = false;
  for (const Region &region : regions) {
    if (region.secret()) {
      secret.push_back(region);
      secret_bytes += region.end - region.start;
    }
    if (region.path.find("libsecmem_preload.so") != std::string::npos) shim = true;
    if (region.path.find("/libsecmem.so") != std::string::npos) library = true;
  }
  int unreadable = 0;
  std::vector<std::string> readable_ranges;
  for (const Region &region : secret) {
    int err = 0;
    if (!readable(pid, region.start, region.end - region.start, &err))
      ++unreadable;
    else
      readable_ranges.push_back(region.label());
  }
  std::string name = process_name(pid);
  if (json) {
    std::cout << "{\"pid\": " << pid << ", \"name\": " << json_string(name) << ", \"secret_mappings\": " << secret.size()
              << ", \"secret_bytes\": " << secret_bytes << ", \"locked\": " << json_string(status["VmLck"])
              << ", \"preload_loaded\": " << (shim ? "true" : "false") << ", \"libsecmem_loaded\": "
              << (library ? "true" : "false") << ", \"secret_unreadable\": " << unreadable << "}\n";
  } else {
    std::cout << "process:           " << pid << " (" << name << ")\n"
              << "secret mappings:   " << secret.size() << " (" << kib(secret_bytes) << ")\n";
    for (const Region &region : secret) {
      char line[96];
      snprintf(line, sizeof line, "                   %lx-%lx %s\n", static_cast<unsigned long>(region.start),
               static_cast<unsigned long>(region.end), kib(region.end - region.start).c_str());
      std::cout << line;
    }
    std::cout << "locked (VmLck):    " << status["VmLck"] << "\n"
              << "secmem preload:    " << (shim ? "loaded" : "not loaded") << "\n"
              << "libsecmem:         " << (library ? "loaded" : "not loaded") << "\n"
              << "secret ranges unreadable through /proc/" << pid << "/mem: " << unreadable << " of " << secret.size()
              << "\n";
  }
  return readable_ranges.empty() ? 0 : 1;
}

// ---- scan --------------------------------------------------------------------------------

int cmd_scan(const std::string &pid_text, const std::string &hex, const std::string &key_file, bool json) {
  int pid = parse_pid(pid_text);
  if (hex.empty() == key_file.empty()) throw ToolError{2, "scan needs exactly one of --hex or --key-file"};
  std::vector<std::vector<unsigned char>> patterns =
      hex.empty() ? private_scalar_patterns(key_file) : std::vector<std::vector<unsigned char>>{parse_hex(hex)};
  ScanResult result = scan(pid, patterns);
  uint64_t secret_bytes = 0;
  for (const Region &region : result.unreadable_secret) secret_bytes += region.end - region.start;
  if (json) {
    std::cout << "{\"pid\": " << pid << ", \"readable_copies\": " << result.total() << ", \"by_region\": {";
    bool first = true;
    for (const auto &[where, n] : result.copies) {
      std::cout << (first ? "" : ", ") << json_string(where) << ": " << n;
      first = false;
    }
    std::cout << "}, \"unreadable_secret_mappings\": " << result.unreadable_secret.size()
              << ", \"unreadable_secret_bytes\": " << secret_bytes << "}\n";
  } else {
    std::cout << "process:           " << pid << " (" << process_name(pid) << ")\n"
              << "looked for:        " << (hex.empty() ? "the private scalar of " + key_file + ", both byte orders"
                                                       : std::to_string(patterns[0].size()) + " bytes given in hex")
              << "\n"
              << "readable copies:   " << result.total() << "\n";
    for (const auto &[where, n] : result.copies) std::cout << "                   " << n << " in " << where << "\n";
    std::cout << "secret mappings:   " << result.unreadable_secret.size() << " (" << kib(secret_bytes)
              << "), unreadable\n";
    if (!result.unreadable_other.empty())
      std::cout << "not read:          " << result.unreadable_other.size() << " other regions refused the read\n";
  }
  return result.total() == 0 ? 0 : 1;
}

// ---- run ---------------------------------------------------------------------------------

bool is_sanitizer_runtime(const std::string &entry) {
  for (const char *name : {"libasan", "libtsan", "libubsan", "liblsan", "libhwasan", "libclang_rt."})
    if (entry.find(name) != std::string::npos) return true;
  return false;
}

bool is_allocator(const std::string &entry) {
  for (const char *name : {"jemalloc", "tcmalloc", "mimalloc", "hoard", "scudo", "snmalloc", "libc_malloc_debug"})
    if (entry.find(name) != std::string::npos) return true;
  return false;
}

// Where the command lives, as execvp would find it.
std::string find_command(const std::string &command) {
  if (command.find('/') != std::string::npos) return exists(command) ? command : "";
  const char *path = getenv("PATH");
  std::istringstream dirs(path != nullptr ? path : "/usr/bin:/bin");
  for (std::string dir; std::getline(dirs, dir, ':');) {
    std::string candidate = (dir.empty() ? "." : dir) + "/" + command;
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

// An ELF executable without a PT_INTERP program header is statically linked.
bool is_static_elf(const std::string &path) {
  std::ifstream file(path, std::ios::binary);
  Elf64_Ehdr header{};
  if (!file.read(reinterpret_cast<char *>(&header), sizeof header) || memcmp(header.e_ident, ELFMAG, SELFMAG) != 0 ||
      header.e_ident[EI_CLASS] != ELFCLASS64)
    return false;
  for (int i = 0; i < header.e_phnum; ++i) {
    Elf64_Phdr program{};
    file.seekg(static_cast<std::streamoff>(header.e_phoff + static_cast<uint64_t>(i) * header.e_phentsize));
    if (!file.read(reinterpret_cast<char *>(&program), sizeof program)) return false;
    if (program.p_type == PT_INTERP) return false;
  }
  return true;
}

struct RunOptions {
  std::string backend;
  bool strict = false;
  std::string tag_callers;
  std::string report;
  std::vector<std::string> command;
};

int cmd_run(const RunOptions &options) {
  if (options.command.empty()) throw ToolError{2, "run needs a command after --"};
  std::string shim = shim_path();
  std::string where = find_command(options.command[0]);
  if (where.empty()) {
    std::cerr << "secmem: run: " << options.command[0] << ": command not found\n";
    return 127;
  }
  struct stat info{};
  if (stat(where.c_str(), &info) == 0 && (info.st_mode & (S_ISUID | S_ISGID)) != 0)
    std::cerr << "secmem: run: " << where << " is setuid/setgid: the loader ignores LD_PRELOAD for it, so its "
              << "secrets stay where it puts them\n";
  if (is_static_elf(where))
    std::cerr << "secmem: run: " << where << " is statically linked: LD_PRELOAD cannot reach it, so its secrets "
              << "stay where it puts them\n";

  // Sanitizer runtimes must stay first; then the shim; then the rest.
  std::vector<std::string> first, rest;
  if (const char *existing = getenv("LD_PRELOAD")) {
    std::string entries = existing;
    std::replace(entries.begin(), entries.end(), ' ', ':');
    std::istringstream split(entries);
    for (std::string entry; std::getline(split, entry, ':');) {
      if (entry.empty() || entry.find("libsecmem_preload.so") != std::string::npos) continue;
      if (is_sanitizer_runtime(entry)) {
        first.push_back(entry);
      } else {
        if (is_allocator(entry))
          std::cerr << "secmem: run: " << entry << " is also preloaded; secmem's shim goes before it, so untagged "
                    << "allocations still go to it\n";
        rest.push_back(entry);
      }
    }
  }
  std::string preload;
  for (const auto &list : {first, std::vector<std::string>{shim}, rest})
    for (const std::string &entry : list) preload += (preload.empty() ? "" : ":") + entry;
  setenv("LD_PRELOAD", preload.c_str(), 1);
  if (!options.backend.empty()) setenv("SECMEM_BACKEND", options.backend.c_str(), 1);
  if (options.strict) setenv("SECMEM_ON_EXHAUSTION", "fail", 1);
  if (!options.tag_callers.empty()) setenv("SECMEM_TAG_CALLERS", options.tag_callers.c_str(), 1);
  if (!options.report.empty()) setenv("SECMEM_REPORT", options.report.c_str(), 1);
  std::vector<char *> argv;
  for (const std::string &arg : options.command) argv.push_back(const_cast<char *>(arg.c_str()));
  argv.push_back(nullptr);
  execv(where.c_str(), argv.data());
  std::cerr << "secmem: run: cannot execute " << where << ": " << strerror(errno) << "\n";
  return 127;
}

// ---- demo --------------------------------------------------------------------------------

struct DemoRun {
  bool signed_ok = false;
  ScanResult scan;
  size_t secret_mappings = 0;
  uint64_t secret_bytes = 0;
  std::string backend = "-";
};

// Runs the signer (under the shim or not), scans it while it holds the key.
DemoRun run_signer(const std::string &key, bool under_shim, const std::string &report) {
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
    run.scan = scan(pid, private_scalar_patterns(key));
    for (const Region &region : read_regions(pid))
      if (region.secret()) {
        ++run.secret_mappings;
        run.secret_bytes += region.end - region.start;
      }
  }
  close(to_child[1]);
  close(from_child[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (line.rfind("ready", 0) != 0) throw ToolError{3, "the demo's signing program did not start (" + signer + ")"};
  if (under_shim) {
    std::ifstream file(report);
    std::string text((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
    size_t at = text.find("backend ");
    if (at != std::string::npos) run.backend = text.substr(at + 8, text.find(';', at) - at - 8);
  } else {
    run.backend = "ordinary heap";
  }
  return run;
}

int cmd_demo() {
  char pattern[] = "/tmp/secmem-demo-XXXXXX";
  if (mkdtemp(pattern) == nullptr) throw ToolError{3, "cannot make a temporary directory"};
  std::string dir = pattern, key = dir + "/key.pem", report = dir + "/report";
  struct Cleanup {
    std::string dir;
    ~Cleanup() {
      for (const char *file : {"/key.pem", "/report"}) unlink((dir + file).c_str());
      rmdir(dir.c_str());
    }
  } cleanup{dir};
  std::cerr << "==> generating an EC P-256 key\n";
  write_ec_key(key);
  std::cerr << "==> running the signing program with plain OpenSSL, and reading its memory\n";
  DemoRun plain = run_signer(key, false, report);
  std::cerr << "==> running it again under secmem's preload, and reading its memory\n";
  DemoRun shimmed = run_signer(key, true, report);
  Probe probe = run_probe();

  auto copies = [](const DemoRun &run) {
    return run.scan.total() == 0 ? std::string("0") : std::to_string(run.scan.total()) + " (" + describe_copies(run.scan) + ")";
  };
  auto mappings = [](const DemoRun &run) {
    return run.secret_mappings == 0 ? std::string("0")
                                    : std::to_string(run.secret_mappings) + " (" + kib(run.secret_bytes) + ", unreadable)";
  };
  char row[256];
  auto print = [&](const char *what, const std::string &a, const std::string &b) {
    snprintf(row, sizeof row, "  %-36s %-26s %s\n", what, a.c_str(), b.c_str());
    std::cout << row;
  };
  std::cout << "\nsecmem demo: an EC P-256 private key, loaded with OpenSSL's PEM_read_PrivateKey by a small\n"
               "signing program, run twice. Meanwhile its memory is read the way a debugger, or an attacker\n"
               "with ptrace rights, would read it (/proc/PID/mem).\n\n";
  print("", "plain OpenSSL", "under secmem (LD_PRELOAD)");
  print("signature made and verified", plain.signed_ok ? "yes" : "NO", shimmed.signed_ok ? "yes" : "NO");
  print("readable copies of the private key", copies(plain), copies(shimmed));
  print("secretmem mappings", mappings(plain), mappings(shimmed));
  print("where the key's secure memory was", plain.backend, shimmed.backend);
  std::cout << "\n";
  if (shimmed.scan.total() == 0 && shimmed.backend == "memfd_secret") {
    std::cout << "Under secmem no readable copy of the key is left: OpenSSL's secure heap is in memfd_secret\n"
                 "pages, which /proc/PID/mem, process_vm_readv and ptrace cannot read.\n";
  } else {
    std::cout << "Under secmem " << shimmed.scan.total() << " readable copies remain: ";
    if (shimmed.backend != "memfd_secret") {
      std::cout << "the key was in secmem's fallback tier (" << shimmed.backend
                << "), kept out of swap and core dumps but readable with ptrace rights.\n";
      if (probe.secret_errno != 0)
        std::cout << "memfd_secret is refused on this machine (" << errno_name(probe.secret_errno)
                  << "): run `secmem probe` for what to change.\n";
      else
        std::cout << "memfd_secret works here: SECMEM_BACKEND or SECMEM_ON_EXHAUSTION chose the fallback.\n";
    } else {
      std::cout << "run `secmem scan` on the program to see where they are.\n";
    }
  }
  return plain.signed_ok && shimmed.signed_ok ? 0 : 3;
}

} // namespace

int main(int argc, char **argv) {
  CLI::App app{"secmem: keep secrets in memfd_secret memory, and check what a process holds.\n"
               "Exit status: 0 yes/success, 1 a negative answer (probe: no memfd_secret; scan: copies found;\n"
               "stat: a secret range was readable), 2 bad usage or input, 3 failure; run: the command's."};
  app.require_subcommand(1);
  bool json = false;

  RunOptions run_options;
  CLI::App *run = app.add_subcommand("run", "Run a command with secmem's preload shim (secrets into memfd_secret)");
  run->add_option("--backend", run_options.backend, "SECMEM_BACKEND")->check(CLI::IsMember({"auto", "memfd_secret", "mlock"}));
  run->add_flag("--strict", run_options.strict, "Refuse rather than degrade: SECMEM_ON_EXHAUSTION=fail");
  run->add_option("--tag-callers", run_options.tag_callers, "SECMEM_TAG_CALLERS: libraries whose allocations are secret");
  run->add_option("--report", run_options.report, "SECMEM_REPORT: stderr or a file for the report at exit");
  run->add_option("command", run_options.command, "The command and its arguments, after --")->required();

  CLI::App *probe = app.add_subcommand("probe", "Can this machine and process have secret memory, and how much?");
  probe->add_flag("--json", json, "Machine-readable output");

  std::string pid, hex, key_file;
  CLI::App *stat = app.add_subcommand("stat", "What a running process holds in secret memory");
  stat->add_option("pid", pid, "Process ID")->required();
  stat->add_flag("--json", json, "Machine-readable output");

  CLI::App *scan = app.add_subcommand("scan", "Count readable copies of a byte pattern or a key in a process");
  scan->add_option("pid", pid, "Process ID")->required();
  auto *hex_option = scan->add_option("--hex", hex, "The bytes to look for, in hex");
  auto *key_option = scan->add_option("--key-file", key_file, "A PEM or DER private key: its private scalar, both byte orders");
  hex_option->excludes(key_option);
  scan->add_flag("--json", json, "Machine-readable output");

  CLI::App *demo = app.add_subcommand("demo", "Show, with a real key, what secmem changes");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError &error) {
    int code = app.exit(error);
    return code == 0 ? 0 : 2;
  }
  try {
    if (run->parsed()) return cmd_run(run_options);
    if (probe->parsed()) return cmd_probe(json);
    if (stat->parsed()) return cmd_stat(pid, json);
    if (scan->parsed()) return cmd_scan(pid, hex, key_file, json);
    if (demo->parsed()) return cmd_demo();
  } catch (const ToolError &error) {
    std::cerr << "secmem: " << error.message << "\n";
    return error.exit_code;
  }
  return 2;
}
