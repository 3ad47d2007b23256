#!/bin/sh
# hostile_urls.sh LIVESTATE TRACE: every command that takes --db, given a
# PostgreSQL URL whose password libpq quotes back or that livestate's old
# redaction missed, fails in one line that never shows the password: on stderr,
# on stdout, or in `watch --stats`'s last_reconnect_reason. Nothing listens on
# port 1, so no server is needed.
set -u

cli=$1
trace=$2
me=hostile_urls
out=$(mktemp)
trap 'rm -f "$out"' EXIT

# Each URL with the words of its password that must never be printed.
# (The whole list runs in about 10 s: every connection is refused at once.)
check() {
  url=$1
  secret=$2
  shift 2
  status=0
  "$cli" "$@" --db "$url" >"$out" 2>&1 || status=$?
  if grep -qF -- "$secret" "$out"; then
    echo "$me: '$*' with --db '$url' printed its password ('$secret'):" >&2
    cat "$out" >&2
    exit 1
  fi
  case "$1" in
    watch) ;;  # gives up by --timeout; its exit status is checked elsewhere
    *)
      if [ "$status" -eq 0 ]; then
        echo "$me: '$*' with --db '$url' succeeded on a server that is not there" >&2
        exit 1
      fi
      if [ "$(grep -c . "$out")" -ne 1 ]; then
        echo "$me: '$*' with --db '$url' did not fail in one line:" >&2
        cat "$out" >&2
        exit 1
      fi
      ;;
  esac
}

every_command() {
  check "$1" "$2" migrate
  check "$1" "$2" migrate --status
  check "$1" "$2" view masters
  check "$1" "$2" produce builds.7.finished '{"buildid":7}'
  check "$1" "$2" watch --timeout 0.3
  check "$1" "$2" watch --timeout 0.3 --stats
  check "$1" "$2" chaos --buildsets 1
  check "$1" "$2" replay "$trace"
}

# libpq quotes the token or the URI it can't read.
every_command 'postgresql://u:50%off@127.0.0.1:1/x' '50%off'
every_command 'postgresql://u:TOPSECRET@[::1:1/x' 'TOPSECRET'
# Spellings libpq reads that the old redaction missed.
every_command 'host=127.0.0.1 port=1 dbname=x password = TOPSECRET' 'TOPSECRET'
every_command 'postgresql://127.0.0.1:1/x?pass%77ord=TOPSECRET' 'TOPSECRET'
every_command "host=127.0.0.1 port=1 dbname=x password='WRONG SECRET here'" 'SECRET'
every_command 'host=127.0.0.1 port=1 dbname=x password=a\ SECRETTAIL' 'SECRETTAIL'
every_command 'postgresql://u:pa%2Fss%40word@127.0.0.1:1/x' 'ss@word'
# And the plain ones still.
every_command 'postgresql://u:TOPSECRET@127.0.0.1:1/x' 'TOPSECRET'
every_command 'host=127.0.0.1 port=1 dbname=x password=TOPSECRET' 'TOPSECRET'
echo "$me: no command printed a password"
