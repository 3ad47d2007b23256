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
-- PostgreSQL commits transactions in another order than it numbers them: a
-- row can commit with a lower number after one with a higher number has been
-- read. So, as PgQ does, a row takes its transaction's id (xid8, which never
-- wraps around), and a reader's watermark is its snapshot
-- (pg_current_snapshot()): the rows changed since are those at or above the
-- snapshot's xmin whose transaction the snapshot did not see committed
-- (pg_visible_in_snapshot), also those of transactions still running when it
-- was taken and committed later.
CREATE TABLE livestate_changes (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  database_id TEXT NOT NULL
);
INSERT INTO livestate_changes (id, database_id) VALUES (1, gen_random_uuid()::text);

ALTER TABLE masters ADD COLUMN position xid8 NOT NULL DEFAULT '0';
ALTER TABLE builders ADD COLUMN position xid8 NOT NULL DEFAULT '0';
ALTER TABLE workers ADD COLUMN position xid8 NOT NULL DEFAULT '0';
ALTER TABLE buildsets ADD COLUMN position xid8 NOT NULL DEFAULT '0';
ALTER TABLE buildrequests ADD COLUMN position xid8 NOT NULL DEFAULT '0';
ALTER TABLE builds ADD COLUMN position xid8 NOT NULL DEFAULT '0';
ALTER TABLE steps ADD COLUMN position xid8 NOT NULL DEFAULT '0';
ALTER TABLE resources ADD COLUMN position xid8 NOT NULL DEFAULT '0';

-- Rows inserted by other programs get their transaction's id too (an update
-- by another program that does not set `position` is found only by a full
-- resync).
ALTER TABLE masters ALTER COLUMN position SET DEFAULT pg_current_xact_id();
ALTER TABLE builders ALTER COLUMN position SET DEFAULT pg_current_xact_id();
ALTER TABLE workers ALTER COLUMN position SET DEFAULT pg_current_xact_id();
ALTER TABLE buildsets ALTER COLUMN position SET DEFAULT pg_current_xact_id();
ALTER TABLE buildrequests ALTER COLUMN position SET DEFAULT pg_current_xact_id();
ALTER TABLE builds ALTER COLUMN position SET DEFAULT pg_current_xact_id();
ALTER TABLE steps ALTER COLUMN position SET DEFAULT pg_current_xact_id();
ALTER TABLE resources ALTER COLUMN position SET DEFAULT pg_current_xact_id();

CREATE INDEX masters_position ON masters (position);
CREATE INDEX builders_position ON builders (position);
CREATE INDEX workers_position ON workers (position);
CREATE INDEX buildsets_position ON buildsets (position);
CREATE INDEX buildrequests_position ON buildrequests (position);
CREATE INDEX builds_position ON builds (position);
CREATE INDEX steps_position ON steps (position);
CREATE INDEX resources_position ON resources (position);
