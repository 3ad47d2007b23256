#!/usr/bin/env bash
# Runs view_scale_bench on temporary SQLite files and on a throwaway
# PostgreSQL server (tests/pg/with-test-postgres.sh; or the server
# LIVESTATE_TEST_PG names, when set): live views of 10,000, 100,000 and
# 1,000,000 build requests. Prints a Markdown table (memory per entry against
# the bodies' JSON text, the first load against the raw driver's read of the
# same rows, a gap of 100 changes repaired, the full resync it would
# otherwise be, a message applied) with the targets, and writes it as the
# "view_scale" section of docs/PERFORMANCE.md (bench/perf_page.py). Takes
# about 2 minutes; it needs about 3 GB of memory at 10^6 entries.
#
# usage: bench/view_scale.sh [--quick] [--no-page] [--sqlite-only] [PATH/TO/view_scale_bench]
#                            [-- ARGS...]
#   PATH           the benchmark binary, run as it is (default: view_scale_bench,
#                  built first in build-release/, Release)
#   --quick        small views: a smoke test (the page is left alone)
#   --no-page      print the section, leave docs/PERFORMANCE.md alone
#   --sqlite-only  skip PostgreSQL (the page is left alone)
#   -- ARGS        passed to both runs (e.g. -- --sizes 10000,100000)
set -euo pipefail

bench_name=view_scale.sh
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

postgres=yes
while (($# > 0)); do
  case $1 in
    --sqlite-only) postgres=no; bench_page_options=(--no-write); shift ;;
    *) bench_option "$@"; shift "$bench_shift" ;;
  esac
done
bench=$(bench_binary view_scale_bench "$bench_path")
extra=(${bench_args[@]+"${bench_args[@]}"})

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "$bench_name: $bench ${extra[*]+${extra[*]}} (SQLite, temporary files)" >&2
"$bench" ${extra[@]+"${extra[@]}"} >"$tmp/sqlite.out" || bench_die "view_scale_bench failed on SQLite; the page is left alone"
: >"$tmp/postgres.out"
if [[ $postgres == yes ]]; then
  echo "$bench_name: $bench --db \$LIVESTATE_TEST_PG ${extra[*]+${extra[*]}} (PostgreSQL)" >&2
  # shellcheck disable=SC2016  # expanded by the inner shell, once the server is up
  "$bench_root/tests/pg/with-test-postgres.sh" bash -c 'exec "$0" --db "$LIVESTATE_TEST_PG" "$@"' \
    "$bench" ${extra[@]+"${extra[@]}"} >"$tmp/postgres.out" ||
    bench_die "view_scale_bench failed on PostgreSQL; the page is left alone"
fi

"$bench_python" - "$tmp/sqlite.out" "$tmp/postgres.out" >"$tmp/body.md" <<'PY'
import json
import sys

NAMES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
REPAIR_TARGET_MS = {"sqlite": 50, "postgresql": 100}
MEMORY_TARGET = 2.0
ROWS_TARGET = 300  # "a few hundred rows"

runs = []
for path in sys.argv[1:]:
    with open(path) as f:
        for line in f:
            if line.strip():
                record = json.loads(line)
                if not record.get("meta"):
                    runs.append(record)
if not runs:
    sys.exit("view_scale.sh: view_scale_bench printed no results")


def yes(met):
    return "yes" if met else "**no**"


print("| entries | database | JSON text, bytes per entry | view's heap, bytes per entry | ÷ text | first load, s "
      "| raw driver's read, s | load ÷ raw | gap of 100 repaired, ms (rows read) | full resync, ms (rows read) "
      "| message applied, µs |")
print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for r in runs:
    ratio = r["heap_bytes_per_entry"] / r["json_text_bytes_per_entry"]
    print(f"| {r['entries']:,} | {NAMES[r['backend']]} | {r['json_text_bytes_per_entry']:.0f} "
          f"| {r['heap_bytes_per_entry']:.0f} | {ratio:.2f}x | {r['load_seconds']:.3f} | {r['raw_read_seconds']:.3f} "
          f"| {r['load_seconds'] / r['raw_read_seconds']:.1f}x | {r['repair_ms']:.2f} ({r['repair_rows']}) "
          f"| {r['full_resync_ms']:,.0f} ({r['full_resync_rows']:,}) | {r['apply_ns'] / 1000:.2f} |")

largest = max(r["entries"] for r in runs)
print()
print(f"At {largest:,} entries (targets: at most {MEMORY_TARGET:g}x the JSON text per entry; the gap repaired in "
      f"under {REPAIR_TARGET_MS['sqlite']} ms on SQLite and {REPAIR_TARGET_MS['postgresql']} ms on PostgreSQL, "
      f"reading at most {ROWS_TARGET} rows):")
print()
print("| database | memory ÷ text | met? | repair, ms | rows read | met? |")
print("| --- | ---: | --- | ---: | ---: | --- |")
for r in runs:
    if r["entries"] != largest:
        continue
    ratio = r["heap_bytes_per_entry"] / r["json_text_bytes_per_entry"]
    repaired = r["repair_ms"] < REPAIR_TARGET_MS[r["backend"]] and r["repair_rows"] <= ROWS_TARGET
    print(f"| {NAMES[r['backend']]} | {ratio:.2f}x | {yes(ratio <= MEMORY_TARGET)} | {r['repair_ms']:.2f} "
          f"| {r['repair_rows']} | {yes(repaired)} |")
first = runs[0]
print()
print(f"{first['missed_changes']} changes missed: as many requests claimed while the view's connector dropped "
      f"every message, each drop told as a gap; {first['messages']:,} messages applied per size. Every other "
      f"request claimed, so bodies carry claims. One run per size.")
PY

bench_page view_scale "$bench" "$tmp/body.md" ${bench_page_options[@]+"${bench_page_options[@]}"}
