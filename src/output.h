// How the commands' reports are printed: aligned text rows, or one JSON line.
#pragma once

#include <cstdint>
#include <string>
#include <sys/resource.h>

#include "commands.h"

namespace secmem::tool {

std::string kib(uint64_t bytes);      // "12 KiB"
std::string limit_text(rlim_t value); // "unlimited" or "65536 bytes"
std::string errno_text(int err);      // "EPERM", or "errno 95" for one without a name here
// Control characters (and the backslash) as \xHH: text a process or a user
// chose, printed to a terminal.
std::string terminal_safe(const std::string &text);

void print_probe(const ProbeReport &probe, bool json);
void print_stat(const StatReport &stat, bool json);
void print_scan(const ScanReport &scan, bool json);
void print_demo(const DemoReport &demo);

} // namespace secmem::tool
