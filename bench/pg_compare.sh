#!/usr/bin/env bash
# Runs pg_notify_bench: the PostgreSQL connector end to end beside raw
# pg_notify (pgbench, and a libpq producer) on the same server, in one run,
# and prints its Markdown tables with the date and the machine.
#
# The server is the one LIVESTATE_TEST_PG names when it is set; otherwise a
# throwaway one started by tests/pg/with-test-postgres.sh (fsync=off,
# synchronous_commit=off: the numbers are the CPU's and the protocol's, not
# the disk's), stopped at the end.
#
# usage: bench/pg_compare.sh [--quick] [--json] [PATH/TO/pg_notify_bench] [-- ARGS...]
#   PATH      the benchmark binary (default: build/bench/pg_notify_bench under
#             the repository root; build it Release:
#             cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release &&
#             cmake --build build-release -j2 --target pg_notify_bench)
#   --quick   one short repetition: a smoke test that every message arrives
#   --json    print pg_notify_bench's JSON lines instead of the tables
#   -- ARGS   passed to pg_notify_bench (e.g. -- --reps 5 --seconds 5)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() { sed -n '2,17s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }
die() { echo "pg_compare.sh: $*" >&2; exit 1; }

bench=""
extra=()
while (($# > 0)); do
  case $1 in
    --quick) extra+=(--quick); shift ;;
    --json) extra+=(--json); shift ;;
    --) shift; extra+=("$@"); break ;;
    -h|--help) usage; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) [[ -z $bench ]] || die "more than one benchmark path given"; bench=$1; shift ;;
  esac
done
bench=${bench:-$root/build/bench/pg_notify_bench}
[[ -x $bench ]] || die "$bench is not an executable; build it first (cmake --build build --target pg_notify_bench)"

pgbench=$(printf '%s\n' /usr/lib/postgresql/*/bin/pgbench | sort -V | tail -n 1)
[[ -n $pgbench && -x $pgbench ]] || die "no pgbench under /usr/lib/postgresql/*/bin (install the postgresql package)"

date=$(date -u +%Y-%m-%d)
echo "pg_compare.sh: $bench --pgbench $pgbench ${extra[*]+${extra[*]}}" >&2
if [[ -n ${LIVESTATE_TEST_PG:-} ]]; then
  echo "pg_compare.sh: on the server LIVESTATE_TEST_PG names" >&2
else
  echo "pg_compare.sh: starting a throwaway server (tests/pg/with-test-postgres.sh: fsync=off)" >&2
fi
[[ " ${extra[*]+${extra[*]}} " == *" --json "* ]] || echo "Measured $date (UTC) by bench/pg_compare.sh."
echo
# shellcheck disable=SC2016  # expanded by the inner shell, once the server is up
"$root/tests/pg/with-test-postgres.sh" bash -c 'exec "$0" --db "$LIVESTATE_TEST_PG" "$@"' \
  "$bench" --pgbench "$pgbench" ${extra[@]+"${extra[@]}"}
