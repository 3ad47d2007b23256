# shellcheck shell=bash disable=SC2034  # its variables are for the scripts that source it
# Shared by the bench/*.sh scripts (sourced, after they set bench_name): the
# Release build the benchmarks run from, and the writing of a run's section
# of docs/PERFORMANCE.md (bench/perf_page.py).

bench_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bench_build_dir=$bench_root/build-release
bench_python=/usr/bin/python3
bench_name=${bench_name:?set bench_name before sourcing bench/lib.sh}

bench_die() {
  echo "$bench_name: $*" >&2
  exit 1
}

# Prints the script's opening comment, its help.
bench_usage() {
  sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"
}

# The options every script takes, which bench_option parses into:
bench_path=""          # PATH: the benchmark binary, run as it is
bench_args=()          # --quick, and -- ARGS: passed on to the benchmark
bench_page_options=()  # --quick or --no-page: leave docs/PERFORMANCE.md alone

# bench_option ARGS...: parses the first of ARGS, one of the options above or
# -h/--help, and sets bench_shift to the number of ARGS it took. Dies on an
# unknown option.
bench_option() {
  bench_shift=1
  case $1 in
    --quick) bench_args+=(--quick); bench_page_options=(--no-write) ;;
    --no-page) bench_page_options=(--no-write) ;;
    --) bench_args+=("${@:2}"); bench_shift=$# ;;
    -h | --help) bench_usage; exit 0 ;;
    -*) bench_die "unknown option $1 (see --help)" ;;
    *) [[ -z $bench_path ]] || bench_die "more than one benchmark path given"; bench_path=$1 ;;
  esac
}

[[ -x $bench_python ]] || bench_die "$bench_python not found (Debian's python3)"

# bench_build TARGET...: builds the TARGETs (Release, ccache when there is
# one) in build-release/, the output on stderr.
bench_build() {
  local launcher=()
  command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  echo "$bench_name: building $* (Release) in $bench_build_dir" >&2
  { cmake -S "$bench_root" -B "$bench_build_dir" -DCMAKE_BUILD_TYPE=Release ${launcher[@]+"${launcher[@]}"} &&
    cmake --build "$bench_build_dir" --target "$@" -j2; } >&2 ||
    bench_die "building $* failed"
}

# bench_binary TARGET [PATH]: prints the benchmark to run: PATH as it is when
# given, else TARGET, built first in build-release/.
bench_binary() {
  local target=$1 given=${2:-}
  if [[ -n $given ]]; then
    [[ -x $given ]] || bench_die "$given is not an executable"
    echo "$given"
    return
  fi
  bench_build "$target"
  echo "$bench_build_dir/bench/$target"
}

# bench_page SECTION BINARY BODY_FILE [--no-write]: prints the page section
# made of what the run printed (BODY_FILE) and, unless --no-write, puts it in
# docs/PERFORMANCE.md in place of the previous one.
bench_page() {
  local section=$1 binary=$2 body=$3
  shift 3
  "$bench_python" "$bench_root/bench/perf_page.py" "$section" --binary "$binary" "$@" <"$body"
}
