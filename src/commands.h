// The secmem command's commands: what each one finds out, and its entry point.
// Entry points return the exit status documented in main.cpp and throw ToolError.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <sys/resource.h>
#include <vector>

#include "proc.h"

namespace secmem::tool {

// probe: can this process have secret memory, and how much.
struct ProbeReport {
  std::string kernel;
  int secret_errno = 0; // 0: memfd_secret works (fd, mmap and first touch)
  std::string secret_step;
  bool secret_killed = false; // a seccomp filter kills on memfd_secret (tried in a child)
  int seccomp_mode = 0;
  bool cap_ipc_lock = false;
  rlimit memlock{};
  uint64_t locked_now = 0;
  std::string auto_backend;
  std::vector<std::string> advice;
  std::vector<std::string> notes;
};

ProbeReport run_probe();
// What to change, from what the probe found (its kernel, errno, filter,
// limits); and what to know (hibernation).
std::vector<std::string> probe_advice(const ProbeReport &probe);
std::vector<std::string> probe_notes(const ProbeReport &probe);
int cmd_probe(bool json);

// stat: what a running process holds in secret memory.
struct StatReport {
  int pid = 0;
  std::string name;
  std::vector<Region> secret;
  uint64_t secret_bytes = 0;
  std::string locked; // VmLck as /proc/PID/status says it ("0 kB")
  bool preload_loaded = false;
  bool libsecmem_loaded = false;
  size_t unreadable = 0; // secret ranges that /proc/PID/mem refused
  // Objects with their own OpenSSL, out of the shim's reach, and the bounds of that search (proc.h).
  OwnOpensslSearch own_openssl;
  // Secrets outside memfd_secret: anonymous read-write mappings kept out of
  // core dumps (MADV_DONTDUMP), as secmem's mlock and unlocked tiers (and
  // OpenSSL's own secure heap) are; readable through /proc/PID/mem.
  std::vector<Region> outside;
  uint64_t outside_locked_bytes = 0, outside_unlocked_bytes = 0;
};

int cmd_stat(int pid, bool json);

// scan: readable copies of a byte pattern or of every private component of a key.
struct ScanReport {
  int pid = 0;
  std::string name;
  std::string key_file;               // empty when the pattern was given in hex
  std::string key;                    // "RSA key (PEM): d, p, q, dP, dQ, qInv"
  std::vector<std::string> too_short; // components not looked for
  size_t hex_bytes = 0;
  ScanResult result;
  uint64_t unreadable_secret_bytes = 0;
  // The process was gone (or a zombie) when the scan ended, or had no memory
  // to read: what was not read is not a clean result (exit 3).
  bool process_left = false;
  bool complete() const { return !process_left && result.not_read_bytes == 0 && result.regions_read > 0; }
};

int cmd_scan(int pid, const std::string &hex, const std::string &key_file, const std::string &passphrase_file,
             bool json);

// run: a command under the preload shim.
struct RunOptions {
  std::string backend;
  bool strict = false;
  std::string tag_callers;
  std::string report;
  std::vector<std::string> command;
};

int cmd_run(const RunOptions &options);

// Shared by run and systemd: warnings (on stderr, "secmem: COMMAND: ...") for
// a program the shim cannot reach (setuid, static, its own OpenSSL); and an
// LD_PRELOAD list with the shim in it: sanitizer runtimes first, then the
// shim, then what existing held (an earlier shim left out).
// The variables of the program's environment that decide what it loads.
struct ProgramEnvironment {
  std::string path, library_path, preload; // PATH, LD_LIBRARY_PATH, LD_PRELOAD
};
void warn_unreachable(const std::string &where, const std::string &command, const ProgramEnvironment &env);
std::string preload_list(const std::string &existing, const std::string &shim, const std::string &command);
// Where a command lives, as execvp would find it ("" when nowhere).
std::string find_command(const std::string &command);

// systemd: a drop-in that runs a service under the shim.
struct SystemdOptions {
  std::string unit;         // a name (nginx, nginx.service, postgresql@15-main.service) or a unit file's path
  std::string heap = "16M"; // the secret heap a process may grow to (LimitMEMLOCK= is sized from it)
};

int cmd_systemd(const SystemdOptions &options);

// demo: one run of the signing program, and what its memory showed.
struct DemoRun {
  bool signed_ok = false;
  bool refused = false; // the process made itself non-dumpable: its memory could not be read
  int copies = 0;       // readable copies of the key's components
  std::string where;    // "2 in [heap]"
  size_t secret_mappings = 0;
  uint64_t secret_bytes = 0;
  std::string backend = "-";
};

struct DemoReport {
  DemoRun plain;
  DemoRun shimmed;
  int probe_errno = 0; // memfd_secret's refusal on this machine, 0 when it works
};

int cmd_demo();

// Files shipped with secmem: next to the build tree's binary, else installed; throws ToolError.
bool file_exists(const std::string &path);
std::string shim_path();
std::string signer_path();

} // namespace secmem::tool
