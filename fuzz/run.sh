#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, with ASan and UBSan) and runs each for
# a bounded time on a copy of its seed corpus (fuzz/corpus/NAME); fails when
# one finds a crash, a leak, undefined behaviour or a broken property. The
# tree's corpus is left as it is; what the run found new stays in the work
# directory.
#
# usage: fuzz/run.sh [--seconds N] [--dir DIR] [TARGET...]
#   --seconds N  how long each target runs (default 30)
#   --dir DIR    build and work directory (default build-fuzz under the root)
#   TARGET       wire_decode, routing_parse, json_reader (default: all)
# To fuzz for longer: fuzz/run.sh --seconds 3600 wire_decode
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
seconds=30
dir=$root/build-fuzz
targets=()
while (($# > 0)); do
  case $1 in
    --seconds) seconds=$2; shift 2 ;;
    --dir) dir=$2; shift 2 ;;
    -h|--help) sed -n '2,13s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit 0 ;;
    -*) echo "fuzz/run.sh: unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || targets=(wire_decode routing_parse json_reader)
command -v clang++ >/dev/null || { echo "fuzz/run.sh: clang++ is missing (apt-get install clang)" >&2; exit 1; }

mkdir -p "$dir"
flags=(-std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
       -I"$root/core/include" -I"$root/core/src")
# The core sources, compiled once for both targets.
objects=()
for source in "$root"/core/src/*.cpp; do
  object=$dir/$(basename "$source" .cpp).o
  if [ ! -e "$object" ] || [ "$source" -nt "$object" ]; then
    clang++ "${flags[@]/-fsanitize=fuzzer,/-fsanitize=fuzzer-no-link,}" -c "$source" -o "$object"
  fi
  objects+=("$object")
done
for target in "${targets[@]}"; do
  [ -e "$root/fuzz/$target.cpp" ] || { echo "fuzz/run.sh: no target $target" >&2; exit 2; }
  echo "fuzz/run.sh: building $target" >&2
  clang++ "${flags[@]}" "$root/fuzz/$target.cpp" "${objects[@]}" -o "$dir/$target"
  work=$dir/corpus-$target
  mkdir -p "$work"
  cp -n "$root/fuzz/corpus/$target"/* "$work"/ 2>/dev/null || true
  echo "fuzz/run.sh: running $target for ${seconds}s" >&2
  (cd "$dir" && UBSAN_OPTIONS=print_stacktrace=1 "./$target" -max_total_time="$seconds" -timeout=10 \
    -rss_limit_mb=2048 -max_len=16384 -print_final_stats=1 "$work")
done
