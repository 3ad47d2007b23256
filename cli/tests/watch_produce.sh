#!/bin/sh
# watch_produce.sh LIVESTATE: `livestate watch` and `livestate produce` between
# processes through a real PostgreSQL server, LIVESTATE_TEST_PG (run it through
# tests/pg/with-test-postgres.sh, which sets it): messages matched by filter,
# a foreign producer's raw pg_notify, garbage on the channel counted and
# skipped, a body too large for one notification, and both ways of stopping.
#
# It works in a database of its own, dropped at the end: NOTIFY channels are
# per database, so suites producing on the test server at the same time can't
# reach its watch. Whatever happens, the watch in the background is stopped
# and the database dropped, and it gives up after 30 s.
set -eu

cli=$1
me=watch_produce
fail() { echo "$me: $*" >&2; exit 1; }
[ -n "${LIVESTATE_TEST_PG:-}" ] ||
  fail "LIVESTATE_TEST_PG is not set: run it through tests/pg/with-test-postgres.sh (e.g. tests/pg/with-test-postgres.sh ctest --test-dir build -L pg)"

# psql on PATH, else the newest server's (Debian layout), as the harness finds its binaries.
psql=$(command -v psql || true)
if [ -z "$psql" ]; then
  psql=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)/psql
fi
[ -x "$psql" ] || fail "no psql on PATH nor under /usr/lib/postgresql/*/bin (install postgresql-client)"
sql() { "$psql" -X -q -v ON_ERROR_STOP=1 "$@" >/dev/null; }

deadline=$(($(date +%s) + 30))
in_time() { [ "$(date +%s)" -lt "$deadline" ]; }

work=$(mktemp -d "${TMPDIR:-/tmp}/livestate-cli.XXXXXX")
watcher=""
database=""
stop_watcher() {  # SIGTERM, then SIGKILL if it is still there after 2 s
  [ -n "$watcher" ] || return 0
  kill -TERM "$watcher" 2>/dev/null || true
  tries=0
  while kill -0 "$watcher" 2>/dev/null && [ "$tries" -lt 20 ]; do sleep 0.1; tries=$((tries + 1)); done
  kill -KILL "$watcher" 2>/dev/null || true
  wait "$watcher" 2>/dev/null || true
  watcher=""
}
cleanup() {
  stop_watcher
  if [ -n "$database" ]; then
    sql "$LIVESTATE_TEST_PG" -c "DROP DATABASE IF EXISTS $database WITH (FORCE)" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# on_database NAME: LIVESTATE_TEST_PG, on database NAME.
on_database() {
  case $LIVESTATE_TEST_PG in
    *://*\?*) echo "$LIVESTATE_TEST_PG&dbname=$1" ;;
    *://*) echo "$LIVESTATE_TEST_PG?dbname=$1" ;;
    *) echo "$LIVESTATE_TEST_PG dbname=$1" ;;  # a conninfo string: the last dbname counts
  esac
}
database=livestate_cli_$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
sql "$LIVESTATE_TEST_PG" -c "CREATE DATABASE $database"
db=$(on_database "$database")

# watch ARGS...: starts `livestate watch ARGS` in the background and returns
# once it says it listens.
watch() {
  # Emptied here, not by the background job's redirections, which may happen
  # after the first grep below and let it find the previous watch's line.
  : >"$work/out"
  : >"$work/err"
  "$cli" watch "$@" --db "$db" --timeout 20 >>"$work/out" 2>>"$work/err" &
  watcher=$!
  until grep -q "^livestate watch: listening on channel" "$work/err"; do
    kill -0 "$watcher" 2>/dev/null || { cat "$work/err" >&2; fail "watch $* ended before it listened"; }
    in_time || { cat "$work/err" >&2; fail "watch $* did not listen in time"; }
    sleep 0.1
  done
}
# watch_ends: waits for the watch to exit by itself, with status 0.
watch_ends() {
  while kill -0 "$watcher" 2>/dev/null; do
    in_time || { cat "$work/out" "$work/err" >&2; fail "watch did not stop in time"; }
    sleep 0.1
  done
  status=0
  wait "$watcher" || status=$?
  watcher=""
  [ "$status" -eq 0 ] || { cat "$work/err" >&2; fail "watch exited with status $status"; }
}
# line N EXPECTED: line N of the watch's output is EXPECTED.
line() {
  got=$(sed -n "$1p" "$work/out")
  [ "$got" = "$2" ] || { cat "$work/out" >&2; fail "line $1 of watch's output is not $2"; }
}
# stats_has PATTERN: the watch's last line, its stats, matches PATTERN (grep -E).
stats_has() {
  tail -n 1 "$work/out" | grep -Eq "^\{\"stats\":\{.*$1" || { cat "$work/out" >&2; fail "no $1 in watch's stats"; }
}

# 1. Two matching messages of three, from other processes: printed as they
# come, then the stats; --count ends it.
watch 'builds.*.finished' --count 2 --stats
"$cli" produce builds.7.finished '{"buildid":7}' --db "$db"
"$cli" produce builds.8.started '{"buildid":8}' --db "$db"
produced=$("$cli" produce builds.8.finished '{"buildid":8,"results":0}' --db "$db" --json)
[ "$produced" = '{"produced":"builds.8.finished"}' ] || fail "produce --json printed '$produced'"
watch_ends
test "$(wc -l <"$work/out")" -eq 3 || { cat "$work/out" >&2; fail "watch printed other than 3 lines"; }
line 1 '{"key":["builds","7","finished"],"body":{"buildid":7}}'
line 2 '{"key":["builds","8","finished"],"body":{"buildid":8,"results":0}}'
stats_has '"received":([3-9]|[1-9][0-9]+),"delivered":2,"callback_errors":0,"malformed":0,'
stats_has '"listening":true\}\}$'

# 2. A foreign producer's raw pg_notify after garbage on the channel, a body
# too large for one notification, then the listening connection killed: a
# reconnected event, and messages again. SIGTERM ends it, with the stats.
# lines N: waits until the watch printed N lines.
lines() {
  until [ "$(wc -l <"$work/out")" -ge "$1" ]; do
    in_time || { cat "$work/out" "$work/err" >&2; fail "watch did not print $1 lines in time"; }
    sleep 0.1
  done
}
watch 'builds.#' --stats
sql "$db" -c "SELECT pg_notify('livestate', 'this is not JSON')"
sql "$db" -c "SELECT pg_notify('livestate', '{\"v\":1,\"m\":[{\"k\":[\"builds\",\"9\",\"finished\"],\"b\":{\"buildid\":9}}]}')"
log=$(head -c 20000 /dev/zero | tr '\0' x)
"$cli" produce builds.9.log "{\"text\":\"$log\"}" --db "$db"
lines 2
sql "$db" -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
              WHERE datname = current_database() AND application_name = 'livestate-listener'"
lines 3
"$cli" produce builds.10.finished '{"buildid":10}' --db "$db"
lines 4
kill -TERM "$watcher"
watch_ends
line 1 '{"key":["builds","9","finished"],"body":{"buildid":9}}'
line 2 "{\"key\":[\"builds\",\"9\",\"log\"],\"body\":{\"text\":\"$log\"}}"
sed -n 3p "$work/out" | grep -Eq '^\{"control":"reconnected","reason":"reconnected after: [^"]+","missed":0,"origin":null\}$' ||
  { cat "$work/out" >&2; fail "line 3 of watch's output is not a reconnected event"; }
line 4 '{"key":["builds","10","finished"],"body":{"buildid":10}}'
test "$(wc -l <"$work/out")" -eq 5 || { cat "$work/out" >&2; fail "watch printed other than 5 lines"; }
stats_has '"notifications":4,"received":3,"delivered":3,"callback_errors":0,"malformed":1,"by_reference":1,'
stats_has '"reconnects":1,'

# 3. produce fails with one line and status 1 when the server refuses.
status=0
"$cli" produce builds.1.finished '{}' --db "$(on_database "${database}_missing")" 2>"$work/err" || status=$?
[ "$status" -eq 1 ] && [ "$(wc -l <"$work/err")" -eq 1 ] && grep -q "does not exist" "$work/err" ||
  { cat "$work/err" >&2; fail "produce to a missing database: status $status"; }
