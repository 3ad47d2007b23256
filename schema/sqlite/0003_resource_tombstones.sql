-- A deleted resource keeps its row, marked deleted, so that its revision goes
-- on rising when it is created again: a consumer that missed the deletion
-- must not mistake the new resource for a stale message about the old one.
ALTER TABLE resources ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0 CHECK (deleted IN (0, 1));
