#include "proc.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <fstream>
#include <signal.h>
#include <sstream>
#include <sys/stat.h>
#include <unistd.h>

#include "file_reader.h"
#include "platform/own_openssl.h"

namespace secmem::tool {

std::string Region::label() const {
  if (path.empty()) return "anonymous";
  if (secret()) return "secretmem";
  if (path[0] == '[') return path;
  return "file " + path.substr(path.rfind('/') + 1);
}

bool process_exists(int pid) { return pid > 0 && (kill(pid, 0) == 0 || errno == EPERM); }

// The text of a small /proc file; what was read when the task left
// meanwhile. (Read through an istreambuf_iterator, a read that failed with
// ESRCH threw libstdc++'s "basic_filebuf::underflow error reading the file".)
static std::string read_small_file(const std::string &path) {
  std::string text;
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return text;
  char buf[4096];
  for (ssize_t n; (n = read(fd, buf, sizeof buf)) > 0;) text.append(buf, static_cast<size_t>(n));
  close(fd);
  return text;
}

// Whether the task whose /proc directory is dir has exited (a zombie, or gone).
static bool task_exited(const std::string &dir) {
  std::string text = read_small_file(dir + "/stat");
  size_t paren = text.rfind(')');
  return paren == std::string::npos || paren + 2 >= text.size() || text[paren + 2] == 'Z' || text[paren + 2] == 'X';
}

// The /proc directory to read pid's memory through: its own; or, when its
// main thread has exited while other threads run on (the thread group's
// leader is a zombie, and its maps and mem are empty), a live thread's,
// /proc/TID (which has map_files, as /proc/PID/task/TID has not); "" when
// no thread is left.
static std::string memory_dir(int pid) {
  std::string own = "/proc/" + std::to_string(pid);
  if (!task_exited(own)) return own;
  DIR *tasks = opendir((own + "/task").c_str());
  if (tasks == nullptr) return "";
  std::string found;
  while (dirent *entry = readdir(tasks)) {
    if (entry->d_name[0] < '0' || entry->d_name[0] > '9') continue;
    if (!task_exited(own + "/task/" + entry->d_name)) {
      found = std::string("/proc/") + entry->d_name;
      break;
    }
  }
  closedir(tasks);
  return found;
}

// PF_KTHREAD in the flags of /proc/PID/stat (its ninth field).
static bool is_kernel_thread(int pid) {
  std::string text = read_small_file("/proc/" + std::to_string(pid) + "/stat");
  size_t paren = text.rfind(')');
  if (paren == std::string::npos) return false;
  std::istringstream fields(text.substr(paren + 1));
  std::string field;
  for (int i = 3; i <= 9 && fields >> field; ++i) {}
  constexpr unsigned long kPfKthread = 0x00200000;
  return !field.empty() && field.find_first_not_of("0123456789") == std::string::npos &&
         (std::stoul(field) & kPfKthread) != 0;
}

bool process_gone(int pid) { return !process_exists(pid) || memory_dir(pid).empty(); }

std::string proc_path(int pid, const char *file) {
  std::string dir = memory_dir(pid);
  return (dir.empty() ? "/proc/" + std::to_string(pid) : dir) + "/" + file;
}

std::string process_name(int pid) {
  std::ifstream comm("/proc/" + std::to_string(pid) + "/comm"); // the process's name, not a thread's
  std::string name;
  std::getline(comm, name);
  return name;
}

static std::string access_hint(int err) {
  return err == EACCES || err == EPERM ? " (reading another process needs ptrace rights: run as its user or as root)"
                                       : "";
}

static void require_process(int pid) {
  if (!process_exists(pid)) throw ToolError{2, "no process with PID " + std::to_string(pid)};
}

[[noreturn]] static void process_left(int pid, const char *when) {
  throw ToolError{3, "process " + std::to_string(pid) + " " + when +
                         " (gone, or a zombie its parent has not reaped): there is no memory to look at"};
}

// A process that has exited but is not reaped has no memory left: stat must
// not answer as if it held nothing (an empty VmLck, "not loaded", 0 of 0),
// nor scan fail at /proc/PID/mem with ESRCH.
void require_memory(int pid, const char *when) {
  require_process(pid);
  if (is_kernel_thread(pid))
    throw ToolError{2, "process " + std::to_string(pid) + " (" + process_name(pid) +
                           ") is a kernel thread: it has no user memory to look at"};
  if (process_gone(pid)) process_left(pid, when);
}

// A file of pid's that could not be opened (errno err): a process that
// left after the caller's require_memory (a zombie, or reaped) has exited
// ("no process with PID", exit 2, would call a good PID bad input);
// anything else is the error itself.
[[noreturn]] static void proc_file_failed(int pid, const std::string &what, int err) {
  if (process_gone(pid)) process_left(pid, "has exited");
  throw ToolError{3, "cannot " + what + ": " + strerror(err) + access_hint(err)};
}

std::vector<Region> read_regions(int pid) {
  std::string path = proc_path(pid, "maps");
  std::ifstream maps(path);
  if (int err = errno; !maps) proc_file_failed(pid, "read " + path, err);
  std::vector<Region> regions;
  for (std::string line; std::getline(maps, line);) {
    std::istringstream fields(line);
    std::string range, perms, offset, device, inode;
    fields >> range >> perms >> offset >> device >> inode;
    Region region;
    size_t dash = range.find('-');
    region.start = std::stoull(range.substr(0, dash), nullptr, 16);
    region.end = std::stoull(range.substr(dash + 1), nullptr, 16);
    region.perms = perms;
    std::getline(fields >> std::ws, region.path);
    regions.push_back(region);
  }
  return regions;
}

std::map<std::string, std::string> read_status(int pid) {
  std::string path = proc_path(pid, "status");
  std::ifstream status(path);
  if (int err = errno; !status) proc_file_failed(pid, "read " + path, err);
  std::map<std::string, std::string> values;
  for (std::string line; std::getline(status, line);) {
    size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    size_t start = line.find_first_not_of(" \t", colon + 1);
    values[line.substr(0, colon)] = start == std::string::npos ? "" : line.substr(start);
  }
  return values;
}

static int open_mem(int pid) {
  std::string path = proc_path(pid, "mem");
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (int err = errno; fd < 0) proc_file_failed(pid, "open " + path, err);
  return fd;
}

bool readable(int pid, uintptr_t start, size_t len, int *err) {
  int fd = open_mem(pid);
  unsigned char byte[64];
  ssize_t n = pread(fd, byte, std::min(len, sizeof byte), static_cast<off_t>(start));
  *err = n < 0 ? errno : 0;
  close(fd);
  return n > 0;
}

int ScanResult::total() const {
  int sum = 0;
  for (const auto &entry : copies) sum += entry.second;
  return sum;
}

int ScanResult::of(const std::string &component) const {
  int sum = 0;
  auto found = by_component.find(component);
  if (found != by_component.end())
    for (const auto &entry : found->second) sum += entry.second;
  return sum;
}

namespace {

// The pages a mapping holds in memory or in swap (Rss and Swap in
// /proc/PID/smaps), in KiB, by the mapping's start.
std::map<uintptr_t, uint64_t> resident_kib(int pid) {
  std::map<uintptr_t, uint64_t> held;
  std::ifstream smaps(proc_path(pid, "smaps"));
  uintptr_t start = 0;
  for (std::string line; std::getline(smaps, line);) {
    size_t dash = line.find('-');
    if (dash != std::string::npos && dash > 0 && isxdigit(static_cast<unsigned char>(line[0])) &&
        line.find(':') > dash) {
      start = std::stoull(line.substr(0, dash), nullptr, 16);
      continue;
    }
    if (line.rfind("Rss:", 0) == 0 || line.rfind("Swap:", 0) == 0)
      held[start] += std::stoull(line.substr(line.find(':') + 1));
  }
  return held;
}

// The runs of pages of [start, end) that are in memory or in swap
// (/proc/PID/pagemap bits 63 and 62); the whole range when pagemap cannot
// be read. expected: how many smaps counts there (0: not known): the walk
// stops once it has found them all (a mapping of terabytes with one page
// took a minute).
std::vector<std::pair<uintptr_t, uintptr_t>> held_runs(int pid, uintptr_t start, uintptr_t end, uint64_t expected) {
  std::vector<std::pair<uintptr_t, uintptr_t>> runs;
  int fd = open(proc_path(pid, "pagemap").c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return {{start, end}};
  std::vector<uint64_t> entries(4096);
  uint64_t found = 0;
  for (uintptr_t at = start; at < end && (expected == 0 || found < expected);) {
    size_t pages = std::min<uintptr_t>(entries.size(), (end - at) / 4096);
    ssize_t got = pread(fd, entries.data(), pages * sizeof(uint64_t), static_cast<off_t>(at / 4096 * 8));
    if (got <= 0) {
      runs.emplace_back(at, end); // unknown: read it
      break;
    }
    for (size_t i = 0; i < static_cast<size_t>(got) / sizeof(uint64_t); ++i, at += 4096) {
      if ((entries[i] >> 62) == 0) continue;
      ++found;
      if (!runs.empty() && runs.back().second == at)
        runs.back().second = at + 4096;
      else
        runs.emplace_back(at, at + 4096);
    }
  }
  close(fd);
  return runs;
}

} // namespace

// Every mapping is read but the secret ones (memfd_secret refuses, the
// point) and the kernel's own ([vvar], [vsyscall]); one without read
// permission too, where it holds pages: /proc/PID/mem reads PROT_NONE
// memory (a sealed block on the mlock tier, a key libsodium made
// noaccess), and so can anyone who may read the process. Only its pages in
// memory or in swap are read: a reservation of gigabytes holds none, and
// reading it would make the kernel map pages for it.
ScanResult scan(int pid, const std::vector<Pattern> &patterns) {
  std::vector<Region> regions = read_regions(pid);
  int fd = open_mem(pid);
  ScanResult result;
  size_t longest = 0;
  for (const Pattern &pattern : patterns) {
    longest = std::max(longest, pattern.bytes.size());
    if (result.by_component.emplace(pattern.component, std::map<std::string, int>{}).second)
      result.components.push_back(pattern.component);
  }
  bool any_closed = false;
  for (const Region &region : regions) any_closed = any_closed || region.perms[0] != 'r';
  std::map<uintptr_t, uint64_t> held = any_closed ? resident_kib(pid) : std::map<uintptr_t, uint64_t>{};
  std::vector<unsigned char> buf(1 << 20);
  // The last bytes read before a region's end (longest - 1 of them), and
  // where they end, with the label of their region: a copy that begins
  // there and goes on in the mapping after it (two mappings side by side,
  // with different flags) is counted there.
  std::vector<unsigned char> tail;
  uintptr_t tail_end = 0;
  std::string tail_label;
  auto count_straddles = [&](const unsigned char *next, size_t n, const std::string &label) {
    if (tail.empty() || n == 0) return;
    std::vector<unsigned char> joint(tail);
    joint.insert(joint.end(), next, next + std::min(n, longest - 1));
    for (const Pattern &pattern : patterns) {
      size_t len = pattern.bytes.size();
      for (size_t at = tail.size() > len - 1 ? tail.size() - (len - 1) : 0; at < tail.size(); ++at) {
        if (at + len > joint.size() || memcmp(joint.data() + at, pattern.bytes.data(), len) != 0) continue;
        result.copies[label]++;
        result.by_component[pattern.component][label]++;
      }
    }
  };
  for (const Region &region : regions) {
    if (region.path.rfind("[vvar", 0) == 0 || region.path == "[vsyscall]" ||
        (region.perms[0] != 'r' && region.secret())) {
      if (region.secret()) result.unreadable_secret.push_back(region);
      tail.clear();
      continue;
    }
    // A shared mapping without read permission may hold pages its file or
    // shared memory has that this process never mapped (smaps and pagemap
    // count none): read whole, as a readable one is, up to kSharedClosedMax;
    // past that only its mapped pages, the rest counted as not read.
    constexpr uintptr_t kSharedClosedMax = uintptr_t{256} << 20;
    bool shared = region.perms.size() > 3 && region.perms[3] == 's';
    std::vector<std::pair<uintptr_t, uintptr_t>> runs;
    uint64_t not_read = 0;
    if (region.perms[0] == 'r' || (shared && region.end - region.start <= kSharedClosedMax)) {
      runs.emplace_back(region.start, region.end);
    } else if (auto found = held.find(region.start); found == held.end() || found->second > 0) {
      runs = held_runs(pid, region.start, region.end, found == held.end() ? 0 : found->second / 4);
    }
    if (shared && region.perms[0] != 'r' && region.end - region.start > kSharedClosedMax) {
      uintptr_t held_bytes = 0;
      for (const auto &[run_start, run_end] : runs) held_bytes += run_end - run_start;
      not_read += region.end - region.start - held_bytes;
    }
    bool read_any = false;
    int failed_pages = 0;
    for (const auto &[run_start, run_end] : runs) {
      if (run_start != tail_end) tail.clear();
      for (uintptr_t at = run_start; at < run_end;) {
        size_t want = std::min<uintptr_t>(buf.size(), run_end - at);
        ssize_t got = pread(fd, buf.data(), want, static_cast<off_t>(at));
        if (got <= 0 && region.secret() && !read_any) {
          result.unreadable_secret.push_back(region); // memfd_secret: the point
          break;
        }
        if (got <= 0) {
          // A page that cannot be read (a guard, a userfaultfd range, a file
          // hole past its end) does not end the region: the scan goes on past
          // it, page by page. After 1 GiB refused in this region the rest is
          // counted as not read, unread (a mapping of terabytes past its file's
          // end would take hours).
          uintptr_t next = std::min<uintptr_t>((at & ~uintptr_t{4095}) + 4096, run_end);
          if (++failed_pages > (1 << 18)) next = run_end;
          not_read += next - at;
          at = next;
          tail.clear();
          continue;
        }
        read_any = true;
        if (at == tail_end) count_straddles(buf.data(), static_cast<size_t>(got), tail_label);
        // Consecutive reads overlap by the longest pattern less a byte, so that
        // a copy across the boundary is seen; a copy that starts in the overlap
        // is counted by the next read only (patterns differ in length).
        bool more = static_cast<size_t>(got) == want && at + static_cast<uintptr_t>(got) < run_end;
        size_t advance = more && static_cast<size_t>(got) > longest ? static_cast<size_t>(got) - (longest - 1)
                                                                    : static_cast<size_t>(got);
        for (const Pattern &pattern : patterns) {
          const unsigned char *from = buf.data(), *end = buf.data() + got;
          while (const void *hit =
                     memmem(from, static_cast<size_t>(end - from), pattern.bytes.data(), pattern.bytes.size())) {
            const unsigned char *start = static_cast<const unsigned char *>(hit);
            if (static_cast<size_t>(start - buf.data()) >= advance) break;
            result.copies[region.label()]++;
            result.by_component[pattern.component][region.label()]++;
            from = start + 1;
          }
        }
        if (!more && longest > 1) {
          auto n = static_cast<size_t>(got);
          if (at == tail_end && !tail.empty() && n < longest - 1) {
            // Shorter than the longest pattern (a mapping between two others):
            // the tail goes on from the one before, whose label it keeps.
            tail.insert(tail.end(), buf.data(), buf.data() + n);
            tail.erase(tail.begin(), tail.end() - static_cast<std::ptrdiff_t>(std::min(tail.size(), longest - 1)));
          } else {
            size_t keep = std::min(n, longest - 1);
            tail.assign(buf.data() + n - keep, buf.data() + n);
            tail_label = region.label();
          }
          tail_end = at + static_cast<uintptr_t>(got);
        }
        at += advance;
      }
    }
    if (runs.empty() || !read_any) tail.clear();
    if (read_any) ++result.regions_read;
    if (not_read > 0) {
      result.unreadable_other.push_back(region);
      result.not_read_bytes += not_read;
    }
  }
  close(fd);
  return result;
}

OwnOpensslSearch own_openssl_in(const std::vector<ObjectFile> &files) {
  OwnOpensslSearch search;
  constexpr size_t kChunk = 1 << 20, kOverlap = 64;
  std::vector<char> buf(kChunk + kOverlap);
  uint64_t budget = kOwnOpensslReadBudget;
  for (const ObjectFile &file : files) {
    if (own_openssl::is_shared_libcrypto(file.path.c_str())) continue;
    FileReader reader(file.read_path); // regular files only: a FIFO or /dev/zero mapped executable never ends
    if (!reader.ok()) continue;
    // Up to kOwnOpensslFileBytes of each, up to the budget in all: a sparse
    // file of 20 GB whose first bytes were an ELF header took the tool 46 s
    // to read through (found by review).
    if (budget == 0) {
      search.not_read.push_back(file.path);
      continue;
    }
    uint64_t limit = std::min<uint64_t>({reader.size(), kOwnOpensslFileBytes, budget});
    if (limit < reader.size()) search.read_in_part.push_back(file.path);
    budget -= limit;
    bool marker = false;
    char version[32] = "";
    size_t kept = 0;
    for (uint64_t at = 0; at < limit;) {
      std::string chunk = reader.read_some(at, static_cast<size_t>(std::min<uint64_t>(kChunk, limit - at)));
      if (chunk.empty()) break;
      memcpy(buf.data() + kept, chunk.data(), chunk.size());
      at += chunk.size();
      size_t n = kept + chunk.size();
      marker = marker || own_openssl::holds_marker(buf.data(), n);
      if (version[0] == '\0') own_openssl::find_version(buf.data(), n, version, sizeof version);
      kept = std::min(kOverlap, n); // a string across the boundary is seen whole in the next round
      memmove(buf.data(), buf.data() + n - kept, kept);
    }
    if (marker) search.found.push_back({file.path, version});
  }
  return search;
}

std::vector<ObjectFile> mapped_objects(int pid) {
  std::vector<ObjectFile> files;
  for (const Region &region : read_regions(pid)) {
    if (region.perms.size() < 3 || region.perms[2] != 'x' || region.path.empty() || region.path[0] != '/') continue;
    char range[64];
    snprintf(range, sizeof range, "%lx-%lx", static_cast<unsigned long>(region.start),
             static_cast<unsigned long>(region.end));
    std::string through_map = proc_path(pid, "map_files/") + range;
    std::string read_path = access(through_map.c_str(), R_OK) == 0 ? through_map : proc_path(pid, "root") + region.path;
    bool seen = false;
    for (const ObjectFile &file : files) seen = seen || file.path == region.path;
    if (!seen) files.push_back({read_path, region.path});
  }
  return files;
}

static std::string describe(const std::map<std::string, int> &copies) {
  std::string text;
  for (const auto &[where, n] : copies) text += (text.empty() ? "" : ", ") + std::to_string(n) + " in " + where;
  return text.empty() ? "none" : text;
}

std::string describe_copies(const ScanResult &result) { return describe(result.copies); }

std::string describe_copies(const ScanResult &result, const std::string &component) {
  auto found = result.by_component.find(component);
  return found == result.by_component.end() ? "none" : describe(found->second);
}

} // namespace secmem::tool
