-- The "buildbot" migration set, applied to a Buildbot 3.7 database on
-- PostgreSQL (`livestate migrate --set buildbot --db URL`): a revision for
-- every build request, buildset, build and step, and views that read each
-- as Buildbot's messages carry it, with its revision, in one snapshot.
--
-- Buildbot's own tables and columns are never altered: the revisions live in
-- livestate_buildbot_revisions, kept by triggers. Buildbot's migrations check
-- only alembic_version, so they don't mind the objects added here.
--
-- Commit order. Every change to an entry draws its revision from one
-- sequence while holding the lock of the entry's row in the side table
-- (INSERT … ON CONFLICT DO UPDATE locks the row before it evaluates SET; a
-- concurrent insert of the same key waits on the first). A second
-- transaction changing the same entry waits for the first to commit before it
-- draws, so an entry's revisions rise in the order its changes commit. A
-- claim (buildrequest_claims) and a buildset's sourcestamps bump the entry
-- they belong to; a deleted entry keeps its side row, with the revision of
-- its deletion.

-- No change while the triggers are made and the existing rows numbered.
LOCK TABLE buildrequests, buildrequest_claims, buildsets, buildset_sourcestamps, builds, steps
  IN SHARE ROW EXCLUSIVE MODE;

CREATE SEQUENCE livestate_buildbot_revision;

CREATE TABLE livestate_buildbot_revisions (
  type TEXT NOT NULL,      -- buildrequests, buildsets, builds, steps
  id INTEGER NOT NULL,     -- the row's id in Buildbot's table
  revision BIGINT NOT NULL,
  PRIMARY KEY (type, id)
);

CREATE FUNCTION livestate_buildbot_bump(entry_type TEXT, entry_id INTEGER) RETURNS void
LANGUAGE sql AS $$
  INSERT INTO livestate_buildbot_revisions (type, id, revision)
  VALUES (entry_type, entry_id, nextval('livestate_buildbot_revision'))
  ON CONFLICT (type, id) DO UPDATE SET revision = nextval('livestate_buildbot_revision')
$$;

-- A row trigger: TG_ARGV[0] names the entry type, TG_ARGV[1] the column
-- holding the entry's id. A row moved to another entry bumps both.
CREATE FUNCTION livestate_buildbot_bump_row() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  old_id INTEGER;
  new_id INTEGER;
BEGIN
  IF TG_OP <> 'INSERT' THEN
    old_id := (to_jsonb(OLD) ->> TG_ARGV[1])::INTEGER;
  END IF;
  IF TG_OP <> 'DELETE' THEN
    new_id := (to_jsonb(NEW) ->> TG_ARGV[1])::INTEGER;
  END IF;
  IF old_id IS NOT NULL AND old_id IS DISTINCT FROM new_id THEN
    PERFORM livestate_buildbot_bump(TG_ARGV[0], old_id);
  END IF;
  IF new_id IS NOT NULL THEN
    PERFORM livestate_buildbot_bump(TG_ARGV[0], new_id);
  END IF;
  RETURN NULL;
END
$$;

CREATE TRIGGER livestate_buildbot_revision AFTER INSERT OR UPDATE OR DELETE ON buildrequests
  FOR EACH ROW EXECUTE FUNCTION livestate_buildbot_bump_row('buildrequests', 'id');
CREATE TRIGGER livestate_buildbot_revision AFTER INSERT OR UPDATE OR DELETE ON buildrequest_claims
  FOR EACH ROW EXECUTE FUNCTION livestate_buildbot_bump_row('buildrequests', 'brid');
CREATE TRIGGER livestate_buildbot_revision AFTER INSERT OR UPDATE OR DELETE ON buildsets
  FOR EACH ROW EXECUTE FUNCTION livestate_buildbot_bump_row('buildsets', 'id');
CREATE TRIGGER livestate_buildbot_revision AFTER INSERT OR UPDATE OR DELETE ON buildset_sourcestamps
  FOR EACH ROW EXECUTE FUNCTION livestate_buildbot_bump_row('buildsets', 'buildsetid');
CREATE TRIGGER livestate_buildbot_revision AFTER INSERT OR UPDATE OR DELETE ON builds
  FOR EACH ROW EXECUTE FUNCTION livestate_buildbot_bump_row('builds', 'id');
CREATE TRIGGER livestate_buildbot_revision AFTER INSERT OR UPDATE OR DELETE ON steps
  FOR EACH ROW EXECUTE FUNCTION livestate_buildbot_bump_row('steps', 'id');

-- The rows already there get a revision each.
INSERT INTO livestate_buildbot_revisions (type, id, revision)
  SELECT 'buildrequests', id, nextval('livestate_buildbot_revision') FROM buildrequests ORDER BY id;
INSERT INTO livestate_buildbot_revisions (type, id, revision)
  SELECT 'buildsets', id, nextval('livestate_buildbot_revision') FROM buildsets ORDER BY id;
INSERT INTO livestate_buildbot_revisions (type, id, revision)
  SELECT 'builds', id, nextval('livestate_buildbot_revision') FROM builds ORDER BY id;
INSERT INTO livestate_buildbot_revisions (type, id, revision)
  SELECT 'steps', id, nextval('livestate_buildbot_revision') FROM steps ORDER BY id;

-- The reading views: `id`, the message body Buildbot sends for the row (with
-- "_rev", its revision), and `revision`. One SELECT is one snapshot, so a
-- body and its revision always belong together. Results NULL read as -1 for
-- build requests (Buildbot stores -1 for "none yet"), flags as booleans,
-- times as epoch seconds, as Buildbot's messages carry them.
CREATE VIEW livestate_buildbot_buildrequests AS
SELECT r.id,
       jsonb_build_object(
         'buildrequestid', r.id, 'buildsetid', r.buildsetid, 'builderid', r.builderid,
         'priority', r.priority,
         'claimed', c.claimed_at IS NOT NULL, 'claimed_at', c.claimed_at,
         'claimed_by_masterid', c.masterid,
         'complete', COALESCE(r.complete, 0) <> 0, 'results', COALESCE(r.results, -1),
         'submitted_at', r.submitted_at, 'complete_at', r.complete_at,
         'waited_for', COALESCE(r.waited_for, 0) <> 0, 'properties', 'null'::jsonb,
         '_rev', COALESCE(v.revision, 0)) AS body,
       COALESCE(v.revision, 0) AS revision
FROM buildrequests r
LEFT JOIN buildrequest_claims c ON c.brid = r.id
LEFT JOIN livestate_buildbot_revisions v ON v.type = 'buildrequests' AND v.id = r.id;

CREATE VIEW livestate_buildbot_buildsets AS
SELECT s.id,
       jsonb_build_object(
         'bsid', s.id, 'external_idstring', s.external_idstring, 'reason', s.reason,
         'submitted_at', s.submitted_at, 'complete', s.complete <> 0, 'complete_at', s.complete_at,
         'results', s.results,
         'sourcestamps', COALESCE((
           SELECT jsonb_agg(jsonb_build_object(
                    'ssid', ss.id, 'branch', ss.branch, 'revision', ss.revision, 'project', ss.project,
                    'repository', ss.repository, 'codebase', ss.codebase, 'created_at', ss.created_at,
                    -- a patch's body is bytes, which Buildbot's JSON carries as null
                    'patch', CASE WHEN p.id IS NULL THEN 'null'::jsonb ELSE jsonb_build_object(
                               'patchid', p.id, 'level', p.patchlevel, 'subdir', p.subdir,
                               'author', p.patch_author, 'comment', p.patch_comment,
                               'body', 'null'::jsonb) END)
                  ORDER BY bss.id)
           FROM buildset_sourcestamps bss
           JOIN sourcestamps ss ON ss.id = bss.sourcestampid
           LEFT JOIN patches p ON p.id = ss.patchid
           WHERE bss.buildsetid = s.id), '[]'::jsonb),
         '_rev', COALESCE(v.revision, 0)) AS body,
       COALESCE(v.revision, 0) AS revision
FROM buildsets s
LEFT JOIN livestate_buildbot_revisions v ON v.type = 'buildsets' AND v.id = s.id;

CREATE VIEW livestate_buildbot_builds AS
SELECT b.id,
       jsonb_build_object(
         'buildid', b.id, 'number', b.number, 'builderid', b.builderid,
         'buildrequestid', b.buildrequestid, 'workerid', b.workerid, 'masterid', b.masterid,
         'started_at', b.started_at, 'complete_at', b.complete_at, 'complete', b.complete_at IS NOT NULL,
         'state_string', b.state_string, 'results', b.results, 'properties', '{}'::jsonb,
         '_rev', COALESCE(v.revision, 0)) AS body,
       COALESCE(v.revision, 0) AS revision
FROM builds b
LEFT JOIN livestate_buildbot_revisions v ON v.type = 'builds' AND v.id = b.id;

CREATE VIEW livestate_buildbot_steps AS
SELECT t.id,
       jsonb_build_object(
         'stepid', t.id, 'number', t.number, 'name', t.name, 'buildid', t.buildid,
         'started_at', t.started_at, 'complete', t.complete_at IS NOT NULL, 'complete_at', t.complete_at,
         'state_string', t.state_string, 'results', t.results, 'urls', t.urls_json::jsonb,
         'hidden', t.hidden <> 0,
         '_rev', COALESCE(v.revision, 0)) AS body,
       COALESCE(v.revision, 0) AS revision
FROM steps t
LEFT JOIN livestate_buildbot_revisions v ON v.type = 'steps' AND v.id = t.id;

-- Deleted entries, with the revision of their deletion.
CREATE VIEW livestate_buildbot_deletions AS
SELECT v.type, v.id, v.revision
FROM livestate_buildbot_revisions v
WHERE (v.type = 'buildrequests' AND NOT EXISTS (SELECT 1 FROM buildrequests r WHERE r.id = v.id))
   OR (v.type = 'buildsets' AND NOT EXISTS (SELECT 1 FROM buildsets s WHERE s.id = v.id))
   OR (v.type = 'builds' AND NOT EXISTS (SELECT 1 FROM builds b WHERE b.id = v.id))
   OR (v.type = 'steps' AND NOT EXISTS (SELECT 1 FROM steps t WHERE t.id = v.id));
