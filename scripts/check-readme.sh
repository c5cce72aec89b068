#!/usr/bin/env bash
# Builds the README's quick start as a user would paste it: every code block
# whose preceding paragraph names a file (`Cargo.toml`, `src/main.rs`,
# `build.rs`, `tests/x.rs`, `migrations/x.sql`) is written to that file of a
# new crate in a temporary directory, with pgskein as a path dependency on
# this checkout, and the crate and its tests are checked.
set -euo pipefail
cd "$(dirname "$0")/.."
checkout="$(pwd)"
crate="$(mktemp -d)"
trap 'rm -rf "$crate"' EXIT

awk -v out="$crate" '
  /^```/ {
    if (!inside) {
      inside = 1
      target = ""
      if (path != "") { target = out "/" path; blocks++ }
      next
    }
    inside = 0
    path = ""
    next
  }
  inside {
    if (target != "") {
      dir = target; sub(/\/[^\/]*$/, "", dir)
      system("mkdir -p \"" dir "\"")
      print > target
    }
    next
  }
  /^$/ { next }
  {
    # The last file name in backquotes on the line before a block names it.
    path = ""
    line = $0
    while (match(line, /`[A-Za-z0-9_.\/-]+\.(rs|toml|sql)`/)) {
      path = substr(line, RSTART + 1, RLENGTH - 2)
      line = substr(line, RSTART + RLENGTH)
    }
  }
  END { if (blocks < 4) { print "check-readme: found only " blocks " named blocks" > "/dev/stderr"; exit 1 } }
' README.md

manifest="$crate/Cargo.toml"
[ -f "$manifest" ] || { echo "check-readme: the README has no Cargo.toml block" >&2; exit 1; }
# The README names the published version; here it is this checkout.
sed -E -i \
  -e "s|^pgskein = \"[^\"]*\"|pgskein = { path = \"$checkout\" }|" \
  -e "s|^pgskein = \\{ version = \"[^\"]*\"|pgskein = { path = \"$checkout\"|" \
  "$manifest"
{
  printf '[package]\nname = "readme-quick-start"\nversion = "0.0.0"\nedition = "2021"\npublish = false\n\n'
  cat "$manifest"
  printf '\n[workspace]\n'
} > "$crate/Cargo.toml.new"
mv "$crate/Cargo.toml.new" "$manifest"
# The checkout's resolved versions, so the check needs nothing new from the registry.
cp Cargo.lock "$crate/"

echo "check-readme: $(cd "$crate" && find . -type f ! -name Cargo.lock | sort | tr '\n' ' ')"
CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$checkout/target}/readme-check" \
  cargo check --manifest-path "$manifest" --all-targets --quiet
echo "check-readme: the quick start builds"
