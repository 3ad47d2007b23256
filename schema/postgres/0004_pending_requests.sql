-- What a master looks for is the requests still to do, of one builder: they
-- get a partial index of their own, small however long the history grows.
-- Completing a request now takes its entry out of that index, where the index
-- on (builderid, complete) moved the entry from one part of the index to
-- another (two index pages written instead of one). Queries ask for pending
-- requests as `NOT complete`, the partial index's own condition.
-- PostgreSQL proves `NOT complete` implies the index's condition even in a
-- generic plan; a bound `complete = $1` it could not.
DROP INDEX buildrequests_builderid_complete;
CREATE INDEX buildrequests_builderid ON buildrequests (builderid);
CREATE INDEX buildrequests_pending ON buildrequests (builderid) WHERE NOT complete;

-- A master's claims are found through the pending requests (releasing the
-- claims of a stopped master concerns only those), so claiming no longer
-- writes to an index of claims by master.
DROP INDEX buildrequest_claims_masterid;
