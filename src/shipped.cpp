// Where the files secmem ships (the preload shim, the demo's signer) are.
#include <climits>
#include <cstdlib>
#include <string>
#include <unistd.h>

#include "commands.h"

namespace secmem::tool {

namespace {

std::string self_dir() {
  char path[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", path, sizeof path - 1);
  if (n <= 0) return ".";
  path[n] = '\0';
  std::string dir(path);
  return dir.substr(0, dir.rfind('/'));
}

// The build tree's copy wins so that a build runs its own shim, not an installed one.
std::string shipped(const std::string &build_relative, const std::string &installed) {
  std::string candidate = self_dir() + "/" + build_relative;
  if (file_exists(candidate)) return candidate;
  if (file_exists(installed)) return installed;
  throw ToolError{3, "cannot find " + installed + " (nor " + candidate + "): is secmem installed?"};
}

} // namespace

bool file_exists(const std::string &path) { return access(path.c_str(), F_OK) == 0; }

// Resolved (a unit file wants no "../"), and a path LD_PRELOAD can name:
// ld.so splits the variable at spaces and colons.
std::string shim_path() {
  std::string shim = shipped("../preload/libsecmem_preload.so", SECMEM_INSTALLED_PRELOAD);
  if (char *real = realpath(shim.c_str(), nullptr)) {
    shim = real;
    free(real);
  }
  if (shim.find_first_of(" :\t\n") != std::string::npos)
    throw ToolError{3, "the shim's path, " + shim + ", holds a space or a colon: LD_PRELOAD cannot name it"};
  return shim;
}
std::string signer_path() { return shipped("secmem-demo-signer", SECMEM_INSTALLED_SIGNER); }

} // namespace secmem::tool
