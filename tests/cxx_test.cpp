// The C++ API: secure_alloc with every standard container, secure_string,
// smart pointers and the pmr resource. Every byte of contents must be
// secmem_owns-ed, and every released buffer zeroed.
#include <gtest/gtest.h>

#include <memory_resource>
#include <set>
#include <string>
#include <type_traits>

#include "block_model.h"
#include "secmem/secure_alloc.hpp"
#include "test_support.h"

using namespace secmem::test;
using secmem::secure_alloc;

namespace {

// Throws from its constructor once `countdown` constructions have happened.
struct Fragile {
  static inline int countdown = -1;
  static inline int alive = 0;
  uint64_t payload = 0x5ec2e75ec2e75ec2ull;
  Fragile() {
    if (countdown == 0) throw std::runtime_error("fragile");
    if (countdown > 0) --countdown;
    ++alive;
  }
  Fragile(const Fragile &other) : Fragile() { payload = other.payload; }
  ~Fragile() { --alive; }
};

// Counted elements of one byte, and of a larger alignment than the heap's 16.
struct One {
  static inline int alive = 0;
  char c = 0;
  One() { ++alive; }
  ~One() { --alive; }
};
struct alignas(64) Aligned {
  static inline int alive = 0;
  Aligned() { ++alive; }
  ~Aligned() { --alive; }
};

} // namespace

// ---- compile-time checks of the allocator --------------------------------------

using Traits = std::allocator_traits<secure_alloc<int>>;
static_assert(Traits::is_always_equal::value);
static_assert(Traits::propagate_on_container_move_assignment::value);
static_assert(Traits::propagate_on_container_swap::value);
static_assert(std::is_same_v<Traits::rebind_alloc<double>, secure_alloc<double>>);
static_assert(std::is_same_v<Traits::value_type, int>);
static_assert(std::is_nothrow_copy_constructible_v<secure_alloc<int>>);
static_assert(std::is_nothrow_move_constructible_v<secmem::secure_string>);
static_assert(std::is_nothrow_move_assignable_v<secmem::secure_string>);
static_assert(secure_alloc<int>() == secure_alloc<long>());
static_assert(!(secure_alloc<int>() != secure_alloc<char>()));
static_assert(sizeof(secmem::secure_unique_ptr<int>) == sizeof(int *), "stateless deleter");

// ---- typed tests over the standard containers -----------------------------------

template <typename C> struct ContainerTest : testing::Test {};

// Fill a container with n distinct values; every element's address must be secret.
template <typename C> C make_filled(int n);
template <> secmem::secure_vector<int> make_filled(int n) {
  secmem::secure_vector<int> c;
  for (int i = 0; i < n; ++i) c.push_back(i);
  return c;
}
template <> secmem::secure_deque<int> make_filled(int n) {
  secmem::secure_deque<int> c;
  for (int i = 0; i < n; ++i) c.push_back(i);
  return c;
}
template <> secmem::secure_list<int> make_filled(int n) {
  secmem::secure_list<int> c;
  for (int i = 0; i < n; ++i) c.push_back(i);
  return c;
}
using SecureMap = secmem::secure_map<int, int>;
template <> SecureMap make_filled(int n) {
  SecureMap c;
  for (int i = 0; i < n; ++i) c.emplace(i, i);
  return c;
}
using SecureHash = secmem::secure_unordered_map<int, int>;
template <> SecureHash make_filled(int n) {
  SecureHash c;
  for (int i = 0; i < n; ++i) c.emplace(i, i);
  return c;
}
using StdSecureString = std::basic_string<char, std::char_traits<char>, secure_alloc<char>>;
template <> StdSecureString make_filled(int n) {
  StdSecureString c;
  c.reserve(16); // std::basic_string keeps up to 15 chars inline: force the heap buffer
  for (int i = 0; i < n; ++i) c.push_back(static_cast<char>('a' + i % 26));
  return c;
}

template <typename C> bool every_element_owned(const C &c) {
  for (const auto &element : c)
    if (!secmem_owns(&element)) return false;
  return true;
}

using Containers = testing::Types<secmem::secure_vector<int>, secmem::secure_deque<int>, secmem::secure_list<int>,
                                  SecureMap, SecureHash, StdSecureString>;
TYPED_TEST_SUITE(ContainerTest, Containers);

TYPED_TEST(ContainerTest, StorageIsSecret) {
  for (int n : {1, 5, 100, 3000}) {
    TypeParam c = make_filled<TypeParam>(n);
    EXPECT_EQ(c.size(), static_cast<size_t>(n));
    EXPECT_TRUE(every_element_owned(c)) << n;
  }
}

TYPED_TEST(ContainerTest, CopyMoveAndSwapKeepStorageSecret) {
  size_t before = in_use_bytes();
  {
    TypeParam a = make_filled<TypeParam>(200);
    TypeParam copy = a;
    EXPECT_TRUE(copy == a);
    EXPECT_TRUE(every_element_owned(copy));
    TypeParam moved = std::move(a);
    EXPECT_TRUE(every_element_owned(moved));
    EXPECT_TRUE(a.empty()); // NOLINT: moved-from holds nothing
    TypeParam other = make_filled<TypeParam>(7);
    swap(moved, other);
    EXPECT_EQ(moved.size(), 7u);
    EXPECT_EQ(other.size(), 200u);
    EXPECT_TRUE(every_element_owned(moved));
    EXPECT_TRUE(every_element_owned(other));
    TypeParam assigned;
    assigned = other;
    EXPECT_TRUE(every_element_owned(assigned));
    assigned = std::move(moved);
    EXPECT_TRUE(every_element_owned(assigned));
  }
  EXPECT_EQ(in_use_bytes(), before) << "every buffer went back to the heap";
}

// ---- vector specifics --------------------------------------------------------------

TEST(SecureVector, GrowthLeavesTheOldBufferZeroed) {
  secmem::secure_vector<uint64_t> v;
  v.reserve(4);
  for (uint64_t i = 1; i <= 4; ++i) v.push_back(0x1111111111111111ull * i);
  const uint64_t *old = v.data();
  size_t old_bytes = v.capacity() * sizeof(uint64_t);
  v.push_back(5); // reallocates
  ASSERT_NE(v.data(), old);
  EXPECT_TRUE(all_zero(old, old_bytes)); // the heap keeps the page mapped; the block is free and zeroed
  EXPECT_TRUE(secmem_owns(v.data()));
}

TEST(SecureVector, ShrinkToFitMovesToASmallerSecretBuffer) {
  secmem::secure_vector<int> v(1000, 7);
  v.resize(10);
  const int *old = v.data();
  v.shrink_to_fit();
  EXPECT_EQ(v.capacity(), 10u);
  EXPECT_TRUE(secmem_owns(v.data()));
  EXPECT_NE(v.data(), old);
  EXPECT_TRUE(all_zero(old, 1000 * sizeof(int)));
}

TEST(SecureVector, DestructionZeroesTrivialContents) {
  const std::byte *bytes = nullptr;
  {
    secmem::secure_vector<std::byte> key(64, std::byte{0xab});
    bytes = key.data();
  }
  EXPECT_TRUE(all_zero(bytes, 64));
}

TEST(SecureVector, ThrowingElementConstructorLeaksNothing) {
  size_t before = in_use_bytes();
  Fragile::countdown = 5;
  EXPECT_THROW(secmem::secure_vector<Fragile>(10), std::runtime_error);
  Fragile::countdown = -1;
  EXPECT_EQ(Fragile::alive, 0);
  EXPECT_EQ(in_use_bytes(), before);
  // And a throw during growth keeps the vector as it was.
  secmem::secure_vector<Fragile> v(3);
  v.shrink_to_fit();
  Fragile::countdown = 0;
  EXPECT_THROW(v.emplace_back(), std::runtime_error);
  Fragile::countdown = -1;
  EXPECT_EQ(v.size(), 3u);
  EXPECT_TRUE(every_element_owned(v));
}

TEST(SecureAlloc, ThrowsBadAllocWhenTheHeapSaysNo) {
  secure_alloc<char> alloc;
  EXPECT_THROW((void)alloc.allocate(size_t{1} << 50), std::bad_alloc);
  secure_alloc<uint64_t> wide;
  EXPECT_THROW((void)wide.allocate(SIZE_MAX / 4), std::bad_array_new_length);
}

TEST(SecureAlloc, HonoursOverAlignedTypes) {
  struct alignas(256) Wide {
    char bytes[256];
  };
  secmem::secure_vector<Wide> v(5);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(v.data()) % 256, 0u);
  EXPECT_TRUE(secmem_owns(v.data()));
}

// ---- secure_string -----------------------------------------------------------------

TEST(SecureString, EveryLengthIsInSecretMemory) {
  secmem::secure_string grown; // built one push_back at a time
  std::string grown_expected;
  for (size_t n = 0; n <= 300; ++n) {
    std::string expected(n, 'x');
    for (size_t i = 0; i < n; ++i) expected[i] = static_cast<char>('a' + (i * 7) % 26);
    secmem::secure_string s(expected);
    ASSERT_TRUE(secmem_owns(s.data())) << "length " << n;
    ASSERT_EQ(s.size(), n);
    ASSERT_EQ(s.view(), expected);
    ASSERT_EQ(s.c_str()[n], '\0');
    secmem::secure_string copy = s;
    ASSERT_TRUE(secmem_owns(copy.data())) << "copy, length " << n;
    ASSERT_TRUE(copy == s);
    ASSERT_TRUE(secmem_owns(grown.data())) << "grown, length " << n;
    ASSERT_EQ(grown.view(), grown_expected);
    char next = static_cast<char>('A' + n % 26);
    grown.push_back(next);
    grown_expected.push_back(next);
  }
  secmem::secure_string empty;
  EXPECT_TRUE(secmem_owns(empty.data()));
  EXPECT_EQ(empty.c_str()[0], '\0');
}

TEST(SecureString, AFivecharacterPasswordIsSecretWhereverTheObjectLives) {
  secmem::secure_string on_stack("hunter"); // the object is on the stack; its characters are not
  auto in_libc_heap = std::make_unique<secmem::secure_string>("pa55w");
  EXPECT_TRUE(secmem_owns(on_stack.data()));
  EXPECT_TRUE(secmem_owns(in_libc_heap->data()));
  // Nothing of the text is inside the objects themselves.
  EXPECT_EQ(std::string_view(reinterpret_cast<const char *>(&on_stack), sizeof on_stack).find("hunt"),
            std::string_view::npos);
}

TEST(SecureString, MovedFromHoldsNothing) {
  secmem::secure_string a("correct horse");
  const char *buffer = a.data();
  secmem::secure_string b = std::move(a);
  EXPECT_EQ(b.data(), buffer);
  EXPECT_TRUE(a.empty()); // NOLINT
  EXPECT_EQ(a.capacity(), 0u);
  EXPECT_FALSE(secmem_owns(a.data()));
  // A moved-from string is usable again.
  a += "again";
  EXPECT_EQ(a, "again");
  EXPECT_TRUE(secmem_owns(a.data()));
  secmem::secure_string c;
  c = std::move(b);
  EXPECT_EQ(c, "correct horse");
  EXPECT_TRUE(b.empty()); // NOLINT
  b.resize(0);
  b.clear();
  b.assign("");
  EXPECT_TRUE(secmem_owns(b.data()));
}

TEST(SecureString, DroppedCharactersAndOldBuffersAreZeroed) {
  secmem::secure_string s("0123456789abcdef0123456789");
  s.resize(4);
  EXPECT_EQ(s, "0123");
  EXPECT_TRUE(all_zero(s.data() + 4, 26 - 4));
  const char *old = s.data();
  size_t old_capacity = s.capacity();
  s.shrink_to_fit();
  EXPECT_NE(s.data(), old);
  EXPECT_TRUE(all_zero(old, old_capacity + 1));
  s.clear();
  EXPECT_TRUE(all_zero(s.data(), s.capacity() + 1));
  EXPECT_TRUE(secmem_owns(s.data()));
}

TEST(SecureString, StringOperations) {
  secmem::secure_string s("user:");
  s += "secret";
  s += '!';
  s.append(3, '.');
  EXPECT_EQ(s, "user:secret!...");
  EXPECT_EQ(s.find("secret"), 5u);
  EXPECT_EQ(s.find('!'), 11u);
  EXPECT_EQ(s.substr(5, 6), "secret");
  EXPECT_TRUE(secmem_owns(s.substr(5, 6).data()));
  EXPECT_THROW(s.substr(100), std::out_of_range);
  EXPECT_THROW(s.at(100), std::out_of_range);
  EXPECT_EQ(s.at(0), 'u');
  s.pop_back();
  EXPECT_EQ(s.size(), 14u);
  EXPECT_LT(s, "z");
  EXPECT_GT(s, secmem::secure_string("a"));
  s.append(s.view()); // self-append
  EXPECT_EQ(s, "user:secret!..user:secret!..");
  s.assign(std::string_view(s).substr(5, 6)); // self-assign from inside
  EXPECT_EQ(s, "secret");
  secmem::secure_string t(4, 'z');
  swap(s, t);
  EXPECT_EQ(s, "zzzz");
  EXPECT_EQ(t, "secret");
  std::string out(t.begin(), t.end());
  EXPECT_EQ(out, "secret");
  secmem::secure_wstring wide(L"wide");
  EXPECT_TRUE(secmem_owns(wide.data()));
  EXPECT_EQ(wide.size(), 4u);
}

// ---- smart pointers ------------------------------------------------------------------

TEST(MakeSecure, OneObject) {
  struct Key {
    uint8_t bytes[32];
    int id;
    Key(int i) : bytes{}, id(i) {}
  };
  auto key = secmem::make_secure<Key>(7);
  EXPECT_TRUE(secmem_owns(key.get()));
  EXPECT_EQ(key->id, 7);
  Key *raw = key.get();
  key.reset();
  EXPECT_FALSE(secmem_owns(raw));
}

// As std::unique_ptr with std::default_delete: a pointer to a derived
// object converts to one to its base, and is freed whole through it, also
// through a base that is not the first (its address lies inside the object).
TEST(MakeSecure, ConvertsToABasePointer) {
  static int destroyed = 0;
  struct First {
    virtual ~First() = default;
    uint64_t first = 1;
  };
  struct Second {
    virtual ~Second() { ++destroyed; }
    uint64_t second = 2;
  };
  struct Both : First, Second {
    ~Both() override { ++destroyed; }
  };
  // A base without a virtual destructor does not convert (it compiled, then
  // aborted at the free: the base lies inside the object, and only its part
  // would be destroyed).
  struct Plain {
    uint64_t plain = 3;
  };
  struct WithPlain : First, Plain {};
  static_assert(!std::is_convertible_v<secmem::secure_unique_ptr<WithPlain>, secmem::secure_unique_ptr<Plain>>);
  static_assert(std::is_convertible_v<secmem::secure_unique_ptr<Both>, secmem::secure_unique_ptr<const Second>>);
  secmem::secure_unique_ptr<Second> base = secmem::make_secure<Both>();
  void *whole = dynamic_cast<void *>(base.get());
  EXPECT_NE(static_cast<void *>(base.get()), whole);
  EXPECT_TRUE(secmem_owns(whole));
  EXPECT_EQ(base->second, 2u);
  base.reset();
  EXPECT_EQ(destroyed, 2);
  EXPECT_FALSE(secmem_owns(whole));
}

TEST(MakeSecure, ArrayForm) {
  auto keys = secmem::make_secure<uint64_t[]>(100);
  EXPECT_TRUE(secmem_owns(keys.get()));
  EXPECT_TRUE(secmem_owns(&keys[99]));
  EXPECT_EQ(keys[50], 0u); // value-initialised
  auto none = secmem::make_secure<int[]>(0);
  EXPECT_TRUE(secmem_owns(none.get()));
}

// As with std::unique_ptr<T[]>: reset(other.release()) destroys the new
// array's elements when it goes, however many the old one had. (The deleter
// kept the old array's count: 6 strings destroyed in an array of 2, the next
// block's among them, then a double free; or 4 of 6 never destroyed, their
// bytes never zeroed.)
TEST(MakeSecure, ArrayResetDestroysTheNewArraysElements) {
  size_t before = in_use_bytes();
  {
    auto big = secmem::make_secure<Fragile[]>(6);
    auto small = secmem::make_secure<Fragile[]>(2);
    EXPECT_EQ(Fragile::alive, 8);
    big.reset(small.release());
    EXPECT_EQ(Fragile::alive, 2);
    auto more = secmem::make_secure<Fragile[]>(6);
    big.reset(more.release());
    EXPECT_EQ(Fragile::alive, 6);
    // A converted pointer destroys as many.
    secmem::secure_unique_ptr<const Fragile[]> constant(std::move(big));
    EXPECT_EQ(Fragile::alive, 6);
  }
  EXPECT_EQ(Fragile::alive, 0);
  {
    auto strings = secmem::make_secure<secmem::secure_string[]>(6);
    auto two = secmem::make_secure<secmem::secure_string[]>(2);
    auto next = secmem::make_secure<secmem::secure_string[]>(2);
    next[0] = secmem::secure_string("the neighbour's secret");
    strings.reset(two.release());
    strings.reset();
    EXPECT_TRUE(secmem_owns(next[0].data()));
    EXPECT_EQ(next[0], std::string_view("the neighbour's secret"));
  }
  EXPECT_EQ(in_use_bytes(), before);
}

// make_secure<T[]>(0) of a one-byte type with a destructor: the deleter
// counts one element in the one byte a 0-byte request gets, and one is
// made there; of a larger type none is made or destroyed.
TEST(MakeSecure, EmptyArraysDestroyWhatWasMade) {
  static_assert(sizeof(One) == 1);
  Fragile::alive = 0;
  {
    auto one = secmem::make_secure<One[]>(0);
    auto wide = secmem::make_secure<Fragile[]>(0);
    EXPECT_TRUE(secmem_owns(one.get()));
    EXPECT_TRUE(secmem_owns(wide.get()));
    EXPECT_EQ(Fragile::alive, 0);
  }
  EXPECT_EQ(One::alive, 0);
  EXPECT_EQ(Fragile::alive, 0);
  {
    auto aligned = secmem::make_secure<Aligned[]>(3);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(aligned.get()) % 64, 0u);
    EXPECT_EQ(Aligned::alive, 3);
  }
  EXPECT_EQ(Aligned::alive, 0);
}

TEST(MakeSecure, ThrowingConstructorsLeakNothing) {
  size_t before = in_use_bytes();
  Fragile::countdown = 0;
  EXPECT_THROW(secmem::make_secure<Fragile>(), std::runtime_error);
  Fragile::countdown = 3;
  EXPECT_THROW(secmem::make_secure<Fragile[]>(10), std::runtime_error);
  Fragile::countdown = -1;
  EXPECT_EQ(Fragile::alive, 0);
  EXPECT_EQ(in_use_bytes(), before);
  {
    auto array = secmem::make_secure<Fragile[]>(4);
    EXPECT_EQ(Fragile::alive, 4);
  }
  EXPECT_EQ(Fragile::alive, 0);
}

// ---- pmr ----------------------------------------------------------------------------

TEST(MemoryResource, PmrVectorIsSecret) {
  std::pmr::vector<int> v(secmem::memory_resource());
  for (int i = 0; i < 1000; ++i) v.push_back(i);
  EXPECT_TRUE(secmem_owns(v.data()));
  EXPECT_TRUE(secmem_owns(&v.back()));
  EXPECT_TRUE(secmem::memory_resource()->is_equal(*secmem::memory_resource()));
  EXPECT_FALSE(secmem::memory_resource()->is_equal(*std::pmr::new_delete_resource()));
}

TEST(MemoryResource, PmrStringIsSecretOnceItLeavesItsInlineBuffer) {
  std::pmr::string long_text(secmem::memory_resource());
  long_text.assign(100, 's');
  EXPECT_TRUE(secmem_owns(long_text.data()));
  // The trap secure_string exists for: a short pmr::string is inside the object.
  std::pmr::string short_text("pin", secmem::memory_resource());
  EXPECT_FALSE(secmem_owns(short_text.data()));
}

TEST(MemoryResource, HonoursAlignmentAndReportsExhaustion) {
  std::pmr::memory_resource *resource = secmem::memory_resource();
  void *p = resource->allocate(100, 4096);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 4096, 0u);
  EXPECT_TRUE(secmem_owns(p));
  resource->deallocate(p, 100, 4096);
  EXPECT_THROW((void)resource->allocate(size_t{1} << 50, 16), std::bad_alloc);
}

// The README's C++ example is this file, to the byte (so it compiles in CI).
TEST(Readme, CxxExampleIsTheCompiledOne) {
  std::string example = read_file(SECMEM_SOURCE_DIR "/examples/cxx_quick_example.cpp");
  ASSERT_FALSE(example.empty());
  EXPECT_NE(read_file(SECMEM_SOURCE_DIR "/README.md").find("```cpp\n" + example + "```"), std::string::npos);
}
