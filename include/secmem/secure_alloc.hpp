// secmem for C++: a standard allocator, containers, smart pointers and a pmr
// memory resource over the secret heap. Header-only; link libsecmem.
//
// Guarantees:
// - Every byte these types allocate is in the secret heap (secmem_owns is true
//   for it), and the heap zeroes every byte it frees. Contents of trivially
//   destructible type (bytes, integers, chars) are therefore zero once a
//   container releases its storage: on destruction, on growth (the old buffer
//   is freed), on shrink_to_fit and on clear()+shrink_to_fit(). Non-trivial
//   element types must wipe whatever they own themselves.
// - secure_string never keeps characters inside the string object: unlike
//   std::basic_string it has no small-string buffer, so a 5-character
//   password is in secret memory too. A moved-from secure_string is empty and
//   owns no memory. Its == (and secmem::equal, constant_time_equal for
//   bytes) does not stop at the first difference; ordering comparisons do.
// - secmem::getline and secmem::read_line read a line straight into a
//   secure_string, with no std::string or stack buffer in between.
// - Allocation failure throws std::bad_alloc (std::bad_array_new_length when
//   the byte count overflows; std::length_error for a string longer than
//   max_size()). The core library itself never throws. With libstdc++ the
//   exceptions are thrown by libstdc++'s own functions (std::__throw_*), as
//   its containers throw theirs, so that code built with and without
//   exceptions (-fno-exceptions) has the same inline functions: where no
//   handler catches, std::terminate says what was thrown. With libc++ and no
//   exceptions, one line to stderr ("secmem: std::bad_alloc (...)"), then
//   abort.
// - Also with libc++: without <memory_resource> (libc++ before 16) the pmr
//   resource is left out and the rest works.
// - Not covered: copies a program makes elsewhere (std::string, the stack,
//   I/O buffers), and std::pmr::string's own small-string buffer (use
//   secure_string for text).
#ifndef SECMEM_SECURE_ALLOC_HPP
#define SECMEM_SECURE_ALLOC_HPP

#if __cplusplus < 202002L
#error "secmem/secure_alloc.hpp needs C++20 (-std=c++20 or later); C programs and older C++ use secmem/secmem.h"
#else

#include <algorithm>
#include <cerrno>
#include <compare>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <initializer_list>
#include <istream>
#include <iterator>
#include <limits>
#include <list>
#include <map>
#include <memory>
#if __has_include(<memory_resource>)
#include <memory_resource>
#define SECMEM_DETAIL_HAS_PMR 1
#endif
#include <new>
#include <span>
#include <stdexcept>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include <sys/types.h>
#include <unistd.h>

#include "secmem/secmem.h"

// Exceptions, or without them (-fno-exceptions) a line and abort: the
// header's try blocks are these (undefined again at its end), as libstdc++'s
// own are (__try, __catch, __throw_exception_again).
#if defined(__cpp_exceptions)
#define SECMEM_DETAIL_TRY try
#define SECMEM_DETAIL_CATCH(X) catch (X)
#define SECMEM_DETAIL_RETHROW throw
#else
#define SECMEM_DETAIL_TRY if (true)
#define SECMEM_DETAIL_CATCH(X) if (false)
#define SECMEM_DETAIL_RETHROW
#endif

namespace secmem {

namespace detail {

// The header's exceptions. With libstdc++, through its own out-of-line
// std::__throw_* functions, compiled with exceptions: a function of this
// header then has the same body in code built with and without them (one
// that aborted instead of throwing, in a library built -fno-exceptions, was
// taken by the dynamic linker for every caller, and a program's catch never
// ran). Elsewhere: throw, or without exceptions a line and abort.
#if defined(__GLIBCXX__)
[[noreturn]] inline void throw_bad_alloc() { std::__throw_bad_alloc(); }
[[noreturn]] inline void throw_bad_array_new_length() { std::__throw_bad_array_new_length(); }
[[noreturn]] inline void throw_length_error(const char *what) { std::__throw_length_error(what); }
[[noreturn]] inline void throw_out_of_range(const char *what) { std::__throw_out_of_range(what); }
// std::system_error with the error number (libstdc++'s carries no more text).
[[noreturn]] inline void throw_system_error(int error, const char *) { std::__throw_system_error(error); }
#else
template <typename E, typename... Args> [[noreturn]] void raise_other(Args &&...args) {
#if defined(__cpp_exceptions)
  throw E(std::forward<Args>(args)...);
#else
  const E error(std::forward<Args>(args)...);
  std::fprintf(stderr, "secmem: %s (compiled without exceptions: abort)\n", error.what());
  std::abort();
#endif
}
[[noreturn]] inline void throw_bad_alloc() { raise_other<std::bad_alloc>(); }
[[noreturn]] inline void throw_bad_array_new_length() { raise_other<std::bad_array_new_length>(); }
[[noreturn]] inline void throw_length_error(const char *what) { raise_other<std::length_error>(what); }
[[noreturn]] inline void throw_out_of_range(const char *what) { raise_other<std::out_of_range>(what); }
[[noreturn]] inline void throw_system_error(int error, const char *what) {
  raise_other<std::system_error>(error, std::generic_category(), what);
}
#endif

// Raw secret memory for n objects of size and alignment given; throws on failure.
inline void *allocate_bytes(std::size_t n, std::size_t size, std::size_t alignment) {
  std::size_t bytes = 0;
  if (__builtin_mul_overflow(n, size, &bytes)) throw_bad_array_new_length();
  void *p = alignment <= 16 ? secmem_malloc(bytes) : secmem_aligned_alloc(alignment, bytes);
  if (p == nullptr) throw_bad_alloc();
  return p;
}

} // namespace detail

// A standard Allocator over the secret heap. Stateless: all instances are
// equal and interchangeable.
template <typename T> class secure_alloc {
public:
  using value_type = T;
  using size_type = std::size_t;
  using difference_type = std::ptrdiff_t;
  using is_always_equal = std::true_type;
  using propagate_on_container_move_assignment = std::true_type;
  using propagate_on_container_copy_assignment = std::true_type;
  using propagate_on_container_swap = std::true_type;

  constexpr secure_alloc() noexcept = default;
  template <typename U> constexpr secure_alloc(const secure_alloc<U> &) noexcept {}

  [[nodiscard]] T *allocate(std::size_t n) {
    return static_cast<T *>(detail::allocate_bytes(n, sizeof(T), alignof(T)));
  }
  void deallocate(T *p, std::size_t) noexcept { secmem_free(p); }
  std::size_t max_size() const noexcept { return std::numeric_limits<std::size_t>::max() / sizeof(T); }

  template <typename U> friend constexpr bool operator==(const secure_alloc &, const secure_alloc<U> &) noexcept {
    return true;
  }
};

template <typename T> using secure_vector = std::vector<T, secure_alloc<T>>;
template <typename T> using secure_deque = std::deque<T, secure_alloc<T>>;
template <typename T> using secure_list = std::list<T, secure_alloc<T>>;
template <typename K, typename V, typename Compare = std::less<K>> using secure_map =
    std::map<K, V, Compare, secure_alloc<std::pair<const K, V>>>;
template <typename K, typename V, typename Hash = std::hash<K>, typename Eq = std::equal_to<K>>
using secure_unordered_map = std::unordered_map<K, V, Hash, Eq, secure_alloc<std::pair<const K, V>>>;

// ---- smart pointers -----------------------------------------------------------

template <typename T> struct secure_delete {
  constexpr secure_delete() noexcept = default;
  // As std::default_delete: a secure_unique_ptr<Derived> converts to a
  // secure_unique_ptr<Base>, whose virtual destructor (as with delete) is
  // required here (a base without one compiled, then aborted at its free).
  template <typename U>
  requires std::is_convertible_v<U *, T *> &&
      (std::is_same_v<std::remove_cv_t<U>, std::remove_cv_t<T>> ||
       std::has_virtual_destructor_v<T>)secure_delete(const secure_delete<U> &) noexcept {}
  void operator()(T *p) const noexcept {
    if (p == nullptr) return;
    // The whole object's address: a base that is not its first one lies inside it.
    const volatile void *start = p;
    if constexpr (std::is_polymorphic_v<T>) start = dynamic_cast<const volatile void *>(p);
    p->~T();
    secmem_free(const_cast<void *>(start));
  }
};

// The array form destroys as many elements as the block was asked for
// (secmem_usable_size: exactly what make_secure<T[]>(n) allocated), so that,
// as with std::unique_ptr<T[]>, reset(other.release()) destroys the new
// array's elements, not as many as the old one had (a count kept in the
// deleter destroyed a neighbour's strings, or left elements never
// destroyed).
template <typename T> struct secure_delete<T[]> {
  constexpr secure_delete() noexcept = default;
  // As std::default_delete<T[]>: from the deleter of an array of U where a U(*)[] converts to a T(*)[].
  template <typename U>
  requires std::is_convertible_v<U (*)[], T (*)[]> secure_delete(const secure_delete<U[]> &)
  noexcept {}
  void operator()(T *p) const noexcept {
    if (p == nullptr) return;
    if constexpr (!std::is_trivially_destructible_v<T>)
      std::destroy_n(p,
                     secmem_usable_size(const_cast<const void *>(static_cast<const volatile void *>(p))) / sizeof(T));
    secmem_free(const_cast<void *>(static_cast<const volatile void *>(p)));
  }
};

template <typename T> using secure_unique_ptr = std::unique_ptr<T, secure_delete<T>>;

// make_secure<T>(args...): one T constructed in secret memory.
template <typename T, typename... Args>
requires(!std::is_array_v<T>) secure_unique_ptr<T> make_secure(Args &&...args) {
  void *raw = detail::allocate_bytes(1, sizeof(T), alignof(T));
  SECMEM_DETAIL_TRY { return secure_unique_ptr<T>(::new (raw) T(std::forward<Args>(args)...)); }
  SECMEM_DETAIL_CATCH(...) {
    secmem_free(raw);
    SECMEM_DETAIL_RETHROW;
  }
}

// make_secure<T[]>(n): n value-initialised Ts in secret memory. n == 0
// gives a block of its own too, of the one byte a request for 0 bytes gets;
// where a T is that one byte and has a destructor, one T is made there
// (hidden: the pointer still holds 0 for its user), so that the deleter,
// which counts by the block's size, destroys what was constructed.
template <typename T>
requires std::is_unbounded_array_v<T> secure_unique_ptr<T> make_secure(std::size_t n) {
  using E = std::remove_extent_t<T>;
  E *raw = static_cast<E *>(detail::allocate_bytes(n, sizeof(E), alignof(E)));
  std::size_t built = 0, made = n;
  if constexpr (sizeof(E) == 1 && !std::is_trivially_destructible_v<E>)
    if (n == 0) made = 1;
  SECMEM_DETAIL_TRY {
    for (; built < made; ++built) ::new (static_cast<void *>(raw + built)) E();
  }
  SECMEM_DETAIL_CATCH(...) {
    std::destroy_n(raw, built);
    secmem_free(raw);
    SECMEM_DETAIL_RETHROW;
  }
  return secure_unique_ptr<T>(raw);
}

// ---- comparing secrets ------------------------------------------------------------

// Equality of two byte blocks in time that depends on their lengths only:
// for equal lengths every byte is read, with no exit at the first difference
// (secmem_ct_equal), so the timing does not tell where two secrets differ.
// The length is not secret: unequal lengths return false at once.
inline bool constant_time_equal(std::span<const std::byte> a, std::span<const std::byte> b) noexcept {
  return a.size() == b.size() && secmem_ct_equal(a.data(), b.data(), a.size()) == 1;
}

// The same for secure vectors of bytes, integers, or any type whose value is
// its bytes. (std::vector's own == stops at the first difference.)
template <typename T>
requires std::has_unique_object_representations_v<T>
bool equal(const secure_vector<T> &a, const secure_vector<T> &b) noexcept {
  return constant_time_equal(std::as_bytes(std::span(a)), std::as_bytes(std::span(b)));
}

// ---- strings --------------------------------------------------------------------

namespace detail {
// basic_secure_string's iterators are pointers: its iterator overloads are
// templates on these, so that a literal 0 stays a position (s.insert(0, 3, 'x')).
template <typename It, typename CharT>
concept string_iterator = std::same_as<It, CharT *> || std::same_as<It, const CharT *>;
} // namespace detail

// A string whose characters are always in the secret heap: no small-string
// buffer, and a buffer even when empty (so data() is secret at every length).
// It has std::basic_string's operations that suit secrets, with its
// exceptions: std::out_of_range for a position past size(), and
// std::length_error for a length over max_size(), thrown before anything is
// allocated, read or written. Operations that allocate give the strong
// guarantee (the allocation comes before any change). Characters dropped by
// erase, replace, resize, pop_back and clear are zeroed at once (the bytes
// from size() to capacity() are always zero), and text that overlaps the
// string itself is first copied into another secure_string.
//
// Comparing: == and != take time that depends on the lengths only; for equal
// lengths every character is read, without an early exit. The length is not
// secret: unequal lengths return false at once. == compares the characters'
// bits (which is Traits::eq for std::char_traits). Ordering (<, <=>,
// compare()) and searching (find, starts_with, ...) are NOT constant time:
// their answer and their timing depend on where the contents differ or match.
template <typename CharT, typename Traits = std::char_traits<CharT>> class basic_secure_string {
public:
  using traits_type = Traits;
  using value_type = CharT;
  using size_type = std::size_t;
  using difference_type = std::ptrdiff_t;
  using reference = CharT &;
  using const_reference = const CharT &;
  using pointer = CharT *;
  using const_pointer = const CharT *;
  using iterator = CharT *;
  using const_iterator = const CharT *;
  using reverse_iterator = std::reverse_iterator<iterator>;
  using const_reverse_iterator = std::reverse_iterator<const_iterator>;
  using view_type = std::basic_string_view<CharT, Traits>;
  static constexpr size_type npos = static_cast<size_type>(-1);

  basic_secure_string() { init(0); }
  // Explicit: each of these makes a new secret copy of text.
  explicit basic_secure_string(view_type text) { init_copy(text.data(), text.size()); }
  explicit basic_secure_string(const CharT *text) : basic_secure_string(view_type(text)) {}
  basic_secure_string(const CharT *text, size_type n) { init_copy(text, n); }
  basic_secure_string(view_type text, size_type pos, size_type n = npos) : basic_secure_string(text.substr(pos, n)) {}
  basic_secure_string(size_type n, CharT c) {
    init(n);
    Traits::assign(data_, n, c);
    set_size(n);
  }
  template <std::input_iterator It> basic_secure_string(It first, It last) : basic_secure_string() {
    append(first, last);
  }
  explicit basic_secure_string(std::initializer_list<CharT> chars) { init_copy(chars.begin(), chars.size()); }
  basic_secure_string(std::nullptr_t) = delete;
  basic_secure_string(const basic_secure_string &other) { init_copy(other.data(), other.size()); }
  basic_secure_string(basic_secure_string &&other) noexcept
      : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)),
        capacity_(std::exchange(other.capacity_, 0)) {}
  ~basic_secure_string() { secmem_free(data_); }

  basic_secure_string &operator=(const basic_secure_string &other) {
    if (this != &other) assign(other.view());
    return *this;
  }
  basic_secure_string &operator=(basic_secure_string &&other) noexcept {
    if (this != &other) {
      secmem_free(data_);
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
      capacity_ = std::exchange(other.capacity_, 0);
    }
    return *this;
  }
  basic_secure_string &operator=(view_type text) { return assign(text); }
  basic_secure_string &operator=(const CharT *text) { return assign(view_type(text)); }
  basic_secure_string &operator=(CharT c) { return assign(size_type{1}, c); }
  basic_secure_string &operator=(std::initializer_list<CharT> chars) { return assign(chars); }
  basic_secure_string &operator=(std::nullptr_t) = delete;

  basic_secure_string &assign(view_type text) { return replace_text(0, size_, text.data(), text.size()); }
  basic_secure_string &assign(const basic_secure_string &other) { return *this = other; }
  basic_secure_string &assign(basic_secure_string &&other) noexcept { return *this = std::move(other); }
  basic_secure_string &assign(view_type text, size_type pos, size_type n = npos) { return assign(text.substr(pos, n)); }
  basic_secure_string &assign(const CharT *text, size_type n) { return replace_text(0, size_, text, n); }
  basic_secure_string &assign(const CharT *text) { return assign(view_type(text)); }
  basic_secure_string &assign(size_type n, CharT c) { return replace_fill(0, size_, n, c); }
  template <std::input_iterator It> basic_secure_string &assign(It first, It last) {
    return replace(begin(), end(), first, last);
  }
  basic_secure_string &assign(std::initializer_list<CharT> chars) { return assign(chars.begin(), chars.size()); }

  // ---- access. A moved-from string has no buffer: data() is then "".
  const CharT *data() const noexcept { return data_ != nullptr ? data_ : empty_text(); }
  CharT *data() noexcept { return data_ != nullptr ? data_ : empty_text(); }
  const CharT *c_str() const noexcept { return data(); }
  size_type size() const noexcept { return size_; }
  size_type length() const noexcept { return size_; }
  size_type capacity() const noexcept { return capacity_; }
  bool empty() const noexcept { return size_ == 0; }
  static constexpr size_type max_size() noexcept {
    return static_cast<size_type>(std::numeric_limits<difference_type>::max()) / sizeof(CharT) - 1;
  }
  CharT &operator[](size_type i) noexcept { return data()[i]; }
  const CharT &operator[](size_type i) const noexcept { return data()[i]; }
  CharT &at(size_type i) {
    if (i >= size_) detail::throw_out_of_range("secmem::secure_string::at");
    return data_[i];
  }
  const CharT &at(size_type i) const {
    if (i >= size_) detail::throw_out_of_range("secmem::secure_string::at");
    return data_[i];
  }
  CharT &front() noexcept { return data_[0]; }
  const CharT &front() const noexcept { return data_[0]; }
  CharT &back() noexcept { return data_[size_ - 1]; }
  const CharT &back() const noexcept { return data_[size_ - 1]; }
  iterator begin() noexcept { return data(); }
  iterator end() noexcept { return data() + size_; }
  const_iterator begin() const noexcept { return data(); }
  const_iterator end() const noexcept { return data() + size_; }
  const_iterator cbegin() const noexcept { return data(); }
  const_iterator cend() const noexcept { return data() + size_; }
  reverse_iterator rbegin() noexcept { return reverse_iterator(end()); }
  reverse_iterator rend() noexcept { return reverse_iterator(begin()); }
  const_reverse_iterator rbegin() const noexcept { return const_reverse_iterator(end()); }
  const_reverse_iterator rend() const noexcept { return const_reverse_iterator(begin()); }
  const_reverse_iterator crbegin() const noexcept { return rbegin(); }
  const_reverse_iterator crend() const noexcept { return rend(); }
  view_type view() const noexcept { return view_type(data(), size_); }
  operator view_type() const noexcept { return view(); }

  // ---- size and capacity. Characters dropped from the end are zeroed.
  void reserve(size_type n) {
    check_length(n);
    if (data_ == nullptr || n > capacity_) reallocate(data_ == nullptr ? std::max(n, size_) : grown_capacity(n));
  }
  void resize(size_type n, CharT c = CharT()) {
    check_length(n);
    if (n > size_) {
      replace_fill(size_, 0, n - size_, c);
    } else if (data_ != nullptr) {
      shrink_size(n);
    }
  }
  void clear() noexcept {
    if (data_ != nullptr) shrink_size(0);
  }
  void shrink_to_fit() {
    if (data_ == nullptr || capacity_ > size_) reallocate(size_);
  }

  // ---- adding characters
  void push_back(CharT c) {
    if (data_ == nullptr || size_ == capacity_) {
      check_length(size_ + 1);
      reallocate(grown_capacity(size_ + 1));
    }
    data_[size_] = c;
    set_size(size_ + 1);
  }
  void pop_back() noexcept { shrink_size(size_ - 1); }
  basic_secure_string &append(view_type text) { return replace_text(size_, 0, text.data(), text.size()); }
  basic_secure_string &append(view_type text, size_type pos, size_type n = npos) { return append(text.substr(pos, n)); }
  basic_secure_string &append(const CharT *text, size_type n) { return replace_text(size_, 0, text, n); }
  basic_secure_string &append(const CharT *text) { return append(view_type(text)); }
  basic_secure_string &append(size_type n, CharT c) { return replace_fill(size_, 0, n, c); }
  template <std::input_iterator It> basic_secure_string &append(It first, It last) {
    return replace(end(), end(), first, last);
  }
  basic_secure_string &append(std::initializer_list<CharT> chars) { return append(chars.begin(), chars.size()); }
  basic_secure_string &operator+=(view_type text) { return append(text); }
  basic_secure_string &operator+=(const CharT *text) { return append(view_type(text)); }
  basic_secure_string &operator+=(CharT c) {
    push_back(c);
    return *this;
  }
  basic_secure_string &operator+=(std::initializer_list<CharT> chars) { return append(chars); }

  basic_secure_string &insert(size_type pos, view_type text) {
    return replace_text(checked_pos(pos, "secmem::secure_string::insert"), 0, text.data(), text.size());
  }
  basic_secure_string &insert(size_type pos, view_type text, size_type pos2, size_type n = npos) {
    return insert(pos, text.substr(pos2, n));
  }
  basic_secure_string &insert(size_type pos, const CharT *text, size_type n) {
    return replace_text(checked_pos(pos, "secmem::secure_string::insert"), 0, text, n);
  }
  basic_secure_string &insert(size_type pos, const CharT *text) { return insert(pos, view_type(text)); }
  basic_secure_string &insert(size_type pos, size_type n, CharT c) {
    return replace_fill(checked_pos(pos, "secmem::secure_string::insert"), 0, n, c);
  }
  template <detail::string_iterator<CharT> It> iterator insert(It p, CharT c) { return insert(p, size_type{1}, c); }
  template <detail::string_iterator<CharT> It> iterator insert(It p, size_type n, CharT c) {
    size_type pos = offset(p);
    replace_fill(pos, 0, n, c);
    return data() + pos;
  }
  template <detail::string_iterator<CharT> It, std::input_iterator In> iterator insert(It p, In first, In last) {
    size_type pos = offset(p);
    replace(p, p, first, last);
    return data() + pos;
  }
  template <detail::string_iterator<CharT> It> iterator insert(It p, std::initializer_list<CharT> chars) {
    size_type pos = offset(p);
    replace_text(pos, 0, chars.begin(), chars.size());
    return data() + pos;
  }

  // ---- removing and replacing characters (those dropped are zeroed)
  basic_secure_string &erase(size_type pos = 0, size_type n = npos) {
    checked_pos(pos, "secmem::secure_string::erase");
    erase_chars(pos, std::min(n, size_ - pos));
    return *this;
  }
  template <detail::string_iterator<CharT> It> iterator erase(It p) noexcept {
    size_type pos = offset(p);
    erase_chars(pos, 1);
    return data() + pos;
  }
  template <detail::string_iterator<CharT> It1, detail::string_iterator<CharT> It2>
  iterator erase(It1 first, It2 last) noexcept {
    size_type pos = offset(first);
    erase_chars(pos, offset(last) - pos);
    return data() + pos;
  }

  basic_secure_string &replace(size_type pos, size_type n, view_type text) {
    return replace_text(checked_pos(pos, "secmem::secure_string::replace"), n, text.data(), text.size());
  }
  basic_secure_string &replace(size_type pos, size_type n, view_type text, size_type pos2, size_type n2 = npos) {
    return replace(pos, n, text.substr(pos2, n2));
  }
  basic_secure_string &replace(size_type pos, size_type n, const CharT *text, size_type n2) {
    return replace_text(checked_pos(pos, "secmem::secure_string::replace"), n, text, n2);
  }
  basic_secure_string &replace(size_type pos, size_type n, const CharT *text) {
    return replace(pos, n, view_type(text));
  }
  basic_secure_string &replace(size_type pos, size_type n, size_type n2, CharT c) {
    return replace_fill(checked_pos(pos, "secmem::secure_string::replace"), n, n2, c);
  }
  template <detail::string_iterator<CharT> It1, detail::string_iterator<CharT> It2>
  basic_secure_string &replace(It1 first, It2 last, view_type text) {
    return replace_text(offset(first), offset(last) - offset(first), text.data(), text.size());
  }
  template <detail::string_iterator<CharT> It1, detail::string_iterator<CharT> It2>
  basic_secure_string &replace(It1 first, It2 last, const CharT *text, size_type n) {
    return replace_text(offset(first), offset(last) - offset(first), text, n);
  }
  template <detail::string_iterator<CharT> It1, detail::string_iterator<CharT> It2>
  basic_secure_string &replace(It1 first, It2 last, const CharT *text) {
    return replace(first, last, view_type(text));
  }
  template <detail::string_iterator<CharT> It1, detail::string_iterator<CharT> It2>
  basic_secure_string &replace(It1 first, It2 last, size_type n, CharT c) {
    return replace_fill(offset(first), offset(last) - offset(first), n, c);
  }
  // A range of characters: contiguous ones are used in place (copied first
  // when they lie in this string); any other range is gathered into a
  // secure_string first.
  template <detail::string_iterator<CharT> It1, detail::string_iterator<CharT> It2, std::input_iterator In>
  basic_secure_string &replace(It1 first, It2 last, In first2, In last2) {
    if constexpr (std::contiguous_iterator<In> && std::same_as<std::iter_value_t<In>, CharT>) {
      return replace(first, last, std::to_address(first2), static_cast<size_type>(last2 - first2));
    } else {
      basic_secure_string gathered;
      if constexpr (std::forward_iterator<In>) gathered.reserve(static_cast<size_type>(std::distance(first2, last2)));
      for (; first2 != last2; ++first2) gathered.push_back(*first2);
      return replace(first, last, gathered.view());
    }
  }
  template <detail::string_iterator<CharT> It1, detail::string_iterator<CharT> It2>
  basic_secure_string &replace(It1 first, It2 last, std::initializer_list<CharT> chars) {
    return replace(first, last, chars.begin(), chars.size());
  }

  void swap(basic_secure_string &other) noexcept {
    std::swap(data_, other.data_);
    std::swap(size_, other.size_);
    std::swap(capacity_, other.capacity_);
  }
  friend void swap(basic_secure_string &a, basic_secure_string &b) noexcept { a.swap(b); }

  // ---- searching (through string_view: no copies; not constant time)
  size_type find(view_type t, size_type pos = 0) const noexcept { return view().find(t, pos); }
  size_type find(const CharT *s, size_type pos, size_type n) const noexcept { return view().find(s, pos, n); }
  size_type find(const CharT *s, size_type pos = 0) const noexcept { return view().find(s, pos); }
  size_type find(CharT c, size_type pos = 0) const noexcept { return view().find(c, pos); }
  size_type rfind(view_type t, size_type pos = npos) const noexcept { return view().rfind(t, pos); }
  size_type rfind(const CharT *s, size_type pos, size_type n) const noexcept { return view().rfind(s, pos, n); }
  size_type rfind(const CharT *s, size_type pos = npos) const noexcept { return view().rfind(s, pos); }
  size_type rfind(CharT c, size_type pos = npos) const noexcept { return view().rfind(c, pos); }
  size_type find_first_of(view_type t, size_type pos = 0) const noexcept { return view().find_first_of(t, pos); }
  size_type find_first_of(const CharT *s, size_type pos, size_type n) const noexcept {
    return view().find_first_of(s, pos, n);
  }
  size_type find_first_of(const CharT *s, size_type pos = 0) const noexcept { return view().find_first_of(s, pos); }
  size_type find_first_of(CharT c, size_type pos = 0) const noexcept { return view().find_first_of(c, pos); }
  size_type find_last_of(view_type t, size_type pos = npos) const noexcept { return view().find_last_of(t, pos); }
  size_type find_last_of(const CharT *s, size_type pos, size_type n) const noexcept {
    return view().find_last_of(s, pos, n);
  }
  size_type find_last_of(const CharT *s, size_type pos = npos) const noexcept { return view().find_last_of(s, pos); }
  size_type find_last_of(CharT c, size_type pos = npos) const noexcept { return view().find_last_of(c, pos); }
  size_type find_first_not_of(view_type t, size_type pos = 0) const noexcept {
    return view().find_first_not_of(t, pos);
  }
  size_type find_first_not_of(const CharT *s, size_type pos, size_type n) const noexcept {
    return view().find_first_not_of(s, pos, n);
  }
  size_type find_first_not_of(const CharT *s, size_type pos = 0) const noexcept {
    return view().find_first_not_of(s, pos);
  }
  size_type find_first_not_of(CharT c, size_type pos = 0) const noexcept { return view().find_first_not_of(c, pos); }
  size_type find_last_not_of(view_type t, size_type pos = npos) const noexcept {
    return view().find_last_not_of(t, pos);
  }
  size_type find_last_not_of(const CharT *s, size_type pos, size_type n) const noexcept {
    return view().find_last_not_of(s, pos, n);
  }
  size_type find_last_not_of(const CharT *s, size_type pos = npos) const noexcept {
    return view().find_last_not_of(s, pos);
  }
  size_type find_last_not_of(CharT c, size_type pos = npos) const noexcept { return view().find_last_not_of(c, pos); }
  bool starts_with(view_type t) const noexcept { return view().starts_with(t); }
  bool starts_with(CharT c) const noexcept { return view().starts_with(c); }
  bool starts_with(const CharT *s) const noexcept { return view().starts_with(s); }
  bool ends_with(view_type t) const noexcept { return view().ends_with(t); }
  bool ends_with(CharT c) const noexcept { return view().ends_with(c); }
  bool ends_with(const CharT *s) const noexcept { return view().ends_with(s); }
  bool contains(view_type t) const noexcept { return view().find(t) != npos; }
  bool contains(CharT c) const noexcept { return view().find(c) != npos; }
  bool contains(const CharT *s) const noexcept { return view().find(s) != npos; }

  basic_secure_string substr(size_type pos = 0, size_type n = npos) const {
    checked_pos(pos, "secmem::secure_string::substr");
    return basic_secure_string(view().substr(pos, n));
  }
  // Copies characters out of secret memory into dest (like std::string::copy).
  size_type copy(CharT *dest, size_type n, size_type pos = 0) const {
    checked_pos(pos, "secmem::secure_string::copy");
    return view().copy(dest, n, pos);
  }

  // ---- comparing. compare() and <=> are lexicographic, NOT constant time;
  // == is (for equal lengths), as the class comment says.
  int compare(view_type t) const noexcept { return view().compare(t); }
  int compare(size_type pos, size_type n, view_type t) const {
    checked_pos(pos, "secmem::secure_string::compare");
    return view().compare(pos, n, t);
  }
  int compare(size_type pos, size_type n, view_type t, size_type pos2, size_type n2 = npos) const {
    checked_pos(pos, "secmem::secure_string::compare");
    return view().compare(pos, n, t, pos2, n2);
  }
  int compare(const CharT *s) const { return view().compare(s); }
  int compare(size_type pos, size_type n, const CharT *s) const { return compare(pos, n, view_type(s)); }
  int compare(size_type pos, size_type n, const CharT *s, size_type n2) const {
    return compare(pos, n, view_type(s, n2));
  }
  friend bool operator==(const basic_secure_string &a, view_type b) noexcept { return equal_chars(a.view(), b); }
  friend bool operator==(const basic_secure_string &a, const basic_secure_string &b) noexcept {
    return equal_chars(a.view(), b.view());
  }
  // Through compare() (libc++ 14's string_view has no <=>); the result's
  // type as ordering() says.
  friend auto operator<=>(const basic_secure_string &a, view_type b) noexcept { return ordering(a.view().compare(b)); }
  friend auto operator<=>(const basic_secure_string &a, const basic_secure_string &b) noexcept {
    return ordering(a.view().compare(b.view()));
  }

  // ---- concatenation: always a secure_string; an rvalue operand lends its buffer.
  friend basic_secure_string operator+(const basic_secure_string &a, const basic_secure_string &b) {
    return concat(a.view(), b.view());
  }
  friend basic_secure_string operator+(const basic_secure_string &a, view_type b) { return concat(a.view(), b); }
  friend basic_secure_string operator+(view_type a, const basic_secure_string &b) { return concat(a, b.view()); }
  friend basic_secure_string operator+(const basic_secure_string &a, const CharT *b) {
    return concat(a.view(), view_type(b));
  }
  friend basic_secure_string operator+(const CharT *a, const basic_secure_string &b) {
    return concat(view_type(a), b.view());
  }
  friend basic_secure_string operator+(const basic_secure_string &a, CharT b) {
    return concat(a.view(), view_type(&b, 1));
  }
  friend basic_secure_string operator+(CharT a, const basic_secure_string &b) {
    return concat(view_type(&a, 1), b.view());
  }
  friend basic_secure_string operator+(basic_secure_string &&a, const basic_secure_string &b) {
    return std::move(a.append(b.view()));
  }
  friend basic_secure_string operator+(basic_secure_string &&a, basic_secure_string &&b) {
    return std::move(a.append(b.view()));
  }
  friend basic_secure_string operator+(basic_secure_string &&a, view_type b) { return std::move(a.append(b)); }
  friend basic_secure_string operator+(basic_secure_string &&a, const CharT *b) { return std::move(a.append(b)); }
  friend basic_secure_string operator+(basic_secure_string &&a, CharT b) {
    a.push_back(b);
    return std::move(a);
  }
  friend basic_secure_string operator+(const basic_secure_string &a, basic_secure_string &&b) {
    return std::move(b.insert(0, a.view()));
  }
  friend basic_secure_string operator+(view_type a, basic_secure_string &&b) { return std::move(b.insert(0, a)); }
  friend basic_secure_string operator+(const CharT *a, basic_secure_string &&b) { return std::move(b.insert(0, a)); }
  friend basic_secure_string operator+(CharT a, basic_secure_string &&b) {
    return std::move(b.insert(size_type{0}, size_type{1}, a));
  }

private:
  static constexpr size_type kMinCapacity = 15;

  // As C++20 says: Traits::comparison_category, which std::char_traits
  // gives as std::strong_ordering (libc++ 14's does not: strong_ordering
  // there too, so that `std::strong_ordering r = a <=> b` builds with
  // either library), else std::weak_ordering.
  static auto ordering(int compared) noexcept {
    if constexpr (requires { typename Traits::comparison_category; })
      return static_cast<typename Traits::comparison_category>(compared <=> 0);
    else if constexpr (std::is_same_v<Traits, std::char_traits<CharT>>)
      return compared <=> 0;
    else
      return static_cast<std::weak_ordering>(compared <=> 0);
  }
  // A moved-from string's "": writable, as std::basic_string's terminator
  // is (s[s.size()] = CharT() and *s.data() = CharT() are allowed; a
  // read-only one made them SIGSEGV), and one per thread, so that two
  // threads writing the terminators of two strings do not race (one for
  // the process did, under ThreadSanitizer). Only CharT() may be written.
  static CharT *empty_text() noexcept {
    static thread_local CharT nothing[1] = {};
    return nothing;
  }
  [[noreturn]] static void too_long() { detail::throw_length_error("secmem::secure_string: length over max_size()"); }
  static void check_length(size_type n) {
    if (n > max_size()) too_long();
  }
  size_type checked_pos(size_type pos, const char *what) const {
    if (pos > size_) detail::throw_out_of_range(what);
    return pos;
  }
  template <typename It> size_type offset(It p) const noexcept { return static_cast<size_type>(p - data()); }
  // Amortised growth: at least half as much again, never past max_size().
  size_type grown_capacity(size_type needed) const noexcept {
    return std::max({needed, std::min(capacity_ + capacity_ / 2, max_size()), kMinCapacity});
  }
  // Whether [text, text + n) touches this string's buffer (then it must be
  // copied before the buffer changes). Integer comparisons: the pointers may
  // belong to unrelated objects.
  bool overlaps(const CharT *text, size_type n) const noexcept {
    if (data_ == nullptr || n == 0) return false;
    auto begin = reinterpret_cast<std::uintptr_t>(data_);
    auto end = begin + (capacity_ + 1) * sizeof(CharT);
    auto first = reinterpret_cast<std::uintptr_t>(text);
    return first < end && first + n * sizeof(CharT) > begin;
  }
  static bool equal_chars(view_type a, view_type b) noexcept {
    return a.size() == b.size() && secmem_ct_equal(a.data(), b.data(), a.size() * sizeof(CharT)) == 1;
  }
  static basic_secure_string concat(view_type a, view_type b) {
    check_length(a.size());
    if (b.size() > max_size() - a.size()) too_long();
    basic_secure_string joined;
    joined.reserve(a.size() + b.size());
    joined.append(a);
    joined.append(b);
    return joined;
  }

  static CharT *allocate_buffer(size_type capacity) {
    check_length(capacity);
    return static_cast<CharT *>(detail::allocate_bytes(capacity + 1, sizeof(CharT), alignof(CharT)));
  }
  static void copy_chars(CharT *dest, const CharT *src, size_type n) noexcept {
    if (n != 0) Traits::copy(dest, src, n);
  }
  void init(size_type capacity) {
    data_ = allocate_buffer(std::max(capacity, kMinCapacity));
    capacity_ = std::max(capacity, kMinCapacity);
    size_ = 0;
  }
  void init_copy(const CharT *text, size_type n) {
    init(n);
    copy_chars(data_, text, n);
    set_size(n);
  }
  // Moves to a buffer of capacity max(capacity, size); the old one is zeroed as it is freed.
  void reallocate(size_type capacity) {
    capacity = std::max(capacity, size_);
    CharT *fresh = allocate_buffer(capacity);
    copy_chars(fresh, data_, size_);
    secmem_free(data_);
    data_ = fresh;
    capacity_ = capacity;
  }
  void set_size(size_type n) noexcept {
    size_ = n;
    data_[n] = CharT();
  }
  void shrink_size(size_type n) noexcept {
    std::memset(static_cast<void *>(data_ + n), 0, (size_ - n) * sizeof(CharT));
    set_size(n);
  }
  void erase_chars(size_type pos, size_type n) noexcept {
    if (n == 0) return;
    Traits::move(data_ + pos, data_ + pos + n, size_ - pos - n);
    shrink_size(size_ - n);
  }

  // The one body behind append, insert, replace and assign: replaces the
  // `count` characters at pos (pos <= size; count clamped) with n characters
  // that write(dest) puts at dest. Checks the length and allocates before it
  // changes anything.
  template <typename Writer> basic_secure_string &splice(size_type pos, size_type count, size_type n, Writer write) {
    count = std::min(count, size_ - pos);
    size_type kept = size_ - count;
    if (n > max_size() - kept) too_long();
    size_type new_size = kept + n;
    size_type tail = size_ - pos - count;
    if (data_ == nullptr || new_size > capacity_) {
      size_type capacity = grown_capacity(new_size);
      CharT *fresh = allocate_buffer(capacity);
      copy_chars(fresh, data_, pos);
      write(fresh + pos);
      copy_chars(fresh + pos + n, data_ + pos + count, tail);
      secmem_free(data_);
      data_ = fresh;
      capacity_ = capacity;
      size_ = new_size; // the fresh buffer is zero past it
      return *this;
    }
    if (n != count && tail != 0) Traits::move(data_ + pos + n, data_ + pos + count, tail);
    write(data_ + pos);
    if (new_size < size_) std::memset(static_cast<void *>(data_ + new_size), 0, (size_ - new_size) * sizeof(CharT));
    set_size(new_size);
    return *this;
  }
  basic_secure_string &replace_text(size_type pos, size_type count, const CharT *text, size_type n) {
    // The length first: text is not read when the result would be too long.
    if (n > max_size() - (size_ - std::min(count, size_ - pos))) too_long();
    if (overlaps(text, n)) {
      basic_secure_string copy(text, n);
      return replace_text(pos, count, copy.data_, n);
    }
    return splice(pos, count, n, [text, n](CharT *dest) { copy_chars(dest, text, n); });
  }
  basic_secure_string &replace_fill(size_type pos, size_type count, size_type n, CharT c) {
    return splice(pos, count, n, [n, c](CharT *dest) {
      if (n != 0) Traits::assign(dest, n, c);
    });
  }

  CharT *data_ = nullptr;
  size_type size_ = 0;
  size_type capacity_ = 0;
};

using secure_string = basic_secure_string<char>;
using secure_wstring = basic_secure_string<wchar_t>;

// ---- reading a line ----------------------------------------------------------------

// std::getline for a secure_string: reads from the stream buffer one
// character at a time straight into line (replacing its contents), with no
// std::string in between. Stream state as std::getline: eofbit at the end of
// input, failbit when nothing was extracted; the delimiter is extracted and
// not stored. (The stream's own buffer may still hold a copy of the input.)
template <typename CharT, typename Traits> std::basic_istream<CharT, Traits> &
getline(std::basic_istream<CharT, Traits> &in, basic_secure_string<CharT, Traits> &line, CharT delim) {
  using stream = std::basic_istream<CharT, Traits>;
  std::ios_base::iostate state = std::ios_base::goodbit;
  bool extracted = false;
  typename stream::sentry ok(in, true);
  if (ok) {
    SECMEM_DETAIL_TRY {
      line.clear();
      auto *buffer = in.rdbuf();
      while (true) {
        typename Traits::int_type next = buffer->sgetc();
        if (Traits::eq_int_type(next, Traits::eof())) {
          state |= std::ios_base::eofbit;
          break;
        }
        if (Traits::eq(Traits::to_char_type(next), delim)) {
          buffer->sbumpc();
          extracted = true;
          break;
        }
        if (line.size() == line.max_size()) {
          state |= std::ios_base::failbit;
          break;
        }
        line.push_back(Traits::to_char_type(next));
        buffer->sbumpc();
        extracted = true;
      }
    }
    SECMEM_DETAIL_CATCH(...) {
      // As the standard library does: badbit, and the exception again when the stream asks for it.
      if ((in.exceptions() & std::ios_base::badbit) == 0) {
        in.setstate(std::ios_base::badbit);
        return in;
      }
      SECMEM_DETAIL_TRY { in.setstate(std::ios_base::badbit); }
      SECMEM_DETAIL_CATCH(const std::ios_base::failure &) {}
      SECMEM_DETAIL_RETHROW;
    }
  }
  if (!extracted) state |= std::ios_base::failbit;
  if (state != std::ios_base::goodbit) in.setstate(state);
  return in;
}

template <typename CharT, typename Traits> std::basic_istream<CharT, Traits> &
getline(std::basic_istream<CharT, Traits> &in, basic_secure_string<CharT, Traits> &line) {
  return getline(in, line, in.widen('\n'));
}

// Reads one line from a file descriptor into line (replacing its contents),
// as a password prompt needs: read(2) one byte at a time, straight into the
// string's secret buffer (no byte of the line passes through the stack), so
// nothing after the delimiter is consumed: it stays for the next reader.
// Retries on EINTR. Returns the number of bytes consumed, the delimiter
// included (an empty line gives 1); 0 at end of input before any byte; -1
// with errno from read(2) on an error, line then cleared (its characters
// zeroed). The delimiter is not stored. Throws std::bad_alloc like push_back.
inline ssize_t read_line(int fd, secure_string &line, char delim = '\n') {
  line.clear();
  ssize_t consumed = 0;
  while (true) {
    line.push_back('\0'); // the slot the next byte is read into
    char *slot = line.data() + line.size() - 1;
    ssize_t got = 0;
    do {
      got = ::read(fd, slot, 1);
    } while (got < 0 && errno == EINTR);
    if (got <= 0) {
      int saved = errno;
      line.pop_back();
      if (got == 0) return consumed;
      line.clear();
      errno = saved;
      return -1;
    }
    ++consumed;
    if (*slot == delim) {
      line.pop_back(); // zeroes it
      return consumed;
    }
  }
}

// ---- std::pmr -------------------------------------------------------------------

#if defined(SECMEM_DETAIL_HAS_PMR)
namespace detail {
// Every one of these is equal to every other: they all give out and take back
// blocks of the one secret heap. A shared object built with
// -fvisibility=hidden has its own memory_resource() (as a plugin loaded
// RTLD_LOCAL has), and compared by address they were unequal: a pmr vector
// moved between a library and its program was copied, a list spliced between
// them aborted under _GLIBCXX_ASSERTIONS. Known by its type (RTTI compares
// the type's name across objects); without RTTI, by address only. A
// resource from code built with -fno-rtti has no type information to read
// (dynamic_cast crashed on it): its vtable's type slot, which the Itanium C++
// ABI (GCC and Clang on Linux) puts just before the virtual functions, is
// looked at first, and such a resource is not one of these.
class secret_memory_resource final : public std::pmr::memory_resource {
  void *do_allocate(std::size_t bytes, std::size_t alignment) override { return allocate_bytes(1, bytes, alignment); }
  void do_deallocate(void *p, std::size_t, std::size_t) override { secmem_free(p); }
  bool do_is_equal(const std::pmr::memory_resource &other) const noexcept override {
    if (this == &other) return true;
#if defined(__cpp_rtti) || defined(__GXX_RTTI)
    const void *const *vtable = nullptr;
    std::memcpy(&vtable, static_cast<const void *>(&other), sizeof vtable);
    if (vtable == nullptr || vtable[-1] == nullptr) return false; // built without RTTI
    return dynamic_cast<const secret_memory_resource *>(&other) != nullptr;
#else
    return false;
#endif
  }
};
} // namespace detail

// A memory resource over the secret heap, for std::pmr containers. Note that
// std::pmr::string still keeps short strings (15 chars in libstdc++) inside
// the string object; use secure_string for text.
inline std::pmr::memory_resource *memory_resource() noexcept {
  static detail::secret_memory_resource resource;
  return &resource;
}
#endif

// ---- sealed secrets ----------------------------------------------------------------

// A T on pages of its own that stay inaccessible (PROT_NONE) except while a
// reader or writer from read() / write() is alive:
//
//   secmem::sealed<std::array<unsigned char, 32>> key;      // sealed, zero
//   { auto w = key.write(); fill(w->data(), w->size()); }   // read-write here
//   { auto r = key.read(); sign(r->data()); }               // read-only here
//
// Outside those scopes any access to the T faults (SIGSEGV) instead of
// reading the secret. T must be trivially copyable: whatever a T owned
// elsewhere (a std::string's buffer) would not be sealed with it. Guards
// nest and may live in several threads at once; the protection is the
// process's, so while one thread holds a writer every thread can write.
// Throws std::bad_alloc when no secret memory is left, and std::system_error
// when the kernel refuses to change the protection (the mapping count limit).
template <typename T> class sealed {
  static_assert(std::is_trivially_copyable_v<T>,
                "secmem::sealed<T> needs a trivially copyable T: memory T owns elsewhere would not be sealed");
  static_assert(!std::is_const_v<T> && !std::is_volatile_v<T>,
                "secmem::sealed<T> takes T without const or volatile: read() gives const access");

public:
  template <typename Access> class guard {
  public:
    Access &operator*() const noexcept { return *ptr_; }
    Access *operator->() const noexcept { return ptr_; }
    Access *get() const noexcept { return ptr_; }
    guard(const guard &) = delete;
    guard &operator=(const guard &) = delete;
    guard(guard &&other) noexcept : ptr_(std::exchange(other.ptr_, nullptr)) {}
    guard &operator=(guard &&) = delete;
    ~guard() {
      if (ptr_ != nullptr) secmem_access_end(const_cast<T *>(ptr_), kMode);
    }

  private:
    friend class sealed;
    static constexpr int kMode = std::is_const_v<Access> ? SECMEM_READ : SECMEM_WRITE;
    explicit guard(Access *p) : ptr_(p) {
      if (secmem_access_begin(const_cast<T *>(p), kMode) != 0) detail::throw_system_error(errno, "secmem_access_begin");
    }
    Access *ptr_;
  };
  using reader = guard<const T>;
  using writer = guard<T>;

  // With no args: a T with a default constructor or member initialisers of
  // its own has them run (as T()); any other T is the heap's zero bytes (a
  // null pointer to member is not zero bytes in the Itanium ABI). With args:
  // T(args...). Made inside a write scope, then sealed.
  template <typename... Args>
  requires(!(sizeof...(Args) == 1 &&
             (std::is_same_v<std::remove_cvref_t<Args>, sealed> && ...))) explicit sealed(Args &&...args)
      : ptr_(static_cast<T *>(secmem_sealed_alloc(sizeof(T)))) {
    static_assert(alignof(T) <= 4096, "sealed<T>: T's alignment is more than a page");
    if (ptr_ == nullptr) detail::throw_bad_alloc();
    // Zero from the heap is T's value only for a T without a default
    // constructor or member initialisers of its own: others run theirs.
    if constexpr (sizeof...(Args) > 0 || !std::is_trivially_default_constructible_v<T>) {
      SECMEM_DETAIL_TRY {
        writer w(ptr_);
        new (ptr_) T(std::forward<Args>(args)...);
      }
      SECMEM_DETAIL_CATCH(...) {
        secmem_free(ptr_);
        SECMEM_DETAIL_RETHROW;
      }
    }
  }
  sealed(const sealed &) = delete;
  sealed &operator=(const sealed &) = delete;
  sealed(sealed &&other) noexcept : ptr_(std::exchange(other.ptr_, nullptr)) {}
  sealed &operator=(sealed &&other) noexcept {
    if (this != &other) {
      secmem_free(ptr_);
      ptr_ = std::exchange(other.ptr_, nullptr);
    }
    return *this;
  }
  ~sealed() { secmem_free(ptr_); } // trivially destructible: zeroing is all there is to do

  reader read() const { return reader(ptr_); }
  writer write() { return writer(ptr_); }
  // The address, for comparisons and fault diagnostics; dereference it only
  // inside a scope. Null after a move.
  const void *address() const noexcept { return ptr_; }

private:
  T *ptr_;
};

} // namespace secmem

// Hashing a secure_string hashes its characters (as std::string_view's hash
// does), for unordered containers. The hash of a secret is derived from the
// secret: keep it inside the process, never log or send it.
namespace std {
template <typename CharT, typename Traits> struct hash<secmem::basic_secure_string<CharT, Traits>> {
  size_t operator()(const secmem::basic_secure_string<CharT, Traits> &s) const noexcept {
    return hash<basic_string_view<CharT, Traits>>{}(s.view());
  }
};
} // namespace std

#undef SECMEM_DETAIL_TRY
#undef SECMEM_DETAIL_CATCH
#undef SECMEM_DETAIL_RETHROW
#endif // C++20
#endif // SECMEM_SECURE_ALLOC_HPP
