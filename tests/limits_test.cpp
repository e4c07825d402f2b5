// Process limits a program may set: under RLIMIT_FSIZE neither a memfd_secret
// file (sized with ftruncate) nor a diagnostic raises SIGXFSZ, which kills.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <fcntl.h>
#include <pthread.h>
#include <string>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "secmem/secmem.h"
#include "test_support.h"

using namespace secmem::test;

// stderr on a file and RLIMIT_FSIZE 0 (as OpenSSH's sandboxed child has it):
// the diagnostic is dropped instead of killing the process with SIGXFSZ.
TEST(FileSizeLimit, ADiagnosticOnAFullStderrFileDoesNotKill) {
  char path[] = "/tmp/secmem-fsize-XXXXXX";
  int file = mkstemp(path);
  ASSERT_GE(file, 0);
  int status = run_in_child([&] {
    dup2(file, STDERR_FILENO);
    rlimit zero{0, 0};
    if (setrlimit(RLIMIT_FSIZE, &zero) != 0) return false;
    setenv("SECMEM_BACKEND", "no-such-backend", 1); // a diagnostic at start-up
    void *p = secmem_malloc(32);
    secmem_free(p);
    return p != nullptr;
  });
  struct stat st {};
  fstat(file, &st);
  close(file);
  unlink(path);
  EXPECT_EQ(status, 0) << "128 + 25 is SIGXFSZ";
  EXPECT_EQ(st.st_size, 0);
}

// Below the limit the lines are written as usual; a memfd_secret file (2 MiB)
// would pass it, so the chunk falls back, with the reason.
TEST(FileSizeLimit, AChunkFallsBackAndDiagnosticsWithinTheLimitAreWritten) {
  char path[] = "/tmp/secmem-fsize-XXXXXX";
  int file = mkstemp(path);
  ASSERT_GE(file, 0);
  int status = run_in_child([&] {
    dup2(file, STDERR_FILENO);
    rlimit small{4096, 4096};
    if (setrlimit(RLIMIT_FSIZE, &small) != 0) return false;
    setenv("SECMEM_BACKEND", "no-such-backend", 1);
    void *p = secmem_malloc(32);
    bool mlock = std::string(secmem_backend_name()) == "mlock";
    secmem_free(p);
    return p != nullptr && mlock;
  });
  std::string text = read_file(path);
  close(file);
  unlink(path);
  EXPECT_EQ(status, 0);
  EXPECT_EQ(text, "secmem: SECMEM_BACKEND=no-such-backend is not one of auto|memfd_secret|mlock; using the default\n"
                  "secmem: memfd_secret unavailable (EFBIG: RLIMIT_FSIZE is below the size of a memfd_secret file); "
                  "falling back to mlock'ed anonymous memory (MADV_DONTDUMP) (set SECMEM_ON_EXHAUSTION=fail to "
                  "refuse instead)\n");
}

// A process that used up its PTHREAD_KEYS_MAX keys: the heap runs without
// thread caches (every operation takes the lock), says so once, and works.
TEST(ThreadKeys, NoKeyLeftMeansNoThreadCachesAndOneMessage) {
  std::string err;
  int status = run_in_child(
      [] {
        pthread_key_t key;
        while (pthread_key_create(&key, nullptr) == 0) {}
        bool ok = true;
        for (int i = 0; i < 1000 && ok; ++i) {
          auto *p = static_cast<char *>(secmem_malloc(32));
          ok = p != nullptr && secmem_owns(p);
          if (ok) p[31] = 1;
          secmem_free(p);
        }
        return ok;
      },
      &err);
  EXPECT_EQ(status, 0) << err;
  EXPECT_EQ(err, "secmem: cannot create a thread key for the thread caches (EAGAIN); every operation takes the heap "
                 "lock (slower)\n");
}
