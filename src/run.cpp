// secmem run: a command with the preload shim in LD_PRELOAD and the options as SECMEM_* variables.
#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <elf.h>
#include <fcntl.h>
#include <fstream>
#include <initializer_list>
#include <iostream>
#include <optional>
#include <poll.h>
#include <sstream>
#include <string>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

#include "commands.h"

namespace secmem::tool {

namespace {

bool mentions_any(const std::string &entry, std::initializer_list<const char *> names) {
  for (const char *name : names)
    if (entry.find(name) != std::string::npos) return true;
  return false;
}

bool is_sanitizer_runtime(const std::string &entry) {
  return mentions_any(entry, {"libasan", "libtsan", "libubsan", "liblsan", "libhwasan", "libclang_rt."});
}

bool is_allocator(const std::string &entry) {
  return mentions_any(entry, {"jemalloc", "tcmalloc", "mimalloc", "hoard", "scudo", "snmalloc", "libc_malloc_debug"});
}

// A 64-bit ELF file's program interpreter (its dynamic loader), "" for one
// without (statically linked); nothing for a file that is not one (a script).
std::optional<std::string> elf_interpreter(const std::string &path) {
  std::ifstream file(path, std::ios::binary);
  Elf64_Ehdr header{};
  if (!file.read(reinterpret_cast<char *>(&header), sizeof header) || memcmp(header.e_ident, ELFMAG, SELFMAG) != 0 ||
      header.e_ident[EI_CLASS] != ELFCLASS64)
    return std::nullopt;
  for (int i = 0; i < header.e_phnum; ++i) {
    Elf64_Phdr program{};
    file.seekg(static_cast<std::streamoff>(header.e_phoff + static_cast<uint64_t>(i) * header.e_phentsize));
    if (!file.read(reinterpret_cast<char *>(&program), sizeof program)) return std::nullopt;
    if (program.p_type != PT_INTERP) continue;
    if (program.p_filesz == 0 || program.p_filesz > 4096) return std::nullopt;
    std::string interpreter(program.p_filesz, '\0');
    file.seekg(static_cast<std::streamoff>(program.p_offset));
    if (!file.read(interpreter.data(), static_cast<std::streamsize>(interpreter.size()))) return std::nullopt;
    interpreter.resize(strnlen(interpreter.c_str(), interpreter.size()));
    return interpreter;
  }
  return std::string();
}

// The libraries the loader maps for path at start (its DT_NEEDED, found as
// the loader finds them: RUNPATH, LD_LIBRARY_PATH, ld.so.cache), as its own
// loader lists them in trace mode (`LOADER --list PATH`, what ldd runs: no
// code of the program runs, and the command is about to run anyway).
// Empty when the loader cannot be run or does not answer within 5 s.
std::vector<std::string> startup_libraries(const std::string &path, const std::string &loader) {
  std::vector<std::string> found;
  int out[2];
  if (loader.empty() || access(loader.c_str(), X_OK) != 0 || pipe2(out, O_CLOEXEC) != 0) return found;
  pid_t pid = fork();
  if (pid == 0) {
    int null = open("/dev/null", O_RDWR);
    if (null >= 0) {
      dup2(null, STDIN_FILENO);
      dup2(null, STDERR_FILENO);
    }
    dup2(out[1], STDOUT_FILENO);
    execl(loader.c_str(), loader.c_str(), "--list", path.c_str(), static_cast<char *>(nullptr));
    _exit(127);
  }
  close(out[1]);
  std::string text;
  if (pid > 0) {
    char buf[4096];
    for (int waited = 0; waited < 5000 && text.size() < (1u << 20);) { // 5 s, 1 MiB
      pollfd ready{out[0], POLLIN, 0};
      int polled = poll(&ready, 1, 100);
      if (polled < 0 && errno != EINTR) break;
      if (polled <= 0) {
        waited += 100;
        continue;
      }
      ssize_t n = read(out[0], buf, sizeof buf);
      if (n <= 0) break; // the end (the loader is done), or an error
      text.append(buf, static_cast<size_t>(n));
    }
    kill(pid, SIGKILL); // gone already, or stopped here
    waitpid(pid, nullptr, 0);
  }
  close(out[0]);
  // "\tlibpython3.12.so.1.0 => /opt/x/lib/libpython3.12.so.1.0 (0x...)"
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    size_t arrow = line.find(" => /");
    size_t address = line.rfind(" (0x");
    if (arrow != std::string::npos && address != std::string::npos && address > arrow + 4)
      found.push_back(line.substr(arrow + 4, address - arrow - 4));
  }
  return found;
}

} // namespace

// Where the command lives, as execvp would find it.
std::string find_command(const std::string &command) {
  if (command.find('/') != std::string::npos) return file_exists(command) ? command : "";
  const char *path = getenv("PATH");
  std::istringstream dirs(path != nullptr ? path : "/usr/bin:/bin");
  for (std::string dir; std::getline(dirs, dir, ':');) {
    std::string candidate = (dir.empty() ? "." : dir) + "/" + command;
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

void warn_unreachable(const std::string &where, const std::string &command) {
  struct stat info {};
  if (stat(where.c_str(), &info) == 0 && (info.st_mode & (S_ISUID | S_ISGID)) != 0)
    std::cerr << "secmem: " << command << ": " << where
              << " is setuid/setgid: the loader ignores LD_PRELOAD for it, so its "
              << "secrets stay where it puts them\n";
  std::optional<std::string> loader = elf_interpreter(where);
  if (loader && loader->empty()) {
    std::cerr << "secmem: " << command << ": " << where
              << " is statically linked: LD_PRELOAD cannot reach it, so its secrets "
              << "stay where it puts them\n";
    return;
  }
  for (const OwnOpenssl &own : own_openssl_in({{where, where}}))
    std::cerr << "secmem: " << command << ": " << where << " carries its own OpenSSL"
              << (own.version.empty() ? "" : " (" + own.version + ")")
              << ", linked in: the shim cannot reach it, so the keys it loads stay in ordinary memory\n";
  // And the libraries it loads at start (a bundled Python's libpython with
  // its own OpenSSL was not named: only the executable was read).
  if (!loader) return;
  std::vector<ObjectFile> libraries;
  for (const std::string &library : startup_libraries(where, *loader)) libraries.push_back({library, library});
  for (const OwnOpenssl &own : own_openssl_in(libraries))
    std::cerr << "secmem: " << command << ": " << where << " loads " << own.path
              << " at start, which carries its own OpenSSL" << (own.version.empty() ? "" : " (" + own.version + ")")
              << ", linked in: the shim cannot reach it, so the keys it loads stay in ordinary memory\n";
}

std::string preload_list(const std::string &existing, const std::string &shim, const std::string &command) {
  std::vector<std::string> first, rest;
  std::string entries = existing;
  std::replace(entries.begin(), entries.end(), ' ', ':');
  std::istringstream split(entries);
  for (std::string entry; std::getline(split, entry, ':');) {
    if (entry.empty() || entry.find("libsecmem_preload.so") != std::string::npos) continue;
    if (is_sanitizer_runtime(entry)) {
      first.push_back(entry);
    } else {
      if (is_allocator(entry))
        std::cerr << "secmem: " << command << ": " << entry
                  << " is also preloaded; secmem's shim goes before it, so untagged "
                  << "allocations still go to it\n";
      rest.push_back(entry);
    }
  }
  std::string preload;
  for (const auto &list : {first, std::vector<std::string>{shim}, rest})
    for (const std::string &entry : list) preload += (preload.empty() ? "" : ":") + entry;
  return preload;
}

int cmd_run(const RunOptions &options) {
  if (options.command.empty()) throw ToolError{2, "run needs a command after --"};
  std::string shim = shim_path();
  std::string where = find_command(options.command[0]);
  if (where.empty()) {
    std::cerr << "secmem: run: " << options.command[0] << ": command not found\n";
    return 127;
  }
  warn_unreachable(where, "run");
  const char *existing = getenv("LD_PRELOAD");
  setenv("LD_PRELOAD", preload_list(existing != nullptr ? existing : "", shim, "run").c_str(), 1);
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

} // namespace secmem::tool
