// secure_string as a drop-in for std::string: every length error refused
// before anything is allocated, read or written; long random sequences of
// operations checked against std::string; the characters always in secret
// memory, and zero past size(); lines read from streams and file
// descriptors; equality that does not stop at the first difference.
#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <list>
#include <random>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <sys/mman.h>
#include <thread>
#include <unistd.h>
#include <unordered_set>
#include <vector>

#include "secmem/secure_alloc.hpp"
#include "test_support.h"

using namespace secmem::test;
using secmem::secure_string;
using namespace std::string_literals;
using namespace std::string_view_literals;

namespace {

constexpr size_t npos = secure_string::npos;

// The characters live in secret memory, and every byte from size() to
// capacity() (the terminator's place included) is zero.
testing::AssertionResult well_formed(const secure_string &s) {
  if (s.capacity() == 0 && s.empty() && !secmem_owns(s.data())) { // moved-from: no buffer
    if (s.data()[0] != '\0') return testing::AssertionFailure() << "moved-from data() is not \"\"";
    return testing::AssertionSuccess();
  }
  if (!secmem_owns(s.data())) return testing::AssertionFailure() << "data() is not secret memory";
  if (s.capacity() < s.size()) return testing::AssertionFailure() << "capacity below size";
  if (!all_zero(s.data() + s.size(), s.capacity() - s.size() + 1))
    return testing::AssertionFailure() << "a byte past size() is not zero";
  return testing::AssertionSuccess();
}

// A page nothing may read: a view over it that is ever dereferenced faults.
const char *unreadable_page() {
  static void *page = mmap(nullptr, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  return static_cast<const char *>(page);
}

// op must throw E and leave s exactly as it was (same buffer, contents,
// capacity); afterwards s grows normally and its neighbour is untouched.
template <typename E> void expect_refused(const std::function<void(secure_string &)> &op, const char *what) {
  SCOPED_TRACE(what);
  secure_string s("secret-value");
  secure_string neighbour("neighbour-secret");
  const char *buffer = s.data();
  size_t capacity = s.capacity();
  EXPECT_THROW(op(s), E);
  EXPECT_EQ(s.view(), "secret-value");
  EXPECT_EQ(s.data(), buffer);
  EXPECT_EQ(s.capacity(), capacity);
  EXPECT_TRUE(well_formed(s));
  s.append(100, 'y');
  s += "tail";
  EXPECT_EQ(s.size(), 12u + 100 + 4);
  EXPECT_EQ(neighbour.view(), "neighbour-secret");
  EXPECT_TRUE(well_formed(s));
}

} // namespace

// ---- lengths over max_size() ------------------------------------------------------

static_assert(secure_string::max_size() <= size_t{PTRDIFF_MAX});

TEST(SecureStringLimits, ReserveNposThrowsLengthError) {
  expect_refused<std::length_error>([](secure_string &s) { s.reserve(npos); }, "reserve(npos)");
  expect_refused<std::length_error>([](secure_string &s) { s.reserve(s.max_size() + 1); }, "reserve(max + 1)");
}

TEST(SecureStringLimits, ResizeNposThrowsLengthError) {
  expect_refused<std::length_error>([](secure_string &s) { s.resize(npos); }, "resize(npos)");
  expect_refused<std::length_error>([](secure_string &s) { s.resize(npos, 'x'); }, "resize(npos, c)");
  expect_refused<std::length_error>([](secure_string &s) { s.resize(s.max_size() + 1); }, "resize(max + 1)");
}

TEST(SecureStringLimits, FillConstructorOfNposThrowsLengthError) {
  secure_string neighbour("neighbour-secret");
  EXPECT_THROW(secure_string(npos, 'x'), std::length_error);
  EXPECT_THROW(secure_string(secure_string::max_size() + 1, 'x'), std::length_error);
  EXPECT_EQ(neighbour.view(), "neighbour-secret");
}

TEST(SecureStringLimits, AppendOfNCharactersThatWrapsThrowsLengthError) {
  expect_refused<std::length_error>([](secure_string &s) { s.append(npos, 'x'); }, "append(npos, c)");
  // size() + n wraps around to a small number.
  expect_refused<std::length_error>([](secure_string &s) { s.append(npos - s.size() + 2, 'x'); }, "wrapping");
  expect_refused<std::length_error>([](secure_string &s) { s.append(s.max_size() - s.size() + 1, 'x'); },
                                    "one over max_size()");
}

TEST(SecureStringLimits, TooLongTextIsRefusedBeforeItIsRead) {
  const char *page = unreadable_page();
  ASSERT_NE(page, MAP_FAILED);
  for (size_t n : {npos, npos - 1, secure_string::max_size() + 1, secure_string::max_size() - 3}) {
    std::string_view huge(page, n); // never dereferenced: reading it faults
    expect_refused<std::length_error>([huge](secure_string &s) { s.append(huge); }, "append(view)");
    expect_refused<std::length_error>([huge](secure_string &s) { s += huge; }, "+= view");
    expect_refused<std::length_error>([huge](secure_string &s) { s.append(huge.data(), huge.size()); }, "append(p, n)");
    expect_refused<std::length_error>([huge](secure_string &s) { s.insert(3, huge); }, "insert(pos, view)");
    expect_refused<std::length_error>([huge](secure_string &s) { s.replace(0, 1, huge); }, "replace(pos, n, view)");
    expect_refused<std::length_error>([huge](secure_string &s) { (void)(s + huge); }, "s + view");
    expect_refused<std::length_error>([huge](secure_string &s) { (void)(huge + s); }, "view + s");
    if (n > secure_string::max_size()) {
      expect_refused<std::length_error>([huge](secure_string &s) { s.assign(huge); }, "assign(view)");
      expect_refused<std::length_error>([huge](secure_string &s) { s.replace(s.begin(), s.end(), huge); },
                                        "replace(first, last, view)");
      EXPECT_THROW(secure_string{huge}, std::length_error);
    }
  }
}

TEST(SecureStringLimits, InsertAndReplaceGrowthPastMaxSizeThrowsLengthError) {
  expect_refused<std::length_error>([](secure_string &s) { s.insert(0, npos, 'x'); }, "insert(pos, npos, c)");
  expect_refused<std::length_error>([](secure_string &s) { s.insert(2, s.max_size() - s.size() + 1, 'x'); },
                                    "insert one over");
  expect_refused<std::length_error>([](secure_string &s) { s.insert(s.end(), npos, 'x'); }, "insert(it, npos, c)");
  expect_refused<std::length_error>([](secure_string &s) { s.replace(0, 1, npos, 'x'); }, "replace(pos, n, npos, c)");
  // Replacing 1 character: the result is one over max_size().
  expect_refused<std::length_error>([](secure_string &s) { s.replace(0, 1, s.max_size() - s.size() + 2, 'x'); },
                                    "replace one over");
  expect_refused<std::length_error>([](secure_string &s) { s.replace(s.begin(), s.end(), npos, 'x'); },
                                    "replace(first, last, npos, c)");
  expect_refused<std::length_error>([](secure_string &s) { s.assign(npos, 'x'); }, "assign(npos, c)");
}

TEST(SecureStringLimits, LengthsTheHeapCannotHoldThrowBadAllocAndChangeNothing) {
  expect_refused<std::bad_alloc>([](secure_string &s) { s.reserve(s.max_size()); }, "reserve(max_size())");
  expect_refused<std::bad_alloc>([](secure_string &s) { s.append(size_t{1} << 50, 'x'); }, "append 1 PiB");
  expect_refused<std::bad_alloc>([](secure_string &s) { s.replace(0, 3, size_t{1} << 50, 'x'); }, "replace 1 PiB");
}

TEST(SecureStringLimits, PositionsPastSizeThrowOutOfRange) {
  expect_refused<std::out_of_range>([](secure_string &s) { s.insert(13, "x"); }, "insert");
  expect_refused<std::out_of_range>([](secure_string &s) { s.insert(13, 2, 'x'); }, "insert fill");
  expect_refused<std::out_of_range>([](secure_string &s) { s.erase(13); }, "erase");
  expect_refused<std::out_of_range>([](secure_string &s) { s.replace(13, 1, "x"); }, "replace");
  expect_refused<std::out_of_range>([](secure_string &s) { s.replace(13, 1, 2, 'x'); }, "replace fill");
  expect_refused<std::out_of_range>([](secure_string &s) { s.append("abc"sv, 4); }, "append(view, pos)");
  expect_refused<std::out_of_range>([](secure_string &s) { (void)s.compare(13, 1, "x"); }, "compare");
  expect_refused<std::out_of_range>([](secure_string &s) { (void)s.substr(13); }, "substr");
  secure_string s("abc");
  s.insert(3, "d"); // size() itself is a valid position
  s.erase(4);
  s.replace(4, 10, "e");
  EXPECT_EQ(s.view(), "abcde");
}

// ---- the std::string oracle ----------------------------------------------------------

namespace {

// One run of random operations on a secure_string and a std::string together
// (and on a second pair, for swap, moves and operator+), comparing them after
// every step.
class Oracle {
public:
  explicit Oracle(uint64_t seed) : rng_(seed) {}

  void run(int steps) {
    for (step_ = 0; step_ < steps; ++step_) {
      int op = static_cast<int>(pick(0, 40));
      apply(op);
      longest_ = std::max(longest_, r_.size());
      if (::testing::Test::HasFatalFailure()) return;
      compare_all(op);
      if (::testing::Test::HasFailure()) {
        ADD_FAILURE() << "after step " << step_ << " (operation " << op << ")";
        return;
      }
    }
  }

private:
  size_t pick(size_t lo, size_t hi) { return std::uniform_int_distribution<size_t>(lo, hi)(rng_); }
  char letter() { return "abcxyz\0!"[pick(0, 7)]; }
  std::string text(size_t max_len = 12) {
    std::string t(pick(0, max_len), 'a');
    for (char &c : t) c = letter();
    return t;
  }
  // A position, sometimes past the end (then both must throw std::out_of_range).
  size_t position(size_t size) { return pick(0, 30) == 0 ? size + pick(1, 3) : pick(0, size); }
  size_t count() { return pick(0, 10) == 0 ? npos : pick(0, 8); }

  // Runs f on both strings; both throw out_of_range or neither does.
  template <typename F, typename G> void both(F on_secure, G on_std) {
    bool secure_threw = false;
    bool std_threw = false;
    try {
      on_secure();
    } catch (const std::out_of_range &) {
      secure_threw = true;
    }
    try {
      on_std();
    } catch (const std::out_of_range &) {
      std_threw = true;
    }
    ASSERT_EQ(secure_threw, std_threw) << "step " << step_;
    refusals_ += secure_threw ? 1 : 0;
  }

  void apply(int op) {
    secure_string &s = s_;
    std::string &r = r_;
    switch (op) {
    case 0: {
      std::string t = text();
      s.append(t);
      r.append(t);
      break;
    }
    case 1: {
      size_t n = pick(0, 20);
      char c = letter();
      s.append(n, c);
      r.append(n, c);
      break;
    }
    case 2: {
      char c = letter();
      s.push_back(c);
      r.push_back(c);
      break;
    }
    case 3:
      if (!r.empty()) {
        s.pop_back();
        r.pop_back();
      }
      break;
    case 4: {
      size_t pos = position(r.size());
      std::string t = text();
      both([&] { s.insert(pos, t); }, [&] { r.insert(pos, t); });
      break;
    }
    case 5: {
      size_t pos = position(r.size());
      size_t n = pick(0, 9);
      char c = letter();
      both([&] { s.insert(pos, n, c); }, [&] { r.insert(pos, n, c); });
      break;
    }
    case 6: {
      size_t pos = pick(0, r.size());
      char c = letter();
      auto it = s.insert(s.cbegin() + pos, c);
      auto jt = r.insert(r.cbegin() + static_cast<ptrdiff_t>(pos), c);
      ASSERT_EQ(it - s.begin(), jt - r.begin());
      break;
    }
    case 7: {
      size_t pos = pick(0, r.size());
      size_t n = pick(0, 6);
      char c = letter();
      auto it = s.insert(s.begin() + pos, n, c);
      auto jt = r.insert(r.begin() + static_cast<ptrdiff_t>(pos), n, c);
      ASSERT_EQ(it - s.begin(), jt - r.begin());
      break;
    }
    case 8: { // a contiguous range, and a list's (gathered first)
      size_t pos = pick(0, r.size());
      std::string t = text();
      std::list<char> l(t.begin(), t.end());
      if (pick(0, 1) == 0) {
        s.insert(s.begin() + pos, t.begin(), t.end());
        r.insert(r.begin() + static_cast<ptrdiff_t>(pos), t.begin(), t.end());
      } else {
        s.insert(s.begin() + pos, l.begin(), l.end());
        r.insert(r.begin() + static_cast<ptrdiff_t>(pos), l.begin(), l.end());
      }
      break;
    }
    case 9: {
      size_t pos = position(r.size());
      size_t n = count();
      both([&] { s.erase(pos, n); }, [&] { r.erase(pos, n); });
      break;
    }
    case 10:
      if (!r.empty()) {
        size_t pos = pick(0, r.size() - 1);
        auto it = s.erase(s.cbegin() + pos);
        auto jt = r.erase(r.cbegin() + static_cast<ptrdiff_t>(pos));
        ASSERT_EQ(it - s.begin(), jt - r.begin());
      }
      break;
    case 11: {
      size_t first = pick(0, r.size());
      size_t last = pick(first, r.size());
      auto it = s.erase(s.begin() + first, s.cbegin() + last);
      auto jt = r.erase(r.begin() + static_cast<ptrdiff_t>(first), r.begin() + static_cast<ptrdiff_t>(last));
      ASSERT_EQ(it - s.begin(), jt - r.begin());
      break;
    }
    case 12: {
      size_t pos = position(r.size());
      size_t n = count();
      std::string t = text();
      both([&] { s.replace(pos, n, t); }, [&] { r.replace(pos, n, t); });
      break;
    }
    case 13: {
      size_t pos = position(r.size());
      size_t n = count();
      size_t n2 = pick(0, 9);
      char c = letter();
      both([&] { s.replace(pos, n, n2, c); }, [&] { r.replace(pos, n, n2, c); });
      break;
    }
    case 14: {
      size_t first = pick(0, r.size());
      size_t last = pick(first, r.size());
      std::string t = text();
      s.replace(s.begin() + first, s.begin() + last, t);
      r.replace(r.begin() + static_cast<ptrdiff_t>(first), r.begin() + static_cast<ptrdiff_t>(last), t);
      break;
    }
    case 15: {
      size_t n = pick(0, r.size() + 20);
      if (pick(0, 1) == 0) {
        s.resize(n);
        r.resize(n);
      } else {
        char c = letter();
        s.resize(n, c);
        r.resize(n, c);
      }
      break;
    }
    case 16: {
      size_t n = pick(0, 200);
      s.reserve(n);
      r.reserve(n);
      ASSERT_GE(s.capacity(), n);
      break;
    }
    case 17:
      s.shrink_to_fit();
      r.shrink_to_fit();
      break;
    case 18:
      if (pick(0, 3) == 0) {
        s.clear();
        r.clear();
      }
      break;
    case 19: {
      std::string t = text(30);
      s.assign(t);
      r.assign(t);
      break;
    }
    case 20: {
      size_t n = pick(0, 30);
      char c = letter();
      s.assign(n, c);
      r.assign(n, c);
      break;
    }
    case 21: {
      size_t pos = position(r.size());
      size_t n = count();
      both([&] { s = s.substr(pos, n); }, [&] { r = r.substr(pos, n); });
      break;
    }
    case 22: { // operator+, every overload, into the main pair
      std::string t = text();
      char c = letter();
      switch (pick(0, 11)) {
      case 0:
        s = s + t;
        r = r + t;
        break;
      case 1:
        s = t + s;
        r = t + r;
        break;
      case 2:
        s = s + t.c_str();
        r = r + t.c_str();
        break;
      case 3:
        s = t.c_str() + s;
        r = t.c_str() + r;
        break;
      case 4:
        s = s + c;
        r = r + c;
        break;
      case 5:
        s = c + s;
        r = c + r;
        break;
      case 6:
        s = s + s2_;
        r = r + r2_;
        break;
      case 7:
        s = std::move(s) + t;
        r = std::move(r) + t;
        break;
      case 8:
        s = t + std::move(s);
        r = t + std::move(r);
        break;
      case 9:
        s = c + std::move(s);
        r = c + std::move(r);
        break;
      case 10:
        s = secure_string(s2_) + std::move(s);
        r = std::string(r2_) + std::move(r);
        break;
      default:
        s = std::move(s) + secure_string(t);
        r = std::move(r) + std::string(t);
        break;
      }
      break;
    }
    case 23:
      if (pick(0, 1) == 0) {
        s.swap(s2_);
      } else {
        swap(s, s2_);
      }
      r.swap(r2_);
      break;
    case 24: // copies and moves between the pairs (the second may be left moved-from)
      switch (pick(0, 3)) {
      case 0:
        s2_ = s;
        r2_ = r;
        break;
      case 1:
        s = secure_string(s2_);
        r = std::string(r2_);
        break;
      case 2:
        s = std::move(s2_);
        r = std::move(r2_);
        r2_.clear(); // std::string leaves it unspecified; secure_string empty
        break;
      default: {
        secure_string moved(std::move(s));
        std::string moved_r(std::move(r));
        r.clear();
        if (pick(0, 1) == 0) {
          s = std::move(moved);
          r = std::move(moved_r);
        } else {
          s2_ = std::move(moved);
          r2_ = std::move(moved_r);
        }
        break;
      }
      }
      break;
    case 25: { // self-referencing: insert a piece of itself
      size_t pos = pick(0, r.size());
      size_t from = pick(0, r.size());
      size_t n = pick(0, r.size() - from);
      s.insert(pos, s.view().substr(from, n));
      r.insert(pos, r.substr(from, n));
      break;
    }
    case 26: // self-append, whole
      s.append(s);
      r.append(r);
      break;
    case 27: { // replace with a view into itself
      size_t pos = pick(0, r.size());
      size_t n = count();
      size_t from = pick(0, r.size());
      size_t len = pick(0, r.size() - from);
      s.replace(pos, n, s.view().substr(from, len));
      r.replace(pos, n, std::string(r, from, len));
      break;
    }
    case 28: { // assign a piece of itself
      size_t from = pick(0, r.size());
      size_t n = count();
      s.assign(s.view().substr(from, n));
      r.assign(r.substr(from, n));
      break;
    }
    case 29: { // insert its own range at an iterator
      size_t pos = pick(0, r.size());
      size_t from = pick(0, r.size());
      size_t to = pick(from, r.size());
      s.insert(s.begin() + pos, s.begin() + from, s.begin() + to);
      std::string piece = r.substr(from, to - from);
      r.insert(pos, piece);
      break;
    }
    case 30: { // replace a range by its own range
      size_t first = pick(0, r.size());
      size_t last = pick(first, r.size());
      size_t from = pick(0, r.size());
      size_t to = pick(from, r.size());
      s.replace(s.begin() + first, s.begin() + last, s.cbegin() + from, s.cbegin() + to);
      std::string piece = r.substr(from, to - from);
      r.replace(first, last - first, piece);
      break;
    }
    case 31: {
      std::string t = text();
      char c = letter();
      s += t;
      s += c;
      r += t;
      r += c;
      break;
    }
    case 32: {
      std::string t = text();
      size_t pos = position(t.size());
      size_t n = count();
      both([&] { s.append(t, pos, n); }, [&] { r.append(t, pos, n); });
      break;
    }
    case 33: { // the second pair grows too, for comparisons
      std::string t = text();
      s2_.append(t);
      r2_.append(t);
      if (r2_.size() > 40) {
        s2_.erase(0, 20);
        r2_.erase(0, 20);
      }
      break;
    }
    case 34: { // replace by iterator range with a fill
      size_t first = pick(0, r.size());
      size_t last = pick(first, r.size());
      size_t n = pick(0, 9);
      char c = letter();
      s.replace(s.cbegin() + first, s.cend() - (r.size() - last), n, c);
      r.replace(r.cbegin() + static_cast<ptrdiff_t>(first), r.cend() - static_cast<ptrdiff_t>(r.size() - last), n, c);
      break;
    }
    case 35: { // insert / replace with a substring of another text
      std::string t = text();
      size_t pos = pick(0, r.size());
      size_t pos2 = position(t.size());
      size_t n2 = count();
      both([&] { s.insert(pos, t, pos2, n2); }, [&] { r.insert(pos, t, pos2, n2); });
      break;
    }
    case 36: { // a constructor from a range, and from a substring
      size_t pos = position(r.size());
      size_t n = count();
      both([&] { s = secure_string(s.view(), pos, n); }, [&] { r = std::string(r, pos, n); });
      break;
    }
    default: // keep lengths moderate
      if (r.size() > 300) {
        size_t n = pick(100, r.size());
        s.erase(0, n);
        r.erase(0, n);
      }
      break;
    }
  }

  void compare_pair(const secure_string &s, const std::string &r) {
    ASSERT_EQ(s.size(), r.size());
    ASSERT_EQ(s.view(), std::string_view(r));
    ASSERT_EQ(s.c_str()[s.size()], '\0');
    ASSERT_TRUE(well_formed(s));
  }

  void compare_all(int op) {
    (void)op;
    compare_pair(s_, r_);
    compare_pair(s2_, r2_);
    if (::testing::Test::HasFailure()) return;
    const secure_string &s = s_;
    const std::string &r = r_;
    // A needle that often matches: a piece of the string, or random text.
    std::string needle;
    if (!r.empty() && pick(0, 1) == 0) {
      size_t from = pick(0, r.size() - 1);
      needle = r.substr(from, pick(0, 4));
    } else {
      needle = text(3);
    }
    size_t pos = pick(0, 4) == 0 ? npos : pick(0, r.size() + 2);
    char c = letter();
    EXPECT_EQ(s.find(needle, pos), r.find(needle, pos));
    EXPECT_EQ(s.find(c, pos), r.find(c, pos));
    EXPECT_EQ(s.rfind(needle, pos), r.rfind(needle, pos));
    EXPECT_EQ(s.rfind(c, pos), r.rfind(c, pos));
    EXPECT_EQ(s.find_first_of(needle, pos), r.find_first_of(needle, pos));
    EXPECT_EQ(s.find_last_of(needle, pos), r.find_last_of(needle, pos));
    EXPECT_EQ(s.find_first_not_of(needle, pos), r.find_first_not_of(needle, pos));
    EXPECT_EQ(s.find_last_not_of(needle, pos), r.find_last_not_of(needle, pos));
    EXPECT_EQ(s.find_first_of(c, pos), r.find_first_of(c, pos));
    EXPECT_EQ(s.find_last_not_of(c, pos), r.find_last_not_of(c, pos));
    EXPECT_EQ(s.find(needle.data(), pos, needle.size()), r.find(needle.data(), pos, needle.size()));
    EXPECT_EQ(s.starts_with(needle), r.starts_with(needle));
    EXPECT_EQ(s.ends_with(needle), r.ends_with(needle));
    EXPECT_EQ(s.starts_with(c), r.starts_with(c));
    EXPECT_EQ(s.ends_with(c), r.ends_with(c));
    EXPECT_EQ(s.contains(needle), r.find(needle) != std::string::npos);
    EXPECT_EQ(s.compare(needle) < 0, r.compare(needle) < 0);
    EXPECT_EQ(s.compare(needle) == 0, r.compare(needle) == 0);
    EXPECT_EQ(s == needle, r == needle);
    EXPECT_EQ(s == s2_, r == r2_);
    EXPECT_EQ(s != s2_, r != r2_);
    EXPECT_EQ(s < s2_, r < r2_);
    EXPECT_EQ((s <=> needle) == 0, (r <=> needle) == 0);
    EXPECT_EQ(std::hash<secure_string>{}(s), std::hash<std::string>{}(r));
    if (!r.empty()) {
      EXPECT_EQ(s.front(), r.front());
      EXPECT_EQ(s.back(), r.back());
      EXPECT_TRUE(std::equal(s.rbegin(), s.rend(), r.rbegin(), r.rend()));
    }
  }

public:
  size_t longest_ = 0; // the run reached long strings
  int refusals_ = 0;   // and positions past the end

private:
  std::mt19937_64 rng_;
  int step_ = 0;
  secure_string s_, s2_;
  std::string r_, r2_;
};

} // namespace

TEST(SecureStringOracle, RandomOperationsMatchStdString) {
  for (uint64_t seed : {1u, 2u, 3u, 20240601u}) {
    SCOPED_TRACE(testing::Message() << "seed " << seed);
    Oracle oracle(seed);
    oracle.run(20000);
    if (HasFailure()) return;
    EXPECT_GT(oracle.longest_, 200u);
    EXPECT_GT(oracle.refusals_, 100);
  }
}

// ---- where the characters live ------------------------------------------------------

TEST(SecureStringMemory, EveryResultIsInSecretMemory) {
  secure_string a("left");
  secure_string b("right");
  std::string plain = "plain";
  const char *text = "text";
  std::vector<secure_string> results;
  results.push_back(a + b);
  results.push_back(a + plain);
  results.push_back(plain + a);
  results.push_back(a + text);
  results.push_back(text + a);
  results.push_back(a + 'c');
  results.push_back('c' + a);
  results.push_back(secure_string("x") + b);
  results.push_back(a + secure_string("y"));
  results.push_back(secure_string("x") + secure_string("y"));
  results.push_back(secure_string("x") + plain);
  results.push_back(plain + secure_string("y"));
  results.push_back(secure_string("x") + 'c');
  results.push_back('c' + secure_string("y"));
  results.push_back(a.substr(1, 2));
  results.push_back(secure_string(plain.begin(), plain.end()));
  results.push_back(secure_string({'a', 'b'}));
  for (const secure_string &r : results) EXPECT_TRUE(well_formed(r)) << r.view();
  EXPECT_EQ(results[0], "leftright");
  EXPECT_EQ(results[2], "plainleft");
  EXPECT_EQ(results[6], "cleft");
  EXPECT_EQ(results[11], "plainy");
}

TEST(SecureStringMemory, AnRvalueOperandLendsItsBuffer) {
  secure_string a("abc");
  a.reserve(100);
  const char *buffer = a.data();
  secure_string joined = std::move(a) + "def";
  EXPECT_EQ(joined.data(), buffer);
  EXPECT_EQ(joined, "abcdef");
  secure_string b("xyz");
  b.reserve(100);
  buffer = b.data();
  secure_string front = "uvw" + std::move(b);
  EXPECT_EQ(front.data(), buffer);
  EXPECT_EQ(front, "uvwxyz");
}

// ---- zeroing ---------------------------------------------------------------------------

TEST(SecureStringZeroing, ErasedAndReplacedCharactersAreZeroed) {
  secure_string s("0123456789abcdefghijklmnopqrstuvwxyz");
  const char *buffer = s.data();
  s.erase(5, 10);
  EXPECT_EQ(s, "01234fghijklmnopqrstuvwxyz");
  EXPECT_TRUE(well_formed(s));
  s.erase(s.begin());
  s.erase(s.begin() + 3, s.end() - 5);
  EXPECT_EQ(s, "123vwxyz");
  EXPECT_TRUE(well_formed(s));
  s.replace(0, 6, "AB");
  EXPECT_EQ(s, "AByz");
  EXPECT_TRUE(well_formed(s));
  s.replace(s.begin(), s.end(), 1, '!');
  EXPECT_EQ(s, "!");
  EXPECT_TRUE(well_formed(s));
  s.resize(0);
  EXPECT_TRUE(all_zero(s.data(), s.capacity() + 1));
  EXPECT_EQ(s.data(), buffer); // all in place: the zeroing was not the heap's
}

// ---- the rest of std::string's interface ----------------------------------------------

TEST(SecureStringApi, OverloadsResolveAsStdStringsDo) {
  secure_string s;
  s.insert(0, 3, 'x'); // a literal 0 is a position, not a null iterator
  s.insert(0, "ab");
  s.insert(1, "QRS", 2);
  s.append(0, 'z');
  s.append("tail", 2);
  EXPECT_EQ(s, "aQRbxxxta");
  s.erase(0, 1);
  s.replace(0, 2, "__");
  s.replace(0, 1, 2, '-');
  EXPECT_EQ(s, "--_bxxxta");
  s.erase(7);
  EXPECT_EQ(s, "--_bxxx");
  EXPECT_EQ(s.compare(0, 3, "--_"), 0);
  EXPECT_EQ(s.compare(0, 3, "--_zz", 3), 0);
  EXPECT_LT(s.compare("z"), 0);
  s.assign("text", 2);
  EXPECT_EQ(s, "te");
  s = 'q';
  EXPECT_EQ(s, "q");
  s = {'a', 'b', 'c'};
  EXPECT_EQ(s, "abc");
  s.insert(s.end(), {'d', 'e'});
  s.replace(s.begin(), s.begin() + 1, {'A'});
  EXPECT_EQ(s, "Abcde");
  const secure_string &c = s;
  EXPECT_EQ(c.front(), 'A');
  EXPECT_EQ(c.back(), 'e');
  EXPECT_EQ(std::string(c.rbegin(), c.rend()), "edcbA");
  EXPECT_EQ(std::string(s.crbegin(), s.crend()), "edcbA");
  char out[3] = {};
  EXPECT_EQ(s.copy(out, 3, 1), 3u);
  EXPECT_EQ(std::string_view(out, 3), "bcd");
  EXPECT_TRUE(s.starts_with("Ab") && s.ends_with('e') && s.contains("cd") && !s.contains('z'));
  EXPECT_EQ(s.find_first_not_of("Ab"), 2u);
  secure_string w("Abcde");
  EXPECT_TRUE(s == w);
  EXPECT_TRUE("Abcde" == s);
  EXPECT_TRUE(s == std::string("Abcde"));
  std::unordered_set<secure_string> set;
  set.insert(secure_string("k1"));
  set.insert(secure_string("k2"));
  EXPECT_EQ(set.count(secure_string("k1")), 1u);
  EXPECT_EQ(set.count(secure_string("k3")), 0u);
}

TEST(SecureStringApi, MovedFromStringsAcceptEveryOperation) {
  for (int op = 0; op < 6; ++op) {
    secure_string a("moved");
    secure_string b = std::move(a);
    switch (op) {
    case 0: a.insert(0, "x"); break;
    case 1: a.insert(a.begin(), 'x'); break;
    case 2: a.replace(0, 5, "x"); break;
    case 3: a.append(1, 'x'); break;
    case 4: a = a + "x"; break;
    default: a.assign({'x'}); break;
    }
    EXPECT_EQ(a, "x") << op;
    EXPECT_TRUE(well_formed(a)) << op;
    secure_string c = std::move(b);
    b.erase(); // nothing to erase, and no buffer needed
    EXPECT_TRUE(b.empty());
  }
}

// A moved-from string's terminator may be written with CharT(), as
// std::string's may (s[s.size()] = '\0', *s.data() = '\0', a copy of the
// terminator into data()): data() was a read-only "", and each SIGSEGV'd.
TEST(SecureStringApi, AMovedFromStringsTerminatorIsWritable) {
  secure_string a("moved");
  secure_string b = std::move(a);
  a[a.size()] = '\0';
  *a.data() = '\0';
  std::memcpy(a.data(), "", a.size() + 1);
  EXPECT_EQ(a.c_str()[0], '\0');
  EXPECT_TRUE(a.empty());
  EXPECT_TRUE(well_formed(a));
  secmem::secure_wstring w(L"wide");
  secmem::secure_wstring v = std::move(w);
  w[0] = L'\0';
  EXPECT_EQ(w.data()[0], L'\0');
  // Two threads, each writing the terminator of its own moved-from string:
  // no data race (ThreadSanitizer found one on a buffer shared by the process).
  auto work = [] {
    for (int i = 0; i < 200; ++i) {
      secure_string from("moved"), to(std::move(from));
      from[from.size()] = '\0';
    }
  };
  std::thread first(work), second(work);
  first.join();
  second.join();
}

// ---- reading lines ---------------------------------------------------------------------------

TEST(SecureStringGetline, ReadsLinesLikeStdGetline) {
  std::istringstream in("first\nsecond\n\nlast");
  secure_string line("old contents");
  ASSERT_TRUE(secmem::getline(in, line));
  EXPECT_EQ(line, "first");
  EXPECT_TRUE(well_formed(line));
  ASSERT_TRUE(getline(in, line)); // found by argument-dependent lookup
  EXPECT_EQ(line, "second");
  ASSERT_TRUE(secmem::getline(in, line));
  EXPECT_EQ(line, "");
  ASSERT_TRUE(secmem::getline(in, line)); // the last line has no newline: eofbit, not failbit
  EXPECT_EQ(line, "last");
  EXPECT_TRUE(in.eof());
  EXPECT_FALSE(in.fail());
  EXPECT_FALSE(secmem::getline(in, line));
  EXPECT_TRUE(in.fail());
}

TEST(SecureStringGetline, StopsAtTheDelimiterGiven) {
  std::istringstream in("user:hunter2:rest");
  secure_string field;
  ASSERT_TRUE(secmem::getline(in, field, ':'));
  EXPECT_EQ(field, "user");
  ASSERT_TRUE(secmem::getline(in, field, ':'));
  EXPECT_EQ(field, "hunter2");
  std::string rest;
  std::getline(in, rest);
  EXPECT_EQ(rest, "rest");
}

TEST(SecureStringGetline, EmptyInputSetsFailbitAndEofbit) {
  std::istringstream in("");
  secure_string line("x");
  EXPECT_FALSE(secmem::getline(in, line));
  EXPECT_TRUE(in.fail());
  EXPECT_TRUE(in.eof());
  EXPECT_TRUE(line.empty());
}

TEST(SecureStringGetline, WideStreams) {
  std::wistringstream in(L"wide line\nnext");
  secmem::secure_wstring line;
  ASSERT_TRUE(secmem::getline(in, line));
  EXPECT_EQ(line, L"wide line");
  EXPECT_TRUE(secmem_owns(line.data()));
}

namespace {
struct Pipe {
  int fds[2] = {-1, -1};
  Pipe() { EXPECT_EQ(pipe(fds), 0); }
  ~Pipe() {
    for (int fd : fds)
      if (fd >= 0) close(fd);
  }
  void write_all(std::string_view text) { ASSERT_EQ(write(fds[1], text.data(), text.size()), ssize_t(text.size())); }
  void close_write() {
    close(fds[1]);
    fds[1] = -1;
  }
};
} // namespace

TEST(SecureStringReadLine, ReadsExactlyUpToTheDelimiter) {
  Pipe p;
  p.write_all("hunter2\nnext line\n");
  secure_string password("previous");
  EXPECT_EQ(secmem::read_line(p.fds[0], password), 8);
  EXPECT_EQ(password, "hunter2");
  EXPECT_TRUE(well_formed(password));
  // What follows the delimiter is still in the pipe.
  char rest[32] = {};
  EXPECT_EQ(read(p.fds[0], rest, sizeof rest), 10);
  EXPECT_EQ(std::string_view(rest, 10), "next line\n");
}

TEST(SecureStringReadLine, LastLineEndOfInputAndEmptyLines) {
  Pipe p;
  p.write_all("\nab:cd\nlast");
  p.close_write();
  secure_string line;
  EXPECT_EQ(secmem::read_line(p.fds[0], line), 1); // an empty line
  EXPECT_EQ(line, "");
  EXPECT_EQ(secmem::read_line(p.fds[0], line, ':'), 3);
  EXPECT_EQ(line, "ab");
  EXPECT_EQ(secmem::read_line(p.fds[0], line), 3);
  EXPECT_EQ(line, "cd");
  EXPECT_EQ(secmem::read_line(p.fds[0], line), 4); // no delimiter before the end
  EXPECT_EQ(line, "last");
  EXPECT_EQ(secmem::read_line(p.fds[0], line), 0); // the end, nothing read
  EXPECT_TRUE(line.empty());
  EXPECT_TRUE(well_formed(line));
}

TEST(SecureStringReadLine, ErrorsReturnMinusOneWithErrno) {
  secure_string line("stale");
  errno = 0;
  EXPECT_EQ(secmem::read_line(-1, line), -1);
  EXPECT_EQ(errno, EBADF);
  EXPECT_TRUE(line.empty());
  EXPECT_TRUE(well_formed(line));
}

TEST(SecureStringReadLine, LongLinesGrowInSecretMemory) {
  Pipe p;
  std::string long_line(5000, 'k');
  for (size_t i = 0; i < long_line.size(); ++i) long_line[i] = static_cast<char>('a' + i % 26);
  p.write_all(long_line + "\n");
  secure_string line;
  EXPECT_EQ(secmem::read_line(p.fds[0], line), 5001);
  EXPECT_EQ(line, long_line);
  EXPECT_TRUE(well_formed(line));
}

// ---- equality that does not stop at the first difference ---------------------------------
// Correctness only: timing is not tested here.

TEST(ConstantTimeEquality, SecureStringEquality) {
  secure_string a("correct horse battery staple");
  secure_string same("correct horse battery staple");
  secure_string first("Correct horse battery staple");
  secure_string last("correct horse battery staplE");
  secure_string shorter("correct horse battery stapl");
  EXPECT_TRUE(a == same);
  EXPECT_FALSE(a != same);
  EXPECT_FALSE(a == first);
  EXPECT_FALSE(a == last);
  EXPECT_FALSE(a == shorter);
  EXPECT_FALSE(shorter == a);
  EXPECT_TRUE(a == "correct horse battery staple"sv);
  EXPECT_FALSE(a == "correct horse battery staplE"sv);
  EXPECT_TRUE(secure_string() == secure_string(""));
  EXPECT_TRUE(secure_string() == std::string_view());
  secure_string embedded("a\0b", 3);
  EXPECT_FALSE(embedded == secure_string("a\0c", 3));
  EXPECT_TRUE(secmem::secure_wstring(L"w\u00e9") == secmem::secure_wstring(L"w\u00e9"));
  EXPECT_FALSE(secmem::secure_wstring(L"w\u00e9") == secmem::secure_wstring(L"w\u00e8"));
}

TEST(ConstantTimeEquality, ByteVectorsAndSpans) {
  for (size_t n = 0; n < 40; ++n) {
    secmem::secure_vector<std::byte> a(n);
    for (size_t i = 0; i < n; ++i) a[i] = static_cast<std::byte>(i * 37 + 1);
    secmem::secure_vector<std::byte> b = a;
    EXPECT_TRUE(secmem::equal(a, b)) << n;
    EXPECT_TRUE(secmem::constant_time_equal(a, b)) << n;
    for (size_t i = 0; i < n; ++i) {
      b[i] ^= std::byte{0x80};
      EXPECT_FALSE(secmem::equal(a, b)) << n << " differ at " << i;
      b[i] ^= std::byte{0x80};
    }
    b.push_back(std::byte{0});
    EXPECT_FALSE(secmem::equal(a, b)) << "lengths " << n << " and " << n + 1;
  }
  secmem::secure_vector<uint32_t> words = {1, 2, 3};
  secmem::secure_vector<uint32_t> other = {1, 2, 4};
  EXPECT_TRUE(secmem::equal(words, words));
  EXPECT_FALSE(secmem::equal(words, other));
  EXPECT_TRUE(secmem::constant_time_equal({}, {}));
}
