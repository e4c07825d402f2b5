// secmem systemd UNIT: a drop-in that runs a service under the preload shim.
// The unit's files are read as systemd would (the unit search path, or
// $SYSTEMD_UNIT_PATH; the drop-ins of the unit, of its aliases, of its
// template, of its dash prefixes and of all services), without a running
// systemd: what the drop-in must add depends on what the unit already says
// about LD_PRELOAD, LimitMEMLOCK= and SystemCallFilter=.
#include <algorithm>
#include <cctype>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <glob.h>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

#include "commands.h"
#include "file_reader.h"

namespace secmem::tool {

namespace {

constexpr uint64_t kDefaultMemlock = uint64_t{8} << 20; // systemd's DefaultLimitMEMLOCK on Debian 12
constexpr size_t kMaxFileBytes = 1 << 20;               // a unit or environment file is small

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

// A regular file's contents (no FIFO, device or directory: systemd reads
// none of those as unit or environment files), up to 1 MiB, read through
// FileReader (nothing else is even opened: a drop-in or an EnvironmentFile=
// that was a FIFO or /dev/zero was opened, as root; found by review). false
// with errno when it cannot be read: ENOTSUP for a file that is not regular.
bool read_regular(const std::string &path, std::string *text) {
  FileReader file(path);
  text->clear();
  if (file.empty()) return true;
  if (!file.ok()) {
    errno = file.error() != 0 ? file.error() : ENOTSUP;
    return false;
  }
  *text = file.read_some(0, kMaxFileBytes + 1);
  return true;
}

// Why a file cannot be read, for a message.
std::string read_error(int err) { return err == ENOTSUP ? "not a regular file" : strerror(err); }

// The words of a setting's value, as systemd splits them: whitespace between
// them, "..." and '...' quoting, C escapes (\n, \t, \\, \", \', \xHH, \NNN).
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
      if (next == 'x' && i + 2 < value.size() && isxdigit(static_cast<unsigned char>(value[i + 1])) &&
          isxdigit(static_cast<unsigned char>(value[i + 2]))) {
        word += static_cast<char>(std::stoi(value.substr(i + 1, 2), nullptr, 16));
        i += 2;
      } else if (next >= '0' && next <= '7' && i + 2 < value.size()) {
        word += static_cast<char>(std::stoi(value.substr(i, 3), nullptr, 8));
        i += 2;
      } else {
        word += next == 'n' ? '\n' : next == 't' ? '\t' : next == 'r' ? '\r' : next;
      }
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

bool printable(const std::string &text) {
  return std::all_of(text.begin(), text.end(),
                     [](char c) { return static_cast<unsigned char>(c) >= 0x20 && c != 0x7f; });
}

// Text from a unit, for a comment: no control character may end the comment.
std::string shown(const std::string &text) {
  std::string out;
  for (char c : text) out += printable(std::string(1, c)) ? std::string(1, c) : std::string("?");
  return out;
}

// What the unit says, after its drop-ins.
struct UnitSettings {
  std::string path;                       // the unit file
  std::map<std::string, std::string> env; // Environment=
  std::vector<std::string> env_files;     // EnvironmentFile=
  std::vector<std::string> unset;         // UnsetEnvironment=
  std::string exec_start;                 // the first ExecStart='s program
  int filter = 0;                         // SystemCallFilter=: 0 none, 1 an allow-list, -1 a deny-list
  bool filter_denies_secret = false;      // a deny entry names memfd_secret
  bool filter_allows_secret = false;      // an allow entry names it
  std::string memlock;                    // LimitMEMLOCK=, as written
  std::vector<std::string> problems;      // files or directories that could not be read
};

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
    if (value.empty()) unit.unset.clear();
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
    if (value.empty()) {
      unit.filter = 0;
      unit.filter_denies_secret = unit.filter_allows_secret = false;
      return;
    }
    bool deny = value[0] == '~';
    if (unit.filter == 0) unit.filter = deny ? -1 : 1; // the first assignment decides
    std::string list = deny ? value.substr(1) : value;
    for (const std::string &call : words(list)) {
      std::string name = call.substr(0, call.find(':')); // "memfd_secret:EPERM"
      if (name != "memfd_secret") continue;
      unit.filter_denies_secret = deny;
      unit.filter_allows_secret = !deny;
    }
  } else if (key == "LimitMEMLOCK") {
    unit.memlock = value;
  }
}

// Lines as systemd reads them: a line ending in an odd number of backslashes
// goes on with the next line (comment lines in between are skipped), and
// '#' or ';' starts a comment line.
std::vector<std::string> logical_lines(const std::string &text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  std::string line, pending;
  bool continuing = false;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    std::string stripped = trim(line);
    if (continuing && !stripped.empty() && (stripped[0] == '#' || stripped[0] == ';')) continue;
    size_t backslashes = 0;
    while (backslashes < line.size() && line[line.size() - 1 - backslashes] == '\\') ++backslashes;
    if (backslashes % 2 == 1) {
      pending += line.substr(0, line.size() - 1) + " ";
      continuing = true;
      continue;
    }
    out.push_back(pending + line);
    pending.clear();
    continuing = false;
  }
  if (!pending.empty()) out.push_back(pending);
  return out;
}

// One unit file's [Service] section, into unit.
void read_unit_file(const std::string &path, UnitSettings &unit) {
  std::string text;
  if (!read_regular(path, &text)) throw ToolError{2, "cannot read " + path + ": " + read_error(errno)};
  bool in_service = false;
  for (std::string line : logical_lines(text)) {
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

// KEY=VALUE lines (an EnvironmentFile=): comments, "export ", quotes; the
// whole value (spaces in it kept), as systemd reads it.
void read_environment_file(const std::string &pattern, UnitSettings &unit, std::map<std::string, std::string> &env) {
  bool optional = !pattern.empty() && pattern[0] == '-';
  std::string spec = optional ? pattern.substr(1) : pattern;
  glob_t found{};
  std::vector<std::string> files;
  if (glob(spec.c_str(), GLOB_NOCHECK, nullptr, &found) == 0)
    for (size_t i = 0; i < found.gl_pathc; ++i) files.push_back(found.gl_pathv[i]);
  globfree(&found);
  for (const std::string &file : files) {
    std::string text;
    if (!read_regular(file, &text)) {
      if (!optional || errno != ENOENT) unit.problems.push_back(file + ": " + read_error(errno));
      continue;
    }
    for (std::string line : logical_lines(text)) {
      line = trim(line);
      if (line.empty() || line[0] == '#' || line[0] == ';') continue;
      if (line.rfind("export ", 0) == 0) line = trim(line.substr(7));
      size_t eq = line.find('=');
      if (eq == std::string::npos) continue;
      std::string value = trim(line.substr(eq + 1));
      if (value.size() >= 2 && (value[0] == '"' || value[0] == '\'') && value.back() == value[0]) {
        std::vector<std::string> unquoted = words(value);
        value = unquoted.empty() ? "" : unquoted[0];
      }
      env[trim(line.substr(0, eq))] = value;
    }
  }
}

// The names whose NAME.d directories hold the unit's drop-ins, least specific
// first: all services, each dash prefix (foo-.service for foo-bar-baz), the
// template of an instance, each alias, the unit itself.
std::vector<std::string> drop_in_names(const std::string &name, const std::vector<std::string> &aliases) {
  std::vector<std::string> names = {"service"};
  std::string stem = name.substr(0, name.size() - 8); // without ".service"
  for (size_t dash = stem.find('-'); dash != std::string::npos; dash = stem.find('-', dash + 1))
    names.push_back(stem.substr(0, dash + 1) + ".service");
  size_t at = stem.find('@');
  if (at != std::string::npos && at + 1 < stem.size()) names.push_back(stem.substr(0, at + 1) + ".service");
  for (const std::string &alias : aliases)
    if (alias != name) names.push_back(alias);
  names.push_back(name);
  return names;
}

// The drop-ins, by file name (a name in a more specific directory, then in a
// directory of higher priority, hides the same name elsewhere), read in the
// order of their names. Directories that exist but cannot be read are noted.
std::vector<std::string> drop_ins(const std::vector<std::string> &dirs, const std::vector<std::string> &names,
                                  UnitSettings &unit) {
  std::map<std::string, std::string> by_name;
  for (const std::string &name : names) // least specific first: later ones win
    for (auto dir = dirs.rbegin(); dir != dirs.rend(); ++dir) {
      std::string d = *dir + "/" + name + ".d";
      DIR *listing = opendir(d.c_str());
      if (listing == nullptr) {
        if (errno != ENOENT && errno != ENOTDIR) unit.problems.push_back(d + ": " + strerror(errno));
        continue;
      }
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

bool known_non_service(const std::string &name) {
  for (const char *suffix :
       {".socket", ".timer", ".target", ".mount", ".automount", ".path", ".slice", ".scope", ".swap", ".device"}) {
    size_t n = strlen(suffix);
    if (name.size() > n && name.compare(name.size() - n, n, suffix) == 0) return true;
  }
  return false;
}

UnitSettings read_unit(const std::string &unit_arg, std::string *name) {
  UnitSettings unit;
  std::vector<std::string> dirs = unit_search_path();
  std::vector<std::string> aliases;
  if (unit_arg.find('/') != std::string::npos) { // a file: its drop-ins next to it
    unit.path = unit_arg;
    *name = unit_arg.substr(unit_arg.rfind('/') + 1);
    dirs = {unit_arg.substr(0, unit_arg.rfind('/'))};
    struct stat st {};
    if (stat(unit_arg.c_str(), &st) != 0) throw ToolError{2, "no unit file " + unit_arg};
    // systemd knows a unit's type by its file's name, as here.
    if (known_non_service(*name))
      throw ToolError{2, unit_arg + " is not a service: only services run programs to preload"};
    if (name->size() <= 8 || name->compare(name->size() - 8, 8, ".service") != 0)
      throw ToolError{2, unit_arg + " is not a service's unit file (its name does not end in .service)"};
    if (S_ISDIR(st.st_mode)) throw ToolError{2, unit_arg + " is a directory, not a unit file"};
  } else {
    if (known_non_service(unit_arg))
      throw ToolError{2, unit_arg + " is not a service: only services run programs to preload"};
    *name = unit_arg.size() > 8 && unit_arg.compare(unit_arg.size() - 8, 8, ".service") == 0 ? unit_arg
                                                                                             : unit_arg + ".service";
    size_t at = name->find('@');
    std::string template_name = at != std::string::npos ? name->substr(0, at + 1) + ".service" : "";
    for (const std::string &candidate : {*name, template_name}) {
      for (const std::string &dir : dirs) {
        std::string path = dir + "/" + candidate;
        struct stat st {};
        if (candidate.empty() || !unit.path.empty() || lstat(path.c_str(), &st) != 0) continue;
        if (S_ISDIR(st.st_mode)) continue; // not a unit file: systemd looks further
        unit.path = path;
      }
    }
    if (unit.path.empty()) {
      std::string searched;
      for (const std::string &dir : dirs) searched += (searched.empty() ? "" : ", ") + dir;
      throw ToolError{2, "no unit file for " + *name + " in " + searched};
    }
  }
  char *real = realpath(unit.path.c_str(), nullptr);
  std::string target = real != nullptr ? real : unit.path;
  free(real);
  if (target == "/dev/null") throw ToolError{2, *name + " is masked (" + unit.path + " is /dev/null)"};
  std::string target_name = target.substr(target.rfind('/') + 1);
  // An alias is a service's too: systemd refuses a link to another type's file.
  if (known_non_service(target_name) || target_name.size() <= 8 ||
      target_name.compare(target_name.size() - 8, 8, ".service") != 0)
    throw ToolError{2, unit.path + " links to " + target + ", which is not a service's unit file"};
  struct stat file {};
  if (stat(unit.path.c_str(), &file) == 0 && !S_ISREG(file.st_mode))
    throw ToolError{2, unit.path + " is not a regular file: not a unit file"};
  if (target_name != *name) aliases.push_back(target_name); // an alias: the real unit's drop-ins count too
  if (access(unit.path.c_str(), R_OK) != 0)
    throw ToolError{2, "cannot read " + unit.path + ": " + strerror(errno) + " (run as root)"};
  read_unit_file(unit.path, unit);
  for (const std::string &file : drop_ins(dirs, drop_in_names(*name, aliases), unit))
    if (file.substr(file.rfind('/') + 1) != "secmem.conf") read_unit_file(file, unit); // ours is being replaced
  return unit;
}

// A size as systemd writes it (LimitMEMLOCK=, and --heap): bytes, with an
// optional K, M, G, T, P or E (powers of 1024), decimals allowed; "infinity"
// is UINT64_MAX. 0 when it is not one.
uint64_t size_bytes(const std::string &text) {
  std::string value = trim(text);
  if (value == "infinity") return UINT64_MAX;
  if (value.empty() || !isdigit(static_cast<unsigned char>(value[0]))) return 0;
  char *end = nullptr;
  errno = 0;
  double n = strtod(value.c_str(), &end);
  if (errno != 0 || end == value.c_str()) return 0;
  std::string suffix = end;
  const std::string units = "KMGTPE";
  double scale = 1;
  if (!suffix.empty()) {
    size_t power = units.find(suffix[0]);
    if (suffix.size() != 1 || power == std::string::npos) return 0;
    scale = std::pow(1024.0, static_cast<double>(power + 1));
  }
  double bytes = n * scale;
  return bytes >= 1.8e19 ? 0 : static_cast<uint64_t>(bytes);
}

std::string size_text(uint64_t bytes) {
  if (bytes == UINT64_MAX) return "infinity";
  const char *units[] = {"", "K", "M", "G", "T", "P"};
  int unit = 0;
  while (unit < 5 && bytes % 1024 == 0 && bytes >= 1024) {
    bytes /= 1024;
    ++unit;
  }
  return std::to_string(bytes) + units[unit];
}

// A value for Environment="...": quotes and backslashes escaped; '%' too in
// text of ours (systemd expands it as a specifier), not in the unit's own.
std::string unit_escaped(const std::string &text, bool ours) {
  std::string out;
  for (char c : text) {
    if (c == '"' || c == '\\') out += '\\';
    out += ours && c == '%' ? std::string("%%") : std::string(1, c);
  }
  return out;
}

} // namespace

int cmd_systemd(const SystemdOptions &options) {
  uint64_t heap = size_bytes(options.heap);
  if (heap == 0 || heap == UINT64_MAX || heap > (uint64_t{1} << 50))
    throw ToolError{2, "--heap " + options.heap + " is not a size (16M, 512K, 1G; at most 1P)"};
  std::string name;
  UnitSettings unit = read_unit(options.unit, &name);
  std::string shim = shim_path();
  for (const std::string &unset : unit.unset)
    if (unset == "LD_PRELOAD" || unset.rfind("LD_PRELOAD=", 0) == 0)
      std::cerr << "secmem: systemd: " << name << " has UnsetEnvironment=" << unset
                << ": it removes the shim again; take that out\n";
  std::map<std::string, std::string> file_env;
  for (const std::string &file : unit.env_files) read_environment_file(file, unit, file_env);
  // The program the unit runs, with the unit's PATH, LD_LIBRARY_PATH and
  // LD_PRELOAD (an EnvironmentFile='s over Environment='s), not this
  // shell's: a service gets only what its unit gives it.
  if (!unit.exec_start.empty()) {
    std::string program = unit.exec_start[0] == '/' ? unit.exec_start : find_command(unit.exec_start);
    auto variable = [&](const std::string &key, const std::string &otherwise) {
      return file_env.count(key) != 0 ? file_env[key] : unit.env.count(key) != 0 ? unit.env[key] : otherwise;
    };
    // systemd's own PATH for services, unless the unit sets one.
    if (!program.empty())
      warn_unreachable(program, "systemd",
                       {variable("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
                        variable("LD_LIBRARY_PATH", ""), variable("LD_PRELOAD", "")});
  }
  for (const std::string &problem : unit.problems)
    std::cerr << "secmem: systemd: cannot read " << problem << ": what it says is not taken into account\n";
  bool preload_in_file = file_env.count("LD_PRELOAD") != 0;
  if (preload_in_file)
    std::cerr << "secmem: systemd: " << name << "'s EnvironmentFile= sets LD_PRELOAD, which overrides Environment=: "
              << "put the shim first in that file's LD_PRELOAD (" << shim << ")\n";
  // Debian's PostgreSQL units start the server through pg_ctlcluster, which
  // empties the environment but for the cluster's environment file.
  std::string cluster_env;
  if (unit.exec_start.size() >= 13 && unit.exec_start.compare(unit.exec_start.size() - 13, 13, "pg_ctlcluster") == 0) {
    size_t at = name.find('@'), dash = name.find('-', at);
    cluster_env = at != std::string::npos && dash != std::string::npos
                      ? "/etc/postgresql/" + name.substr(at + 1, dash - at - 1) + "/" +
                            name.substr(dash + 1, name.size() - 8 - dash - 1) + "/environment"
                      : "/etc/postgresql/VERSION/CLUSTER/environment";
    std::cerr << "secmem: systemd: " << name << " starts PostgreSQL through pg_ctlcluster, which clears the "
              << "environment: add LD_PRELOAD = '" << shim << "' to " << cluster_env << "\n";
  }

  // The unit's own entries stay, after the shim (written as the unit wrote
  // them: its specifiers are the unit's); one that cannot be written back
  // (a control character) is left out, and said so.
  std::string existing = unit.env.count("LD_PRELOAD") != 0 ? unit.env["LD_PRELOAD"] : "";
  // ld.so separates entries with spaces and colons.
  std::string kept, part;
  for (size_t i = 0; i <= existing.size(); ++i) {
    if (i < existing.size() && existing[i] != ' ' && existing[i] != ':') {
      part += existing[i];
      continue;
    }
    if (part.empty() || part.find("libsecmem_preload.so") != std::string::npos) {
      part.clear();
      continue;
    }
    if (printable(part))
      kept += ":" + part;
    else
      std::cerr << "secmem: systemd: " << name << "'s LD_PRELOAD holds an entry with a control character ("
                << shown(part) << "): left out\n";
    part.clear();
  }
  preload_list(kept, shim, "systemd"); // for its warnings (another allocator preloaded)
  std::string line = "LD_PRELOAD=" + unit_escaped(shim, true) + unit_escaped(kept, false);

  // LimitMEMLOCK=: the heap and the two staging copies its forks take, at
  // least systemd's default; the unit's hard limit kept when it is higher.
  uint64_t wanted = heap > UINT64_MAX / 3 ? UINT64_MAX : std::max(3 * heap, kDefaultMemlock);
  std::string soft_text = unit.memlock.substr(0, unit.memlock.find(':'));
  std::string hard_text =
      unit.memlock.find(':') != std::string::npos ? unit.memlock.substr(unit.memlock.find(':') + 1) : soft_text;
  uint64_t soft = unit.memlock.empty() ? kDefaultMemlock : size_bytes(soft_text);
  uint64_t hard = unit.memlock.empty() ? kDefaultMemlock : size_bytes(hard_text);
  bool unit_limit_valid = unit.memlock.empty() || (soft != 0 && hard != 0 && soft <= hard);

  std::ostringstream out;
  out << "# secmem for " << name << " (" << shown(unit.path) << "), by `secmem systemd`. Install it with\n"
      << "#   mkdir -p /etc/systemd/system/" << name << ".d\n"
      << "#   secmem systemd " << shown(options.unit) << " > /etc/systemd/system/" << name << ".d/secmem.conf\n"
      << "#   systemctl daemon-reload && systemctl restart " << name << "\n"
      << "[Service]\n";
  if (!kept.empty())
    out << "# The shim, with what the unit preloads already (" << shown(kept.substr(1)) << ").\n";
  else
    out << "# The preload shim: OpenSSL's secure heap and tagged allocations go to memfd_secret.\n";
  if (preload_in_file) out << "# The unit's EnvironmentFile= sets LD_PRELOAD and overrides this: put the shim there.\n";
  out << "Environment=\"" << line << "\"\n";
  if (unit_limit_valid && soft != 0 && soft >= wanted) {
    out << "# "
        << (unit.memlock.empty() ? "The default LimitMEMLOCK=8M"
                                 : "LimitMEMLOCK=" + shown(unit.memlock) + " (the unit's)")
        << " holds a secret heap of " << size_text(heap) << " and the copies its forks take.\n";
  } else {
    out << "# Room for a secret heap of " << size_text(heap) << " per process and the copies its forks take"
        << " (3 x " << size_text(heap) << ", at least the default 8M";
    if (!unit.memlock.empty())
      out << "; the unit says " << shown(unit.memlock) << (unit_limit_valid ? "" : ", which systemd ignores");
    out << ").\nLimitMEMLOCK=" << size_text(wanted);
    if (unit_limit_valid && hard > wanted) out << ":" << size_text(hard);
    out << "\n";
  }
  if (unit.filter_denies_secret) {
    out << "# The unit's SystemCallFilter= denies memfd_secret on purpose: left so; secrets go to mlock'ed memory.\n";
    std::cerr << "secmem: systemd: " << name << " denies memfd_secret in its SystemCallFilter=: the drop-in leaves "
              << "that as it is, and secrets go to mlock'ed memory (the process made non-dumpable)\n";
  } else if (unit.filter == 1 && !unit.filter_allows_secret) {
    out << "# The unit's SystemCallFilter= allow-list does not name memfd_secret (systemd 252's @system-service\n"
        << "# lacks it): without this line secmem finds it refused (it tries in a child) and falls back to mlock.\n"
        << "SystemCallFilter=memfd_secret\n";
  }
  if (!cluster_env.empty())
    out << "# pg_ctlcluster starts the server with only what " << cluster_env << " sets: add\n"
        << "#   LD_PRELOAD = '" << shim << "'\n"
        << "# there as well (the limit above still applies: it is inherited).\n";
  std::cout << out.str();
  return 0;
}

} // namespace secmem::tool
