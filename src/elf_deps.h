// The libraries a program loads at start, found by reading files only: its
// DT_NEEDED entries and theirs, searched for as glibc's loader searches
// (DT_RPATH, LD_LIBRARY_PATH, DT_RUNPATH, the directories of ld.so.conf,
// the system directories, each with the hardware-capability subdirectories
// glibc 2.36 tries), and the preloaded ones. Nothing is run: listing them
// with the program's own loader (`ld.so --list`, as ldd does) ran whatever
// its PT_INTERP named, a script too, as the user of `secmem systemd` (root).
// Bounded: a crafted file (65,000 DT_NEEDED entries, a long DT_RPATH) costs
// at most kMaxLookups file lookups.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace secmem::tool {

// A 64-bit ELF file's program interpreter (its dynamic loader), "" for one
// without (statically linked); nothing for a file that is not one.
std::optional<std::string> elf_interpreter(const std::string &path);

// The program a script runs, as the kernel reads its first line (at most
// 256 bytes, of a regular file): "#!/usr/bin/python3 -u" -> "/usr/bin/python3";
// through env ("#!/usr/bin/env python3"), the command env finds on path.
// "" for a file that does not start with "#!".
std::string script_interpreter(const std::string &path, const std::string &path_variable);

// The libraries program loads at start, in the order found (each once), with
// library_path as its LD_LIBRARY_PATH and preload as its LD_PRELOAD (and
// /etc/ld.so.preload's). Those not found are left out.
std::vector<std::string> startup_libraries(const std::string &program, const std::string &library_path,
                                           const std::string &preload);

} // namespace secmem::tool
