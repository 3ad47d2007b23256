#!/bin/sh
# sqlite_read_only.sh LIVESTATE TRACE: what only reads changes nothing, and
# what writes keeps off another application's database.
# - `view` and `migrate --status` leave a SQLite file byte for byte as it was
#   (its journal mode included), also a database livestate never touched;
# - the documented read-only URL sqlite:file:PATH?mode=ro works for both;
# - a WAL database in a directory the user can't write can be viewed;
# - `chaos` and `replay` refuse a database holding another application's
#   tables, and add nothing to it.
set -eu

cli=$1
trace=$2
me=sqlite_read_only
python=/usr/bin/python3
dir=$(mktemp -d)
chmod 755 "$dir"
trap 'rm -rf "$dir"' EXIT
fail() { echo "$me: $*" >&2; exit 1; }
sql() { "$python" -c 'import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
for row in c.execute(sys.argv[2]): print(*row)
c.commit()' "$@"; }
digest() { cat "$1" "$1-wal" 2>/dev/null | sha256sum; }

# A livestate database in rollback-journal mode, as another tool may leave it.
db=$dir/live.db
"$cli" migrate --db "sqlite:$db" >/dev/null
sql "$db" "PRAGMA journal_mode = DELETE" >/dev/null
before=$(digest "$db")
"$cli" view masters --db "sqlite:$db" >/dev/null
"$cli" migrate --status --db "sqlite:$db" >/dev/null
[ "$(digest "$db")" = "$before" ] || fail "view or migrate --status changed $db"
[ "$(sql "$db" "PRAGMA journal_mode")" = delete ] || fail "view or migrate --status changed the journal mode"
[ ! -e "$db-wal" ] || fail "view or migrate --status made a WAL file"

# The read-only URL the store documents.
"$cli" view masters --db "sqlite:file:$db?mode=ro" | grep -q "no masters" || fail "view refused sqlite:file:...?mode=ro"
"$cli" migrate --status --db "sqlite:file:$db?mode=ro" | grep -q "applied" ||
  fail "migrate --status refused sqlite:file:...?mode=ro"
[ "$(digest "$db")" = "$before" ] || fail "the read-only URL changed $db"

# Another application's database: viewing it fails and leaves it alone;
# chaos and replay refuse it.
other=$dir/invoices.db
sql "$other" "CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)" >/dev/null
sql "$other" "INSERT INTO invoices (total) VALUES (12.5)" >/dev/null
before=$(digest "$other")
if "$cli" view builds --db "sqlite:$other" >/dev/null 2>&1; then fail "view read a database without livestate's schema"; fi
[ "$(digest "$other")" = "$before" ] || fail "view changed another application's database"
status=0
"$cli" chaos --buildsets 1 --db "sqlite:$other" >/dev/null 2>"$dir/err" || status=$?
[ "$status" -eq 2 ] && grep -q "holds another application's tables (invoices)" "$dir/err" ||
  { cat "$dir/err" >&2; fail "chaos did not refuse another application's database (exit $status)"; }
status=0
"$cli" replay "$trace" --db "sqlite:$other" >/dev/null 2>"$dir/err" || status=$?
[ "$status" -eq 2 ] && grep -q "holds another application's tables (invoices)" "$dir/err" ||
  { cat "$dir/err" >&2; fail "replay did not refuse another application's database (exit $status)"; }
[ "$(sql "$other" "SELECT count(*) FROM sqlite_schema WHERE type = 'table'")" = 1 ] ||
  fail "chaos or replay added tables to another application's database"

# A WAL database in a directory the viewer can't write (root writes anywhere:
# as root, the viewer is the unprivileged user nobody).
locked=$dir/locked
mkdir "$locked"
"$cli" migrate --db "sqlite:$locked/wal.db" >/dev/null
[ "$(sql "$locked/wal.db" "PRAGMA journal_mode")" = wal ] || fail "a new database is not in WAL mode"
chmod 755 "$locked"
chmod 644 "$locked/wal.db"
if [ "$(id -u)" -eq 0 ]; then
  command -v runuser >/dev/null || { echo "$me: no runuser: skipping the read-only directory"; exit 0; }
  as_viewer="runuser -u nobody --"
else
  chmod 555 "$locked"
  as_viewer=""
fi
$as_viewer "$cli" view masters --db "sqlite:$locked/wal.db" | grep -q "no masters" ||
  fail "a WAL database in a read-only directory could not be viewed"
$as_viewer "$cli" migrate --status --db "sqlite:$locked/wal.db" | grep -q "applied" ||
  fail "migrate --status could not read a WAL database in a read-only directory"
chmod 755 "$locked"
echo "$me: reading changed nothing, and writing kept off another application's database"
