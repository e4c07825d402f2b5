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
//   owns no memory.
// - Allocation failure throws std::bad_alloc (std::bad_array_new_length when
//   the byte count overflows). The core library itself never throws.
// - Not covered: copies a program makes elsewhere (std::string, the stack,
//   I/O buffers), and std::pmr::string's own small-string buffer (use
//   secure_string for text).
#ifndef SECMEM_SECURE_ALLOC_HPP
#define SECMEM_SECURE_ALLOC_HPP

#include <algorithm>
#include <cerrno>
#include <compare>
#include <cstddef>
#include <cstring>
#include <deque>
#include <limits>
#include <list>
#include <map>
#include <memory>
#include <memory_resource>
#include <new>
#include <stdexcept>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include "secmem/secmem.h"

namespace secmem {

namespace detail {

// Raw secret memory for n objects of size and alignment given; throws on failure.
inline void *allocate_bytes(std::size_t n, std::size_t size, std::size_t alignment) {
  std::size_t bytes = 0;
  if (__builtin_mul_overflow(n, size, &bytes)) throw std::bad_array_new_length();
  void *p = alignment <= 16 ? secmem_malloc(bytes) : secmem_aligned_alloc(alignment, bytes);
  if (p == nullptr) throw std::bad_alloc();
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
  void operator()(T *p) const noexcept {
    if (p == nullptr) return;
    p->~T();
    secmem_free(p);
  }
};

// The array form remembers its length, to destroy each element.
template <typename T> struct secure_delete<T[]> {
  std::size_t count = 0;
  void operator()(T *p) const noexcept {
    if (p == nullptr) return;
    std::destroy_n(p, count);
    secmem_free(p);
  }
};

template <typename T> using secure_unique_ptr = std::unique_ptr<T, secure_delete<T>>;

// make_secure<T>(args...): one T constructed in secret memory.
template <typename T, typename... Args>
requires(!std::is_array_v<T>) secure_unique_ptr<T> make_secure(Args &&...args) {
  void *raw = detail::allocate_bytes(1, sizeof(T), alignof(T));
  try {
    return secure_unique_ptr<T>(::new (raw) T(std::forward<Args>(args)...));
  } catch (...) {
    secmem_free(raw);
    throw;
  }
}

// make_secure<T[]>(n): n value-initialised Ts in secret memory.
template <typename T>
requires std::is_unbounded_array_v<T> secure_unique_ptr<T> make_secure(std::size_t n) {
  using E = std::remove_extent_t<T>;
  E *raw = static_cast<E *>(detail::allocate_bytes(n == 0 ? 1 : n, sizeof(E), alignof(E)));
  std::size_t built = 0;
  try {
    for (; built < n; ++built) ::new (static_cast<void *>(raw + built)) E();
  } catch (...) {
    std::destroy_n(raw, built);
    secmem_free(raw);
    throw;
  }
  return secure_unique_ptr<T>(raw, secure_delete<T>{n});
}

// ---- strings --------------------------------------------------------------------

// A string whose characters are always in the secret heap: no small-string
// buffer, and a buffer even when empty (so data() is secret at every length).
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
  using view_type = std::basic_string_view<CharT, Traits>;
  static constexpr size_type npos = static_cast<size_type>(-1);

  basic_secure_string() { allocate(kMinCapacity); }
  // Explicit: each of these makes a new secret copy of text.
  explicit basic_secure_string(view_type text) { assign_new(text); }
  explicit basic_secure_string(const CharT *text) : basic_secure_string(view_type(text)) {}
  basic_secure_string(const CharT *text, size_type n) : basic_secure_string(view_type(text, n)) {}
  basic_secure_string(size_type n, CharT c) {
    allocate(n);
    Traits::assign(data_, n, c);
    set_size(n);
  }
  basic_secure_string(const basic_secure_string &other) : basic_secure_string(other.view()) {}
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

  basic_secure_string &assign(view_type text) {
    if (data_ == nullptr || text.size() > capacity_ || overlaps(text)) {
      basic_secure_string copy(text);
      swap(copy);
    } else {
      Traits::copy(data_, text.data(), text.size());
      shrink_size(text.size());
    }
    return *this;
  }

  // Access. A moved-from string has no buffer: data() is then "".
  const CharT *data() const noexcept { return data_ != nullptr ? data_ : empty_text(); }
  CharT *data() noexcept { return data_ != nullptr ? data_ : const_cast<CharT *>(empty_text()); }
  const CharT *c_str() const noexcept { return data(); }
  size_type size() const noexcept { return size_; }
  size_type length() const noexcept { return size_; }
  size_type capacity() const noexcept { return capacity_; }
  bool empty() const noexcept { return size_ == 0; }
  size_type max_size() const noexcept { return std::numeric_limits<size_type>::max() / sizeof(CharT) - 1; }
  CharT &operator[](size_type i) noexcept { return data()[i]; }
  const CharT &operator[](size_type i) const noexcept { return data()[i]; }
  CharT &at(size_type i) { return i < size_ ? data_[i] : throw std::out_of_range("secmem::secure_string::at"); }
  const CharT &at(size_type i) const {
    return i < size_ ? data_[i] : throw std::out_of_range("secmem::secure_string::at");
  }
  CharT &front() noexcept { return data_[0]; }
  CharT &back() noexcept { return data_[size_ - 1]; }
  iterator begin() noexcept { return data(); }
  iterator end() noexcept { return data() + size_; }
  const_iterator begin() const noexcept { return data(); }
  const_iterator end() const noexcept { return data() + size_; }
  const_iterator cbegin() const noexcept { return data(); }
  const_iterator cend() const noexcept { return data() + size_; }
  view_type view() const noexcept { return view_type(data(), size_); }
  operator view_type() const noexcept { return view(); }

  // Changing the size. Characters dropped from the end are zeroed.
  void reserve(size_type n) {
    if (data_ == nullptr || n > capacity_) reallocate(n);
  }
  void resize(size_type n, CharT c = CharT()) {
    if (n > size_) {
      reserve(grown(n));
      Traits::assign(data_ + size_, n - size_, c);
      set_size(n);
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
  void push_back(CharT c) {
    if (size_ == capacity_ || data_ == nullptr) reserve(grown(size_ + 1));
    data_[size_] = c;
    set_size(size_ + 1);
  }
  void pop_back() noexcept { shrink_size(size_ - 1); }
  basic_secure_string &append(view_type text) {
    if (overlaps(text)) {
      basic_secure_string copy(text);
      return append(copy.view());
    }
    if (size_ + text.size() > capacity_ || data_ == nullptr) reserve(grown(size_ + text.size()));
    Traits::copy(data_ + size_, text.data(), text.size());
    set_size(size_ + text.size());
    return *this;
  }
  basic_secure_string &append(size_type n, CharT c) {
    reserve(grown(size_ + n));
    Traits::assign(data_ + size_, n, c);
    set_size(size_ + n);
    return *this;
  }
  basic_secure_string &operator+=(view_type text) { return append(text); }
  basic_secure_string &operator+=(const CharT *text) { return append(view_type(text)); }
  basic_secure_string &operator+=(CharT c) {
    push_back(c);
    return *this;
  }

  // Searching and comparing (through string_view: no copies).
  size_type find(view_type text, size_type pos = 0) const noexcept { return view().find(text, pos); }
  size_type find(CharT c, size_type pos = 0) const noexcept { return view().find(c, pos); }
  basic_secure_string substr(size_type pos = 0, size_type n = npos) const {
    if (pos > size_) throw std::out_of_range("secmem::secure_string::substr");
    return basic_secure_string(view().substr(pos, n));
  }
  int compare(view_type text) const noexcept { return view().compare(text); }
  friend bool operator==(const basic_secure_string &a, view_type b) noexcept { return a.view() == b; }
  friend auto operator<=>(const basic_secure_string &a, view_type b) noexcept { return a.view() <=> b; }
  friend bool operator==(const basic_secure_string &a, const basic_secure_string &b) noexcept {
    return a.view() == b.view();
  }
  friend auto operator<=>(const basic_secure_string &a, const basic_secure_string &b) noexcept {
    return a.view() <=> b.view();
  }

  void swap(basic_secure_string &other) noexcept {
    std::swap(data_, other.data_);
    std::swap(size_, other.size_);
    std::swap(capacity_, other.capacity_);
  }
  friend void swap(basic_secure_string &a, basic_secure_string &b) noexcept { a.swap(b); }

private:
  static constexpr size_type kMinCapacity = 15;

  static const CharT *empty_text() noexcept {
    static const CharT nothing[1] = {};
    return nothing;
  }
  static size_type grown(size_type needed) noexcept { return std::max(needed, size_type{kMinCapacity}); }
  size_type grow_target(size_type n) const noexcept { return std::max(n, capacity_ + capacity_ / 2); }
  bool overlaps(view_type text) const noexcept {
    return data_ != nullptr && text.data() >= data_ && text.data() <= data_ + capacity_;
  }

  void allocate(size_type n) {
    data_ = static_cast<CharT *>(detail::allocate_bytes(n + 1, sizeof(CharT), alignof(CharT)));
    capacity_ = n;
    size_ = 0;
    data_[0] = CharT();
  }
  void assign_new(view_type text) {
    allocate(std::max(text.size(), size_type{kMinCapacity}));
    Traits::copy(data_, text.data(), text.size());
    set_size(text.size());
  }
  // Moves to a buffer of capacity max(n, size) (more when growing, for
  // amortised appends); the old buffer is zeroed as it is freed.
  void reallocate(size_type n) {
    size_type capacity = std::max(n, size_);
    if (n > capacity_ && data_ != nullptr) capacity = grow_target(n);
    auto *fresh = static_cast<CharT *>(detail::allocate_bytes(capacity + 1, sizeof(CharT), alignof(CharT)));
    if (data_ != nullptr) Traits::copy(fresh, data_, size_);
    fresh[size_] = CharT();
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

  CharT *data_ = nullptr;
  size_type size_ = 0;
  size_type capacity_ = 0;
};

using secure_string = basic_secure_string<char>;
using secure_wstring = basic_secure_string<wchar_t>;

// ---- std::pmr -------------------------------------------------------------------

namespace detail {
class secret_memory_resource final : public std::pmr::memory_resource {
  void *do_allocate(std::size_t bytes, std::size_t alignment) override { return allocate_bytes(1, bytes, alignment); }
  void do_deallocate(void *p, std::size_t, std::size_t) override { secmem_free(p); }
  bool do_is_equal(const std::pmr::memory_resource &other) const noexcept override { return this == &other; }
};
} // namespace detail

// A memory resource over the secret heap, for std::pmr containers. Note that
// std::pmr::string still keeps short strings (15 chars in libstdc++) inside
// the string object; use secure_string for text.
inline std::pmr::memory_resource *memory_resource() noexcept {
  static detail::secret_memory_resource resource;
  return &resource;
}

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
      if (secmem_access_begin(const_cast<T *>(p), kMode) != 0)
        throw std::system_error(errno, std::generic_category(), "secmem_access_begin");
    }
    Access *ptr_;
  };
  using reader = guard<const T>;
  using writer = guard<T>;

  // Value-initialises the T (zero for arrays and aggregates of scalars), or
  // constructs it from args inside a write scope; then seals it.
  template <typename... Args>
  requires(!(sizeof...(Args) == 1 &&
             (std::is_same_v<std::remove_cvref_t<Args>, sealed> && ...))) explicit sealed(Args &&...args)
      : ptr_(static_cast<T *>(secmem_sealed_alloc(sizeof(T)))) {
    static_assert(alignof(T) <= 4096, "sealed<T>: T's alignment is more than a page");
    if (ptr_ == nullptr) throw std::bad_alloc();
    if constexpr (sizeof...(Args) > 0) {
      try {
        writer w(ptr_);
        new (ptr_) T(std::forward<Args>(args)...);
      } catch (...) {
        secmem_free(ptr_);
        throw;
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

#endif // SECMEM_SECURE_ALLOC_HPP
