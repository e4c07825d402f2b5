// SECMEM_REPORT: one line per process, at exit, saying what went to secret
// memory and from where.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno> // program_invocation_short_name
#include <cstring>

#include "config/environ.h"
#include "platform/diag.h"
#include "shim.h"

using namespace secmem;
using namespace secmem::shim;

namespace {

diag::Line report_line() {
  secmem_stats stats{};
  secmem_get_stats(&stats);
  diag::Line line("secmem report: ");
  line.add("pid ")
      .dec(static_cast<uint64_t>(getpid()))
      .add(" (")
      .add(program_invocation_short_name)
      .add("): backend ")
      .add(stats.backend)
      .add("; secret allocations");
  for (int source = 0; source < kNumSources; ++source) {
    line.add(source == 0 ? " " : ", ")
        .add(kSourceNames[source])
        .add(" ")
        .dec(g_routed[source].allocations.load(std::memory_order_relaxed))
        .add(" (")
        .dec(g_routed[source].bytes.load(std::memory_order_relaxed))
        .add(" bytes)");
  }
  line.add("; peak held ")
      .dec(stats.peak_held)
      .add(" bytes; fallbacks ")
      .dec(stats.fallbacks_enosys + stats.fallbacks_eperm + stats.fallbacks_memlock + stats.fallbacks_other)
      .add("; failed ")
      .dec(stats.failed_chunks);
  return line;
}

__attribute__((destructor)) void write_report() {
  const char *target = env_value(process_environment(), kSECMEM_REPORT); // stderr or a path
  if (target == nullptr || is_secure_exec()) return;
  bool to_stderr = strcmp(target, "stderr") == 0;
  if (to_stderr && !diag::stderr_takes_lines()) return; // a data file took fd 2's place
  int fd = to_stderr ? STDERR_FILENO : open(target, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) {
    diag::Line()
        .add("cannot write the report to ")
        .add(kSECMEM_REPORT)
        .add("=")
        .add(target)
        .add(": open failed")
        .emit();
    return;
  }
  report_line().emit_to(fd); // O_APPEND: one write per process keeps lines whole
  if (!to_stderr) close(fd);
}

} // namespace
