// The libraries a program loads at start, found by reading files only: its
// DT_NEEDED entries and theirs, searched for as glibc's loader searches
// (DT_RPATH, LD_LIBRARY_PATH, DT_RUNPATH, the directories of ld.so.conf,
// the system directories). Nothing is run: listing them with the program's
// own loader (`ld.so --list`, as ldd does) ran whatever its PT_INTERP named,
// a script too, as the user of `secmem systemd` (root).
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace secmem::tool {

// A 64-bit ELF file's program interpreter (its dynamic loader), "" for one
// without (statically linked); nothing for a file that is not one.
std::optional<std::string> elf_interpreter(const std::string &path);

// The program a script runs ("#!/usr/bin/python3 -u" -> "/usr/bin/python3"),
// or "" for a file that does not start with "#!".
std::string script_interpreter(const std::string &path);

// The libraries program loads at start, in the order found (each once), with
// library_path as its LD_LIBRARY_PATH. Those not found are left out.
std::vector<std::string> startup_libraries(const std::string &program, const std::string &library_path);

} // namespace secmem::tool
