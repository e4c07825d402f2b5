// secmem stat: a running process's secret mappings, its locked memory, and whether secmem is loaded in it.
#include <string>

#include "commands.h"
#include "output.h"

namespace secmem::tool {

int cmd_stat(int pid, bool json) {
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
  stat.own_openssl = own_openssl_in(mapped_objects(pid));
  stat.locked = status["VmLck"];
  stat.name = process_name(pid);
  print_stat(stat, json);
  // Secret memory that /proc/PID/mem could read is the negative answer.
  return stat.unreadable == stat.secret.size() ? 0 : 1;
}

} // namespace secmem::tool
