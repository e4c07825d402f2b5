// secmem stat: a running process's secret mappings, its locked memory, and whether secmem is loaded in it.
#include <fstream>
#include <sstream>
#include <string>

#include "commands.h"
#include "output.h"

namespace secmem::tool {

namespace {

// Anonymous read-write mappings with VmFlags "dd" (MADV_DONTDUMP), from
// /proc/PID/smaps; *locked_bytes / *unlocked_bytes by VmFlags "lo".
std::vector<Region> dontdump_regions(int pid, uint64_t *locked_bytes, uint64_t *unlocked_bytes) {
  std::vector<Region> found;
  std::ifstream smaps(proc_path(pid, "smaps"));
  Region current;
  bool anonymous_rw = false;
  for (std::string line; std::getline(smaps, line);) {
    if (line.rfind("VmFlags:", 0) == 0) {
      std::istringstream flags(line.substr(8));
      bool dd = false, lo = false;
      for (std::string flag; flags >> flag;) {
        dd = dd || flag == "dd";
        lo = lo || flag == "lo";
      }
      if (anonymous_rw && dd) {
        found.push_back(current);
        (lo ? *locked_bytes : *unlocked_bytes) += current.end - current.start;
      }
      continue;
    }
    unsigned long start = 0, end = 0;
    char perms[8] = {};
    char path[512] = {};
    int fields = sscanf(line.c_str(), "%lx-%lx %7s %*s %*s %*s %511[^\n]", &start, &end, perms, path);
    if (fields < 3) continue; // a field line ("Rss: ..."), not a mapping's
    current = Region{};
    current.start = start;
    current.end = end;
    current.perms = perms;
    current.path = fields == 4 ? path : "";
    anonymous_rw = current.path.empty() && current.perms.rfind("rw", 0) == 0;
  }
  return found;
}

} // namespace

int cmd_stat(int pid, bool json) {
  require_memory(pid, "has exited");
  std::vector<Region> regions = read_regions(pid);
  auto status = read_status(pid);
  StatReport stat;
  stat.pid = pid;
  for (const Region &region : regions) {
    if (region.secret()) {
      stat.secret.push_back(region);
      stat.secret_bytes += region.end - region.start;
    }
    if (region.path.find("libsecmem_preload.so") != std::string::npos) stat.preload_loaded = true;
    if (region.path.find("/libsecmem.so") != std::string::npos) stat.libsecmem_loaded = true;
  }
  for (const Region &region : stat.secret) {
    int err = 0;
    if (!readable(pid, region.start, region.end - region.start, &err)) ++stat.unreadable;
  }
  stat.outside = dontdump_regions(pid, &stat.outside_locked_bytes, &stat.outside_unlocked_bytes);
  stat.own_openssl = own_openssl_in(mapped_objects(pid));
  stat.locked = status["VmLck"];
  stat.name = process_name(pid);
  require_memory(pid, "exited while secmem read it"); // what was read may be partial
  print_stat(stat, json);
  // Secret memory that /proc/PID/mem could read is the negative answer: in
  // memfd_secret mappings that let it, or on the mlock and unlocked tiers.
  return stat.unreadable == stat.secret.size() && stat.outside.empty() ? 0 : 1;
}

} // namespace secmem::tool
