#!/usr/bin/env bash
# Runs livestate_bench and bench/buildbot_simplemq.py (Buildbot's own SimpleMQ)
# in the same run, C++ first, prints a Markdown table of the medians, the
# ratios livestate/Buildbot and whether each meets its target, and writes it
# as the "simplemq" section of docs/PERFORMANCE.md (bench/perf_page.py).
#
# usage: bench/compare.sh [--raw FILE] [--quick] [--no-page] [PATH/TO/livestate_bench]
#                         [-- ARGS...]
#   PATH       the benchmark binary, run as it is (default: livestate_bench,
#              built first in build-release/, Release)
#   --raw F    also save the raw JSON lines of both programs to F
#   --quick    pass --quick to both (a smoke test: the numbers mean nothing;
#              the page is left alone)
#   --no-page  print the section, leave docs/PERFORMANCE.md alone
#   -- ARGS    passed to both (e.g. -- --reps 3 --seconds 0.5)
set -euo pipefail

bench_name=compare.sh
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

raw=""
while (($# > 0)); do
  case $1 in
    --raw) (($# >= 2)) || bench_die "--raw needs a file"; raw=$2; shift 2 ;;
    --raw=*) raw=${1#--raw=}; shift ;;
    *) bench_option "$@"; shift "$bench_shift" ;;
  esac
done
bench=$(bench_binary livestate_bench "$bench_path")
extra=(${bench_args[@]+"${bench_args[@]}"})
root=$bench_root
python=$bench_python

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "compare.sh: running $bench ${extra[*]+${extra[*]}}" >&2
"$bench" ${extra[@]+"${extra[@]}"} >"$tmp/livestate.out"
grep -q '"impl"' "$tmp/livestate.out" || bench_die "$bench printed no results (is it an up-to-date livestate_bench?)"
echo "compare.sh: running $python $root/bench/buildbot_simplemq.py ${extra[*]+${extra[*]}}" >&2
"$python" "$root/bench/buildbot_simplemq.py" ${extra[@]+"${extra[@]}"} >"$tmp/buildbot.out"

python_version=$("$python" -c 'import platform; print(platform.python_version())')

"$python" - "$tmp/livestate.out" "$tmp/buildbot.out" "${raw:-}" "$python_version" >"$tmp/body.md" <<'PY'
import json
import sys

livestate_out, buildbot_out, raw_path, python_version = sys.argv[1:5]
CASES = ["exact_1", "exact_100", "exact_10000", "wildcard_100"]
TARGETS = {"exact_1": 15, "exact_100": 300, "exact_10000": 10000, "wildcard_100": 30}


def read(path):
    """The JSON lines of one program, and anything else it printed (notes)."""
    records, notes, raw = {}, [], []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except ValueError:
                notes.append(line)
                continue
            if not isinstance(record, dict) or "case" not in record or "median" not in record:
                notes.append(line)
                continue
            records[record["case"]] = record
            raw.append(line)
    return records, notes, raw


ours, our_notes, our_raw = read(livestate_out)
theirs, their_notes, their_raw = read(buildbot_out)
if raw_path:
    with open(raw_path, "w") as f:
        for line in our_raw + their_raw:
            f.write(line + "\n")
if not ours:
    sys.exit("compare.sh: livestate_bench printed no results")


def rate(value):
    return f"{value:,.0f}"


print("| case | unit | livestate median | Buildbot median | ratio | target | met? |")
print("| --- | --- | ---: | ---: | ---: | ---: | --- |")
for case in CASES:
    if case not in ours:
        continue
    mine = ours[case]
    target = TARGETS[case]
    other = theirs.get(case)
    if other is None:
        their_median, ratio, met = "skipped", "n/a", "n/a"
    else:
        if other["unit"] != mine["unit"]:
            sys.exit(f"compare.sh: {case}: units differ ({mine['unit']} vs {other['unit']})")
        r = mine["median"] / other["median"]
        their_median, ratio, met = rate(other["median"]), f"{r:,.1f}x", "yes" if r >= target else "**no**"
    print(f"| {case} | {mine['unit']} | {rate(mine['median'])} | {their_median} | {ratio} "
          f"| {target:,}x | {met} |")

versions = sorted({r["impl"] for r in theirs.values()})
buildbot = ", ".join(v.replace("buildbot-", "Buildbot ", 1) for v in versions) or "Buildbot not installed"
print()
print(f"{buildbot} on Python {python_version}.")
for note in our_notes + their_notes:
    print()
    print(f"Note: {note}")
PY

bench_page simplemq "$bench" "$tmp/body.md" ${bench_page_options[@]+"${bench_page_options[@]}"}
