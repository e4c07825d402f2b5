// secmem systemd UNIT: a drop-in that runs a service under the preload shim.
// The unit's files are read as systemd would (the unit search path, or
// $SYSTEMD_UNIT_PATH; the unit's own drop-ins and its template's), without a
// running systemd: what the drop-in must add depends on what the unit already
// says about LD_PRELOAD, LimitMEMLOCK= and SystemCallFilter=.
#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "commands.h"

namespace secmem::tool {

namespace {

// systemd's system unit search path, highest priority first (Debian 12: /lib
// is /usr/lib). $SYSTEMD_UNIT_PATH replaces it; a trailing ':' appends it.
std::vector<std::string> unit_search_path() {
  const std::vector<std::string> defaults = {"/etc/systemd/system", "/run/systemd/system",
                                             "/usr/local/lib/systemd/system", "/usr/lib/systemd/system",
                                             "/lib/systemd/system"};
  const char *env = getenv("SYSTEMD_UNIT_PATH");
  if (env == nullptr) return defaults;
  std::vector<std::string> dirs;
  std::string value = env;
  std::istringstream split(value);
  for (std::string dir; std::getline(split, dir, ':');)
    if (!dir.empty()) dirs.push_back(dir);
  if (!value.empty() && value.back() == ':') dirs.insert(dirs.end(), defaults.begin(), defaults.end());
  return dirs;
}

// What the unit says, after its drop-ins.
struct UnitSettings {
  std::string path;                       // the unit file
  std::vector<std::string> files;         // it and its drop-ins, in the order read
  std::map<std::string, std::string> env; // Environment=
  std::vector<std::string> env_files;     // EnvironmentFile=
  std::vector<std::string> unset;         // UnsetEnvironment=
  std::string exec_start;                 // the first ExecStart='s program
  bool syscall_filter = false;            // a SystemCallFilter= in force
  std::string memlock;                    // LimitMEMLOCK=, as written
};

// Splits a value into words as systemd does: whitespace between them, "..."
// and '...' quoting (with C escapes in both), a backslash escaping outside.
std::vector<std::string> words(const std::string &value) {
  std::vector<std::string> out;
  std::string word;
  bool in_word = false;
  char quote = 0;
  for (size_t i = 0; i < value.size(); ++i) {
    char c = value[i];
    if (quote == 0 && isspace(static_cast<unsigned char>(c))) {
      if (in_word) out.push_back(word);
      word.clear();
      in_word = false;
      continue;
    }
    in_word = true;
    if (quote == 0 && (c == '"' || c == '\'')) {
      quote = c;
    } else if (c == quote) {
      quote = 0;
    } else if (c == '\\' && i + 1 < value.size()) {
      char next = value[++i];
      word += next == 'n' ? '\n' : next == 't' ? '\t' : next;
    } else {
      word += c;
    }
  }
  if (in_word) out.push_back(word);
  return out;
}

std::string trim(const std::string &text) {
  size_t start = text.find_first_not_of(" \t\r\n");
  if (start == std::string::npos) return "";
  size_t end = text.find_last_not_of(" \t\r\n");
  return text.substr(start, end - start + 1);
}

// KEY=VALUE lines (an EnvironmentFile=): '#' and ';' comments, quotes removed.
void read_environment_file(const std::string &path, std::map<std::string, std::string> &env) {
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    line = trim(line);
    if (line.empty() || line[0] == '#' || line[0] == ';') continue;
    size_t eq = line.find('=');
    if (eq == std::string::npos) continue;
    std::vector<std::string> value = words(line.substr(eq + 1));
    env[trim(line.substr(0, eq))] = value.empty() ? "" : value[0];
  }
}

void apply(UnitSettings &unit, const std::string &key, const std::string &value) {
  if (key == "Environment") {
    if (value.empty()) unit.env.clear();
    for (const std::string &assignment : words(value)) {
      size_t eq = assignment.find('=');
      if (eq != std::string::npos) unit.env[assignment.substr(0, eq)] = assignment.substr(eq + 1);
    }
  } else if (key == "EnvironmentFile") {
    if (value.empty())
      unit.env_files.clear();
    else
      unit.env_files.push_back(value);
  } else if (key == "UnsetEnvironment") {
    for (const std::string &name : words(value)) unit.unset.push_back(name);
  } else if (key == "ExecStart") {
    if (value.empty()) {
      unit.exec_start.clear();
    } else if (unit.exec_start.empty()) {
      std::vector<std::string> command = words(value);
      if (!command.empty()) {
        std::string program = command[0];
        program.erase(0, std::min(program.find_first_not_of("@-:+!"), program.size()));
        unit.exec_start = program;
      }
    }
  } else if (key == "SystemCallFilter") {
    unit.syscall_filter = !value.empty();
  } else if (key == "LimitMEMLOCK") {
    unit.memlock = value;
  }
}

// One unit file's [Service] section, into unit.
void read_unit_file(const std::string &path, UnitSettings &unit) {
  std::ifstream in(path);
  if (!in) throw ToolError{2, "cannot read " + path + ": " + strerror(errno)};
  unit.files.push_back(path);
  bool in_service = false;
  std::string line;
  while (std::getline(in, line)) {
    while (!line.empty() && line.back() == '\\') { // continued on the next line
      line.pop_back();
      std::string next;
      if (!std::getline(in, next)) break;
      line += " " + next;
    }
    line = trim(line);
    if (line.empty() || line[0] == '#' || line[0] == ';') continue;
    if (line[0] == '[') {
      in_service = line == "[Service]";
      continue;
    }
    size_t eq = line.find('=');
    if (!in_service || eq == std::string::npos) continue;
    apply(unit, trim(line.substr(0, eq)), trim(line.substr(eq + 1)));
  }
}

bool is_file(const std::string &path) {
  std::ifstream in(path);
  return in.good();
}

// The drop-ins of a unit (NAME.d/*.conf in every directory of the path, and
// the template's for an instance), by file name, a name in a directory of
// higher priority hiding the same name further down.
std::vector<std::string> drop_ins(const std::vector<std::string> &dirs, const std::vector<std::string> &names) {
  std::map<std::string, std::string> by_name;
  for (auto dir = dirs.rbegin(); dir != dirs.rend(); ++dir)
    for (const std::string &name : names) {
      std::string d = *dir + "/" + name + ".d";
      DIR *listing = opendir(d.c_str());
      if (listing == nullptr) continue;
      while (dirent *entry = readdir(listing)) {
        std::string file = entry->d_name;
        if (file.size() > 5 && file.compare(file.size() - 5, 5, ".conf") == 0) by_name[file] = d + "/" + file;
      }
      closedir(listing);
    }
  std::vector<std::string> out;
  for (const auto &[name, path] : by_name) out.push_back(path);
  return out;
}

UnitSettings read_unit(const std::string &unit_arg, std::string *name) {
  UnitSettings unit;
  std::vector<std::string> dirs = unit_search_path();
  std::vector<std::string> names;
  if (unit_arg.find('/') != std::string::npos) { // a file: its drop-ins next to it
    if (!is_file(unit_arg)) throw ToolError{2, "no unit file " + unit_arg};
    unit.path = unit_arg;
    *name = unit_arg.substr(unit_arg.rfind('/') + 1);
    dirs = {unit_arg.substr(0, unit_arg.rfind('/'))};
    names = {*name};
  } else {
    *name = unit_arg.find('.') == std::string::npos ? unit_arg + ".service" : unit_arg;
    if (name->size() < 8 || name->compare(name->size() - 8, 8, ".service") != 0)
      throw ToolError{2, *name + " is not a service: only services run programs to preload"};
    names = {*name};
    size_t at = name->find('@');
    std::string template_name = at != std::string::npos ? name->substr(0, at + 1) + ".service" : "";
    if (!template_name.empty() && template_name != *name) names.insert(names.begin(), template_name);
    for (const std::string &candidate : {*name, template_name}) {
      for (const std::string &dir : dirs)
        if (!candidate.empty() && unit.path.empty() && is_file(dir + "/" + candidate))
          unit.path = dir + "/" + candidate;
    }
    if (unit.path.empty()) {
      std::string searched;
      for (const std::string &dir : dirs) searched += (searched.empty() ? "" : ", ") + dir;
      throw ToolError{2, "no unit file for " + *name + " in " + searched};
    }
  }
  read_unit_file(unit.path, unit);
  for (const std::string &file : drop_ins(dirs, names))
    if (file.substr(file.rfind('/') + 1) != "secmem.conf") read_unit_file(file, unit); // ours is being replaced
  for (std::string file : unit.env_files) {
    if (!file.empty() && file[0] == '-') file.erase(0, 1);
    read_environment_file(file, unit.env);
  }
  return unit;
}

// LimitMEMLOCK= in bytes (its soft value): UINT64_MAX for infinity, 0 when
// unset or unreadable.
uint64_t memlock_bytes(const std::string &value) {
  std::string soft = value.substr(0, value.find(':'));
  if (soft == "infinity") return UINT64_MAX;
  char *end = nullptr;
  errno = 0;
  unsigned long long n = strtoull(soft.c_str(), &end, 10);
  if (errno != 0 || end == soft.c_str()) return 0;
  std::string suffix = trim(end);
  const std::string units = "KMGTPE";
  uint64_t scale = 1;
  if (!suffix.empty()) {
    size_t power = units.find(static_cast<char>(toupper(static_cast<unsigned char>(suffix[0]))));
    if (power == std::string::npos) return 0;
    for (size_t i = 0; i <= power; ++i) scale *= 1024;
  }
  return n > UINT64_MAX / scale ? UINT64_MAX : n * scale;
}

std::string size_text(uint64_t bytes) {
  const char *units[] = {"", "K", "M", "G", "T"};
  int unit = 0;
  while (unit < 4 && bytes % 1024 == 0 && bytes >= 1024) {
    bytes /= 1024;
    ++unit;
  }
  return std::to_string(bytes) + units[unit];
}

// A value for Environment="...": quotes and backslashes escaped, and '%',
// which systemd expands as a specifier.
std::string unit_quoted(const std::string &text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') out += '\\';
    out += c == '%' ? std::string("%%") : std::string(1, c);
  }
  return out + "\"";
}

} // namespace

int cmd_systemd(const SystemdOptions &options) {
  uint64_t heap = memlock_bytes(options.heap);
  if (heap == 0 || heap == UINT64_MAX || options.heap.find(':') != std::string::npos)
    throw ToolError{2, "--heap " + options.heap + " is not a size (16M, 512K, 1G)"};
  std::string name;
  UnitSettings unit = read_unit(options.unit, &name);
  std::string shim = shim_path();
  if (char *real = realpath(shim.c_str(), nullptr)) { // a unit file wants no "../"
    shim = real;
    free(real);
  }
  if (!unit.exec_start.empty()) {
    std::string program = unit.exec_start[0] == '/' ? unit.exec_start : find_command(unit.exec_start);
    if (!program.empty()) warn_unreachable(program, "systemd");
  }
  // Debian's PostgreSQL units start the server through pg_ctlcluster, which
  // empties the environment but for the cluster's environment file.
  std::string cluster_env;
  if (unit.exec_start.size() >= 13 && unit.exec_start.compare(unit.exec_start.size() - 13, 13, "pg_ctlcluster") == 0) {
    size_t at = name.find('@'), dash = name.find('-', at);
    cluster_env = at != std::string::npos && dash != std::string::npos
                      ? "/etc/postgresql/" + name.substr(at + 1, dash - at - 1) + "/" +
                            name.substr(dash + 1, name.size() - 8 - dash - 1) + "/environment"
                      : "/etc/postgresql/VERSION/CLUSTER/environment";
  }
  for (const std::string &unset : unit.unset)
    if (unset == "LD_PRELOAD" || unset.rfind("LD_PRELOAD=", 0) == 0)
      std::cerr << "secmem: systemd: " << name << " has UnsetEnvironment=" << unset
                << ": it removes the shim again; take that out\n";

  auto existing = unit.env.find("LD_PRELOAD");
  std::string preload = preload_list(existing != unit.env.end() ? existing->second : "", shim, "systemd");
  uint64_t wanted = 3 * heap; // the heap, and the copies a fork stages (two files at most)
  uint64_t has = memlock_bytes(unit.memlock);

  std::ostringstream out;
  out << "# secmem for " << name << " (" << unit.path << "), by `secmem systemd`. Install it with\n"
      << "#   mkdir -p /etc/systemd/system/" << name << ".d\n"
      << "#   secmem systemd " << options.unit << " > /etc/systemd/system/" << name << ".d/secmem.conf\n"
      << "#   systemctl daemon-reload && systemctl restart " << name << "\n"
      << "[Service]\n";
  if (existing != unit.env.end() && !existing->second.empty())
    out << "# The shim, with what the unit preloads already (" << existing->second << ").\n";
  else
    out << "# The preload shim: OpenSSL's secure heap and tagged allocations go to memfd_secret.\n";
  out << "Environment=" << unit_quoted("LD_PRELOAD=" + preload) << "\n";
  if (has >= wanted) {
    out << "# LimitMEMLOCK=" << unit.memlock << " (the unit's) holds a secret heap of " << size_text(heap)
        << " and the copies its forks take.\n";
  } else {
    out << "# Room for a secret heap of " << size_text(heap) << " per process and the copies its forks take"
        << " (3 x " << size_text(heap) << "; the default is 8M";
    if (!unit.memlock.empty()) out << ", the unit says " << unit.memlock;
    out << ").\nLimitMEMLOCK=" << size_text(wanted) << "\n";
  }
  if (unit.syscall_filter)
    out << "# The unit's SystemCallFilter= does not name memfd_secret (systemd 252's @system-service lacks it):\n"
        << "# without this line the first secret would kill the service, or fall back to mlock.\n"
        << "SystemCallFilter=memfd_secret\n";
  if (!cluster_env.empty()) {
    out << "# pg_ctlcluster starts the server with only what " << cluster_env << " sets: add\n"
        << "#   LD_PRELOAD = '" << shim << "'\n"
        << "# there as well (the limit above still applies: it is inherited).\n";
    std::cerr << "secmem: systemd: " << name << " starts PostgreSQL through pg_ctlcluster, which clears the "
              << "environment: add LD_PRELOAD = '" << shim << "' to " << cluster_env << "\n";
  }
  std::cout << out.str();
  return 0;
}

} // namespace secmem::tool
