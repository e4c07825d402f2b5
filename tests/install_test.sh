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
echo "install_test: installed files, CMake (secmem::secmem, version check) and pkg-config builds: ok"
