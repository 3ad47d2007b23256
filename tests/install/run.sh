#!/usr/bin/env bash
# The installed-package test (ctest install_consumer):
#   1. cmake --install BUILD_DIR --prefix <fresh temp dir>
#   2. configure tests/install/consumer/ with CMAKE_PREFIX_PATH=<that prefix>
#   3. build it and run its programs (through its own ctest)
# Exits non-zero if any step fails. The temp dir is removed on exit.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
build_dir=""
config=""
cxx=""
launcher=""
werror=0
while [ $# -gt 0 ]; do
  case $1 in
    --build-dir=*) build_dir=${1#*=} ;;
    --config=*) config=${1#*=} ;;
    --cxx=*) cxx=${1#*=} ;;
    --launcher=*) launcher=${1#*=} ;;
    --werror=*) werror=${1#*=} ;;
    *) echo "usage: $0 --build-dir=DIR [--config=CFG] [--cxx=COMPILER] [--launcher=LAUNCHER] [--werror=0|1]" >&2
       exit 2 ;;
  esac
  shift
done
[ -n "$build_dir" ] || { echo "$0: --build-dir=DIR is required" >&2; exit 2; }
# An empty configuration (single-config build without CMAKE_BUILD_TYPE) is
# passed on as no configuration at all.
config_args=()
ctest_config_args=()
if [ -n "$config" ]; then
  config_args=(--config "$config")
  ctest_config_args=(-C "$config")
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/livestate-install.XXXXXX")
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix
consumer_build=$work/consumer-build

step() { echo; echo "=== install_consumer: $* ==="; }

step "cmake --install $build_dir --prefix $prefix"
cmake --install "$build_dir" --prefix "$prefix" "${config_args[@]}" >"$work/install.log" ||
  { cat "$work/install.log"; exit 1; }
echo "installed $(find "$prefix" -type f | wc -l) files; package config:"
find "$prefix" -name 'livestateConfig*.cmake' | sed "s|^$prefix/|  |"

configure_args=(-S "$here/consumer" -B "$consumer_build"
  -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE="$config" -DCONSUMER_WERROR="$werror"
  -DCMAKE_FIND_PACKAGE_NO_PACKAGE_REGISTRY=ON)
[ -n "$cxx" ] && configure_args+=(-DCMAKE_CXX_COMPILER="$cxx")
[ -n "$launcher" ] && configure_args+=(-DCMAKE_CXX_COMPILER_LAUNCHER="$launcher")
step "configure the consumer project"
cmake "${configure_args[@]}"

step "build the consumer project"
cmake --build "$consumer_build" "${config_args[@]}" -j2

step "run the consumer's programs"
ctest --test-dir "$consumer_build" "${ctest_config_args[@]}" --output-on-failure --no-tests=error
