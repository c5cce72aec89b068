#!/usr/bin/env bash
# Installs the peers that `cargo bench --bench e2e` compares pgskein with into
# target/bench-tools (nothing is installed system-wide):
#
#   target/bench-tools/bin/sqlx       sqlx-cli, PostgreSQL only, no TLS
#   target/bench-tools/bin/refinery   refinery_cli, PostgreSQL only
#
# The bench looks for them there (or under $PGSKEIN_BENCH_TOOLS) and skips
# each one that is missing with a note. Takes several minutes on two cores.
# Re-running it is cheap: `cargo install` skips what is already installed.
#
#   scripts/bench-setup.sh            both
#   scripts/bench-setup.sh sqlx       one of them
set -euo pipefail
cd "$(dirname "$0")/.."

root="${PGSKEIN_BENCH_TOOLS:-target/bench-tools}"
mkdir -p "$root"
root="$(cd "$root" && pwd)"

# Versions measured in docs/benchmarks.md.
SQLX_VERSION="0.9.0"
REFINERY_VERSION="0.10.0"

want="${*:-sqlx refinery}"

for tool in $want; do
  case "$tool" in
    sqlx)
      # `postgres` alone: no SQLite/MySQL drivers, no TLS (loopback only).
      cargo install sqlx-cli --version "=$SQLX_VERSION" --locked --root "$root" \
        --no-default-features --features postgres
      ;;
    refinery)
      # Its PostgreSQL driver always links native-tls: needs OpenSSL headers.
      if ! pkg-config --exists openssl 2>/dev/null; then
        echo "refinery_cli needs OpenSSL's headers and pkg-config (Debian: apt-get install libssl-dev pkg-config)" >&2
        exit 1
      fi
      cargo install refinery_cli --version "=$REFINERY_VERSION" --locked --root "$root" \
        --no-default-features --features postgresql
      ;;
    *)
      echo "unknown tool: $tool (expected sqlx or refinery)" >&2
      exit 2
      ;;
  esac
done

echo "installed in $root/bin:"
ls -1 "$root/bin"
