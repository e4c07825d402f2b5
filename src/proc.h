// What the secmem command reads about processes: /proc/PID/maps, status,
// and memory through /proc/PID/mem.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "platform/linux_facts.h"

namespace secmem::tool {

// Raised for errors the user must fix or know about (bad PID, no access, ...).
struct ToolError {
  int exit_code;
  std::string message;
};

struct Region {
  uintptr_t start = 0;
  uintptr_t end = 0;
  std::string perms;
  std::string path;
  bool secret() const { return path == linux_facts::kSecretMapName; }
  // heap, stack, anonymous, secretmem, or "file NAME".
  std::string label() const;
};

// Both throw ToolError (exit 3): the file cannot be read, or the process
// has exited ("process PID has exited ..."); callers check first that the
// PID names a process (require_memory).
std::vector<Region> read_regions(int pid);
std::map<std::string, std::string> read_status(int pid); // "VmLck" -> "1024 kB", ...
bool process_exists(int pid);
// Gone, or a zombie (no memory left to read).
bool process_gone(int pid);
// Throws ToolError: exit 2 when there is no such process, 3 when it is gone
// (or a zombie): "process PID WHEN (gone, or a zombie ...)".
void require_memory(int pid, const char *when);
std::string process_name(int pid); // /proc/PID/comm; "" when it is gone
// /proc/PID/FILE; /proc/TID/FILE of a live thread when the main thread has
// exited while others run (the leader's maps and mem are empty).
std::string proc_path(int pid, const char *file);

// Whether [start, start+len) of pid can be read through /proc/PID/mem, and the errno when not.
bool readable(int pid, uintptr_t start, size_t len, int *err);

// A byte string to look for, and the name it is reported under.
struct Pattern {
  std::string component; // "RSA p", or "pattern" for bytes given in hex
  std::vector<unsigned char> bytes;
};

struct ScanResult {
  std::map<std::string, int> copies; // readable copies per region label, every component together
  // Per component (each one looked for, found or not): copies per region label.
  std::map<std::string, std::map<std::string, int>> by_component;
  std::vector<std::string> components;   // the components looked for, in the key's order
  std::vector<Region> unreadable_secret; // secretmem regions that refused the read
  std::vector<Region> unreadable_other;  // other regions that refused the read, in part or whole
  uint64_t not_read_bytes = 0;           // how much of them
  size_t regions_read = 0;               // regions of which at least a page was read
  int total() const;
  int of(const std::string &component) const; // copies of one component
};

// Counts copies of every pattern in pid's readable memory.
ScanResult scan(int pid, const std::vector<Pattern> &patterns); // throws ToolError

// An executable or library that carries its own OpenSSL (platform/own_openssl.h).
struct OwnOpenssl {
  std::string path;
  std::string version; // "OpenSSL 3.0.13", or "" when the file names none
};
// A file to look into, and the path to name it by.
struct ObjectFile {
  std::string read_path;
  std::string path;
};
// Those among files that carry their own OpenSSL (regular files only; those
// that cannot be read are left out). Shared libcrypto itself is not one: the
// shim reaches it. Each file is read up to kOwnOpensslFileBytes, and all of
// them up to kOwnOpensslReadBudget, in their order: those larger are read in
// part, those after the budget is spent not at all (both named).
inline constexpr uint64_t kOwnOpensslFileBytes = uint64_t{256} << 20;
inline constexpr uint64_t kOwnOpensslReadBudget = uint64_t{1} << 30;
struct OwnOpensslSearch {
  std::vector<OwnOpenssl> found;
  std::vector<std::string> read_in_part; // paths larger than kOwnOpensslFileBytes
  std::vector<std::string> not_read;     // paths after the budget was spent
};
OwnOpensslSearch own_openssl_in(const std::vector<ObjectFile> &files);
// The files pid has mapped executable, read through /proc/PID/map_files (a
// deleted or replaced binary, a chroot), else /proc/PID/root/PATH.
std::vector<ObjectFile> mapped_objects(int pid);

std::string describe_copies(const ScanResult &result); // "3 in [heap], 1 in anonymous" or "none"
// The same for one component.
std::string describe_copies(const ScanResult &result, const std::string &component);

} // namespace secmem::tool
