// Configuration: parsed from an environ-style array, declared once, documented.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>

#include "config/config.h"
#include "test_support.h"

using namespace secmem;
using secmem::test::stderr_of;

namespace {
Config parse(std::initializer_list<const char *> vars, bool secure = false) {
  std::vector<const char *> env(vars);
  env.push_back(nullptr);
  return parse_config(env.data(), secure);
}
} // namespace

TEST(Config, DefaultsAreTheFirstChoice) {
  Config config = parse({"PATH=/bin"});
  EXPECT_EQ(config.backend, Backend::kAuto);
  EXPECT_EQ(config.on_exhaustion, OnExhaustion::kFallback);
  EXPECT_EQ(config.release, Release::kNever);
  EXPECT_FALSE(config.verbose);
}

TEST(Config, ParsesEveryChoice) {
  Config config =
      parse({"SECMEM_BACKEND=mlock", "SECMEM_ON_EXHAUSTION=fail", "SECMEM_RELEASE=empty", "SECMEM_VERBOSE=1"});
  EXPECT_EQ(config.backend, Backend::kMlock);
  EXPECT_EQ(config.on_exhaustion, OnExhaustion::kFail);
  EXPECT_EQ(config.release, Release::kEmpty);
  EXPECT_TRUE(config.verbose);
  EXPECT_EQ(parse({"SECMEM_BACKEND=memfd_secret"}).backend, Backend::kMemfdSecret);
}

TEST(Config, NamePrefixesDoNotMatch) {
  EXPECT_EQ(parse({"SECMEM_BACKENDX=mlock", "XSECMEM_BACKEND=mlock"}).backend, Backend::kAuto);
}

TEST(Config, BadValueKeepsTheDefaultAndSaysSo) {
  Config config;
  std::string err = stderr_of([&] { config = parse({"SECMEM_ON_EXHAUSTION=fial"}); });
  EXPECT_EQ(config.on_exhaustion, OnExhaustion::kFallback);
  EXPECT_EQ(err, "secmem: SECMEM_ON_EXHAUSTION=fial is not one of fallback|fail; using the default\n");
}

// A value is echoed with its control bytes escaped (a newline in it would
// end the line and forge another "secmem:" line on stderr or in syslog), and
// cut when long, so that the rest of the line still says what happens.
TEST(Config, BadValueIsEchoedEscapedAndCut) {
  std::string err = stderr_of([] { parse({"SECMEM_BACKEND=x\nsecmem: fake line\x1b[2J"}); });
  EXPECT_EQ(err, "secmem: SECMEM_BACKEND=x\\x0asecmem: fake line\\x1b[2J is not one of auto|memfd_secret|mlock; "
                 "using the default\n");
  std::string long_value = "SECMEM_BACKEND=" + std::string(5000, 'a');
  err = stderr_of([&] { parse({long_value.c_str()}); });
  EXPECT_EQ(err, "secmem: SECMEM_BACKEND=" + std::string(64, 'a') +
                     "... is not one of auto|memfd_secret|mlock; using the default\n");
}

TEST(Config, SetuidProgramsIgnoreTheEnvironment) {
  Config config = parse({"SECMEM_BACKEND=mlock", "SECMEM_ON_EXHAUSTION=fail"}, /*secure=*/true);
  EXPECT_EQ(config.backend, Backend::kAuto);
  EXPECT_EQ(config.on_exhaustion, OnExhaustion::kFallback);
  EXPECT_TRUE(config.environment_ignored);
  EXPECT_FALSE(parse({"PATH=/bin"}, true).environment_ignored);
}

TEST(Config, PrintShowsEveryOption) {
  EXPECT_EQ(stderr_of([] { print_config(parse({"SECMEM_BACKEND=mlock"})); }),
            "secmem: config SECMEM_BACKEND=mlock SECMEM_ON_EXHAUSTION=fallback "
            "SECMEM_RELEASE=never SECMEM_NODUMP=fallback SECMEM_VERBOSE=0\n");
}

// The README's configuration table is the user's only view of the options:
// every declared option must be there with its choices.
TEST(Config, ReadmeDocumentsEveryOption) {
  std::ifstream file(SECMEM_SOURCE_DIR "/README.md");
  ASSERT_TRUE(file.good());
  std::stringstream text;
  text << file.rdbuf();
  std::string readme = text.str();
  for (int i = 0; i < kOptionCount; ++i) {
    if (kOptions[i].values == nullptr) { // a text option, unset by default
      std::string row = std::string("| `") + kOptions[i].name + "` | unset |";
      EXPECT_NE(readme.find(row), std::string::npos) << "README lacks the row starting: " << row;
      continue;
    }
    std::string values = kOptions[i].values;
    std::string defaults = values.substr(0, values.find('|'));
    std::string row = std::string("| `") + kOptions[i].name + "` | `" + defaults + "` |";
    EXPECT_NE(readme.find(row), std::string::npos) << "README lacks the row starting: " << row;
    EXPECT_NE(readme.find(values), std::string::npos) << "README lacks the choices " << values;
  }
}
