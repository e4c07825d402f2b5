#!/bin/sh
# The man pages, as built from doc/man/*.scd by scdoc: each renders with
# `man -l` without a groff warning and has its sections; every .so page
# resolves in a man tree; every SECMEM_API function in include/secmem/secmem.h
# has a page, every subcommand and option that `secmem --help` lists is in
# secmem(1), and every SECMEM_* variable in allocator/config/options.inc is in
# the ENVIRONMENT section of secmem(1) or secmem(7).
# Usage: man_test.sh SOURCE_DIR BUILD_DIR
set -eu
src=$1
build=$2
doc=$build/doc
tmp=$(mktemp -d /tmp/secmem-man-XXXXXX)
chmod 755 "$tmp" # man-db may read the pages as its own user
trap 'rm -rf "$tmp"' EXIT
failures=0
fail() {
  echo "man_test: $*" >&2
  failures=$((failures + 1))
}

# render FILE_OR_ARGS...: the page as text (80 columns, no hyphenation, so
# names stay whole), into $tmp/out; groff's warnings into $tmp/err.
render() {
  MANWIDTH=80 man --warnings --nh -E UTF-8 "$@" >"$tmp/out" 2>"$tmp/err"
}

# section NAME < text: the lines of one section (from its heading to the next).
section() {
  awk -v name="$1" '/^[A-Z]/ { inside = ($0 == name) } inside'
}

# The pages scdoc builds, and the sections each must have.
pages="secmem.1 secmem.7 secmem_malloc.3 secmem_sealed_alloc.3 secmem_get_stats.3 secmem_tag_begin.3"
headings() {
  case $1 in
  secmem.1) echo "NAME|SYNOPSIS|DESCRIPTION|COMMANDS|EXIT STATUS|ENVIRONMENT|SEE ALSO" ;;
  secmem.7) echo "NAME|DESCRIPTION|THREAT MODEL|PROTECTION TIERS|FORK|SECCOMP SANDBOXES|THE MEMLOCK BUDGET|HIBERNATION|CORE DUMPS|THE PRELOAD SHIM|ENVIRONMENT|BUGS|SEE ALSO" ;;
  secmem_tag_begin.3) echo "NAME|SYNOPSIS|DESCRIPTION|RETURN VALUE|ENVIRONMENT|SEE ALSO" ;;
  *) echo "NAME|SYNOPSIS|DESCRIPTION|RETURN VALUE|ERRORS|SEE ALSO" ;;
  esac
}

mkdir -p "$tmp/man/man1" "$tmp/man/man3" "$tmp/man/man7"
for page in $pages; do
  file=$doc/$page
  if [ ! -s "$file" ]; then
    fail "$file was not built"
    continue
  fi
  cp "$file" "$tmp/man/man${page##*.}/"
  if ! render -l "$file"; then
    fail "man -l $file failed: $(cat "$tmp/err")"
    continue
  fi
  [ ! -s "$tmp/err" ] || fail "man -l $file warned: $(cat "$tmp/err")"
  [ -s "$tmp/out" ] || fail "man -l $file rendered nothing"
  cp "$tmp/out" "$tmp/$page.txt"
  IFS='|'
  for heading in $(headings "$page"); do
    grep -qx "$heading" "$tmp/out" || fail "$page has no $heading section"
  done
  unset IFS
done

# Every function the header exports has a page: its own, or a .so page.
functions=$(sed -n 's/^SECMEM_API[^(]*[ *]\([a-z_][a-z0-9_]*\)(.*/\1/p' "$src/include/secmem/secmem.h")
[ "$(echo "$functions" | wc -w)" -ge 10 ] || fail "found only '$functions' as SECMEM_API functions in secmem.h"
for fn in $functions; do
  file=$doc/$fn.3
  if [ ! -s "$file" ]; then
    fail "$fn (SECMEM_API in secmem.h) has no page: $file is missing"
    continue
  fi
  if ! grep -q '^\.so ' "$file"; then
    continue # a page of its own, rendered above
  fi
  target=$(sed -n 's/^\.so man3\/\(.*\)$/\1/p' "$file")
  if [ -z "$target" ] || [ "$(wc -l <"$file")" -ne 1 ]; then
    fail "$file is not a one-line .so man3/PAGE.3: $(cat "$file")"
  fi
  [ -s "$doc/$target" ] || fail "$file points at $target, which was not built"
  cp "$file" "$tmp/man/man3/"
done
# The .so pages resolve in a man tree, to a page that names the function.
for fn in $functions; do
  if ! render -M "$tmp/man" 3 "$fn"; then
    fail "man 3 $fn (in a man tree of the built pages) failed: $(cat "$tmp/err")"
    continue
  fi
  [ ! -s "$tmp/err" ] || fail "man 3 $fn warned: $(cat "$tmp/err")"
  section NAME <"$tmp/out" | grep -qw "$fn" || fail "man 3 $fn does not name $fn in its NAME section"
  section SYNOPSIS <"$tmp/out" | grep -q "[ *]$fn(" || fail "man 3 $fn has no prototype of $fn in its SYNOPSIS"
done

# Every subcommand and option of the secmem command is in secmem(1).
tool=$build/src/secmem
if [ -s "$tmp/secmem.1.txt" ]; then
  subcommands=$("$tool" --help | awk '/^Subcommands:/ { on = 1; next } on && /^  [a-z]/ { print $1 }')
  [ -n "$subcommands" ] || fail "no subcommands found in secmem --help"
  for sub in $subcommands; do
    section SYNOPSIS <"$tmp/secmem.1.txt" | grep -q "secmem $sub\b" || fail "secmem(1)'s SYNOPSIS lacks secmem $sub"
    section COMMANDS <"$tmp/secmem.1.txt" | grep -Eq "^       $sub( |$)" || fail "secmem(1)'s COMMANDS lacks $sub"
    for option in $("$tool" "$sub" --help | grep -Eo '^ +(-[a-z],)?--[a-z][a-z-]*' | sed 's/.*,//; s/^ *//'); do
      [ "$option" = --help ] && continue
      grep -q -- "$option\b" "$tmp/secmem.1.txt" || fail "secmem(1) lacks secmem $sub's option $option"
    done
  done
fi

# Every configuration variable is in an ENVIRONMENT section.
variables=$(sed -n 's/^SECMEM_\(TEXT_\)\{0,1\}OPTION(\(SECMEM_[A-Z_]*\),.*/\2/p' "$src/allocator/config/options.inc")
[ "$(echo "$variables" | wc -w)" -ge 5 ] || fail "found only '$variables' in options.inc"
for page in secmem.1 secmem.7; do
  [ -s "$tmp/$page.txt" ] && section ENVIRONMENT <"$tmp/$page.txt"
done >"$tmp/environment"
for variable in $variables; do
  grep -qw "$variable" "$tmp/environment" || fail "$variable (options.inc) is in neither secmem(1)'s nor secmem(7)'s ENVIRONMENT"
done

if [ "$failures" -ne 0 ]; then
  echo "man_test: $failures failures" >&2
  exit 1
fi
echo "man_test: $(echo "$pages" | wc -w) pages render cleanly; $(echo "$functions" | wc -w) functions," \
  "$(echo "$subcommands" | wc -w) subcommands and $(echo "$variables" | wc -w) variables documented"
