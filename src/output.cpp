#include "output.h"

#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "platform/linux_facts.h"

namespace secmem::tool {

namespace {

using json = nlohmann::ordered_json; // ordered: keys come out in the order secmem has always printed them

// One line with ", " and ": " between items, as secmem has always printed it: dump() has no such layout.
std::string one_line(const json &value) {
  // replace: a name that is not UTF-8 (a file, a comm) prints as U+FFFD instead of throwing.
  if (!value.is_structured()) return value.dump(-1, ' ', false, json::error_handler_t::replace);
  std::string items;
  for (const auto &item : value.items()) {
    std::string key = value.is_object() ? one_line(item.key()) + ": " : "";
    items += (items.empty() ? "" : ", ") + key + one_line(item.value());
  }
  return value.is_object() ? "{" + items + "}" : "[" + items + "]";
}

void print_json(const json &value) { std::cout << one_line(value) << "\n"; }

// "label:" padded to one column, so that the values line up; an empty label continues the row above.
void field(const std::string &label, const std::string &value) {
  std::string head = label.empty() ? "" : label + ":";
  head.resize(19, ' ');
  std::cout << head << terminal_safe(value) << "\n";
}

std::string hex(uintptr_t value) {
  char text[32];
  snprintf(text, sizeof text, "%lx", static_cast<unsigned long>(value));
  return text;
}

// A row of the demo's side-by-side table.
void table_row(const std::string &what, const std::string &plain, const std::string &shimmed) {
  char row[256];
  snprintf(row, sizeof row, "  %-36s %-26s %s\n", what.c_str(), plain.c_str(), shimmed.c_str());
  std::cout << row;
}

std::string copies(const DemoRun &run) {
  if (run.refused) return "none: reading refused";
  return run.copies == 0 ? "0" : std::to_string(run.copies) + " (" + run.where + ")";
}

std::string mappings(const DemoRun &run) {
  if (run.refused) return "-";
  if (run.secret_mappings == 0) return "0";
  return std::to_string(run.secret_mappings) + " (" + kib(run.secret_bytes) + ", unreadable)";
}

} // namespace

std::string kib(uint64_t bytes) { return std::to_string(bytes / 1024) + " KiB"; }

namespace {

// A path as the process sees it: without the /proc/PID/root prefix it was read through.
std::string shown_path(const std::string &path, const std::string &root) {
  return path.rfind(root, 0) == 0 ? path.substr(root.size()) : path;
}

json shown_paths(const std::vector<std::string> &paths, const std::string &root) {
  json list = json::array();
  for (const std::string &path : paths) list.push_back(shown_path(path, root));
  return list;
}

json own_openssl_json(const std::vector<OwnOpenssl> &found, const std::string &root) {
  json list = json::array();
  for (const OwnOpenssl &own : found) list.push_back({{"path", shown_path(own.path, root)}, {"version", own.version}});
  return list;
}

} // namespace

void print_probe(const ProbeReport &probe, bool json_output) {
  bool works = probe.secret_errno == 0, unlimited = probe.memlock.rlim_cur == RLIM_INFINITY;
  if (json_output) {
    print_json({{"kernel", probe.kernel},
                {"memfd_secret", works},
                {"memfd_secret_error", works ? json(nullptr) : json(errno_text(probe.secret_errno))},
                {"memfd_secret_killed_by_seccomp", probe.secret_killed},
                {"seccomp_filter", probe.seccomp_mode == 2},
                {"cap_ipc_lock", probe.cap_ipc_lock},
                {"memlock_soft", unlimited ? json(nullptr) : json(probe.memlock.rlim_cur)},
                {"locked_bytes", probe.locked_now},
                {"auto_backend", probe.auto_backend},
                {"advice", probe.advice},
                {"notes", probe.notes}});
    return;
  }
  field("kernel", probe.kernel);
  field("memfd_secret", works ? "works (a page created, mapped and touched)"
                        : probe.secret_killed
                            ? "a seccomp filter here kills on memfd_secret (tried in a child)"
                            : "refused at " + probe.secret_step + " (" + errno_text(probe.secret_errno) + ")");
  field("seccomp", probe.seccomp_mode == 2 ? "a filter is active" : probe.seccomp_mode == 1 ? "strict" : "none");
  field("CAP_IPC_LOCK", probe.cap_ipc_lock ? "yes (RLIMIT_MEMLOCK does not apply)" : "no");
  field("RLIMIT_MEMLOCK", limit_text(probe.memlock.rlim_cur) + " (hard " + limit_text(probe.memlock.rlim_max) + "), " +
                              std::to_string(probe.locked_now) + " bytes locked now");
  field("auto backend", probe.auto_backend);
  for (const std::string &line : probe.advice) field("advice", line);
  for (const std::string &line : probe.notes) field("note", line);
}

void print_stat(const StatReport &stat, bool json_output) {
  // The process's own root (proc_path may name a thread's directory).
  std::string root = "/proc/" + std::to_string(stat.pid) + "/root";
  if (json_output) {
    print_json({{"pid", stat.pid},
                {"name", stat.name},
                {"secret_mappings", stat.secret.size()},
                {"secret_bytes", stat.secret_bytes},
                {"locked", stat.locked},
                {"preload_loaded", stat.preload_loaded},
                {"libsecmem_loaded", stat.libsecmem_loaded},
                {"secret_unreadable", stat.unreadable},
                {"outside_secret_mappings", stat.outside.size()},
                {"outside_secret_bytes", stat.outside_locked_bytes + stat.outside_unlocked_bytes},
                {"outside_locked_bytes", stat.outside_locked_bytes},
                {"own_openssl", own_openssl_json(stat.own_openssl.found, root)},
                {"own_openssl_read_in_part", shown_paths(stat.own_openssl.read_in_part, root)},
                {"own_openssl_not_read", shown_paths(stat.own_openssl.not_read, root)}});
    return;
  }
  field("process", std::to_string(stat.pid) + " (" + stat.name + ")");
  field("secret mappings", std::to_string(stat.secret.size()) + " (" + kib(stat.secret_bytes) + ")");
  for (const Region &region : stat.secret)
    field("", hex(region.start) + "-" + hex(region.end) + " " + kib(region.end - region.start));
  field("locked (VmLck)", stat.locked);
  field("secmem preload", stat.preload_loaded ? "loaded" : "not loaded");
  field("libsecmem", stat.libsecmem_loaded ? "loaded" : "not loaded");
  bool searched_all = stat.own_openssl.read_in_part.empty() && stat.own_openssl.not_read.empty();
  if (stat.own_openssl.found.empty())
    field("own OpenSSL", searched_all ? "none (every OpenSSL in it is the shared libcrypto)"
                                      : "none found in what was searched (below)");
  for (size_t i = 0; i < stat.own_openssl.found.size(); ++i)
    field(i == 0 ? "own OpenSSL" : "",
          shown_path(stat.own_openssl.found[i].path, root) +
              (stat.own_openssl.found[i].version.empty() ? "" : " (" + stat.own_openssl.found[i].version + ")") +
              ": linked in, out of the shim's reach");
  for (const std::string &path : stat.own_openssl.read_in_part)
    field("searched in part", shown_path(path, root) + ": larger than secmem reads of a file (" +
                                  std::to_string(kOwnOpensslFileBytes >> 20) + " MiB), only its start searched");
  for (const std::string &path : stat.own_openssl.not_read)
    field("not searched", shown_path(path, root) + ": secmem reads " + std::to_string(kOwnOpensslReadBudget >> 20) +
                              " MiB in all, and the objects before it took that");
  if (!stat.outside.empty())
    field("not memfd_secret", std::to_string(stat.outside.size()) + " anonymous mappings kept out of core dumps (" +
                                  kib(stat.outside_locked_bytes + stat.outside_unlocked_bytes) + ", " +
                                  kib(stat.outside_locked_bytes) +
                                  " locked): secrets on the mlock or unlocked tier, readable through /proc/" +
                                  std::to_string(stat.pid) + "/mem");
  std::cout << "secret ranges unreadable through /proc/" << stat.pid << "/mem: " << stat.unreadable << " of "
            << stat.secret.size() + stat.outside.size() << "\n";
}

void print_scan(const ScanReport &scan, bool json_output) {
  const ScanResult &result = scan.result;
  if (json_output) {
    json components = json::object();
    for (const std::string &name : result.components) {
      json where = json::object();
      for (const auto &[region, n] : result.by_component.at(name)) where[region] = n;
      components[name] = {{"copies", result.of(name)}, {"by_region", where}};
    }
    print_json({{"pid", scan.pid},
                {"complete", scan.complete()},
                {"process_left", scan.process_left},
                {"readable_copies", result.total()},
                {"by_region", result.copies},
                {"components", components},
                {"not_looked_for", scan.too_short},
                {"not_read_regions", result.unreadable_other.size()},
                {"not_read_bytes", result.not_read_bytes},
                {"unreadable_secret_mappings", result.unreadable_secret.size()},
                {"unreadable_secret_bytes", scan.unreadable_secret_bytes}});
    return;
  }
  field("process", std::to_string(scan.pid) + " (" + scan.name + ")");
  field("looked for", scan.key_file.empty() ? std::to_string(scan.hex_bytes) + " bytes given in hex"
                                            : scan.key + ", in " + scan.key_file + ", both byte orders");
  if (!scan.too_short.empty()) {
    std::string names;
    for (const std::string &name : scan.too_short) names += (names.empty() ? "" : ", ") + name;
    field("not looked for", names + " (too short to find reliably)");
  }
  field("readable copies",
        std::to_string(result.total()) + (scan.complete() ? "" : " in what could be read: NOT a clean result"));
  for (const auto &[where, n] : result.copies) field("", std::to_string(n) + " in " + where);
  if (!scan.key_file.empty()) {
    bool first = true;
    for (const std::string &name : result.components) {
      int n = result.of(name);
      field(first ? "by component" : "",
            name + ": " + std::to_string(n) + (n == 0 ? "" : " (" + describe_copies(result, name) + ")"));
      first = false;
    }
  }
  field("secret mappings",
        std::to_string(result.unreadable_secret.size()) + " (" + kib(scan.unreadable_secret_bytes) + "), unreadable");
  if (!result.unreadable_other.empty())
    field("not read", kib(result.not_read_bytes) + " in " + std::to_string(result.unreadable_other.size()) +
                          " other regions refused the read (the count covers the rest)");
  if (scan.process_left)
    field("process", "gone or a zombie when the scan ended: what it held was not all read");
  else if (result.regions_read == 0)
    field("not read", "no memory could be read at all");
}

void print_demo(const DemoReport &demo) {
  const DemoRun &plain = demo.plain, &shimmed = demo.shimmed;
  std::cout << "\nsecmem demo: an EC P-256 private key, loaded with OpenSSL's PEM_read_PrivateKey by a small\n"
               "signing program, run twice. Meanwhile its memory is read the way a debugger, or another\n"
               "process of the same user, would read it (/proc/PID/mem).\n\n";
  table_row("", "plain OpenSSL", "under secmem (LD_PRELOAD)");
  table_row("signature made and verified", plain.signed_ok ? "yes" : "NO", shimmed.signed_ok ? "yes" : "NO");
  table_row("readable copies of the private key", copies(plain), copies(shimmed));
  table_row("secretmem mappings", mappings(plain), mappings(shimmed));
  table_row("where the key's secure memory was", plain.backend, shimmed.backend);
  std::cout << "\n";
  if (shimmed.refused && shimmed.backend != "memfd_secret") {
    std::cout << "Under secmem the key was in its fallback tier (" << shimmed.backend
              << "), where a process of the same user\n"
                 "could read it; so the program made itself non-dumpable (SECMEM_NODUMP=fallback), and this\n"
                 "reader, of the same user, got nothing. Root with CAP_SYS_PTRACE still could: memfd_secret\n"
                 "stops that too.\n";
    if (demo.probe_errno != 0)
      std::cout << "memfd_secret is refused on this machine (" << errno_text(demo.probe_errno)
                << "): run `secmem probe` for what to change.\n";
    return;
  }
  if (shimmed.refused) {
    std::cout << "Under secmem the key was in memfd_secret pages, and the program had made itself non-dumpable\n"
                 "(SECMEM_NODUMP=always): this reader, of the same user, could read none of its memory.\n";
    return;
  }
  if (shimmed.copies == 0 && shimmed.backend == "memfd_secret") {
    std::cout << "Under secmem no readable copy of the key is left: OpenSSL's secure heap is in memfd_secret\n"
                 "pages, which /proc/PID/mem, process_vm_readv and ptrace cannot read.\n";
    return;
  }
  std::cout << "Under secmem " << shimmed.copies
            << (shimmed.copies == 1 ? " readable copy remains: " : " readable copies remain: ");
  if (shimmed.backend == "memfd_secret") {
    std::cout << "run `secmem scan` on the program to see where they are.\n";
    return;
  }
  std::cout << "the key was in secmem's fallback tier (" << shimmed.backend
            << "), kept out of swap and core dumps but readable with ptrace rights.\n";
  if (demo.probe_errno != 0)
    std::cout << "memfd_secret is refused on this machine (" << errno_text(demo.probe_errno)
              << "): run `secmem probe` for what to change.\n";
  else
    std::cout << "memfd_secret works here: SECMEM_BACKEND or SECMEM_ON_EXHAUSTION chose the fallback.\n";
}

// Control characters as \xHH: a process names itself (its comm, its
// mapped files' paths), and its name must not send escape sequences to the
// terminal of whoever inspects it.
std::string terminal_safe(const std::string &text) {
  std::string out;
  for (char c : text) {
    auto byte = static_cast<unsigned char>(c);
    if (byte >= 0x20 && byte != 0x7f && byte != '\\') {
      out += c;
      continue;
    }
    char escaped[8];
    snprintf(escaped, sizeof escaped, "\\x%02x", byte);
    out += escaped;
  }
  return out;
}

} // namespace secmem::tool
