-- When a resource was deleted (seconds since the UNIX epoch, the deleting
-- store's clock), so that a live view's resync reads only the recent
-- deletions, however many a type has had: it needs them to keep late
-- messages about deleted resources out, and forgets them after a while as it
-- forgets departures. Resources deleted before this migration count as
-- deleted now; a resource created again has none.
ALTER TABLE resources ADD COLUMN deleted_at REAL;
UPDATE resources SET deleted_at = (julianday('now') - 2440587.5) * 86400.0 WHERE deleted;
CREATE INDEX resources_deleted ON resources (type, deleted_at) WHERE deleted;
