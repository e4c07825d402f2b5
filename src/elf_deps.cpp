// The libraries a program loads at start, read from its files (elf_deps.h).
#include "elf_deps.h"

#include <elf.h>
#include <fcntl.h>
#include <glob.h>
#include <sys/auxv.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <set>
#include <sstream>

#include "file_reader.h"

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
constexpr size_t kMaxNeeded = 1024;                  // DT_NEEDED entries taken from one object
constexpr size_t kMaxLookups = 100000;               // files looked at in all (each a stat and perhaps a read)
constexpr size_t kMaxTable = 1 << 20;                // a dynamic section read, at most
constexpr size_t kMaxQueued = 65536;                 // names to look for, in all
constexpr size_t kMaxQueuedBytes = size_t{16} << 20; // and their bytes
constexpr size_t kMaxHeaders = 1024;                 // program headers of one file (ordinary ones have about 15)

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

ElfFile read_elf(const std::string &path) {
  ElfFile elf;
  FileReader file(path);
  Elf64_Ehdr header{};
  if (!file.read(0, &header, sizeof header) || memcmp(header.e_ident, ELFMAG, SELFMAG) != 0 ||
      header.e_ident[EI_CLASS] != ELFCLASS64 || header.e_machine != kMachine ||
      header.e_phentsize != sizeof(Elf64_Phdr) || header.e_phnum > kMaxHeaders)
    return elf;
  // The program headers in one read (a file declaring 65,535 of them, read
  // one by one at each of a thousand spellings of its name, took minutes).
  std::vector<Elf64_Phdr> programs(header.e_phnum);
  if (!programs.empty() && !file.read(header.e_phoff, programs.data(), programs.size() * sizeof(Elf64_Phdr)))
    return elf;
  std::vector<Elf64_Phdr> loads;
  Elf64_Phdr dynamic{};
  bool has_dynamic = false;
  for (const Elf64_Phdr &program : programs) {
    if (program.p_type == PT_LOAD) loads.push_back(program);
    if (program.p_type == PT_DYNAMIC) {
      dynamic = program;
      has_dynamic = true;
    }
    if (program.p_type == PT_INTERP && program.p_filesz > 0 && program.p_filesz <= 4096) {
      std::string text(program.p_filesz, '\0');
      if (!file.read(program.p_offset, text.data(), text.size())) return elf;
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
  if (entries.empty() || !file.read(dynamic.p_offset, entries.data(), entries.size() * sizeof(Elf64_Dyn))) return elf;
  uint64_t strtab = 0, strsz = 0;
  for (const Elf64_Dyn &entry : entries) {
    if (entry.d_tag == DT_NULL) break;
    if (entry.d_tag == DT_STRTAB) strtab = entry.d_un.d_ptr;
    if (entry.d_tag == DT_STRSZ) strsz = entry.d_un.d_val;
  }
  std::optional<uint64_t> at = file_offset(strtab);
  if (!at || strsz == 0) return elf;
  // Each name read where it is (a large library's string table is many
  // megabytes of symbol names), 4 KiB at most.
  auto string_at = [&](uint64_t offset) {
    if (offset >= strsz) return std::string();
    std::string text = file.read_some(*at + offset, static_cast<size_t>(std::min<uint64_t>(4096, strsz - offset)));
    return text.substr(0, strnlen(text.c_str(), text.size()));
  };
  for (const Elf64_Dyn &entry : entries) {
    if (entry.d_tag == DT_NULL) break;
    if (entry.d_tag == DT_NEEDED && elf.needed.size() < kMaxNeeded) elf.needed.push_back(string_at(entry.d_un.d_val));
    if (entry.d_tag == DT_RPATH) elf.rpath = string_at(entry.d_un.d_val);
    if (entry.d_tag == DT_RUNPATH) {
      elf.runpath = string_at(entry.d_un.d_val);
      elf.has_runpath = true;
    }
  }
  return elf;
}

// The directory part of a path as given ("lib/x.so" -> "lib"): glibc's
// $ORIGIN for a library is the directory it was found in, not where a
// symlink there points (a library reached through one was looked for in the
// wrong place); the program's own is resolved (/proc/self/exe).
std::string directory_part(const std::string &path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
}
std::string resolved_directory(const std::string &path) {
  char *real = realpath(path.c_str(), nullptr);
  std::string resolved = real != nullptr ? real : path;
  free(real);
  return directory_part(resolved);
}

#if defined(__aarch64__)
constexpr const char *kPlatform = "aarch64";
#else
constexpr const char *kPlatform = "x86_64";
#endif
constexpr size_t kMaxDirectories = 64; // of one search list

// A search path's directories, $ORIGIN (the object's directory), $LIB and
// $PLATFORM expanded as glibc expands them on Debian, in one pass (a
// directory whose own name holds "$ORIGIN" was expanded again and again).
std::vector<std::string> directories(const std::string &list, const std::string &origin) {
  std::vector<std::string> out;
  std::string entries = list;
  for (char &c : entries)
    if (c == ';') c = ':';
  std::istringstream split(entries);
  const std::pair<std::string, std::string> tokens[] = {{"${ORIGIN}", origin},
                                                        {"$ORIGIN", origin},
                                                        {"${LIB}", std::string("lib/") + kTriplet},
                                                        {"$LIB", std::string("lib/") + kTriplet},
                                                        {"${PLATFORM}", kPlatform},
                                                        {"$PLATFORM", kPlatform}};
  for (std::string dir; out.size() < kMaxDirectories && std::getline(split, dir, ':');) {
    std::string expanded;
    for (size_t at = 0; at < dir.size();) {
      bool replaced = false;
      for (const auto &[token, value] : tokens)
        if (dir.compare(at, token.size(), token) == 0) {
          expanded += value;
          at += token.size();
          replaced = true;
          break;
        }
      if (!replaced) expanded += dir[at++];
    }
    out.push_back(expanded.empty() ? "." : expanded);
  }
  return out;
}

bool is_regular(const std::string &path) {
  struct stat info {};
  return stat(path.c_str(), &info) == 0 && S_ISREG(info.st_mode);
}

// The directories of /etc/ld.so.conf and the files it includes (what
// ldconfig puts in ld.so.cache): regular files only, 8 includes deep.
void add_conf(const std::string &path, std::vector<std::string> &out, int depth) {
  if (depth >= 8 || out.size() >= 256) return;
  FileReader file(path);
  std::istringstream conf(file.read_some(0, 1 << 20));
  for (std::string line; std::getline(conf, line) && out.size() < 256;) {
    line = line.substr(0, line.find('#'));
    size_t start = line.find_first_not_of(" \t\r");
    if (start == std::string::npos) continue;
    line = line.substr(start, line.find_last_not_of(" \t\r") + 1 - start);
    if (line.rfind("include", 0) == 0 && line.size() > 7 && (line[7] == ' ' || line[7] == '\t')) {
      std::string pattern = line.substr(line.find_first_not_of(" \t", 7));
      if (pattern[0] != '/') pattern = directory_part(path) + "/" + pattern;
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

#if defined(__x86_64__)
// glibc 2.36's legacy subdirectories (2.37 dropped them), as its loader
// builds them: every combination of "tls", the platform and the hardware
// capabilities it counts (avx512_1, then x86_64), largest first, each one's
// names in that order. The platform is the kernel's AT_PLATFORM ("x86_64"),
// which glibc changes on an Intel processor to "xeon_phi" (AVX512ER and PF)
// or "haswell" (AVX2, FMA, BMI1, BMI2, LZCNT, MOVBE and POPCNT); avx512_1 is
// an Intel processor's with AVX512F, CD, BW, DQ and VL but not ER and PF.
// (A fixed list with haswell/ in it took a library from d/haswell/ on an AMD
// processor, where the loader took d/'s own: found by review.)
std::vector<std::string> legacy_subdirectories() {
  const char *at_platform = reinterpret_cast<const char *>(getauxval(AT_PLATFORM));
  std::string platform = at_platform != nullptr ? at_platform : "";
  bool avx512_1 = false;
  __builtin_cpu_init();
  if (__builtin_cpu_is("intel")) {
    bool phi = false;
    if (__builtin_cpu_supports("avx512cd")) {
      if (__builtin_cpu_supports("avx512er") && __builtin_cpu_supports("avx512pf"))
        phi = true;
      else
        avx512_1 = __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
                   __builtin_cpu_supports("avx512vl");
    }
    if (phi)
      platform = "xeon_phi";
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi") &&
             __builtin_cpu_supports("bmi2") && __builtin_cpu_supports("lzcnt") && __builtin_cpu_supports("movbe") &&
             __builtin_cpu_supports("popcnt"))
      platform = "haswell";
  }
  std::vector<std::string> names = {"tls"};
  if (!platform.empty()) names.push_back(platform);
  if (avx512_1) names.emplace_back("avx512_1");
  names.emplace_back("x86_64");
  std::vector<std::string> out;
  const unsigned count = static_cast<unsigned>(names.size());
  for (unsigned mask = (1u << count) - 1; mask > 0; --mask) {
    std::string sub;
    for (unsigned i = 0; i < count; ++i)
      if ((mask & (1u << (count - 1 - i))) != 0) sub += names[i] + "/";
    out.push_back(sub);
  }
  return out;
}
#endif

// The subdirectories glibc 2.36 tries in each directory before the
// directory itself: glibc-hwcaps for the levels this processor has, then the
// legacy ones.
const std::vector<std::string> &capability_subdirectories() {
  static const std::vector<std::string> subdirs = [] {
    std::vector<std::string> out;
#if defined(__x86_64__)
    if (__builtin_cpu_supports("x86-64-v4")) out.push_back("glibc-hwcaps/x86-64-v4/");
    if (__builtin_cpu_supports("x86-64-v3")) out.push_back("glibc-hwcaps/x86-64-v3/");
    if (__builtin_cpu_supports("x86-64-v2")) out.push_back("glibc-hwcaps/x86-64-v2/");
    for (std::string &legacy : legacy_subdirectories()) out.push_back(std::move(legacy));
#else
    out.push_back("tls/");
#endif
    out.push_back("");
    return out;
  }();
  return subdirs;
}

// One object found: where, and what it asks for.
struct Found {
  std::string path;
  size_t loader; // the object that needed it (itself for the program and preloads)
  std::vector<std::string> rpath, runpath;
  bool has_runpath = false;
};

} // namespace

std::optional<std::string> elf_interpreter(const std::string &path) {
  ElfFile elf = read_elf(path);
  if (!elf.ok) return std::nullopt;
  return elf.has_interpreter ? elf.interpreter : std::string();
}

std::string script_interpreter(const std::string &path, const std::string &path_variable) {
  std::string line = FileReader(path).read_some(0, 256); // as much as the kernel reads (BINPRM_BUF_SIZE)
  if (line.size() < 3 || line.compare(0, 2, "#!") != 0) return "";
  line = line.substr(2, line.find('\n') == std::string::npos ? std::string::npos : line.find('\n') - 2);
  std::istringstream words(line);
  std::string interpreter, argument;
  words >> interpreter;
  // env: the command it runs, found on the path (a script's usual first line).
  if (interpreter.size() >= 4 && interpreter.compare(interpreter.size() - 4, 4, "/env") == 0) {
    while (words >> argument)
      if (argument[0] != '-' && argument.find('=') == std::string::npos) break;
    if (argument.empty() || argument[0] == '-' || argument.find('=') != std::string::npos) return interpreter;
    if (argument.find('/') != std::string::npos) return argument;
    std::istringstream dirs(path_variable.empty() ? "/usr/local/bin:/usr/bin:/bin" : path_variable);
    for (std::string dir; std::getline(dirs, dir, ':');) {
      std::string candidate = (dir.empty() ? "." : dir) + "/" + argument;
      if (is_regular(candidate) && access(candidate.c_str(), X_OK) == 0) return candidate;
    }
    return interpreter;
  }
  return interpreter;
}

std::vector<std::string> startup_libraries(const std::string &program, const std::string &library_path,
                                           const std::string &preload) {
  std::vector<std::string> result;
  ElfFile main = read_elf(program);
  if (!main.ok) return result;
  std::vector<Found> objects;
  std::set<std::string> seen_names, seen_paths;
  size_t lookups = 0;
  auto add_object = [&](const std::string &path, const std::string &origin, size_t loader, const ElfFile &elf) {
    Found object{path, loader, {}, {}, elf.has_runpath};
    if (elf.has_runpath)
      object.runpath = directories(elf.runpath, origin);
    else if (!elf.rpath.empty())
      object.rpath = directories(elf.rpath, origin);
    objects.push_back(std::move(object));
  };
  add_object(program, resolved_directory(program), 0, main);
  // The dynamic loader is the program's interpreter, not a library it loads
  // (libc names it among its needs).
  if (size_t slash = main.interpreter.rfind('/'); slash != std::string::npos)
    seen_names.insert(main.interpreter.substr(slash + 1));
  std::vector<std::string> env_dirs =
      library_path.empty() ? std::vector<std::string>{} : directories(library_path, resolved_directory(program));
  // Names to find, each with the object that needs it: breadth first, as the loader goes.
  std::vector<std::pair<std::string, size_t>> queue;
  size_t queued_bytes = 0;
  auto want = [&](const ElfFile &elf, size_t object) {
    for (size_t i = 0; i < elf.needed.size() && queue.size() < kMaxQueued && queued_bytes < kMaxQueuedBytes; ++i) {
      queued_bytes += elf.needed[i].size();
      queue.emplace_back(elf.needed[i], object);
    }
  };
  // LD_PRELOAD's and /etc/ld.so.preload's libraries come first, needed by the program.
  std::string preloads = preload;
  preloads += " " + FileReader("/etc/ld.so.preload").read_some(0, 65536);
  for (char &c : preloads)
    if (c == ':') c = ' ';
  std::istringstream preload_words(preloads);
  for (std::string word; queue.size() < kMaxNeeded && preload_words >> word;) queue.emplace_back(word, 0);
  want(main, 0);
  for (size_t next = 0; next < queue.size() && result.size() < kMaxLibraries && lookups < kMaxLookups; ++next) {
    auto [name, needer] = queue[next];
    if (name.empty() || !seen_names.insert(name).second) continue;
    std::vector<std::string> candidates;
    if (name.find('/') != std::string::npos) {
      candidates.push_back(name);
    } else {
      // DT_RPATH: none where the needing object has DT_RUNPATH; else its own,
      // its loaders' up to the program, and the program's.
      std::vector<const std::vector<std::string> *> order;
      if (!objects[needer].has_runpath) {
        bool program_seen = false;
        for (size_t at = needer;; at = objects[at].loader) {
          order.push_back(&objects[at].rpath);
          program_seen = program_seen || at == 0;
          if (at == objects[at].loader || order.size() > 64) break;
        }
        if (!program_seen) order.push_back(&objects[0].rpath);
      }
      order.push_back(&env_dirs);
      order.push_back(&objects[needer].runpath);
      order.push_back(&system_directories());
      for (const std::vector<std::string> *dirs : order)
        for (const std::string &dir : *dirs)
          for (const std::string &sub : capability_subdirectories())
            candidates.push_back((dir.size() > 1 && dir.back() == '/' ? dir : dir + "/") + sub + name);
    }
    for (const std::string &candidate : candidates) {
      if (++lookups > kMaxLookups) break;
      ElfFile elf = read_elf(candidate); // the loader skips a file of another machine or class
      if (!elf.ok) continue;
      if (seen_paths.insert(candidate).second) result.push_back(candidate);
      size_t index = objects.size();
      add_object(candidate, directory_part(candidate), needer, elf);
      want(elf, index);
      break;
    }
  }
  return result;
}

} // namespace secmem::tool
