-- Claims move out of the build request's row into a table of their own, as in
-- Buildbot: one row per claimed request, so that the primary key makes a
-- double claim impossible, and claiming is an INSERT that either wins or fails.
-- Existing claims are carried over.

CREATE TABLE buildrequest_claims (
  brid INTEGER PRIMARY KEY REFERENCES buildrequests (id) ON DELETE CASCADE,
  masterid INTEGER NOT NULL REFERENCES masters (id),
  claimed_at REAL NOT NULL
);
CREATE INDEX buildrequest_claims_masterid ON buildrequest_claims (masterid);

INSERT INTO buildrequest_claims (brid, masterid, claimed_at)
  SELECT id, claimed_by_masterid, COALESCE(claimed_at, 0)
  FROM buildrequests
  WHERE claimed_by_masterid IS NOT NULL;

ALTER TABLE buildrequests DROP COLUMN claimed_by_masterid;
ALTER TABLE buildrequests DROP COLUMN claimed_at;

-- Buildbot's build request bodies carry properties; most are null.
ALTER TABLE buildrequests ADD COLUMN properties TEXT;
