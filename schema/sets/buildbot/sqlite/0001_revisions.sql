-- The "buildbot" migration set on SQLite, applied to a Buildbot 3.7 database
-- (`livestate migrate --set buildbot --db sqlite:master/state.sqlite`): the
-- same revisions and reading views as on PostgreSQL (see
-- schema/sets/buildbot/postgres/0001_revisions.sql), Buildbot's own tables and
-- columns never altered.
--
-- Commit order. A SQLite database has one writer at a time: every change
-- runs under its write lock until it commits, so a counter bumped inside the
-- changing transaction rises in the order the changes commit, for every
-- entry at once.

CREATE TABLE livestate_buildbot_counter (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  value INTEGER NOT NULL
);
INSERT INTO livestate_buildbot_counter (id, value) VALUES (1, 0);

CREATE TABLE livestate_buildbot_revisions (
  type TEXT NOT NULL,      -- buildrequests, buildsets, builds, steps
  id INTEGER NOT NULL,     -- the row's id in Buildbot's table
  revision INTEGER NOT NULL,
  PRIMARY KEY (type, id)
);

-- One trigger per table and operation (SQLite's triggers have no TG_OP): each
-- bumps the counter, then gives the entry the counter's value. A row moved to
-- another entry (an UPDATE of the id column) bumps both.

CREATE TRIGGER livestate_buildbot_buildrequests_insert AFTER INSERT ON buildrequests BEGIN
  UPDATE livestate_buildbot_counter SET value = value + 1 WHERE id = 1;
  INSERT INTO livestate_buildbot_revisions (type, id, revision)
    SELECT 'buildrequests', NEW.id, value FROM livestate_buildbot_counter WHERE id = 1
    ON CONFLICT (type, id) DO UPDATE SET revision = excluded.revision;
END;
CREATE TRIGGER livestate_buildbot_buildrequests_update AFTER UPDATE ON buildrequests BEGIN
  UPDATE livestate_buildbot_counter SET value = value + 1 WHERE id = 1;
  INSERT INTO livestate_buildbot_revisions (type, id, revision)
    SELECT 'buildrequests', NEW.id, value FROM livestate_buildbot_counter WHERE id = 1
    ON CONFLICT (type, id) DO UPDATE SET revision = excluded.revision;
  UPDATE livestate_buildbot_counter SET value = value + 1 WHERE id = 1;
  INSERT INTO livestate_buildbot_revisions (type, id, revision)
    SELECT 'buildrequests', OLD.id, value FROM livestate_buildbot_counter WHERE id = 1 AND OLD.id IS NOT NEW.id
    ON CONFLICT (type, id) DO UPDATE SET revision = excluded.revision;
END;
CREATE TRIGGER livestate_buildbot_buildrequests_delete AFTER DELETE ON buildrequests BEGIN
  UPDATE livestate_buildbot_counter SET value = value + 1 WHERE id = 1;
  INSERT INTO livestate_buildbot_revisions (type, id, revision)
    SELECT 'buildrequests', OLD.id, value FROM livestate_buildbot_counter WHERE id = 1
    ON CONFLICT (type, id) DO UPDATE SET revision = excluded.revision;
END;

CREATE TRIGGER livestate_buildbot_buildrequest_claims_insert AFTER INSERT ON buildrequest_claims BEGIN
  UPDATE livestate_buildbot_counter SET value = value + 1 WHERE id = 1;
  INSERT INTO livestate_buildbot_revisions (type, id, revision)
    SELECT 'buildrequests', NEW.brid, value FROM livestate_buildbot_counter WHERE id = 1
    ON CONFLICT (type, id) DO UPDATE SET revision = excluded.revision;
END;
CREATE TRIGGER livestate_buildbot_buildrequest_claims_update AFTER UPDATE ON buildrequest_claims BEGIN
  UPDATE livestate_buildbot_counter SET value = value + 1 WHERE id = 1;
  INSERT INTO livestate_buildbot_revisions (type, id, revision)
    SELECT 'buildrequests', NEW.brid, value FROM livestate_buildbot_counter WHERE id = 1
    ON CONFLICT (type, id) DO UPDATE SET revision = excluded.revision;
  UPDATE livestate_buildbot_counter SET value = value + 1 WHERE id = 1;
  INSERT INTO livestate_buildbot_revisions (type, id, revision)
    SELECT 'buildrequests', OLD.brid, value FROM livestate_buildbot_counter WHERE id = 1 AND OLD.brid IS NOT NEW.brid
    ON CONFLICT (type, id) DO UPDATE SET revision = excluded.revision;
END;
CREATE TRIGGER livestate_buildbot_buildrequest_claims_delete AFTER DELETE ON buildrequest_claims BEGIN
  UPDATE livestate_buildbot_counter SET value = value + 1 WHERE id = 1;
  INSERT INTO livestate_buildbot_revisions (type, id, revision)
    SELECT 'buildrequests', OLD.brid, value FROM livestate_buildbot_counter WHERE id = 1
    ON CONFLICT (type, id) DO UPDATE SET revision = excluded.revision;
END;

CREATE TRIGGER livestate_buildbot_buildsets_insert AFTER INSERT ON buildsets BEGIN
  UPDATE livestate_buildbot_counter SET value = value + 1 WHERE id = 1;
  INSERT INTO livestate_buildbot_revisions (type, id, revision)
    SELECT 'buildsets', NEW.id, value FROM livestate_buildbot_counter WHERE id = 1
    ON CONFLICT (type, id) DO UPDATE SET revision = excluded.revision;
END;
CREATE TRIGGER livestate_buildbot_buildsets_update AFTER UPDATE ON buildsets BEGIN
  UPDATE livestate_buildbot_counter SET value = value + 1 WHERE id = 1;
  INSERT INTO livestate_buildbot_revisions (type, id, revision)
    SELECT 'buildsets', NEW.id, value FROM livestate_buildbot_counter WHERE id = 1
    ON CONFLICT (type, id) DO UPDATE SET revision = excluded.revision;
  UPDATE livestate_buildbot_counter SET value = value + 1 WHERE id = 1;
  INSERT INTO livestate_buildbot_revisions (type, id, revision)
    SELECT 'buildsets', OLD.id, value FROM livestate_buildbot_counter WHERE id = 1 AND OLD.id IS NOT NEW.id
    ON CONFLICT (type, id) DO UPDATE SET revision = excluded.revision;
END;
CREATE TRIGGER livestate_buildbot_buildsets_delete AFTER DELETE ON buildsets BEGIN
  UPDATE livestate_buildbot_counter SET value = value + 1 WHERE id = 1;
  INSERT INTO livestate_buildbot_revisions (type, id, revision)
    SELECT 'buildsets', OLD.id, value FROM livestate_buildbot_counter WHERE id = 1
    ON CONFLICT (type, id) DO UPDATE SET revision = excluded.revision;
END;

CREATE TRIGGER livestate_buildbot_buildset_sourcestamps_insert AFTER INSERT ON buildset_sourcestamps BEGIN
  UPDATE livestate_buildbot_counter SET value = value + 1 WHERE id = 1;
  INSERT INTO livestate_buildbot_revisions (type, id, revision)
    SELECT 'buildsets', NEW.buildsetid, value FROM livestate_buildbot_counter WHERE id = 1
    ON CONFLICT (type, id) DO UPDATE SET revision = excluded.revision;
END;
CREATE TRIGGER livestate_buildbot_buildset_sourcestamps_update AFTER UPDATE ON buildset_sourcestamps BEGIN
  UPDATE livestate_buildbot_counter SET value = value + 1 WHERE id = 1;
  INSERT INTO livestate_buildbot_revisions (type, id, revision)
    SELECT 'buildsets', NEW.buildsetid, value FROM livestate_buildbot_counter WHERE id = 1
    ON CONFLICT (type, id) DO UPDATE SET revision = excluded.revision;
  UPDATE livestate_buildbot_counter SET value = value + 1 WHERE id = 1;
  INSERT INTO livestate_buildbot_revisions (type, id, revision)
    SELECT 'buildsets', OLD.buildsetid, value FROM livestate_buildbot_counter WHERE id = 1 AND OLD.buildsetid IS NOT NEW.buildsetid
    ON CONFLICT (type, id) DO UPDATE SET revision = excluded.revision;
END;
CREATE TRIGGER livestate_buildbot_buildset_sourcestamps_delete AFTER DELETE ON buildset_sourcestamps BEGIN
  UPDATE livestate_buildbot_counter SET value = value + 1 WHERE id = 1;
  INSERT INTO livestate_buildbot_revisions (type, id, revision)
    SELECT 'buildsets', OLD.buildsetid, value FROM livestate_buildbot_counter WHERE id = 1
    ON CONFLICT (type, id) DO UPDATE SET revision = excluded.revision;
END;

CREATE TRIGGER livestate_buildbot_builds_insert AFTER INSERT ON builds BEGIN
  UPDATE livestate_buildbot_counter SET value = value + 1 WHERE id = 1;
  INSERT INTO livestate_buildbot_revisions (type, id, revision)
    SELECT 'builds', NEW.id, value FROM livestate_buildbot_counter WHERE id = 1
    ON CONFLICT (type, id) DO UPDATE SET revision = excluded.revision;
END;
CREATE TRIGGER livestate_buildbot_builds_update AFTER UPDATE ON builds BEGIN
  UPDATE livestate_buildbot_counter SET value = value + 1 WHERE id = 1;
  INSERT INTO livestate_buildbot_revisions (type, id, revision)
    SELECT 'builds', NEW.id, value FROM livestate_buildbot_counter WHERE id = 1
    ON CONFLICT (type, id) DO UPDATE SET revision = excluded.revision;
  UPDATE livestate_buildbot_counter SET value = value + 1 WHERE id = 1;
  INSERT INTO livestate_buildbot_revisions (type, id, revision)
    SELECT 'builds', OLD.id, value FROM livestate_buildbot_counter WHERE id = 1 AND OLD.id IS NOT NEW.id
    ON CONFLICT (type, id) DO UPDATE SET revision = excluded.revision;
END;
CREATE TRIGGER livestate_buildbot_builds_delete AFTER DELETE ON builds BEGIN
  UPDATE livestate_buildbot_counter SET value = value + 1 WHERE id = 1;
  INSERT INTO livestate_buildbot_revisions (type, id, revision)
    SELECT 'builds', OLD.id, value FROM livestate_buildbot_counter WHERE id = 1
    ON CONFLICT (type, id) DO UPDATE SET revision = excluded.revision;
END;

CREATE TRIGGER livestate_buildbot_steps_insert AFTER INSERT ON steps BEGIN
  UPDATE livestate_buildbot_counter SET value = value + 1 WHERE id = 1;
  INSERT INTO livestate_buildbot_revisions (type, id, revision)
    SELECT 'steps', NEW.id, value FROM livestate_buildbot_counter WHERE id = 1
    ON CONFLICT (type, id) DO UPDATE SET revision = excluded.revision;
END;
CREATE TRIGGER livestate_buildbot_steps_update AFTER UPDATE ON steps BEGIN
  UPDATE livestate_buildbot_counter SET value = value + 1 WHERE id = 1;
  INSERT INTO livestate_buildbot_revisions (type, id, revision)
    SELECT 'steps', NEW.id, value FROM livestate_buildbot_counter WHERE id = 1
    ON CONFLICT (type, id) DO UPDATE SET revision = excluded.revision;
  UPDATE livestate_buildbot_counter SET value = value + 1 WHERE id = 1;
  INSERT INTO livestate_buildbot_revisions (type, id, revision)
    SELECT 'steps', OLD.id, value FROM livestate_buildbot_counter WHERE id = 1 AND OLD.id IS NOT NEW.id
    ON CONFLICT (type, id) DO UPDATE SET revision = excluded.revision;
END;
CREATE TRIGGER livestate_buildbot_steps_delete AFTER DELETE ON steps BEGIN
  UPDATE livestate_buildbot_counter SET value = value + 1 WHERE id = 1;
  INSERT INTO livestate_buildbot_revisions (type, id, revision)
    SELECT 'steps', OLD.id, value FROM livestate_buildbot_counter WHERE id = 1
    ON CONFLICT (type, id) DO UPDATE SET revision = excluded.revision;
END;

-- The rows already there get a revision each.
INSERT INTO livestate_buildbot_revisions (type, id, revision)
  SELECT 'buildrequests', id, (SELECT value FROM livestate_buildbot_counter) + row_number() OVER (ORDER BY id) FROM buildrequests;
UPDATE livestate_buildbot_counter SET value = (SELECT max(revision) FROM livestate_buildbot_revisions)
  WHERE EXISTS (SELECT 1 FROM livestate_buildbot_revisions);
INSERT INTO livestate_buildbot_revisions (type, id, revision)
  SELECT 'buildsets', id, (SELECT value FROM livestate_buildbot_counter) + row_number() OVER (ORDER BY id) FROM buildsets;
UPDATE livestate_buildbot_counter SET value = (SELECT max(revision) FROM livestate_buildbot_revisions)
  WHERE EXISTS (SELECT 1 FROM livestate_buildbot_revisions);
INSERT INTO livestate_buildbot_revisions (type, id, revision)
  SELECT 'builds', id, (SELECT value FROM livestate_buildbot_counter) + row_number() OVER (ORDER BY id) FROM builds;
UPDATE livestate_buildbot_counter SET value = (SELECT max(revision) FROM livestate_buildbot_revisions)
  WHERE EXISTS (SELECT 1 FROM livestate_buildbot_revisions);
INSERT INTO livestate_buildbot_revisions (type, id, revision)
  SELECT 'steps', id, (SELECT value FROM livestate_buildbot_counter) + row_number() OVER (ORDER BY id) FROM steps;
UPDATE livestate_buildbot_counter SET value = (SELECT max(revision) FROM livestate_buildbot_revisions)
  WHERE EXISTS (SELECT 1 FROM livestate_buildbot_revisions);

-- The reading views, as on PostgreSQL: `id`, Buildbot's message body with
-- "_rev", and `revision`, read by one statement. Booleans are made with
-- json('true') and json('false'): SQLite has none of its own.
CREATE VIEW livestate_buildbot_buildrequests AS
SELECT r.id AS id,
       json_object(
         'buildrequestid', r.id, 'buildsetid', r.buildsetid, 'builderid', r.builderid,
         'priority', r.priority,
         'claimed', json(CASE WHEN c.claimed_at IS NOT NULL THEN 'true' ELSE 'false' END),
         'claimed_at', c.claimed_at, 'claimed_by_masterid', c.masterid,
         'complete', json(CASE WHEN COALESCE(r.complete, 0) <> 0 THEN 'true' ELSE 'false' END),
         'results', COALESCE(r.results, -1),
         'submitted_at', r.submitted_at, 'complete_at', r.complete_at,
         'waited_for', json(CASE WHEN COALESCE(r.waited_for, 0) <> 0 THEN 'true' ELSE 'false' END),
         'properties', json('null'),
         '_rev', COALESCE(v.revision, 0)) AS body,
       COALESCE(v.revision, 0) AS revision
FROM buildrequests r
LEFT JOIN buildrequest_claims c ON c.brid = r.id
LEFT JOIN livestate_buildbot_revisions v ON v.type = 'buildrequests' AND v.id = r.id;

CREATE VIEW livestate_buildbot_buildsets AS
SELECT s.id AS id,
       json_object(
         'bsid', s.id, 'external_idstring', s.external_idstring, 'reason', s.reason,
         'submitted_at', s.submitted_at,
         'complete', json(CASE WHEN s.complete <> 0 THEN 'true' ELSE 'false' END),
         'complete_at', s.complete_at, 'results', s.results,
         'sourcestamps', json(COALESCE((
           SELECT json_group_array(json(stamp)) FROM (
             SELECT json_object(
                      'ssid', ss.id, 'branch', ss.branch, 'revision', ss.revision, 'project', ss.project,
                      'repository', ss.repository, 'codebase', ss.codebase, 'created_at', ss.created_at,
                      -- a patch's body is bytes, which Buildbot's JSON carries as null
                      'patch', CASE WHEN p.id IS NULL THEN json('null') ELSE json_object(
                                 'patchid', p.id, 'level', p.patchlevel, 'subdir', p.subdir,
                                 'author', p.patch_author, 'comment', p.patch_comment,
                                 'body', json('null')) END) AS stamp
             FROM buildset_sourcestamps bss
             JOIN sourcestamps ss ON ss.id = bss.sourcestampid
             LEFT JOIN patches p ON p.id = ss.patchid
             WHERE bss.buildsetid = s.id
             ORDER BY bss.id)), '[]')),
         '_rev', COALESCE(v.revision, 0)) AS body,
       COALESCE(v.revision, 0) AS revision
FROM buildsets s
LEFT JOIN livestate_buildbot_revisions v ON v.type = 'buildsets' AND v.id = s.id;

CREATE VIEW livestate_buildbot_builds AS
SELECT b.id AS id,
       json_object(
         'buildid', b.id, 'number', b.number, 'builderid', b.builderid,
         'buildrequestid', b.buildrequestid, 'workerid', b.workerid, 'masterid', b.masterid,
         'started_at', b.started_at, 'complete_at', b.complete_at,
         'complete', json(CASE WHEN b.complete_at IS NOT NULL THEN 'true' ELSE 'false' END),
         'state_string', b.state_string, 'results', b.results, 'properties', json('{}'),
         '_rev', COALESCE(v.revision, 0)) AS body,
       COALESCE(v.revision, 0) AS revision
FROM builds b
LEFT JOIN livestate_buildbot_revisions v ON v.type = 'builds' AND v.id = b.id;

CREATE VIEW livestate_buildbot_steps AS
SELECT t.id AS id,
       json_object(
         'stepid', t.id, 'number', t.number, 'name', t.name, 'buildid', t.buildid,
         'started_at', t.started_at,
         'complete', json(CASE WHEN t.complete_at IS NOT NULL THEN 'true' ELSE 'false' END),
         'complete_at', t.complete_at, 'state_string', t.state_string, 'results', t.results,
         'urls', json(t.urls_json),
         'hidden', json(CASE WHEN t.hidden <> 0 THEN 'true' ELSE 'false' END),
         '_rev', COALESCE(v.revision, 0)) AS body,
       COALESCE(v.revision, 0) AS revision
FROM steps t
LEFT JOIN livestate_buildbot_revisions v ON v.type = 'steps' AND v.id = t.id;

-- Deleted entries, with the revision of their deletion.
CREATE VIEW livestate_buildbot_deletions AS
SELECT v.type AS type, v.id AS id, v.revision AS revision
FROM livestate_buildbot_revisions v
WHERE (v.type = 'buildrequests' AND NOT EXISTS (SELECT 1 FROM buildrequests r WHERE r.id = v.id))
   OR (v.type = 'buildsets' AND NOT EXISTS (SELECT 1 FROM buildsets s WHERE s.id = v.id))
   OR (v.type = 'builds' AND NOT EXISTS (SELECT 1 FROM builds b WHERE b.id = v.id))
   OR (v.type = 'steps' AND NOT EXISTS (SELECT 1 FROM steps t WHERE t.id = v.id));
