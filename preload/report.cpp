// SECMEM_REPORT: one line per process, at exit, saying what went to secret
// memory and from where.
#include <fcntl.h>
#include <link.h>
#include <sys/auxv.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno> // program_invocation_short_name
#include <cstdio>
#include <cstring>

#include "config/environ.h"
#include "platform/diag.h"
#include "platform/own_openssl.h"
#include "shim.h"

using namespace secmem;
using namespace secmem::shim;

namespace {

// The executable's name as it started: the last part of the path the kernel
// was given (AT_EXECFN), not argv[0], which a program may rewrite
// (PostgreSQL's process titles) or be started under (`exec -a "nginx:
// worker process" openssl ...` named the line "nginx: worker process").
char g_name[64];

// SECMEM_REPORT's file, opened at start-up (close-on-exec, out of the low
// descriptor numbers): a child that drops privileges after fork (a server's
// worker) appends through it where it could no longer open the path. Checked
// by device and inode before use: a program may close it and reuse the number.
int g_report_fd = -1;
dev_t g_report_dev = 0;
ino_t g_report_ino = 0;

bool report_fd_intact() {
  struct stat st {};
  return g_report_fd >= 0 && fstat(g_report_fd, &st) == 0 && st.st_dev == g_report_dev && st.st_ino == g_report_ino;
}

// Objects that carry their own OpenSSL (platform/own_openssl.h): their keys
// are out of the shim's reach, and the report says so. The marker string is
// looked for in each object's read-only loaded segments.
struct OwnOpenssl {
  static constexpr int kMax = 3;
  char names[kMax][64];
  char versions[kMax][32];
  int count = 0;
};

int find_own_openssl(dl_phdr_info *info, size_t, void *data) {
  auto *found = static_cast<OwnOpenssl *>(data);
  // The executable as it started (a later argv[0] may be anything).
  const char *name = info->dlpi_name != nullptr && info->dlpi_name[0] != '\0' ? info->dlpi_name
                     : g_name[0] != '\0'                                      ? g_name
                                                                              : program_invocation_name;
  if (found->count == OwnOpenssl::kMax || own_openssl::is_shared_libcrypto(name)) return 0;
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const ElfW(Phdr) &segment = info->dlpi_phdr[i];
    if (segment.p_type != PT_LOAD || (segment.p_flags & PF_R) == 0 || (segment.p_flags & PF_W) != 0) continue;
    const void *start = reinterpret_cast<const void *>(info->dlpi_addr + segment.p_vaddr);
    if (!own_openssl::holds_marker(start, segment.p_filesz)) continue;
    const char *base = strrchr(name, '/');
    base = base != nullptr ? base + 1 : name;
    snprintf(found->names[found->count], sizeof found->names[0], "%s", base);
    own_openssl::find_version(start, segment.p_filesz, found->versions[found->count], sizeof found->versions[0]);
    ++found->count;
    break;
  }
  return 0;
}

diag::Line report_line() {
  secmem_stats stats{};
  secmem_get_stats(&stats);
  diag::Line line("secmem report: ");
  line.add("pid ")
      .dec(static_cast<uint64_t>(getpid()))
      .add(" (")
      .value(g_name[0] != '\0' ? g_name : program_invocation_short_name, 128)
      .add("): backend ")
      .add(stats.backend)
      .add("; secret allocations");
  bool counted = routed_counted();
  if (!counted) // "0" would be false: there were some
    line.add(" not counted (").add(kSECMEM_REPORT).add(" was not set at the first)");
  for (int source = 0; counted && source < kNumSources; ++source) {
    RoutedTotal routed = routed_total(static_cast<Source>(source));
    line.add(source == 0 ? " " : ", ")
        .add(kSourceNames[source])
        .add(" ")
        .dec(routed.allocations)
        .add(" (")
        .dec(routed.bytes)
        .add(" bytes)");
  }
  line.add("; peak held ")
      .dec(stats.peak_held)
      .add(" bytes; fallbacks ")
      .dec(stats.fallbacks_enosys + stats.fallbacks_eperm + stats.fallbacks_memlock + stats.fallbacks_other)
      .add("; failed ")
      .dec(stats.failed_chunks);
  OwnOpenssl own;
  dl_iterate_phdr(find_own_openssl, &own);
  for (int i = 0; i < own.count; ++i) {
    line.add(i == 0 ? "; own OpenSSL, not reached by the shim: " : ", ").value(own.names[i], 128);
    if (own.versions[i][0] != '\0') line.add(" (").add(own.versions[i]).add(")");
  }
  return line;
}

} // namespace

// SECMEM_REPORT's value ("stderr" or a path), or null: unset, or the
// environment of a secure exec, not ours to trust.
const char *secmem::shim::report_target() {
  const char *target = env_value(process_environment(), kSECMEM_REPORT);
  return is_secure_exec() ? nullptr : target;
}

namespace {

// Whether an exec path is a descriptor's: /dev/fd/N, or /proc/.../fd/N (by
// fexecve or execveat with AT_EMPTY_PATH: the line said "3"), whose last part
// names nothing; not /dev/fd/N/prog (execveat of a name in a directory).
bool names_a_descriptor(const char *path) {
  const char *digits = nullptr;
  if (strncmp(path, "/dev/fd/", 8) == 0) {
    digits = path + 8;
  } else if (strncmp(path, "/proc/", 6) == 0) {
    const char *fd = strstr(path + 6, "/fd/");
    digits = fd != nullptr ? fd + 4 : nullptr;
  }
  if (digits == nullptr || *digits == '\0') return false;
  for (const char *c = digits; *c != '\0'; ++c)
    if (*c < '0' || *c > '9') return false;
  return true;
}

// The report file, for appending: opened without O_CREAT first, so that a
// file made beforehand in a sticky directory such as /tmp opens for other
// users too (fs.protected_regular refuses them an O_CREAT open of another
// user's file there), and made (0600) only where there is none.
int open_report_file(const char *target) {
  int fd = open(target, O_WRONLY | O_APPEND | O_CLOEXEC | O_NONBLOCK); // O_NONBLOCK: no wait on a FIFO
  if (fd < 0 && errno == ENOENT) fd = open(target, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NONBLOCK, 0600);
  return fd;
}

} // namespace

void secmem::shim::open_report() {
  // Copied by hand: snprintf here took a process's start-up into two more
  // pages of libc's code (a page fault each, in every program started
  // under the shim).
  const char *path = reinterpret_cast<const char *>(getauxval(AT_EXECFN));
  const char *name =
      path == nullptr || *path == '\0' || names_a_descriptor(path) ? program_invocation_short_name : path;
  for (const char *c = name; c != nullptr && *c != '\0'; ++c)
    if (*c == '/' && c[1] != '\0') name = c + 1;
  size_t at = 0;
  for (const char *c = name; c != nullptr && *c != '\0' && at + 1 < sizeof g_name; ++c) g_name[at++] = *c;
  g_name[at] = '\0';
  const char *target = report_target();
  if (target == nullptr || strcmp(target, "stderr") == 0) return;
  // O_NONBLOCK: a FIFO there must not stop the program before main.
  int fd = open_report_file(target);
  if (fd < 0) return; // tried again at exit, and said then
  int high = fcntl(fd, F_DUPFD_CLOEXEC, 100);
  if (high >= 0) {
    close(fd);
    fd = high;
  }
  // Kept only when it is a regular file (a pipe kept open would keep its
  // reader waiting for the end), and not in a standard stream's place (with
  // few descriptors allowed and stdout closed, it would take fd 1).
  struct stat st {};
  if (fd <= STDERR_FILENO || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return;
  }
  fcntl(fd, F_SETFL, O_APPEND); // blocking writes again, as at exit
  g_report_fd = fd;
  g_report_dev = st.st_dev;
  g_report_ino = st.st_ino;
}

namespace {

// Why a report file could not be opened for this user, where it can be
// told: another user's file (a program started after a change of user:
// runuser, setpriv, pg_ctlcluster as root), one it may not create, or a
// path it may not reach. "" otherwise.
const char *refused_why(const char *target) {
  struct stat st {};
  if (stat(target, &st) == 0)
    return st.st_uid != geteuid() ? " (the file is another user's: make it beforehand, writable by each user the "
                                    "program runs as)"
                                  : "";
  if (errno == ENOENT) return " (this user may not create it there: make it beforehand, writable by this user)";
  if (errno == EACCES) return " (a directory on its path is closed to this user)";
  return "";
}

__attribute__((destructor)) void write_report() {
  const char *target = report_target(); // stderr or a path
  if (target == nullptr) return;
  bool to_stderr = strcmp(target, "stderr") == 0;
  if (to_stderr) { // or syslog, when fd 2 is closed or is not stderr any more (a data file, /dev/null)
    report_line().emit();
    return;
  }
  bool kept = !to_stderr && report_fd_intact();
  int fd = kept ? g_report_fd : open_report_file(target); // no wait on a FIFO
  int err = fd < 0 ? errno : 0;
  // O_APPEND: one write per process keeps lines whole.
  if (fd >= 0 && !report_line().emit_to(fd, &err) && err == 0) err = EIO;
  if (fd >= 0 && !kept) close(fd);
  if (err == 0) return;
  // Lost, and said (to stderr, or syslog): a full disk, RLIMIT_FSIZE, a
  // FIFO no one reads, a directory.
  diag::Line()
      .add("cannot write the report to ")
      .add(kSECMEM_REPORT)
      .add("=")
      .value(target)
      .add(": ")
      .add(fd < 0 ? "open: " : "write: ")
      .err(err)
      .add(err == EFBIG ? " (RLIMIT_FSIZE)" : "")
      .add(fd < 0 && (err == EACCES || err == EPERM) ? refused_why(target) : "")
      .emit();
}

} // namespace
