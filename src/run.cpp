// secmem run: a command with the preload shim in LD_PRELOAD and the options as SECMEM_* variables.
#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

#include "commands.h"
#include "elf_deps.h"

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

void warn_unreachable(const std::string &where, const std::string &command, const ProgramEnvironment &env) {
  struct stat info {};
  if (stat(where.c_str(), &info) == 0 && (info.st_mode & (S_ISUID | S_ISGID)) != 0)
    std::cerr << "secmem: " << command << ": " << where
              << " is setuid/setgid: the loader ignores LD_PRELOAD for it, so its "
              << "secrets stay where it puts them\n";
  // A script: what runs is its interpreter (a virtualenv's entry point, a
  // wrapper), followed as the kernel does (a few levels).
  std::string program = where, through;
  for (int depth = 0; depth < 4; ++depth) {
    std::string interpreter = script_interpreter(program, env.path);
    if (interpreter.empty()) break;
    through += " (through " + interpreter + ")";
    program = interpreter;
  }
  std::optional<std::string> loader = elf_interpreter(program);
  if (loader && loader->empty()) {
    std::cerr << "secmem: " << command << ": " << where << through
              << " is statically linked: LD_PRELOAD cannot reach it, so its secrets "
              << "stay where it puts them\n";
    return;
  }
  // Only an ELF program is read for OpenSSL (a kernel file that calls itself
  // regular, /proc/kmsg, blocks when read); then the libraries it loads at
  // start (a bundled Python's libpython with its own OpenSSL was not named:
  // only the executable was read).
  if (!loader) return;
  // The program and the libraries it loads at start in one search: one budget for all of them.
  std::vector<ObjectFile> files = {{program, program}};
  for (const std::string &library : startup_libraries(program, env.library_path, env.preload))
    files.push_back({library, library});
  OwnOpensslSearch search = own_openssl_in(files);
  for (const OwnOpenssl &own : search.found) {
    std::cerr << "secmem: " << command << ": " << where << through;
    if (own.path == program)
      std::cerr << " carries its own OpenSSL";
    else
      std::cerr << " loads " << own.path << " at start, which carries its own OpenSSL";
    std::cerr << (own.version.empty() ? "" : " (" + own.version + ")")
              << ", linked in: the shim cannot reach it, so the keys it loads stay in ordinary memory\n";
  }
  for (const std::string &path : search.read_in_part)
    std::cerr << "secmem: " << command << ": " << path << " is larger than secmem reads of a file ("
              << (kOwnOpensslFileBytes >> 20)
              << " MiB): only its start was searched for a copy of OpenSSL of its own\n";
  for (const std::string &path : search.not_read)
    std::cerr << "secmem: " << command << ": " << path << " was not searched for a copy of OpenSSL of its own: "
              << "secmem reads " << (kOwnOpensslReadBudget >> 20) << " MiB in all, and the files before it took that\n";
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
  auto variable = [](const char *name) {
    const char *value = getenv(name);
    return std::string(value != nullptr ? value : "");
  };
  warn_unreachable(where, "run", {variable("PATH"), variable("LD_LIBRARY_PATH"), variable("LD_PRELOAD")});
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
