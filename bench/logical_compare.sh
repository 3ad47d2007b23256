#!/usr/bin/env bash
# Runs logical_bench: the store's writers on no transport, on NOTIFY and on
# the logical transport, in one run, on durable commits (fsync=on,
# synchronous_commit=on: where NOTIFY's commit lock bites), then on the test
# harness's settings (fsync=off, synchronous_commit=off) for reference;
# prints both runs' tables and writes them as the "logical" section of
# docs/PERFORMANCE.md (bench/perf_page.py).
#
# The server is a throwaway one started by tests/pg/with-test-postgres.sh
# (wal_level=logical); the durable run turns fsync, synchronous_commit and
# full_page_writes on with ALTER SYSTEM and a reload, the reference run turns
# them off again. A server LIVESTATE_TEST_PG names is not used: this changes
# its settings.
#
# usage: bench/logical_compare.sh [--quick] [--no-page] [PATH/TO/logical_bench] [-- ARGS...]
#   PATH       the benchmark binary, run as it is (default: logical_bench,
#              built first in build-release/, Release)
#   --quick    one short repetition of each run: a smoke test that every
#              message arrives (the page is left alone)
#   --no-page  print the section, leave docs/PERFORMANCE.md alone
#   -- ARGS    passed to logical_bench (e.g. -- --reps 5 --seconds 5)
set -euo pipefail

bench_name=logical_compare.sh
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

while (($# > 0)); do
  bench_option "$@"
  shift "$bench_shift"
done
bench=$(bench_binary logical_bench "$bench_path")
extra=(${bench_args[@]+"${bench_args[@]}"})

psql=$(printf '%s\n' /usr/lib/postgresql/*/bin/psql | sort -V | tail -n 1)
[[ -n $psql && -x $psql ]] || bench_die "no psql under /usr/lib/postgresql/*/bin (install the postgresql package)"

echo "logical_compare.sh: $bench ${extra[*]+${extra[*]}} (a throwaway server: tests/pg/with-test-postgres.sh)" >&2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Both runs on one server; on failure the bench still prints what it
# measured, with its problems.
status=0
# shellcheck disable=SC2016  # expanded by the inner shell, once the server is up
env -u LIVESTATE_TEST_PG "$bench_root/tests/pg/with-test-postgres.sh" bash -c '
  set -eo pipefail
  psql=$1 bench=$2
  shift 2
  settings() {
    "$psql" -qX -v ON_ERROR_STOP=1 -d "$LIVESTATE_TEST_PG" \
      -c "ALTER SYSTEM SET fsync = $1" -c "ALTER SYSTEM SET synchronous_commit = $1" \
      -c "ALTER SYSTEM SET full_page_writes = $1" -c "SELECT pg_reload_conf()" >/dev/null
    sleep 1  # the reload reaches every backend
  }
  settings on
  echo "### Durable commits"
  echo
  "$bench" --db "$LIVESTATE_TEST_PG" "$@"
  settings off
  echo
  echo "### For reference: the test harness'"'"'s server, commits not flushed"
  echo
  "$bench" --db "$LIVESTATE_TEST_PG" "$@"
' logical_compare "$psql" "$bench" ${extra[@]+"${extra[@]}"} >"$tmp/body.md" || status=$?
if ((status != 0)); then
  cat "$tmp/body.md"
  bench_die "logical_bench failed (exit status $status); the page is left alone"
fi
bench_page logical "$bench" "$tmp/body.md" ${bench_page_options[@]+"${bench_page_options[@]}"}
