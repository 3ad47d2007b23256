#!/usr/bin/env bash
# Runs `livestate chaos` (SQLite, default faults, views of every type) at
# 1,000, 4,000 and 16,000 buildsets, plainly and with --backlog 100, and
# prints per buildset the time the masters took to do the work and the time
# the views took to converge after it, against the same at 1,000: the work
# and the views' repairs must grow with the work, not with the history.
# Writes it as the "chaos" section of docs/PERFORMANCE.md
# (bench/perf_page.py). Takes about 2 minutes.
#
# usage: bench/chaos_scale.sh [--quick] [--no-page] [PATH/TO/livestate] [-- ARGS...]
#   PATH       the livestate command, run as it is (default: built first in
#              build-release/, Release)
#   --quick    200, 400 and 800 buildsets: a smoke test (the page is left alone)
#   --no-page  print the section, leave docs/PERFORMANCE.md alone
#   -- ARGS    passed to every chaos run (e.g. -- --seed 7)
set -euo pipefail

bench_name=chaos_scale.sh
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

while (($# > 0)); do
  bench_option "$@"
  shift "$bench_shift"
done
if [[ -n $bench_path ]]; then
  [[ -x $bench_path ]] || bench_die "$bench_path is not an executable"
  livestate=$bench_path
else
  bench_build livestate_cli
  livestate=$bench_build_dir/cli/livestate
fi
sizes=(1000 4000 16000)
extra=()
for arg in ${bench_args[@]+"${bench_args[@]}"}; do
  if [[ $arg == --quick ]]; then sizes=(200 400 800); else extra+=("$arg"); fi
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for backlog in none 100; do
  for size in "${sizes[@]}"; do
    args=(chaos --buildsets "$size" --json ${extra[@]+"${extra[@]}"})
    [[ $backlog == none ]] || args+=(--backlog "$backlog")
    echo "$bench_name: $livestate ${args[*]}" >&2
    "$livestate" "${args[@]}" >"$tmp/run.json" 2>"$tmp/run.err" ||
      { tail -n 5 "$tmp/run.err" >&2; bench_die "chaos did not converge at $size buildsets; the page is left alone"; }
    "$bench_python" -c 'import json, sys; r = json.load(open(sys.argv[1])); r["backlog"] = sys.argv[2]; print(json.dumps(r))' \
      "$tmp/run.json" "$backlog" >>"$tmp/runs.jsonl"
  done
done

"$bench_python" - "$tmp/runs.jsonl" >"$tmp/body.md" <<'PY'
import json
import sys

TARGET = 1.5
runs = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]


def converged(run):
    # Views that never fell quiet converged by a comparison, its time included.
    if not run["converged"]:
        return "**no**"
    return "yes" if run["converged_quiet"] else "yes, never quiet"


print("| --backlog | buildsets | work, s | work per buildset, ms | ÷ smallest | converge, ms | converge per buildset, µs "
      "| ÷ smallest | verify, s | verify per buildset, µs | ÷ smallest | views converged | target (≤ 1.5x) met? |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |")
for backlog in ("none", "100"):
    rows = [r for r in runs if r["backlog"] == backlog]
    base = rows[0]
    base_work = base["work_seconds"] / base["buildsets_added"]
    base_converge = base["convergence_seconds"] / base["buildsets_added"]
    base_verify = base["verify_seconds"] / base["buildsets_added"]
    for r in rows:
        n = r["buildsets_added"]
        work = r["work_seconds"] / n
        converge = r["convergence_seconds"] / n
        verify = r["verify_seconds"] / n
        met = r["converged"] and work / base_work <= TARGET and converge / base_converge <= TARGET
        print(f"| {'—' if backlog == 'none' else backlog} | {n:,} | {r['work_seconds']:.1f} | {work * 1000:.2f} "
              f"| {work / base_work:.2f}x | {r['convergence_seconds'] * 1000:.3f} | {converge * 1e6:.4f} "
              f"| {converge / base_converge:.2f}x | {r['verify_seconds']:.2f} | {verify * 1e6:.1f} "
              f"| {verify / base_verify:.2f}x | {converged(r)} "
              f"| {'yes' if met else '**no**'} |")
print()
print("| --backlog | buildsets | messages | anomalies | resyncs | of which full | rows the resyncs read | reload queries "
      "| inbox overflows | resident memory at the end, kB |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for r in runs:
    print(f"| {'—' if r['backlog'] == 'none' else r['backlog']} | {r['buildsets_added']:,} "
          f"| {r['messages_seen_by_views']:,} | {sum(r['anomalies'].values()):,} | {r['resyncs']:,} "
          f"| {r['full_resyncs']:,} | {r['resync_rows']:,} | {r['reload_queries']:,} "
          f"| {r['queue_overflows']} | {r['rss_end_kb']:,} |")
first = runs[0]
print()
print(f"{first['masters']} masters and 4 views (buildsets, build requests, builds, steps: every row) on one "
      f"SQLite file, seed {first['seed']}, one run each. Converging is timed from the moment the masters stop "
      f"and the faults end until every view is quiet (nothing waiting for it, no read due, running or retried) "
      f"and equal to the database, as a comparison of every view with all its rows then confirms (the views "
      f"staying quiet and unchanged meanwhile); the comparisons' own time is the verify column, reported "
      f"apart. The target is on work and converging. Converging takes at most a few milliseconds at every size: "
      f"what the faults leave in flight when they stop decides it (a partition then ending asks its view for a "
      f"resync), so its ratios swing both ways from run to run. Verifying reads every row of the four types "
      f"(about 7 a buildset) and builds them as JSON: it grows with the database, and with the load of the "
      f"machine.")
PY

bench_page chaos "$livestate" "$tmp/body.md" ${bench_page_options[@]+"${bench_page_options[@]}"}
