-- Every row gets the change position of the transaction that last changed
-- it, so that a live view that missed messages (after a gap, an overflow or a
-- reconnect) reads the rows changed since the last point it read, not its
-- whole type: the store sets `position` wherever it bumps `revision`, and
-- each table has an index on it. Rows older than this migration are at
-- position 0, before any watermark a reader can hold (a view reads its whole
-- type again after a migration). A deleted resource keeps its row (0003), so
-- its deletion is found the same way. `database_id` tells one database's
-- history from another's.
--
-- SQLite commits one writer at a time, so positions drawn while writing are
-- in the order of commits: a row takes one more than its table's highest
-- position (the last entry of the table's index on positions). A reader that
-- saw a table's highest position P in its read transaction has seen every
-- row at or below it; the rows changed since are those above. A position
-- counter of the whole database would cost every write transaction one more
-- page at commit (measured by bench/store_bench.cpp: about a fifth more per
-- claim); a view reads one type, so the table's own order is enough.
CREATE TABLE livestate_changes (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  database_id TEXT NOT NULL
);
INSERT INTO livestate_changes (id, database_id) VALUES (1, lower(hex(randomblob(16))));

ALTER TABLE masters ADD COLUMN position INTEGER NOT NULL DEFAULT 0;
ALTER TABLE builders ADD COLUMN position INTEGER NOT NULL DEFAULT 0;
ALTER TABLE workers ADD COLUMN position INTEGER NOT NULL DEFAULT 0;
ALTER TABLE buildsets ADD COLUMN position INTEGER NOT NULL DEFAULT 0;
ALTER TABLE buildrequests ADD COLUMN position INTEGER NOT NULL DEFAULT 0;
ALTER TABLE builds ADD COLUMN position INTEGER NOT NULL DEFAULT 0;
ALTER TABLE steps ADD COLUMN position INTEGER NOT NULL DEFAULT 0;
ALTER TABLE resources ADD COLUMN position INTEGER NOT NULL DEFAULT 0;

CREATE INDEX masters_position ON masters (position);
CREATE INDEX builders_position ON builders (position);
CREATE INDEX workers_position ON workers (position);
CREATE INDEX buildsets_position ON buildsets (position);
CREATE INDEX buildrequests_position ON buildrequests (position);
CREATE INDEX builds_position ON builds (position);
CREATE INDEX steps_position ON steps (position);
CREATE INDEX resources_position ON resources (position);
