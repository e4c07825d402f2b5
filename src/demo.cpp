// secmem demo: a real key in a signing program, read through /proc/PID/mem with and without the shim.
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <iterator>
#include <string>
#include <sys/wait.h>
#include <unistd.h>

#include "commands.h"
#include "keys.h"
#include "output.h"

namespace secmem::tool {

namespace {

// The backend the shim's exit report names ("...; backend memfd_secret; ..."), or "-" without one.
std::string reported_backend(const std::string &report) {
  std::ifstream file(report);
  std::string text((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  size_t at = text.find("backend ");
  return at == std::string::npos ? "-" : text.substr(at + 8, text.find(';', at) - at - 8);
}

// Runs the signer (under the shim or not), scans it while it holds the key.
DemoRun run_signer(const std::string &key, bool under_shim, const std::string &report) {
  int to_child[2], from_child[2];
  if (pipe(to_child) != 0 || pipe(from_child) != 0) throw ToolError{3, "pipe failed"};
  std::string signer = signer_path(), shim = under_shim ? shim_path() : "";
  pid_t pid = fork();
  if (pid < 0) throw ToolError{3, "fork failed"};
  if (pid == 0) {
    dup2(to_child[0], 0);
    dup2(from_child[1], 1);
    for (int fd : {to_child[0], to_child[1], from_child[0], from_child[1]}) close(fd);
    unsetenv("LD_PRELOAD");
    if (under_shim) {
      setenv("LD_PRELOAD", shim.c_str(), 1);
      setenv("SECMEM_REPORT", report.c_str(), 1);
    }
    execl(signer.c_str(), signer.c_str(), key.c_str(), nullptr);
    _exit(127);
  }
  close(to_child[0]);
  close(from_child[1]);
  std::string line;
  char c;
  while (read(from_child[0], &c, 1) == 1 && c != '\n') line += c;
  DemoRun run;
  run.signed_ok = line == "ready signed";
  if (line.rfind("ready", 0) == 0) {
    run.scan = scan(pid, key_patterns(load_key_material(key)));
    for (const Region &region : read_regions(pid))
      if (region.secret()) {
        ++run.secret_mappings;
        run.secret_bytes += region.end - region.start;
      }
  }
  close(to_child[1]);
  close(from_child[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (line.rfind("ready", 0) != 0) throw ToolError{3, "the demo's signing program did not start (" + signer + ")"};
  run.backend = under_shim ? reported_backend(report) : "ordinary heap";
  return run;
}

} // namespace

int cmd_demo() {
  char pattern[] = "/tmp/secmem-demo-XXXXXX";
  if (mkdtemp(pattern) == nullptr) throw ToolError{3, "cannot make a temporary directory"};
  std::string dir = pattern, key = dir + "/key.pem", report = dir + "/report";
  struct Cleanup {
    std::string dir;
    ~Cleanup() {
      for (const char *file : {"/key.pem", "/report"}) unlink((dir + file).c_str());
      rmdir(dir.c_str());
    }
  } cleanup{dir};
  std::cerr << "==> generating an EC P-256 key\n";
  write_ec_key(key);
  DemoReport demo;
  std::cerr << "==> running the signing program with plain OpenSSL, and reading its memory\n";
  demo.plain = run_signer(key, false, report);
  std::cerr << "==> running it again under secmem's preload, and reading its memory\n";
  demo.shimmed = run_signer(key, true, report);
  demo.probe_errno = run_probe().secret_errno;
  print_demo(demo);
  return demo.plain.signed_ok && demo.shimmed.signed_ok ? 0 : 3;
}

} // namespace secmem::tool
