#!/usr/bin/env bash
# with-test-postgres.sh CMD [ARGS...]
#
# Runs CMD with LIVESTATE_TEST_PG pointing at a PostgreSQL server. When
# LIVESTATE_TEST_PG is already set, that server is used and nothing is started.
# Otherwise a throwaway server is made: initdb into a fresh temporary
# directory (as the postgres user when running as root: PostgreSQL refuses to
# run as root), listening on 127.0.0.1 only, on a free port, with a database
# livestate_test. It is stopped and its directory removed when CMD ends, also
# when CMD fails or the script is interrupted. Exits with CMD's status.
set -euo pipefail

if [ $# -eq 0 ]; then
  echo "usage: $0 CMD [ARGS...]" >&2
  exit 2
fi
if [ -n "${LIVESTATE_TEST_PG:-}" ]; then
  echo "with-test-postgres: using LIVESTATE_TEST_PG as given" >&2
  exec "$@"
fi

bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
  echo "with-test-postgres: no PostgreSQL server found under /usr/lib/postgresql (apt-get install postgresql)" >&2
  exit 1
fi

as_owner=()
if [ "$(id -u)" -eq 0 ]; then
  as_owner=(runuser -u postgres --)
fi

dir=$(mktemp -d "${TMPDIR:-/tmp}/livestate-pg.XXXXXX")
data="$dir/data"
started=no
cleanup() {
  local status=$?
  if [ "$started" = yes ]; then
    "${as_owner[@]}" "$bin/pg_ctl" -D "$data" -m fast -w -t 30 stop >/dev/null 2>&1 ||
      "${as_owner[@]}" "$bin/pg_ctl" -D "$data" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
  fi
  rm -rf "$dir"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ ${#as_owner[@]} -gt 0 ]; then
  chown postgres: "$dir"
  chmod 700 "$dir"
fi
"${as_owner[@]}" "$bin/initdb" -D "$data" -U postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 \
  >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }

# A random port; when it is taken, the server fails to start and we try another.
port=""
for attempt in 1 2 3 4 5 6 7 8; do
  candidate=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
  if "${as_owner[@]}" "$bin/pg_ctl" -D "$data" -l "$dir/server.log" -w -t 60 \
       -o "-c listen_addresses=127.0.0.1 -c port=$candidate -c unix_socket_directories=$dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
       start >/dev/null 2>&1; then
    port=$candidate
    started=yes
    break
  fi
  echo "with-test-postgres: port $candidate did not work (attempt $attempt), trying another" >&2
done
if [ -z "$port" ]; then
  echo "with-test-postgres: the server did not start; its log:" >&2
  cat "$dir/server.log" >&2 || true
  exit 1
fi

"${as_owner[@]}" "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres livestate_test
export LIVESTATE_TEST_PG="postgresql://postgres@127.0.0.1:$port/livestate_test"
echo "with-test-postgres: PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port, data in $data" >&2

set +e
"$@"
status=$?
set -e
exit $status
