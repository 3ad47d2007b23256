#!/usr/bin/env bash
# tools/soak.sh [--duration D] [--seed N] [--no-terminate] [--livestate PATH]
#
# The soak: `livestate chaos` on PostgreSQL for D (default 10m) with live views
# of the unfinished work (--views pending) and 2 masters, while beside it 2
# worker processes (`chaos --views none`, 2 masters each) are killed with
# SIGKILL at random (each every 10-40 s) and started again, and every 20-60 s
# one random client connection of the database is ended with
# pg_terminate_backend (--no-terminate: never). A worker started again under
# its masters' names releases what the killed one held, as Buildbot's
# housekeeping does.
#
# It exits 0 only when the main chaos converged (every view equal to the
# database once the faults stop) AND its resident memory when the work ended
# is at most 10%, or 4 MB, above the one after the warm-up (a quarter of the duration,
# at most 150 s, so that the warm-up has seen the bursts the work brings: a
# master restarting, a resync): two moments of the same steady work. After the work ends every
# master drains what it holds at once, so the views' memory of recent
# departures (forget_departed_after, bounded by how many left in the last
# 30 s) peaks, and the allocator keeps that peak; RSS and the heap in use
# after converging are printed beside, not compared.
#
# Needs jq (and psql for pg_terminate_backend). It builds nothing: the
# livestate binary is --livestate PATH, else $LIVESTATE_BIN, else
# build/cli/livestate. The database is $LIVESTATE_TEST_PG when set;
# otherwise a throwaway server (tests/pg/with-test-postgres.sh) for the run.
# The processes' logs go to a temporary directory, kept and named
# when the soak fails. Only the processes this script started are signalled,
# by pid; they are all ended when it exits or is interrupted.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
me=tools/soak.sh

usage() {
  echo "usage: $me [--duration D] [--seed N] [--no-terminate] [--livestate PATH]" >&2
  echo "  D: 90s, 2m, 10m (default), 1h" >&2
  exit 2
}

duration=10m
seed=$(( (RANDOM << 15) | RANDOM ))
terminate=1
livestate=${LIVESTATE_BIN:-$root/build/cli/livestate}
arguments=("$@")
while [ $# -gt 0 ]; do
  case $1 in
    --duration) [ $# -ge 2 ] || usage; duration=$2; shift 2 ;;
    --seed) [ $# -ge 2 ] || usage; seed=$2; shift 2 ;;
    --no-terminate) terminate=0; shift ;;
    --livestate) [ $# -ge 2 ] || usage; livestate=$2; shift 2 ;;
    -h | --help) sed -n '2,29p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) usage ;;
  esac
done

seconds_of() {
  case $1 in
    *h) echo $(( ${1%h} * 3600 )) ;;
    *m) echo $(( ${1%m} * 60 )) ;;
    *s) echo $(( ${1%s} )) ;;
    *) echo $(( $1 )) ;;
  esac
}
[[ $duration =~ ^[0-9]+[smh]?$ ]] || { echo "$me: --duration: a whole number of s, m or h, not '$duration'" >&2; exit 2; }
[[ $seed =~ ^[0-9]+$ ]] || { echo "$me: --seed: a whole number, not '$seed'" >&2; exit 2; }
total=$(seconds_of "$duration")
[ "$total" -ge 20 ] || { echo "$me: --duration: at least 20s" >&2; exit 2; }
[ -x "$livestate" ] || { echo "$me: no livestate binary at $livestate (build first, or --livestate PATH)" >&2; exit 2; }
command -v jq >/dev/null || { echo "$me: needs jq to read the summary (apt-get install jq)" >&2; exit 2; }

if [ -z "${LIVESTATE_TEST_PG:-}" ]; then
  exec "$root/tests/pg/with-test-postgres.sh" "$0" "${arguments[@]}"
fi
url=$LIVESTATE_TEST_PG
psql=psql
[ -n "${LIVESTATE_TEST_PG_BIN:-}" ] && [ -x "$LIVESTATE_TEST_PG_BIN/psql" ] && psql=$LIVESTATE_TEST_PG_BIN/psql
if [ $terminate -eq 1 ] && ! command -v "$psql" >/dev/null; then
  echo "$me: no psql: running without pg_terminate_backend" >&2
  terminate=0
fi

logs=$(mktemp -d "${TMPDIR:-/tmp}/livestate-soak.XXXXXX")
keep_logs=0
main_pid=
worker_pids=()

cleanup() {
  local status=$? pid
  trap - EXIT INT TERM
  for pid in "${worker_pids[@]}" $main_pid; do
    if [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null; then
      wait "$pid" 2>/dev/null || true
    fi
  done
  if [ $keep_logs -eq 1 ] || [ $status -ne 0 ]; then
    echo "$me: logs kept in $logs" >&2
  else
    rm -rf "$logs"
  fi
  exit $status
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

random_between() { echo $(( $1 + RANDOM % ($2 - $1 + 1) )); }

"$livestate" migrate --db "$url" >"$logs/migrate.log" 2>&1 ||
  { cat "$logs/migrate.log" >&2; echo "$me: migrate failed" >&2; exit 1; }

warmup=$(( total / 4 < 150 ? total / 4 : 150 ))
started=$SECONDS
echo "$me: $duration on $url, seed $seed, warm-up ${warmup}s, logs in $logs"
"$livestate" chaos --db "$url" --duration "${total}s" --views pending --masters 2 --buildsets 1000000000 --backlog 20 \
  --rss-warmup "${warmup}s" --seed "$seed" --json >"$logs/main.json" 2>"$logs/main.log" &
main_pid=$!

# Worker k runs masters chaos-master-(10k+10) and the next; each start has a
# seed of its own and runs until the main chaos stops working.
workers=2
worker_starts=(0 0)
next_kill=()
kills=0
restarts=0
worker_failures=0
start_worker() {
  local k=$1 left=$(( total - (SECONDS - started) ))
  worker_starts[$k]=$(( worker_starts[$k] + 1 ))
  "$livestate" chaos --db "$url" --duration "${left}s" --views none --masters 2 \
    --first-master $(( 10 * k + 10 )) --buildsets 1000000000 --backlog 20 --seed $(( seed + 1000 * k + worker_starts[$k] )) \
    --json >>"$logs/worker$k.json" 2>>"$logs/worker$k.log" &
  worker_pids[$k]=$!
  next_kill[$k]=$(( SECONDS + $(random_between 10 40) ))
}
for (( k = 0; k < workers; k++ )); do start_worker $k; done

terminations=0
next_termination=$(( SECONDS + $(random_between 20 60) ))
while kill -0 "$main_pid" 2>/dev/null; do
  sleep 1
  left=$(( total - (SECONDS - started) ))
  for (( k = 0; k < workers; k++ )); do
    pid=${worker_pids[$k]}
    [ -n "$pid" ] || continue
    if ! kill -0 "$pid" 2>/dev/null; then
      # It ended by itself: at its duration (0), or it failed.
      status=0
      wait "$pid" || status=$?
      worker_pids[$k]=
      if [ $status -ne 0 ]; then
        worker_failures=$(( worker_failures + 1 ))
        echo "$me: worker $k failed (exit status $status); see $logs/worker$k.log" >&2
        keep_logs=1
        if [ $left -gt 5 ]; then start_worker $k; restarts=$(( restarts + 1 )); fi
      fi
      continue
    fi
    if [ $SECONDS -ge "${next_kill[$k]}" ] && [ $left -gt 5 ]; then
      kill -KILL "$pid"
      wait "$pid" 2>/dev/null || true
      kills=$(( kills + 1 ))
      echo "$me: $(( SECONDS - started ))s: killed worker $k (pid $pid), starting it again"
      start_worker $k
      restarts=$(( restarts + 1 ))
    fi
  done
  if [ $terminate -eq 1 ] && [ $SECONDS -ge $next_termination ] && [ $left -gt 5 ]; then
    ended=$("$psql" "$url" -Atqc "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
        WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'
        ORDER BY random() LIMIT 1" 2>>"$logs/psql.log" || true)
    [ "$ended" = t ] && terminations=$(( terminations + 1 ))
    next_termination=$(( SECONDS + $(random_between 20 60) ))
  fi
done
main_status=0
wait "$main_pid" || main_status=$?
main_pid=
for (( k = 0; k < workers; k++ )); do
  pid=${worker_pids[$k]}
  [ -n "$pid" ] || continue
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  worker_pids[$k]=
done
elapsed=$(( SECONDS - started ))

summary=$(tail -n 1 "$logs/main.json")
field() { jq -r "$1" <<<"$summary" 2>/dev/null || echo "?"; }
converged=$(field .converged)
rss_warmup=$(field .rss_warmup_kb)
rss_work_end=$(field .rss_work_end_kb)
rss_end=$(field .rss_end_kb)
memory_flat=false
# Within 10%, or 4 MB (a step of the allocator's, not growth: a leak of a
# few bytes per message seen after the warm-up passes it).
if [[ $rss_warmup =~ ^[0-9]+$ && $rss_work_end =~ ^[0-9]+$ ]] &&
  { [ $(( rss_work_end * 100 )) -le $(( rss_warmup * 110 )) ] ||
    [ $(( rss_work_end - rss_warmup )) -le 4096 ]; }; then
  memory_flat=true
fi

echo
echo "livestate soak: $duration on PostgreSQL, seed $seed, ran ${elapsed}s"
printf '  %-44s %s\n' \
  "worker kills (SIGKILL)" "$kills" \
  "worker restarts" "$restarts" \
  "worker failures" "$worker_failures" \
  "backends ended (pg_terminate_backend)" "$terminations" \
  "main: master restarts (lost connections)" "$(field .master_restarts_after_lost_connections)" \
  "main: messages produced by its masters" "$(field .messages_produced)" \
  "main: messages seen by its views" "$(field .messages_seen_by_views)" \
  "main: faults injected" "$(field '[.faults[]] | add')" \
  "main: anomalies detected" "$(field '[.anomalies[]] | add')" \
  "main: reload queries" "$(field .reload_queries)" \
  "main: resyncs" "$(field .resyncs)" \
  "main: view entries at the end" "$(field '[.views[] | length] | add')" \
  "main: time to converge (s)" "$(field .convergence_seconds)" \
  "main: RSS after warm-up (kB)" "$rss_warmup" \
  "main: RSS when the work ended (kB)" "$rss_work_end" \
  "main: RSS after converging (kB)" "$rss_end" \
  "main: heap in use after warm-up (kB)" "$(field .heap_warmup_kb)" \
  "main: heap in use when the work ended (kB)" "$(field .heap_work_end_kb)" \
  "main: heap in use after converging (kB)" "$(field .heap_end_kb)"
if [ $main_status -eq 0 ] && [ "$converged" = true ] && [ $memory_flat = true ] && [ $worker_failures -eq 0 ]; then
  echo "verdict: PASSED: converged, memory flat (RSS when the work ended <= 1.10 x, or 4 MB above, after warm-up)"
  exit 0
fi
echo "verdict: FAILED: main exit status $main_status, converged $converged, memory flat $memory_flat," \
  "worker failures $worker_failures" >&2
tail -n 20 "$logs/main.log" >&2
keep_logs=1
exit 1
