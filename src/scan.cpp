// secmem scan: readable copies of a byte pattern, or of a key's private scalar, in a process's memory.
#include <string>
#include <vector>

#include "commands.h"
#include "keys.h"
#include "output.h"

namespace secmem::tool {

int cmd_scan(int pid, const std::string &hex, const std::string &key_file, bool json) {
  if (hex.empty() == key_file.empty()) throw ToolError{2, "scan needs exactly one of --hex or --key-file"};
  std::vector<std::vector<unsigned char>> patterns =
      hex.empty() ? private_scalar_patterns(key_file) : std::vector<std::vector<unsigned char>>{parse_hex(hex)};
  ScanReport report;
  report.pid = pid;
  report.key_file = key_file;
  report.hex_bytes = hex.empty() ? 0 : patterns[0].size();
  report.result = scan(pid, patterns);
  for (const Region &region : report.result.unreadable_secret)
    report.unreadable_secret_bytes += region.end - region.start;
  report.name = process_name(pid);
  print_scan(report, json);
  return report.result.total() == 0 ? 0 : 1;
}

} // namespace secmem::tool
