#!/bin/sh
# The Debian packages, built from this tree with debhelper (./bootstrap deb
# does the same), checked by lintian (no error), installed with dpkg -i, used
# from their installed paths only (secmem probe, secmem demo, openssl under
# the packaged shim, a C++ program built against libsecmem-dev through CMake
# and pkg-config), then purged: nothing of theirs may be left.
# Usage: deb_test.sh SOURCE_DIR WORK_DIR   (as root; refuses to touch
# secmem packages that were installed before it ran)
set -eu
src=$1
work=$2
fail() { echo "deb_test: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || fail "installing packages needs root"
for pkg in secmem libsecmem0 libsecmem-dev; do
  if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed"; then
    fail "$pkg is installed on this machine: the test installs and purges its own build, so remove it first"
  fi
done

rm -rf "$work"
mkdir -p "$work"
"$src/bootstrap" deb-build "$work" >"$work/build.log" 2>&1 || { tail -40 "$work/build.log" >&2; fail "the packages did not build"; }
debs=
for pkg in libsecmem0 libsecmem-dev secmem; do
  deb=$(ls "$work/${pkg}_"*.deb 2>/dev/null) || fail "no $pkg package was built"
  debs="$debs $deb"
done
lintian --fail-on error "$work"/*.changes >"$work/lintian.log" 2>&1 || { cat "$work/lintian.log" >&2; fail "lintian reports errors"; }

cleanup() { dpkg --purge secmem libsecmem-dev libsecmem0 >/dev/null 2>&1 || true; }
trap cleanup EXIT
# shellcheck disable=SC2086 # one word per package file
dpkg -i $debs >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log" >&2; fail "dpkg -i failed"; }
files=$(dpkg -L secmem libsecmem0 libsecmem-dev | sort -u)
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
for f in /usr/bin/secmem "/usr/lib/$multiarch/secmem/libsecmem_preload.so" "/usr/lib/$multiarch/libsecmem.so.0" \
         /usr/include/secmem/secmem.h "/usr/lib/$multiarch/cmake/secmem/secmemConfig.cmake" \
         /usr/share/man/man1/secmem.1.gz /usr/share/man/man3/secmem_malloc.3.gz /usr/share/man/man7/secmem.7.gz \
         /usr/libexec/secmem/secmem-demo-signer /usr/share/doc/secmem/examples/secmem.conf; do
  echo "$files" | grep -qx "$f" || fail "not in the packages: $f"
done

# From the installed paths only: a clean environment, no build tree on any path.
run() { env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root "$@"; }
out=$(cd / && run secmem probe) || fail "secmem probe failed: $out"
echo "$out" | grep -q '^memfd_secret:      works' || fail "secmem probe: $out"
out=$(cd / && run secmem demo 2>&1) || fail "secmem demo failed: $out"
echo "$out" | grep -q "Under secmem no readable copy of the key is left" || fail "secmem demo: $out"
echo "$out" | grep -q "/work\|build/" && fail "secmem demo used a build tree: $out"
shim="/usr/lib/$multiarch/secmem/libsecmem_preload.so"
out=$(cd / && run LD_PRELOAD="$shim" SECMEM_REPORT=stderr openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
        -out /dev/null 2>&1) || fail "openssl under the packaged shim failed: $out"
echo "$out" | grep -q "backend memfd_secret; secret allocations openssl [1-9]" || fail "openssl under the shim: $out"
out=$(cd / && run secmem systemd nginx) || fail "secmem systemd nginx: $out"
echo "$out" | grep -qx "Environment=\"LD_PRELOAD=$shim\"" || fail "secmem systemd gives another path: $out"

# libsecmem-dev: a C++ program through CMake, and through pkg-config.
mkdir -p "$work/use"
cat > "$work/use/use.cpp" <<'CXX'
#include <secmem/secure_alloc.hpp>
#include <cstdio>
int main() {
  secmem::secure_string s("packaged");
  std::printf("%d\n", secmem_owns(s.data()));
  return secmem_owns(s.data()) == 1 ? 0 : 1;
}
CXX
printf 'cmake_minimum_required(VERSION 3.16)\nproject(use CXX)\nfind_package(secmem REQUIRED)\nadd_executable(use use.cpp)\ntarget_compile_features(use PRIVATE cxx_std_20)\ntarget_link_libraries(use PRIVATE secmem::secmem)\n' \
  > "$work/use/CMakeLists.txt"
(run cmake -S "$work/use" -B "$work/use/build" && run cmake --build "$work/use/build") >"$work/cmake.log" 2>&1 ||
  { cat "$work/cmake.log" >&2; fail "a CMake project against libsecmem-dev did not build"; }
[ "$(run "$work/use/build/use")" = 1 ] || fail "the CMake-built program's string is not secret"
# shellcheck disable=SC2046 # pkg-config's words
run g++ -std=c++20 -o "$work/use/use-pc" "$work/use/use.cpp" $(run pkg-config --cflags --libs secmem) ||
  fail "a pkg-config build against libsecmem-dev failed"
[ "$(run "$work/use/use-pc")" = 1 ] || fail "the pkg-config-built program's string is not secret"

# Purged: no file of theirs left, nor their directories.
dpkg --purge secmem libsecmem-dev libsecmem0 >"$work/purge.log" 2>&1 || { cat "$work/purge.log" >&2; fail "purge failed"; }
trap - EXIT
for f in $files; do
  [ -e "$f" ] || continue
  [ -d "$f" ] && [ -n "$(ls -A "$f" 2>/dev/null)" ] && continue # a shared directory (/usr/lib/...) with other files
  case "$f" in /usr/lib/"$multiarch"/secmem | /usr/include/secmem | /usr/libexec/secmem | /usr/share/doc/*secmem* | \
               /usr/lib/"$multiarch"/cmake/secmem) fail "left after purge: $f" ;; esac
  [ -d "$f" ] || fail "left after purge: $f"
done
echo "deb_test: libsecmem0, libsecmem-dev and secmem built, lintian without error, installed, used from their paths, purged"
