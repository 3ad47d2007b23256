#!/usr/bin/env bash
# Runs pg_notify_bench: the PostgreSQL connector end to end beside raw
# pg_notify (pgbench, and a libpq producer) on the same server, in one run,
# prints its Markdown tables, and writes them as the "pg" section of
# docs/PERFORMANCE.md (bench/perf_page.py).
#
# The server is the one LIVESTATE_TEST_PG names when it is set; otherwise a
# throwaway one started by tests/pg/with-test-postgres.sh (fsync=off,
# synchronous_commit=off: the numbers are the CPU's and the protocol's, not
# the disk's), stopped at the end.
#
# usage: bench/pg_compare.sh [--quick] [--json] [--no-page] [PATH/TO/pg_notify_bench] [-- ARGS...]
#   PATH       the benchmark binary, run as it is (default: pg_notify_bench,
#              built first in build-release/, Release)
#   --quick    one short repetition: a smoke test that every message arrives
#              (the page is left alone)
#   --json     print pg_notify_bench's JSON lines instead of the tables (the
#              page is left alone)
#   --no-page  print the section, leave docs/PERFORMANCE.md alone
#   -- ARGS    passed to pg_notify_bench (e.g. -- --reps 5 --seconds 5)
set -euo pipefail

bench_name=pg_compare.sh
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

json=no
while (($# > 0)); do
  case $1 in
    --json) bench_args+=(--json); json=yes; shift ;;
    *) bench_option "$@"; shift "$bench_shift" ;;
  esac
done
bench=$(bench_binary pg_notify_bench "$bench_path")
extra=(${bench_args[@]+"${bench_args[@]}"})

pgbench=$(printf '%s\n' /usr/lib/postgresql/*/bin/pgbench | sort -V | tail -n 1)
[[ -n $pgbench && -x $pgbench ]] || bench_die "no pgbench under /usr/lib/postgresql/*/bin (install the postgresql package)"

echo "pg_compare.sh: $bench --pgbench $pgbench ${extra[*]+${extra[*]}}" >&2
if [[ -n ${LIVESTATE_TEST_PG:-} ]]; then
  echo "pg_compare.sh: on the server LIVESTATE_TEST_PG names" >&2
else
  echo "pg_compare.sh: starting a throwaway server (tests/pg/with-test-postgres.sh: fsync=off)" >&2
fi
run() {
  # shellcheck disable=SC2016  # expanded by the inner shell, once the server is up
  "$bench_root/tests/pg/with-test-postgres.sh" bash -c 'exec "$0" --db "$LIVESTATE_TEST_PG" "$@"' \
    "$bench" --pgbench "$pgbench" ${extra[@]+"${extra[@]}"}
}
if [[ $json == yes ]]; then
  run
  exit
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# On failure the bench still prints what it measured, with its problems.
status=0
run >"$tmp/body.md" || status=$?
if ((status != 0)); then
  cat "$tmp/body.md"
  bench_die "pg_notify_bench failed (exit status $status); the page is left alone"
fi
bench_page pg "$bench" "$tmp/body.md" ${bench_page_options[@]+"${bench_page_options[@]}"}
