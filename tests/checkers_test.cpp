// The secret heap tells AddressSanitizer and valgrind what it does, so that
// a use-after-free or an over-read of a secret is reported by the tools
// people already run (tests/misuse.c holds the bugs).
#include <gtest/gtest.h>

#include <csignal>

#include "test_support.h"

using namespace secmem::test;

// An ASan-instrumented program linked against the ordinary libsecmem.so: the
// library finds the program's ASan runtime and poisons freed blocks and slack.
TEST(AddressSanitizer, ReportsUseAfterFreeOfASecret) {
  Result r = run({MISUSE_ASAN_PATH, "uaf"});
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.err.find("ERROR: AddressSanitizer: use-after-poison"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("READ of size 1"), std::string::npos) << r.err;
}

TEST(AddressSanitizer, ReportsAnOverReadOfASecret) {
  Result r = run({MISUSE_ASAN_PATH, "overflow"});
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.err.find("ERROR: AddressSanitizer: use-after-poison"), std::string::npos) << r.err;
}

TEST(AddressSanitizer, CleanProgramRunsClean) {
  Result r = run({MISUSE_ASAN_PATH, "clean"});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "done 4\n");
}

// valgrind does not know memfd_secret (ENOSYS), so the heap runs on its
// mlock fallback there; the client requests are the same.
Result under_valgrind(const char *mode) {
  return run({VALGRIND_PATH, "--error-exitcode=99", "--leak-check=no", MISUSE_PATH, mode});
}

TEST(Valgrind, ReportsUseAfterFreeOfASecret) {
  Result r = under_valgrind("uaf");
  EXPECT_EQ(r.status, 99) << r.err;
  EXPECT_NE(r.err.find("Invalid read of size 1"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("16 bytes inside a block of size 32 free'd"), std::string::npos) << r.err;
}

TEST(Valgrind, ReportsAnOverReadOfASecret) {
  Result r = under_valgrind("overflow");
  EXPECT_EQ(r.status, 99) << r.err;
  EXPECT_NE(r.err.find("Invalid read of size 1"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("0 bytes after a block of size 20 alloc'd"), std::string::npos) << r.err;
}

TEST(Valgrind, CleanProgramRunsClean) {
  Result r = under_valgrind("clean");
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.err.find("ERROR SUMMARY: 0 errors"), std::string::npos) << r.err;
}

// secmem's own check: a double free aborts with its line, in a process that
// has only ever had one thread (the live mark cleared by an unlocked
// cmpxchg) as in one that has made a thread (a locked exchange), for a block
// of a thread's cache, one of the central lists' sizes and a large block.
TEST(SecmemChecks, DoubleFreeAbortsWithOneThreadAndAfterASecond) {
  for (const char *size : {"32", "4096", "100000"})
    for (bool thread : {false, true}) {
      Result r = thread ? run({MISUSE_PATH, "double-free", size, "thread"}) : run({MISUSE_PATH, "double-free", size});
      EXPECT_EQ(r.status, 128 + SIGABRT) << size << " " << thread << ": " << r.err;
      EXPECT_EQ(r.out, thread ? "has had threads\n" : "single-threaded\n") << size;
      EXPECT_NE(r.err.find("secmem: double free of 0x"), std::string::npos) << size << " " << thread << ": " << r.err;
    }
}

// A signal handler that frees the block the code it interrupted is freeing,
// in a process with one thread: one of the two frees aborts, wherever the
// signal lands (a mark cleared by a plain load and store let both frees
// through in 183 children of 5,000 at 32 B, and at 20 B it ended as a
// false overflow report: found by the adversarial review).
TEST(SecmemChecks, DoubleFreeRacingWithASignalHandlerAborts) {
  for (const char *size : {"32", "20", "1024"})
    for (int child = 0; child < 150; ++child) {
      Result r = run({MISUSE_PATH, "double-free-signal", size});
      ASSERT_EQ(r.status, 128 + SIGABRT) << size << " child " << child << ": " << r.err;
      ASSERT_NE(r.err.find("secmem: double free of 0x"), std::string::npos)
          << size << " child " << child << ": " << r.err;
    }
}
