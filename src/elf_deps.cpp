// The libraries a program loads at start, read from its files (elf_deps.h).
#include "elf_deps.h"

#include <elf.h>
#include <glob.h>
#include <sys/stat.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

namespace secmem::tool {

namespace {

#if defined(__aarch64__)
constexpr uint16_t kMachine = EM_AARCH64;
constexpr const char *kTriplet = "aarch64-linux-gnu";
#else
constexpr uint16_t kMachine = EM_X86_64;
constexpr const char *kTriplet = "x86_64-linux-gnu";
#endif
constexpr size_t kMaxLibraries = 512;
constexpr size_t kMaxTable = 1 << 20; // a dynamic section read, at most

// What the loader reads of an ELF file: its interpreter, the libraries it
// needs and where to look for them.
struct ElfFile {
  bool ok = false; // a 64-bit ELF file for this machine
  bool has_interpreter = false;
  std::string interpreter;
  std::vector<std::string> needed;
  std::string rpath, runpath;
  bool has_runpath = false;
};

template <typename T> bool read_at(std::ifstream &file, uint64_t offset, T *out) {
  file.seekg(static_cast<std::streamoff>(offset));
  return static_cast<bool>(file.read(reinterpret_cast<char *>(out), sizeof *out));
}

ElfFile read_elf(const std::string &path) {
  ElfFile elf;
  struct stat info {};
  if (stat(path.c_str(), &info) != 0 || !S_ISREG(info.st_mode)) return elf;
  std::ifstream file(path, std::ios::binary);
  Elf64_Ehdr header{};
  if (!read_at(file, 0, &header) || memcmp(header.e_ident, ELFMAG, SELFMAG) != 0 ||
      header.e_ident[EI_CLASS] != ELFCLASS64 || header.e_machine != kMachine ||
      header.e_phentsize != sizeof(Elf64_Phdr))
    return elf;
  std::vector<Elf64_Phdr> loads;
  Elf64_Phdr dynamic{};
  bool has_dynamic = false;
  for (int i = 0; i < header.e_phnum; ++i) {
    Elf64_Phdr program{};
    if (!read_at(file, header.e_phoff + static_cast<uint64_t>(i) * sizeof program, &program)) return elf;
    if (program.p_type == PT_LOAD) loads.push_back(program);
    if (program.p_type == PT_DYNAMIC) {
      dynamic = program;
      has_dynamic = true;
    }
    if (program.p_type == PT_INTERP && program.p_filesz > 0 && program.p_filesz <= 4096) {
      std::string text(program.p_filesz, '\0');
      file.seekg(static_cast<std::streamoff>(program.p_offset));
      if (!file.read(text.data(), static_cast<std::streamsize>(text.size()))) return elf;
      elf.interpreter = text.substr(0, strnlen(text.c_str(), text.size()));
      elf.has_interpreter = true;
    }
  }
  elf.ok = true;
  if (!has_dynamic || dynamic.p_filesz > kMaxTable) return elf;
  // The string table's address is a virtual one: its file offset is found
  // through the loaded segment that holds it.
  auto file_offset = [&](uint64_t address) -> std::optional<uint64_t> {
    for (const Elf64_Phdr &load : loads)
      if (address >= load.p_vaddr && address < load.p_vaddr + load.p_filesz)
        return address - load.p_vaddr + load.p_offset;
    return std::nullopt;
  };
  std::vector<Elf64_Dyn> entries(dynamic.p_filesz / sizeof(Elf64_Dyn));
  file.seekg(static_cast<std::streamoff>(dynamic.p_offset));
  if (entries.empty() || !file.read(reinterpret_cast<char *>(entries.data()),
                                    static_cast<std::streamsize>(entries.size() * sizeof(Elf64_Dyn))))
    return elf;
  uint64_t strtab = 0, strsz = 0;
  for (const Elf64_Dyn &entry : entries) {
    if (entry.d_tag == DT_NULL) break;
    if (entry.d_tag == DT_STRTAB) strtab = entry.d_un.d_ptr;
    if (entry.d_tag == DT_STRSZ) strsz = entry.d_un.d_val;
  }
  std::optional<uint64_t> at = file_offset(strtab);
  if (!at || strsz == 0) return elf;
  // Each name read where it is (a large library's string table is many
  // megabytes of symbol names).
  auto string_at = [&](uint64_t offset) {
    std::string text;
    if (offset >= strsz) return text;
    file.clear();
    file.seekg(static_cast<std::streamoff>(*at + offset));
    char c = 0;
    while (text.size() < 4096 && offset + text.size() < strsz && file.get(c) && c != '\0') text += c;
    return text;
  };
  for (const Elf64_Dyn &entry : entries) {
    if (entry.d_tag == DT_NULL) break;
    if (entry.d_tag == DT_NEEDED) elf.needed.push_back(string_at(entry.d_un.d_val));
    if (entry.d_tag == DT_RPATH) elf.rpath = string_at(entry.d_un.d_val);
    if (entry.d_tag == DT_RUNPATH) {
      elf.runpath = string_at(entry.d_un.d_val);
      elf.has_runpath = true;
    }
  }
  return elf;
}

std::string directory_of(const std::string &path) {
  char *real = realpath(path.c_str(), nullptr);
  std::string resolved = real != nullptr ? real : path;
  free(real);
  size_t slash = resolved.rfind('/');
  return slash == std::string::npos ? "." : slash == 0 ? "/" : resolved.substr(0, slash);
}

// A search path's directories, $ORIGIN (the object's directory), $LIB and
// $PLATFORM expanded as glibc expands them on Debian.
std::vector<std::string> directories(const std::string &list, const std::string &origin) {
  std::vector<std::string> out;
  std::string entries = list;
  for (char &c : entries)
    if (c == ';') c = ':';
  std::istringstream split(entries);
  for (std::string dir; std::getline(split, dir, ':');) {
    for (const auto &[token, value] : {std::pair<std::string, std::string>{"${ORIGIN}", origin},
                                       {"$ORIGIN", origin},
                                       {"${LIB}", std::string("lib/") + kTriplet},
                                       {"$LIB", std::string("lib/") + kTriplet},
                                       {"${PLATFORM}", "x86_64"},
                                       {"$PLATFORM", "x86_64"}})
      for (size_t at; (at = dir.find(token)) != std::string::npos;) dir.replace(at, token.size(), value);
    out.push_back(dir.empty() ? "." : dir);
  }
  return out;
}

// The directories of /etc/ld.so.conf and the files it includes (what
// ldconfig puts in ld.so.cache), then the system's own.
void add_conf(const std::string &path, std::vector<std::string> &out, int depth) {
  std::ifstream conf(path);
  for (std::string line; depth < 8 && std::getline(conf, line);) {
    line = line.substr(0, line.find('#'));
    size_t start = line.find_first_not_of(" \t\r");
    if (start == std::string::npos) continue;
    line = line.substr(start, line.find_last_not_of(" \t\r") + 1 - start);
    if (line.rfind("include", 0) == 0 && line.size() > 7 && (line[7] == ' ' || line[7] == '\t')) {
      std::string pattern = line.substr(line.find_first_not_of(" \t", 7));
      if (pattern[0] != '/') pattern = directory_of(path) + "/" + pattern;
      glob_t found{};
      if (glob(pattern.c_str(), 0, nullptr, &found) == 0)
        for (size_t i = 0; i < found.gl_pathc; ++i) add_conf(found.gl_pathv[i], out, depth + 1);
      globfree(&found);
    } else if (line[0] == '/') {
      out.push_back(line);
    }
  }
}

const std::vector<std::string> &system_directories() {
  static const std::vector<std::string> dirs = [] {
    std::vector<std::string> out;
    add_conf("/etc/ld.so.conf", out, 0);
    for (const std::string &dir :
         {std::string("/lib/") + kTriplet, std::string("/usr/lib/") + kTriplet, std::string("/lib64"),
          std::string("/usr/lib64"), std::string("/lib"), std::string("/usr/lib")})
      out.push_back(dir);
    return out;
  }();
  return dirs;
}

} // namespace

std::optional<std::string> elf_interpreter(const std::string &path) {
  ElfFile elf = read_elf(path);
  if (!elf.ok) return std::nullopt;
  return elf.has_interpreter ? elf.interpreter : std::string();
}

std::string script_interpreter(const std::string &path) {
  std::ifstream file(path, std::ios::binary);
  std::string line;
  if (!std::getline(file, line) || line.size() < 3 || line.compare(0, 2, "#!") != 0) return "";
  size_t start = line.find_first_not_of(" \t", 2);
  if (start == std::string::npos) return "";
  return line.substr(start, line.find_first_of(" \t\r", start) - start);
}

std::vector<std::string> startup_libraries(const std::string &program, const std::string &library_path) {
  std::vector<std::string> found;
  std::set<std::string> seen_names, seen_paths;
  struct Pending {
    std::string name;
    std::vector<std::string> rpaths; // DT_RPATH of the objects that led here, when theirs apply
    std::vector<std::string> runpath;
  };
  std::vector<Pending> queue;
  auto enqueue_needs = [&](const std::string &path, const ElfFile &elf, const std::vector<std::string> &parent_rpaths) {
    std::string origin = directory_of(path);
    // Its own DT_RPATH first, then those of the objects that loaded it; none
    // at all for an object with DT_RUNPATH, which is searched after
    // LD_LIBRARY_PATH instead.
    std::vector<std::string> rpaths, runpath;
    if (elf.has_runpath) {
      runpath = directories(elf.runpath, origin);
    } else {
      if (!elf.rpath.empty()) rpaths = directories(elf.rpath, origin);
      rpaths.insert(rpaths.end(), parent_rpaths.begin(), parent_rpaths.end());
    }
    for (const std::string &name : elf.needed) queue.push_back({name, rpaths, runpath});
  };
  ElfFile main = read_elf(program);
  if (!main.ok) return found;
  // The dynamic loader is the program's interpreter, not a library it loads
  // (libc names it among its needs).
  if (size_t slash = main.interpreter.rfind('/'); slash != std::string::npos)
    seen_names.insert(main.interpreter.substr(slash + 1));
  enqueue_needs(program, main, {});
  std::vector<std::string> env_dirs =
      library_path.empty() ? std::vector<std::string>{} : directories(library_path, directory_of(program));
  for (size_t next = 0; next < queue.size() && found.size() < kMaxLibraries; ++next) {
    Pending want = queue[next];
    if (want.name.empty() || !seen_names.insert(want.name).second) continue;
    std::vector<std::string> candidates;
    if (want.name.find('/') != std::string::npos) {
      candidates.push_back(want.name);
    } else {
      const std::vector<std::string> *order[] = {&want.rpaths, &env_dirs, &want.runpath, &system_directories()};
      for (const std::vector<std::string> *dirs : order)
        for (const std::string &dir : *dirs)
          candidates.push_back(dir.size() > 1 && dir.back() == '/' ? dir + want.name : dir + "/" + want.name);
    }
    for (const std::string &candidate : candidates) {
      ElfFile elf = read_elf(candidate); // the loader skips a file of another machine or class
      if (!elf.ok) continue;
      if (seen_paths.insert(candidate).second) found.push_back(candidate);
      enqueue_needs(candidate, elf, want.rpaths);
      break;
    }
  }
  return found;
}

} // namespace secmem::tool
