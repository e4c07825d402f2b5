// secmem: run programs with secret memory, and check what a process holds.
//
// Exit status: 0 success (probe: memfd_secret works; scan: no readable
// copy, everything read), 1 a negative answer (probe: it does not; scan:
// copies found), 2 bad usage or input, 3 a failure while doing the work
// (scan: memory not read, or the process left, and no copy in the rest); `run` exits with
// the command's status (127 when it cannot be started).
#include <CLI/CLI.hpp>

#include <climits>
#include <cstdlib>
#include <iostream>
#include <new>
#include <string>

#include "commands.h"
#include "output.h"

using namespace secmem::tool;

namespace {

// Decimal digits only: strtol alone took " 12" and "+12" for 12.
int parse_pid(const std::string &text) {
  bool digits = !text.empty() && text.find_first_not_of("0123456789") == std::string::npos;
  char *end = nullptr;
  long pid = digits ? strtol(text.c_str(), &end, 10) : 0;
  if (!digits || pid <= 0 || pid > INT_MAX) throw ToolError{2, "'" + text + "' is not a PID"};
  return static_cast<int>(pid);
}

} // namespace

int main(int argc, char **argv) {
  CLI::App app{"secmem: keep secrets in memfd_secret memory, and check what a process holds.\n"
               "Exit status: 0 yes/success, 1 a negative answer (probe: no memfd_secret; scan: copies found;\n"
               "stat: a secret range was readable), 2 bad usage or input, 3 failure; run: the command's."};
  app.require_subcommand(1);
  bool json = false;

  RunOptions run_options;
  CLI::App *run = app.add_subcommand("run", "Run a command with secmem's preload shim (secrets into memfd_secret)");
  run->add_option("--backend", run_options.backend, "SECMEM_BACKEND")
      ->check(CLI::IsMember({"auto", "memfd_secret", "mlock"}));
  run->add_flag("--strict", run_options.strict, "Refuse rather than degrade: SECMEM_ON_EXHAUSTION=fail");
  run->add_option("--tag-callers", run_options.tag_callers,
                  "SECMEM_TAG_CALLERS: libraries whose allocations are secret");
  run->add_option("--report", run_options.report, "SECMEM_REPORT: stderr or a file for the report at exit");
  run->add_option("command", run_options.command, "The command and its arguments, after --")->required();

  CLI::App *probe = app.add_subcommand("probe", "Can this machine and process have secret memory, and how much?");
  probe->add_flag("--json", json, "Machine-readable output");

  std::string pid, hex, key_file, passphrase_file;
  CLI::App *stat = app.add_subcommand("stat", "What a running process holds in secret memory");
  stat->add_option("pid", pid, "Process ID")->required();
  stat->add_flag("--json", json, "Machine-readable output");

  CLI::App *scan = app.add_subcommand("scan", "Count readable copies of a byte pattern or a key in a process");
  scan->add_option("pid", pid, "Process ID")->required();
  auto *hex_option = scan->add_option("--hex", hex, "The bytes to look for, in hex");
  auto *key_option = scan->add_option(
      "--key-file", key_file,
      "A private key (PEM, DER, PKCS#8, OpenSSH): every private component, both byte orders, each counted apart");
  hex_option->excludes(key_option);
  scan->add_option("--passphrase-file", passphrase_file, "The passphrase of an encrypted key file: its first line");
  scan->add_flag("--json", json, "Machine-readable output");

  CLI::App *demo = app.add_subcommand("demo", "Show, with a real key, what secmem changes");

  SystemdOptions systemd_options;
  CLI::App *systemd =
      app.add_subcommand("systemd", "Print a drop-in that runs a systemd service under the preload shim");
  systemd->add_option("unit", systemd_options.unit, "A service (nginx, postgresql@15-main.service) or a unit file")
      ->required();
  systemd->add_option("--heap", systemd_options.heap,
                      "The secret heap a process may grow to; LimitMEMLOCK= is three times it (default 16M)");

  // A first word that is no option and no subcommand is named (CLI11 said
  // "A subcommand is required").
  if (argc > 1 && argv[1][0] != '-') {
    bool known = false;
    for (const CLI::App *sub : app.get_subcommands({})) known = known || sub->check_name(argv[1]);
    if (!known) {
      std::cerr << "secmem: unknown subcommand '" << terminal_safe(argv[1])
                << "' (run, probe, stat, scan, demo or systemd; secmem --help)\n";
      return 2;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError &error) {
    int code = app.exit(error);
    return code == 0 ? 0 : 2;
  }
  try {
    if (run->parsed()) return cmd_run(run_options);
    if (probe->parsed()) return cmd_probe(json);
    if (stat->parsed()) return cmd_stat(parse_pid(pid), json);
    if (scan->parsed()) return cmd_scan(parse_pid(pid), hex, key_file, passphrase_file, json);
    if (demo->parsed()) return cmd_demo();
    if (systemd->parsed()) return cmd_systemd(systemd_options);
  } catch (const ToolError &error) {
    std::cerr << "secmem: " << error.message << "\n";
    return error.exit_code;
  } catch (const std::bad_alloc &) {
    std::cerr << "secmem: out of memory\n";
    return 3;
  } catch (const std::exception &error) {
    std::cerr << "secmem: " << error.what() << "\n";
    return 3;
  }
  return 2;
}
