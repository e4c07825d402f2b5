#!/bin/sh
# `meson install` into a scratch root, then the two ways a project finds the
# library: CMake (find_package(secmem) -> secmem::secmem) and pkg-config.
# Each builds a C and a C++ program from the installed files alone, which
# must run and hold their secret in the secret heap. Also: what is
# installed, and that a CMake project asking for another version is refused.
# Usage: install_test.sh BUILD_DIR
set -eu
build=$1
tmp=$(mktemp -d /tmp/secmem-install-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "install_test: $*" >&2; exit 1; }

meson install -C "$build" --destdir "$tmp/root" --no-rebuild --quiet >/dev/null
eval "$(meson introspect "$build" --buildoptions | python3 -c '
import json, sys
o = {x["name"]: x["value"] for x in json.load(sys.stdin)}
for k in ("prefix", "libdir", "includedir", "bindir", "libexecdir", "mandir"):
    print("%s=%s" % (k, o[k]))')"
root=$tmp/root$prefix
lib=$root/$libdir
for f in "$lib/libsecmem.so.0" "$lib/libsecmem.so" "$lib/libsecmem.a" "$lib/secmem/libsecmem_preload.so" \
         "$lib/pkgconfig/secmem.pc" "$lib/cmake/secmem/secmemConfig.cmake" \
         "$lib/cmake/secmem/secmemConfigVersion.cmake" "$root/$includedir/secmem/secmem.h" \
         "$root/$includedir/secmem/secure_alloc.hpp" "$root/$bindir/secmem" \
         "$root/$libexecdir/secmem/secmem-demo-signer" "$root/$mandir/man1/secmem.1" "$root/$mandir/man7/secmem.7" \
         "$root/$mandir/man3/secmem_malloc.3" "$root/$mandir/man3/secmem_calloc.3"; do
  [ -e "$f" ] || fail "not installed: ${f#"$tmp"/root}"
done
[ ! -e "$root/$includedir/secmem/internal" ] || fail "internal headers installed"

mkdir -p "$tmp/project"
cat > "$tmp/project/use.cpp" <<'CXX'
#include <secmem/secure_alloc.hpp>
#include <cstdio>
int main() {
  secmem::secure_string password("correct horse");
  password += " battery";
  std::printf("c++: %zu chars, secret %d\n", password.size(), secmem_owns(password.data()));
  return secmem_owns(password.data()) == 1 ? 0 : 1;
}
CXX
cat > "$tmp/project/use.c" <<'C'
#include <secmem/secmem.h>
#include <stdio.h>
#include <string.h>
int main(void) {
  char *key = secmem_malloc(32);
  if (key == NULL) return 1;
  memset(key, 7, 32);
  int owned = secmem_owns(key);
  printf("c: secret %d\n", owned);
  secmem_free(key);
  return owned == 1 ? 0 : 1;
}
C
cat > "$tmp/project/CMakeLists.txt" <<'CMAKE'
cmake_minimum_required(VERSION 3.16)
project(uses_secmem C CXX)
find_package(secmem 0.1 REQUIRED)
add_executable(use_cxx use.cpp)
target_compile_features(use_cxx PRIVATE cxx_std_20)
target_link_libraries(use_cxx PRIVATE secmem::secmem)
add_executable(use_c use.c)
target_link_libraries(use_c PRIVATE secmem::secmem)
CMAKE
cmake -S "$tmp/project" -B "$tmp/cmake-build" -DCMAKE_PREFIX_PATH="$root" >"$tmp/cmake.log" 2>&1 ||
  { cat "$tmp/cmake.log" >&2; fail "cmake could not configure a project with find_package(secmem)"; }
cmake --build "$tmp/cmake-build" >>"$tmp/cmake.log" 2>&1 || { cat "$tmp/cmake.log" >&2; fail "cmake build failed"; }
out=$(LD_LIBRARY_PATH=$lib "$tmp/cmake-build/use_cxx") || fail "use_cxx (CMake) failed: $out"
[ "$out" = "c++: 21 chars, secret 1" ] || fail "use_cxx (CMake) printed: $out"
out=$(LD_LIBRARY_PATH=$lib "$tmp/cmake-build/use_c") || fail "use_c (CMake) failed: $out"
[ "$out" = "c: secret 1" ] || fail "use_c (CMake) printed: $out"

# A version the package does not offer is refused.
sed 's/find_package(secmem 0.1 REQUIRED)/find_package(secmem 1.0 REQUIRED)/' "$tmp/project/CMakeLists.txt" \
  > "$tmp/project/CMakeLists.txt.new" && mv "$tmp/project/CMakeLists.txt.new" "$tmp/project/CMakeLists.txt"
if cmake -S "$tmp/project" -B "$tmp/cmake-build-1.0" -DCMAKE_PREFIX_PATH="$root" >"$tmp/cmake-1.0.log" 2>&1; then
  fail "find_package(secmem 1.0) was accepted by version $(sed -n 's/^set(PACKAGE_VERSION "\(.*\)")/\1/p' \
    "$lib/cmake/secmem/secmemConfigVersion.cmake")"
fi
grep -q 'version: 0.1' "$tmp/cmake-1.0.log" || { cat "$tmp/cmake-1.0.log" >&2; fail "cmake did not name the version it found"; }

# pkg-config, through the scratch root.
export PKG_CONFIG_PATH="$lib/pkgconfig" PKG_CONFIG_SYSROOT_DIR="$tmp/root"
flags=$(pkg-config --cflags --libs secmem) || fail "pkg-config does not know secmem"
# shellcheck disable=SC2086 # the flags are words
g++ -std=c++20 -o "$tmp/use_cxx_pc" "$tmp/project/use.cpp" $flags || fail "g++ with pkg-config flags failed"
# shellcheck disable=SC2086
gcc -o "$tmp/use_c_pc" "$tmp/project/use.c" $flags || fail "gcc with pkg-config flags failed"
# An older C++ standard is refused by the C++ header's first line, which says what it needs.
# shellcheck disable=SC2086
if g++ -std=c++17 -c -o "$tmp/use17.o" "$tmp/project/use.cpp" $flags 2>"$tmp/cxx17.log"; then fail "C++17 was accepted"; fi
[ "$(grep -c 'error' "$tmp/cxx17.log")" -ge 1 ] && grep -m1 'error' "$tmp/cxx17.log" | grep -q 'needs C++20' ||
  { cat "$tmp/cxx17.log" >&2; fail "the first error under C++17 does not say C++20 is needed"; }
out=$(LD_LIBRARY_PATH=$lib "$tmp/use_cxx_pc") && [ "$out" = "c++: 21 chars, secret 1" ] || fail "use_cxx (pkg-config): $out"
out=$(LD_LIBRARY_PATH=$lib "$tmp/use_c_pc") && [ "$out" = "c: secret 1" ] || fail "use_c (pkg-config): $out"

# The C++ header in the builds projects use: without exceptions (it did not
# compile: `throw` in the header), with clang and libc++ (Debian 12's libc++
# 14 has no <memory_resource> and no string_view <=>: neither compiled),
# each with the warnings a strict project turns into errors.
cat > "$tmp/project/strict.cpp" <<'CXX'
#include <secmem/secure_alloc.hpp>
#include <cstdio>
#include <map>
int main(int argc, char **) {
  secmem::secure_string a("alpha"), b("beta");
  std::map<secmem::secure_string, int, std::less<>> order{{b, 2}, {a, 1}};
  secmem::secure_vector<int> v{1, 2, 3};
  auto keys = secmem::make_secure<secmem::secure_string[]>(3);
  keys[0] = a;
  std::strong_ordering same = a <=> std::string_view("alpha"); // libc++ 14's char_traits names no category
  std::printf("%d %d %d %zu %d\n", a < b, same == 0, order.begin()->second, v.size(), secmem_owns(keys[0].data()));
  if (argc > 1) v.reserve(std::size_t{1} << 60); // more than the heap can give
  return 0;
}
CXX
# shellcheck disable=SC2086
for compiler in "g++ -std=c++20 -fno-exceptions" "clang++ -std=c++20 -fno-exceptions" "clang++ -std=c++20 -stdlib=libc++" \
  "clang++ -std=c++20 -stdlib=libc++ -fno-exceptions"; do
  $compiler -Wall -Wextra -Werror -pedantic -o "$tmp/strict" "$tmp/project/strict.cpp" $flags 2>"$tmp/strict.log" ||
    { cat "$tmp/strict.log" >&2; fail "$compiler could not build a program using secure_alloc.hpp"; }
  out=$(LD_LIBRARY_PATH=$lib "$tmp/strict") && [ "$out" = "1 1 1 3 1" ] || fail "$compiler: the program printed $out"
  # Without exceptions, what would have been thrown ends the program, saying what it was: with libstdc++,
  # thrown by its own functions (as its containers' are) and std::terminate; with libc++, the header's line.
  case $compiler in
  *libc++*-fno-exceptions*) said='^secmem: std::bad_alloc (compiled without exceptions: abort)$' ;;
  *-fno-exceptions*) said="terminate called after throwing an instance of 'std::bad_alloc'" ;;
  *) said= ;;
  esac
  if [ -n "$said" ]; then
    if LD_LIBRARY_PATH=$lib "$tmp/strict" fail 2>"$tmp/strict.err"; then fail "$compiler: no abort without exceptions"; fi
    grep -q "$said" "$tmp/strict.err" || { cat "$tmp/strict.err" >&2; fail "$compiler: the abort did not say what failed"; }
  fi
done

# A library built without exceptions beside one that catches what the header
# throws: the header's inline functions are the same in both (libstdc++'s
# own functions throw), so the catch runs (the library without exceptions
# had its aborting copy taken for every caller, and the program aborted).
cat > "$tmp/project/noexc_lib.cpp" <<'CXX'
#include <secmem/secure_alloc.hpp>
bool reserve_without_exceptions(std::size_t n) { secmem::secure_string s; s.reserve(n); return true; }
CXX
cat > "$tmp/project/catching_lib.cpp" <<'CXX'
#include <secmem/secure_alloc.hpp>
bool reserve_or_not(std::size_t n) {
  try { secmem::secure_string s; s.reserve(n); return true; } catch (const std::length_error &) { return false; }
}
CXX
cat > "$tmp/project/mixed.cpp" <<'CXX'
#include <cstddef>
#include <cstdio>
bool reserve_without_exceptions(std::size_t n);
bool reserve_or_not(std::size_t n);
int main(int argc, char **) {
  if (argc > 5) reserve_without_exceptions(1);
  std::printf("%d\n", reserve_or_not(static_cast<std::size_t>(-1) / 2));
}
CXX
# shellcheck disable=SC2086
g++ -std=c++20 -O2 -fPIC -shared -fno-exceptions -o "$tmp/libnoexc.so" "$tmp/project/noexc_lib.cpp" $flags &&
  g++ -std=c++20 -O2 -fPIC -shared -o "$tmp/libcatching.so" "$tmp/project/catching_lib.cpp" $flags &&
  g++ -std=c++20 -O2 -o "$tmp/mixed" "$tmp/project/mixed.cpp" -L"$tmp" -lnoexc -lcatching $flags ||
  fail "the programs mixing builds with and without exceptions did not build"
out=$(LD_LIBRARY_PATH=$lib:$tmp "$tmp/mixed" 2>&1) && [ "$out" = "0" ] ||
  fail "a library's catch of the header's length_error did not run beside a library built without exceptions: $out"

# One pmr resource's worth of equality, however the objects that use it were
# built: a library and its program both compiled with -fvisibility=hidden
# each have their own resource, and they compared unequal (a pmr vector
# moved between them was copied, a list spliced between them aborted under
# _GLIBCXX_ASSERTIONS).
cat > "$tmp/project/resource_lib.cpp" <<'CXX'
#include <secmem/secure_alloc.hpp>
__attribute__((visibility("default"))) std::pmr::memory_resource *library_resource() { return secmem::memory_resource(); }
CXX
cat > "$tmp/project/resource_main.cpp" <<'CXX'
#include <secmem/secure_alloc.hpp>
#include <cstdio>
std::pmr::memory_resource *library_resource();
int main() {
  std::pmr::vector<int> here({1, 2, 3}, secmem::memory_resource()), there(library_resource());
  const int *buffer = here.data();
  there = std::move(here);
  std::printf("%d %d\n", library_resource()->is_equal(*secmem::memory_resource()), there.data() == buffer);
}
CXX
# shellcheck disable=SC2086
g++ -std=c++20 -fvisibility=hidden -fPIC -shared -o "$tmp/libresource.so" "$tmp/project/resource_lib.cpp" $flags &&
  g++ -std=c++20 -fvisibility=hidden -o "$tmp/resource" "$tmp/project/resource_main.cpp" -L"$tmp" -lresource $flags ||
  fail "the pmr resource programs did not build"
out=$(LD_LIBRARY_PATH=$lib:$tmp "$tmp/resource") && [ "$out" = "1 1" ] ||
  fail "the library's and the program's pmr resources differ (is_equal, buffer moved): $out"

# Compared with a resource from code built with -fno-rtti (a program's own
# arena): unequal, and no crash (dynamic_cast read the type information that
# code does not have: SIGSEGV).
cat > "$tmp/project/arena.cpp" <<'CXX'
#include <cstdlib>
#include <memory_resource>
struct Arena final : std::pmr::memory_resource {
  void *do_allocate(std::size_t b, std::size_t) override { return std::malloc(b); }
  void do_deallocate(void *p, std::size_t, std::size_t) override { std::free(p); }
  bool do_is_equal(const std::pmr::memory_resource &o) const noexcept override { return this == &o; }
};
std::pmr::memory_resource *arena() { static Arena a; return &a; }
CXX
cat > "$tmp/project/arena_main.cpp" <<'CXX'
#include <secmem/secure_alloc.hpp>
#include <cstdio>
std::pmr::memory_resource *arena();
int main() {
  std::pmr::vector<int> secret({1, 2, 3}, secmem::memory_resource()), scratch({4, 5}, arena());
  secret = std::move(scratch);
  std::printf("%d %d %zu\n", secmem::memory_resource()->is_equal(*arena()), arena()->is_equal(*secmem::memory_resource()),
              secret.size());
}
CXX
# shellcheck disable=SC2086
g++ -std=c++20 -O2 -fno-rtti -c -o "$tmp/arena.o" "$tmp/project/arena.cpp" &&
  g++ -std=c++20 -O2 -o "$tmp/arena" "$tmp/project/arena_main.cpp" "$tmp/arena.o" $flags ||
  fail "the program with a -fno-rtti arena did not build"
out=$(LD_LIBRARY_PATH=$lib "$tmp/arena" 2>&1) && [ "$out" = "0 0 2" ] ||
  fail "the secret resource compared with a -fno-rtti one: $out"

# A libdir outside the prefix (meson keeps it absolute): the CMake package
# uses it as it is (it was pasted after the prefix). Here the package's
# files alone, in another prefix, their libdir rewritten to the absolute one.
mkdir -p "$tmp/elsewhere/lib/cmake"
cp -r "$lib/cmake/secmem" "$tmp/elsewhere/lib/cmake/"
sed -i "s|^set(_secmem_libdir \".*\")|set(_secmem_libdir \"$lib\")|; s|^set(_secmem_includedir \".*\")|set(_secmem_includedir \"$root/$includedir\")|" \
  "$tmp/elsewhere/lib/cmake/secmem/secmemConfig.cmake"
grep -q "^set(_secmem_libdir \"/" "$tmp/elsewhere/lib/cmake/secmem/secmemConfig.cmake" ||
  fail "secmemConfig.cmake sets no _secmem_libdir to rewrite"
sed -i 's/find_package(secmem 1.0 REQUIRED)/find_package(secmem 0.1 REQUIRED)/' "$tmp/project/CMakeLists.txt"
cmake -S "$tmp/project" -B "$tmp/cmake-elsewhere" -DCMAKE_PREFIX_PATH="$tmp/elsewhere" >"$tmp/cmake-elsewhere.log" 2>&1 &&
  cmake --build "$tmp/cmake-elsewhere" >>"$tmp/cmake-elsewhere.log" 2>&1 ||
  { cat "$tmp/cmake-elsewhere.log" >&2; fail "a CMake package with an absolute libdir did not build"; }
out=$(LD_LIBRARY_PATH=$lib "$tmp/cmake-elsewhere/use_cxx") && [ "$out" = "c++: 21 chars, secret 1" ] ||
  fail "use_cxx (absolute libdir) printed: $out"
echo "install_test: installed files, CMake (secmem::secmem, version check, an absolute libdir), pkg-config builds," \
  "the C++ header without exceptions (also beside a library with them) and with libc++, pmr resources equal across" \
  "objects and unequal to a -fno-rtti one: ok"
