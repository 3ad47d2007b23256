#!/usr/bin/env bash
# Builds every benchmark (Release, in build-release/) and runs them one after
# the other, each writing its section of docs/PERFORMANCE.md: SimpleMQ against
# Buildbot's (bench/compare.sh), the store against the raw database
# (bench/store_compare.sh), the PostgreSQL connector against raw pg_notify
# (bench/pg_compare.sh), the store's writers on each PostgreSQL transport
# (bench/logical_compare.sh), live views and decoding (bench/run_bench.sh),
# live views of up to a million entries (bench/view_scale.sh) and `livestate
# chaos` as its work grows (bench/chaos_scale.sh). Takes about 20 minutes on 2
# cores once built; run it on a machine doing nothing else.
#
# usage: bench/run_all.sh [--quick] [--no-page]
#   --quick    smoke tests only: the numbers mean nothing (the page is left alone)
#   --no-page  print the sections, leave docs/PERFORMANCE.md alone
set -euo pipefail

bench_name=run_all.sh
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

options=()
while (($# > 0)); do
  case $1 in
    --quick | --no-page) options+=("$1"); shift ;;
    -h|--help) bench_usage; exit 0 ;;
    *) bench_die "unknown argument $1 (see --help)" ;;
  esac
done

# One build of them all first, so that no run shares the cores with a compiler.
bench_build livestate_bench store_bench pg_notify_bench logical_bench view_bench wire_bench view_scale_bench \
  livestate_cli

bench=$bench_build_dir/bench
"$bench_root/bench/compare.sh" ${options[@]+"${options[@]}"} "$bench/livestate_bench"
"$bench_root/bench/store_compare.sh" ${options[@]+"${options[@]}"} "$bench/store_bench"
"$bench_root/bench/pg_compare.sh" ${options[@]+"${options[@]}"} "$bench/pg_notify_bench"
"$bench_root/bench/logical_compare.sh" ${options[@]+"${options[@]}"} "$bench/logical_bench"
"$bench_root/bench/run_bench.sh" view ${options[@]+"${options[@]}"} "$bench/view_bench"
"$bench_root/bench/run_bench.sh" wire ${options[@]+"${options[@]}"} "$bench/wire_bench"
"$bench_root/bench/view_scale.sh" ${options[@]+"${options[@]}"} "$bench/view_scale_bench"
"$bench_root/bench/chaos_scale.sh" ${options[@]+"${options[@]}"} "$bench_build_dir/cli/livestate"
