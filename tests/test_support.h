// Helpers shared by the test suites.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <functional>
#include <initializer_list>
#include <netinet/in.h>
#include <string>
#include <vector>

#include "proc.h"

namespace secmem::test {

// Whether memfd_secret(2) works in this process (probed with a throwaway fd).
bool secretmem_available();

// Tests that need memfd_secret call this first: it skips when the kernel
// lacks it, and fails instead when SECMEM_REQUIRE_SECRETMEM=1 (as in CI).
#define SECMEM_REQUIRE_SECRETMEM()                                                                \
  do {                                                                                            \
    if (!::secmem::test::secretmem_available()) {                                                 \
      if (::secmem::test::secretmem_required()) FAIL() << "memfd_secret is required but refused"; \
      GTEST_SKIP() << "memfd_secret is not available here";                                       \
    }                                                                                             \
  } while (0)
bool secretmem_required();

// Whether the environment variable name is set to value.
bool env_is(const char *name, const char *value);
// The tier the heap is expected to use, from SECMEM_BACKEND ("mlock" or "memfd_secret").
std::string expected_backend();
// Tests that are only meaningful on the memfd_secret backend (skip on the mlock run).
bool running_on_mlock_backend();
// SECMEM_ON_EXHAUSTION=fail: allocations past the budget return NULL instead of falling back.
bool exhaustion_policy_fail();

// Installs a seccomp filter that answers each of syscalls with action
// (SCMP_ACT_ERRNO(e), SCMP_ACT_KILL_PROCESS, ...) and allows the rest; in
// every thread when all_threads. False if it could not.
bool filter_syscalls(uint32_t action, std::initializer_list<long> syscalls, bool all_threads = false);
// The same, failing memfd_secret(2) with err, as container runtimes do.
bool refuse_memfd_secret(int err, bool all_threads = false);

// One line of /proc/self/maps (or /proc/PID/maps), read by the secmem tool's
// parser (src/proc.h), with the VmFlags of its smaps entry when asked for.
struct Mapping : tool::Region {
  std::vector<std::string> vm_flags; // from smaps
  bool has_vm_flag(const std::string &flag) const;
};
std::vector<Mapping> read_mappings(int pid = 0);
// The mapping containing addr, if any.
bool find_mapping(const void *addr, Mapping *out, bool with_smaps = false, int pid = 0);

// Runs fn in a forked child; returns the child's exit status (0 = fn returned
// true). stderr_text, when given, receives everything the child wrote to stderr.
int run_in_child(const std::function<bool()> &fn, std::string *stderr_text = nullptr);

// fn run in a forked child whose stderr is a pipe: success when the child
// dies (does not return from fn) and what it wrote matches the regex
// (gtest's: POSIX extended). Used instead of gtest's death tests, whose stderr capture is a
// temporary file in fd 2's place, where secmem writes no lines by design.
testing::AssertionResult dies_saying(const std::function<void()> &fn, const std::string &pattern);
#define EXPECT_SECMEM_DEATH(statement, pattern) EXPECT_TRUE(::secmem::test::dies_saying([&] { statement; }, pattern))
// What fn writes to stderr, run in this process with fd 2 on a pipe (64 KiB at most).
std::string stderr_of(const std::function<void()> &fn);

// A program run by a test, with pipes on its three streams.
struct Result {
  int status = -1; // exit status, or 128 + signal
  std::string out;
  std::string err;
};
struct Child {
  int pid = -1;
  int in = -1;  // its stdin
  int out = -1; // its stdout
  int err = -1; // its stderr
};
// Starts argv (PATH searched) with extra "NAME=value" environment entries;
// in_child, when given, runs in the child just before the exec.
Child start(const std::vector<std::string> &argv, const std::vector<std::string> &env_extra = {},
            const std::function<void()> &in_child = {});
// Writes input to its stdin, closes it, collects its output and status.
Result finish(Child child, const std::string &input = "");
Result run(const std::vector<std::string> &argv, const std::vector<std::string> &env_extra = {},
           const std::string &input = "");

// The whole contents of a file; empty when it cannot be read.
std::string read_file(const std::string &path);

// Whether the n bytes at p are all zero. Reads freed blocks too, which the
// ASan build poisons: not checked by ASan.
bool all_zero(const void *p, size_t n);

// A TCP socket bound to 127.0.0.1 on a port the kernel picked; *addr gets
// the address. -1 on failure.
int bound_loopback_socket(sockaddr_in *addr);
// A port on 127.0.0.1 that was free a moment ago (*addr gets the address),
// as text for a command line; "" when none could be had.
std::string free_loopback_port(sockaddr_in *addr);
// Whether something accepts connections at addr within the given seconds.
bool wait_listening(const sockaddr_in &addr, int seconds);

// openssl genpkey's arguments for a test key: "RSA" (2048 bits), "EC"
// (P-256) or "Ed25519".
std::string genpkey_args(const std::string &type);
// A fresh key of that type in key, and a self-signed certificate for
// localhost in cert. False when openssl failed.
bool make_key_and_cert(const std::string &type, const std::string &key, const std::string &cert);

} // namespace secmem::test
