// secmem scan: readable copies of a byte pattern, or of every private component of a key, in a process's memory.
#include <string>
#include <vector>

#include "commands.h"
#include "keys.h"
#include "output.h"

namespace secmem::tool {

int cmd_scan(int pid, const std::string &hex, const std::string &key_file, const std::string &passphrase_file,
             bool json) {
  if (hex.empty() == key_file.empty()) throw ToolError{2, "scan needs exactly one of --hex or --key-file"};
  if (!passphrase_file.empty() && key_file.empty()) throw ToolError{2, "--passphrase-file goes with --key-file"};
  ScanReport report;
  std::vector<Pattern> patterns;
  if (hex.empty()) {
    KeyMaterial key = load_key_material(key_file, passphrase_file);
    report.key = describe_key(key);
    report.too_short = key.too_short;
    patterns = key_patterns(key);
  } else {
    patterns.push_back({"pattern", parse_hex(hex)});
    report.hex_bytes = patterns[0].bytes.size();
  }
  report.pid = pid;
  report.key_file = key_file;
  require_memory(pid, "has exited");
  report.name = process_name(pid);
  report.result = scan(pid, patterns);
  report.process_left = process_gone(pid);
  for (const Region &region : report.result.unreadable_secret)
    report.unreadable_secret_bytes += region.end - region.start;
  print_scan(report, json);
  // Copies found stand however much was read; none found is clean only if
  // everything was read.
  if (report.result.total() != 0) return 1;
  return report.complete() ? 0 : 3;
}

} // namespace secmem::tool
