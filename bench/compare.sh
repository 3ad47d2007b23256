#!/usr/bin/env bash
# Runs livestate_bench and bench/buildbot_simplemq.py (Buildbot's own SimpleMQ)
# in the same run, C++ first, and prints a Markdown table of the medians, the
# ratios livestate/Buildbot and whether each meets its target.
#
# usage: bench/compare.sh [--raw FILE] [--quick] [PATH/TO/livestate_bench]
#   PATH      the benchmark binary (default: build/bench/livestate_bench under
#             the repository root)
#   --raw F   also save the raw JSON lines of both programs to F
#   --quick   pass --quick to both (a smoke test: the numbers mean nothing)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=/usr/bin/python3

usage() { sed -n '2,10s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }
die() { echo "compare.sh: $*" >&2; exit 1; }

bench=""
raw=""
extra=()
while (($# > 0)); do
  case $1 in
    --raw) (($# >= 2)) || die "--raw needs a file"; raw=$2; shift 2 ;;
    --raw=*) raw=${1#--raw=}; shift ;;
    --quick) extra+=(--quick); shift ;;
    -h|--help) usage; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) [[ -z $bench ]] || die "more than one benchmark path given"; bench=$1; shift ;;
  esac
done
bench=${bench:-$root/build/bench/livestate_bench}
[[ -x $bench ]] || die "$bench is not an executable; build it first (cmake --build build --target livestate_bench)"
[[ -x $python ]] || die "$python not found; the Buildbot side needs Debian's python3 with python3-buildbot"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "compare.sh: running $bench ${extra[*]+${extra[*]}}" >&2
"$bench" ${extra[@]+"${extra[@]}"} >"$tmp/livestate.out"
grep -q '"impl"' "$tmp/livestate.out" || die "$bench printed no results (is it an up-to-date livestate_bench?)"
echo "compare.sh: running $python $root/bench/buildbot_simplemq.py ${extra[*]+${extra[*]}}" >&2
"$python" "$root/bench/buildbot_simplemq.py" ${extra[@]+"${extra[@]}"} >"$tmp/buildbot.out"

date=$(date -u +%Y-%m-%d)
cpu=$(grep -m1 -E '^(model name|Model|cpu model)[[:space:]]*:' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^[[:space:]]*//' || true)
cpus=$(nproc)

"$python" - "$tmp/livestate.out" "$tmp/buildbot.out" "${raw:-}" "$date" "${cpu:-unknown CPU}" "$cpus" <<'PY'
import json
import sys

livestate_out, buildbot_out, raw_path, date, cpu, cpus = sys.argv[1:7]
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
print(f"{date}, {cpu}, nproc {cpus}, {buildbot}")
for note in our_notes + their_notes:
    print()
    print(f"Note: {note}")
PY
