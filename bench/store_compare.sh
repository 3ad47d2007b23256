#!/usr/bin/env bash
# Runs store_bench on a temporary SQLite file and on a throwaway PostgreSQL
# server (tests/pg/with-test-postgres.sh; or the server LIVESTATE_TEST_PG
# names, when set), prints a Markdown table of the medians and the ratios
# store/raw (the same row changes by hand) against their 1.3x target, and
# writes it as the "store" section of
# docs/PERFORMANCE.md (bench/perf_page.py).
#
# usage: bench/store_compare.sh [--quick] [--raw FILE] [--no-page] [--sqlite-only]
#                               [PATH/TO/store_bench] [-- STORE_BENCH_ARGS...]
#   PATH           the benchmark binary, run as it is (default: store_bench,
#                  built first in build-release/, Release)
#   --quick        pass --quick (a smoke test: the numbers mean nothing; the
#                  page is left alone)
#   --raw F        also save store_bench's JSON lines of both runs to F
#   --no-page      print the section, leave docs/PERFORMANCE.md alone
#   --sqlite-only  skip PostgreSQL (the page is left alone)
#   -- ARGS        passed to both runs (e.g. -- --reps 7 --ops 4000)
set -euo pipefail

bench_name=store_compare.sh
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

raw=""
postgres=yes
while (($# > 0)); do
  case $1 in
    --raw) (($# >= 2)) || bench_die "--raw needs a file"; raw=$2; shift 2 ;;
    --raw=*) raw=${1#--raw=}; shift ;;
    --sqlite-only) postgres=no; bench_page_options=(--no-write); shift ;;
    *) bench_option "$@"; shift "$bench_shift" ;;
  esac
done
bench=$(bench_binary store_bench "$bench_path")
extra=(${bench_args[@]+"${bench_args[@]}"})
root=$bench_root
python=$bench_python

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "store_compare.sh: $bench --json ${extra[*]+${extra[*]}} (SQLite, temporary file)" >&2
"$bench" --json ${extra[@]+"${extra[@]}"} >"$tmp/sqlite.out"
: >"$tmp/postgres.out"
if [[ $postgres == yes ]]; then
  echo "store_compare.sh: $bench --db \$LIVESTATE_TEST_PG --json ${extra[*]+${extra[*]}} (PostgreSQL)" >&2
  # shellcheck disable=SC2016  # expanded by the inner shell, once the server is up
  "$root/tests/pg/with-test-postgres.sh" bash -c 'exec "$0" --db "$LIVESTATE_TEST_PG" --json "$@"' \
    "$bench" ${extra[@]+"${extra[@]}"} >"$tmp/postgres.out"
fi

fs=$(df -T "${TMPDIR:-/tmp}" 2>/dev/null | awk 'NR == 2 { print $2 }' || true)

"$python" - "$tmp/sqlite.out" "$tmp/postgres.out" "${raw:-}" "${fs:-?}" >"$tmp/body.md" <<'PY'
import json
import sys

sqlite_out, postgres_out, raw_path, fs = sys.argv[1:5]
CASES = ["raw_claim_1", "store_claim_1", "raw_complete_1", "store_complete_1", "raw_claim_100", "store_claim_100"]
WHAT = {
    "raw_claim_1": "raw driver: INSERT the claim if the request is incomplete, UPDATE the request",
    "store_claim_1": "claim 1 request (3 messages)",
    "raw_complete_1": "raw driver: UPDATE the request if this master holds its claim (PostgreSQL: and lock its buildset), UPDATE the buildset if all its requests are complete, with their worst result",
    "store_complete_1": "complete 1 request + its buildset (2 rows, 4 messages)",
    "raw_claim_100": "raw driver: INSERT 100 claims of incomplete requests, UPDATE … WHERE id IN (100 ids)",
    "store_claim_100": "claim 100 requests in one call (300 messages)",
}
NAMES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}


def read(path):
    meta, cases, ratios, lines = None, {}, {}, []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            record = json.loads(line)
            lines.append(line)
            if record.get("meta"):
                meta = record
            elif "case" in record:
                cases[record["case"]] = record
            elif "ratio" in record:
                ratios[record["ratio"]] = record
    return meta, cases, ratios, lines


runs = []
raw_lines = []
for path in (sqlite_out, postgres_out):
    meta, cases, ratios, lines = read(path)
    raw_lines += lines
    if meta is not None:
        runs.append((meta, cases, ratios))
if raw_path:
    with open(raw_path, "w") as f:
        f.write("\n".join(raw_lines) + "\n")
if not runs:
    sys.exit("store_compare.sh: store_bench printed no results")


def us(value):
    return f"{value:,.1f}" if value < 1000 else f"{value:,.0f}"


header = "| case | one operation |"
rule = "| --- | --- |"
for meta, _, _ in runs:
    name = NAMES.get(meta["backend"], meta["backend"])
    header += f" {name} µs/op | {name} ops/s |"
    rule += " ---: | ---: |"
print(header)
print(rule)
for case in CASES:
    row = f"| {case} | {WHAT[case]} |"
    for _, cases, _ in runs:
        record = cases.get(case)
        row += " n/a | n/a |" if record is None else f" {us(record['median_us'])} | {record['median']:,.0f} |"
    print(row)

print()
header = "| ratio (µs/op) |"
rule = "| --- |"
for meta, _, _ in runs:
    header += f" {NAMES.get(meta['backend'], meta['backend'])} |"
    rule += " ---: |"
print(header + " target |")
print(rule + " ---: |")
for key in ["claim_1", "complete_1", "claim_100"]:
    label = None
    row = ""
    target = "—"
    for _, _, ratios in runs:
        record = ratios.get(key)
        if record is None:
            row += " n/a |"
            continue
        label = f"{record['numerator']} / {record['denominator']}"
        if "target" in record:
            target = f"≤ {record['target']:g}x"
            row += f" {record['value']:.2f}x{'' if record['met'] else ' **(no)**'} |"
        else:
            row += f" {record['value']:.2f}x |"
    if label is not None:
        print(f"| {label} |{row} {target} |")

print()
first = runs[0][0]
print(f"Medians of {first['reps']} repetitions, one transaction per operation; "
      f"buildrequests rows when the timing started: {', '.join(str(m['buildrequests_rows']) for m, _, _ in runs)}.")
for meta, _, _ in runs:
    settings = meta["settings"]
    if meta["backend"] == "sqlite":
        print(f"\nSQLite: {settings['engine']}, journal_mode={settings['journal_mode']}, "
              f"synchronous={settings['synchronous']}, foreign_keys={settings['foreign_keys']}, "
              f"a temporary file on {fs}.")
    else:
        note = (f"\nPostgreSQL: {settings['engine']} on {settings['host']}, fsync={settings['fsync']}, "
                f"synchronous_commit={settings['synchronous_commit']}, "
                f"full_page_writes={settings['full_page_writes']}")
        if settings["fsync"] == "off" or settings["synchronous_commit"] == "off":
            note += (" — the test harness's throwaway server: COMMIT does not wait for the disk, so "
                     "these are round-trip and CPU costs, not those of a durable server")
        print(note + ".")
if any(meta.get("quick") for meta, _, _ in runs):
    print("\nNote: --quick: the numbers mean nothing.")
PY

bench_page store "$bench" "$tmp/body.md" ${bench_page_options[@]+"${bench_page_options[@]}"}
