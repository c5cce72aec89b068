#!/usr/bin/env bash
# Packages the workspace as crates.io would receive it, checks what the
# packages carry, then builds pgskein's library, examples and tests from the
# unpacked packages alone: what a user of the published crate gets.
set -euo pipefail
cd "$(dirname "$0")/.."
checkout="$(pwd)"
target="${CARGO_TARGET_DIR:-$checkout/target}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

version="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)"
# --no-verify: the build below is the verification, with the examples and tests.
# The benches stay in the repository (cargo says it ignores them).
cargo package --workspace --no-verify --allow-dirty --quiet 2>&1 | grep -v "^warning: ignoring benchmark" || true

for crate in pgskein pgskein-macros; do
  file="$target/package/$crate-$version.crate"
  [ -f "$file" ] || { echo "check-package: $file was not produced" >&2; exit 1; }
  tar xzf "$file" -C "$work"
  echo "check-package: $crate $version: $(tar tzf "$file" | wc -l) files, $(( $(stat -c %s "$file") / 1024 )) KiB compressed"
done

# What users do not need stays out.
unwanted="$(cd "$work" && find . -path '*/benches/*' -o -path '*/fuzz/*' -o -path '*/scripts/*' \
  -o -path '*/.ci/*' -o -path '*/target/*' -o -path './pgskein-macros-*/src/parse/*' | sort)"
if [ -n "$unwanted" ]; then
  echo "check-package: the packages carry files users do not need:" >&2
  echo "$unwanted" >&2
  exit 1
fi
# The macro crate carries the parser itself, not links to it.
for shared in id.rs split.rs migration.rs parse.rs; do
  [ -f "$work/pgskein-macros-$version/src/$shared" ] && [ ! -L "$work/pgskein-macros-$version/src/$shared" ] || {
    echo "check-package: pgskein-macros lacks src/$shared" >&2
    exit 1
  }
done

# Unpublished, pgskein-macros comes from its own unpacked package.
cat >> "$work/pgskein-$version/Cargo.toml" <<TOML

[patch.crates-io]
pgskein-macros = { path = "../pgskein-macros-$version" }

[workspace]
TOML
# The packaged crate dropped the path dev-dependency that turns on the
# features in the repository; examples and tests declare them instead.
CARGO_TARGET_DIR="$target/package-check" \
  cargo check --manifest-path "$work/pgskein-$version/Cargo.toml" --all-features --lib --examples --tests --quiet
echo "check-package: the library, examples and tests build from the packages"
