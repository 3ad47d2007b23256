#!/usr/bin/env bash
# run.sh BUILD_DIR CONSUMER_SOURCE_DIR EXAMPLES_DIR CXX
# cmake --install BUILD_DIR into a fresh prefix, then configure, build and run
# the consumer project against it.
set -euo pipefail
build_dir=$1
consumer=$2
examples=$3
cxx=$4
work=$(mktemp -d "${TMPDIR:-/tmp}/livestate-install.XXXXXX")
trap 'rm -rf "$work"' EXIT

cmake --install "$build_dir" --prefix "$work/prefix" >/dev/null
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
cmake -S "$consumer" -B "$work/build" -DCMAKE_PREFIX_PATH="$work/prefix" -DCMAKE_CXX_COMPILER="$cxx" \
  -DLIVESTATE_EXAMPLES_DIR="$examples" "${launcher[@]}" >/dev/null
cmake --build "$work/build" -j2

# The CLI was installed and runs.
"$work/prefix/bin/livestate" --help >/dev/null
for program in "$work"/build/api_conformance "$work"/build/mq_only "$work"/build/example_*; do
  echo "== running $(basename "$program")"
  "$program"
done
echo "installed package: headers, libraries, CMake package and CLI all usable"
