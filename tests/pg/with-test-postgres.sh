#!/usr/bin/env bash
# with-test-postgres.sh CMD [ARGS...]
#
# Runs CMD with LIVESTATE_TEST_PG pointing at a PostgreSQL server.
#
# When LIVESTATE_TEST_PG is already set (and non-empty) that server is used and
# nothing is started. Otherwise a throwaway server is created for the duration
# of CMD: a fresh data directory from mktemp -d, trust authentication, UTF8,
# TCP on 127.0.0.1 only (a random free port in 20000-60000), its unix socket
# inside the temporary directory, fsync off. The database livestate_test is
# created and LIVESTATE_TEST_PG=postgresql://postgres@127.0.0.1:PORT/livestate_test
# is exported to CMD.
#
# The server is always stopped and the directory removed when the script
# exits: after CMD succeeds or fails, and on SIGINT/SIGTERM. The exit status is
# CMD's (130/143 when interrupted).
#
# PostgreSQL refuses to run as root, so as root the server runs as the
# `postgres` user (runuser); CMD itself runs as the invoking user.
set -uo pipefail

me=with-test-postgres
if [ $# -eq 0 ]; then
  echo "usage: $0 CMD [ARGS...]" >&2
  exit 2
fi

if [ -n "${LIVESTATE_TEST_PG:-}" ]; then
  exec "$@"
fi

die() { echo "$me: $*" >&2; exit 1; }

# The newest installed server (Debian layout: /usr/lib/postgresql/<major>/bin).
bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -n "$bindir" ] && [ -x "$bindir/initdb" ] && [ -x "$bindir/pg_ctl" ] ||
  die "no PostgreSQL server found under /usr/lib/postgresql/*/bin (install the postgresql package)"

as_server_user=()
if [ "$(id -u)" -eq 0 ]; then
  id postgres >/dev/null 2>&1 || die "running as root but there is no 'postgres' user to run the server as"
  as_server_user=(runuser -u postgres --)
fi

# Runs a server-side command as the server's user, from a directory that user
# can enter (the caller's working directory may be private, e.g. /root).
server_cmd() { (cd "$tmp" && "${as_server_user[@]}" "$@"); }

tmp=""
data=""
child=""
cleaned=no
cleanup() {
  [ "$cleaned" = yes ] && return
  cleaned=yes
  if [ -n "$data" ] && [ -f "$data/postmaster.pid" ]; then
    if ! server_cmd "$bindir/pg_ctl" -D "$data" -m fast -w -t 30 stop >/dev/null 2>&1; then
      server_cmd "$bindir/pg_ctl" -D "$data" -m immediate -w -t 30 stop >/dev/null 2>&1 || {
        # Last resort: the postmaster we started, by the pid it wrote.
        pid=$(head -n 1 "$data/postmaster.pid" 2>/dev/null)
        [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
      }
    fi
  fi
  [ -n "$tmp" ] && rm -rf "$tmp"
}
on_signal() {
  local status=$1
  if [ -n "$child" ]; then
    kill -TERM "$child" 2>/dev/null
    wait "$child" 2>/dev/null
  fi
  exit "$status"   # runs the EXIT trap
}
trap cleanup EXIT
trap 'on_signal 130' INT
trap 'on_signal 143' TERM

tmp=$(mktemp -d "${TMPDIR:-/tmp}/livestate-pg.XXXXXX") || die "mktemp -d failed"
data=$tmp/data
log=$tmp/postgres.log
if [ ${#as_server_user[@]} -gt 0 ]; then
  chown postgres: "$tmp" || die "cannot give $tmp to the postgres user"
fi

server_cmd "$bindir/initdb" -D "$data" --auth=trust --encoding=UTF8 --locale=C \
  --username=postgres --no-sync >"$tmp/initdb.log" 2>&1 ||
  { cat "$tmp/initdb.log" >&2; die "initdb failed"; }

cat >>"$data/postgresql.conf" <<CONF

# with-test-postgres.sh: a throwaway server for tests.
listen_addresses = '127.0.0.1'
unix_socket_directories = '$tmp'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
CONF

port_in_use() {  # something already accepts connections on 127.0.0.1:$1
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

port=""
for attempt in 1 2 3 4 5 6 7 8; do
  candidate=$(( ((RANDOM << 15) | RANDOM) % 40001 + 20000 ))
  port_in_use "$candidate" && continue
  : >"$log"
  [ ${#as_server_user[@]} -gt 0 ] && chown postgres: "$log"
  if server_cmd "$bindir/pg_ctl" -D "$data" -l "$log" -o "-p $candidate" -w -t 60 start >/dev/null 2>&1; then
    port=$candidate
    break
  fi
  if grep -qE "could not bind|Address already in use|could not create any TCP/IP sockets" "$log"; then
    echo "$me: port $candidate is taken, trying another (attempt $attempt)" >&2
    continue
  fi
  cat "$log" >&2
  die "the PostgreSQL server did not start (log above)"
done
[ -n "$port" ] || die "could not find a free port for PostgreSQL after several attempts"

"$bindir/createdb" -h 127.0.0.1 -p "$port" -U postgres livestate_test ||
  die "could not create database livestate_test"

export LIVESTATE_TEST_PG="postgresql://postgres@127.0.0.1:$port/livestate_test"
echo "$me: started PostgreSQL $(basename "$(dirname "$bindir")") on 127.0.0.1:$port (data dir $data), LIVESTATE_TEST_PG=$LIVESTATE_TEST_PG" >&2

# CMD runs in the background so that a signal to this script is handled at
# once (a foreground child would delay the trap until it exits). Without job
# control a background command would get /dev/null as stdin; give it ours.
exec 3<&0
"$@" <&3 3<&- &
child=$!
wait "$child"
status=$?
child=""
exit "$status"
