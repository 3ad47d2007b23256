#!/usr/bin/env bash
# with-test-postgres.sh CMD [ARGS...]
#
# Runs CMD with LIVESTATE_TEST_PG pointing at a PostgreSQL server.
#
# When LIVESTATE_TEST_PG is already set (and non-empty) that server is used and
# nothing is started. Otherwise a throwaway server is created for the duration
# of CMD: a fresh data directory from mktemp -d, trust authentication, UTF8,
# TCP on 127.0.0.1 only (a random free port in 20000-60000), its unix socket
# inside the temporary directory, fsync off, and ready for logical decoding
# (wal_level=logical, 100 replication slots and WAL senders, replication
# connections from 127.0.0.1 trusted, the WAL flushed every 10 ms). The
# database livestate_test is
# created and LIVESTATE_TEST_PG=postgresql://postgres@127.0.0.1:PORT/livestate_test
# is exported to CMD.
#
# The server is always stopped and the directory removed when the script
# exits: after CMD succeeds or fails, and on SIGINT/SIGTERM. The exit status is
# CMD's (130/143 when interrupted).
#
# PostgreSQL refuses to run as root, so as root the server runs as the
# `postgres` user (runuser); CMD itself runs as the invoking user.
#
# For tests that stop and start this server (a server restart mid-stream),
# a throwaway server also exports:
#   LIVESTATE_TEST_PG_CTL   an executable: pg_ctl for this server, run as its
#                           user with -D DATA -l LOG given, e.g.
#                           "$LIVESTATE_TEST_PG_CTL" stop -m immediate -w -t 20
#                           "$LIVESTATE_TEST_PG_CTL" start -w -t 60
#   LIVESTATE_TEST_PG_CTL_URL  the LIVESTATE_TEST_PG these belong to (a test
#                           must not stop a server it doesn't use)
#   LIVESTATE_TEST_PG_DATA  the data directory
#   LIVESTATE_TEST_PG_BIN   the server's bin directory (pg_ctl, postgres...)
#   LIVESTATE_TEST_PG_USER  the OS user the server runs as
# Every server option (port, addresses, socket directory, fsync...) is in
# DATA/postgresql.conf, so a plain `pg_ctl start -D DATA` brings the same
# server back. With synchronous_commit off, an immediate stop loses the
# commits of the last few hundred milliseconds, as a crash would; a test that
# needs them after the restart runs CHECKPOINT first.
# When LIVESTATE_TEST_PG is given by the caller, these are removed from CMD's
# environment unless LIVESTATE_TEST_PG_CTL_URL names that same server (a
# harness run inside another one); tests that need them skip.
# The server is stopped at the end whatever state a test left it in.
set -uo pipefail

me=with-test-postgres
if [ $# -eq 0 ]; then
  echo "usage: $0 CMD [ARGS...]" >&2
  exit 2
fi

restart_variables=(LIVESTATE_TEST_PG_CTL LIVESTATE_TEST_PG_CTL_URL LIVESTATE_TEST_PG_DATA
                   LIVESTATE_TEST_PG_BIN LIVESTATE_TEST_PG_USER)
if [ -n "${LIVESTATE_TEST_PG:-}" ]; then
  # Not our server: nothing here may stop or start it, unless an outer
  # harness started this very one.
  if [ "${LIVESTATE_TEST_PG_CTL_URL:-}" != "$LIVESTATE_TEST_PG" ]; then
    unset "${restart_variables[@]}"
  fi
  exec "$@"
fi
unset "${restart_variables[@]}"  # stale ones from elsewhere; set below for our server

die() { echo "$me: $*" >&2; exit 1; }

# The newest installed server (Debian layout: /usr/lib/postgresql/<major>/bin).
bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -n "$bindir" ] && [ -x "$bindir/initdb" ] && [ -x "$bindir/pg_ctl" ] ||
  die "no PostgreSQL server found under /usr/lib/postgresql/*/bin (install the postgresql package)"

as_server_user=()
server_user=$(id -un)
if [ "$(id -u)" -eq 0 ]; then
  id postgres >/dev/null 2>&1 || die "running as root but there is no 'postgres' user to run the server as"
  as_server_user=(runuser -u postgres --)
  server_user=postgres
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
# The logical transport (?transport=logical): a walsender and a slot per
# consuming connector, and per durable consumer, for every test at once.
wal_level = logical
max_replication_slots = 100
max_wal_senders = 100
# Logical decoding sends a transaction once its commit is flushed, which with
# synchronous_commit off the WAL writer does every wal_writer_delay: 10 ms
# instead of 200 keeps that transport's messages about as prompt as
# notifications (fsync is off: a flush costs nothing).
wal_writer_delay = 10ms
# Durable consumers' slots outlive their tests here: each keeps at most this
# much WAL (an operator's bound too: docs/LOGICAL.md).
max_slot_wal_keep_size = 1GB
CONF

# Replication connections (the logical transport's walsenders) from loopback
# only, trusted like every other connection here. initdb writes such a line
# already; this one makes sure of it whatever its defaults become. pg_hba.conf
# takes the first line that matches, so it goes first.
{
  echo '# with-test-postgres.sh: walsenders of the logical transport, loopback only.'
  echo 'host replication all 127.0.0.1/32 trust'
  cat "$data/pg_hba.conf"
} >"$tmp/pg_hba.conf" && cat "$tmp/pg_hba.conf" >"$data/pg_hba.conf" && rm -f "$tmp/pg_hba.conf" ||
  die "cannot write $data/pg_hba.conf"

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
    # The port, too, goes into the configuration (it takes effect at the next
    # start), so that a test restarting the server gets it back on this one.
    printf 'port = %s\n' "$port" >>"$data/postgresql.conf" ||
      die "cannot write the port into $data/postgresql.conf"
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

# pg_ctl for this server, for tests that restart it: as the server's user,
# from a directory that user can enter, and always with -l so that a server
# started by a test writes to the log file, not to the test's stdout (ctest
# would otherwise wait for the server to exit before it saw the test end).
ctl=$tmp/pg_ctl
{
  echo '#!/usr/bin/env bash'
  echo '# Written by with-test-postgres.sh: pg_ctl for its throwaway server; give a mode and options.'
  printf 'cd %q || exit 1\n' "$tmp"
  printf 'exec'
  [ ${#as_server_user[@]} -gt 0 ] && printf ' %q' "${as_server_user[@]}"
  printf ' %q' "$bindir/pg_ctl" -D "$data" -l "$log"
  printf ' "$@"\n'
} >"$ctl" && chmod 755 "$ctl" || die "cannot write $ctl"
export LIVESTATE_TEST_PG_CTL=$ctl
export LIVESTATE_TEST_PG_CTL_URL=$LIVESTATE_TEST_PG
export LIVESTATE_TEST_PG_DATA=$data
export LIVESTATE_TEST_PG_BIN=$bindir
export LIVESTATE_TEST_PG_USER=$server_user
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
