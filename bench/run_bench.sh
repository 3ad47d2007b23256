#!/usr/bin/env bash
# Runs one of the benchmarks that need nothing but themselves, prints its
# Markdown table, and writes it as its section of docs/PERFORMANCE.md
# (bench/perf_page.py):
#   view  view_bench: what a live view costs (the "view" section)
#   wire  wire_bench: what decoding a notification costs, the library's JSON
#         reader beside nlohmann's and simdjson (the "wire" section)
#
# usage: bench/run_bench.sh view|wire [--quick] [--no-page] [PATH/TO/BINARY] [-- ARGS...]
#   PATH       the benchmark binary, run as it is (default: view_bench or
#              wire_bench, built first in build-release/, Release)
#   --quick    a smoke test: the numbers mean nothing (the page is left alone)
#   --no-page  print the section, leave docs/PERFORMANCE.md alone
#   -- ARGS    passed to the benchmark (e.g. -- --reps 9)
set -euo pipefail

bench_name=run_bench.sh
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

(($# > 0)) || { bench_usage >&2; exit 2; }
case $1 in
  view | wire) section=$1; target=${1}_bench; shift ;;
  -h | --help) bench_usage; exit 0 ;;
  *) bench_die "the first argument is view or wire, not $1 (see --help)" ;;
esac
while (($# > 0)); do
  bench_option "$@"
  shift "$bench_shift"
done
bench=$(bench_binary "$target" "$bench_path")
extra=(${bench_args[@]+"${bench_args[@]}"})

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "$bench_name: $bench ${extra[*]+${extra[*]}}" >&2
"$bench" ${extra[@]+"${extra[@]}"} >"$tmp/body.md" || {
  status=$?
  cat "$tmp/body.md"
  bench_die "$target failed (exit status $status); the page is left alone"
}
bench_page "$section" "$bench" "$tmp/body.md" ${bench_page_options[@]+"${bench_page_options[@]}"}
