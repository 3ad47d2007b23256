-- The Buildbot-shaped data model, first version. Every row carries
-- `revision`, bumped by every change and announced as `_rev` in messages.
-- Timestamps are seconds since the UNIX epoch (REAL); JSON is stored as TEXT.
-- In this version a claim lives in the build request's own row.

CREATE TABLE masters (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  active INTEGER NOT NULL DEFAULT 0 CHECK (active IN (0, 1)),
  last_active REAL,
  revision INTEGER NOT NULL DEFAULT 1
);

CREATE TABLE builders (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  description TEXT,
  tags TEXT NOT NULL DEFAULT '[]',
  revision INTEGER NOT NULL DEFAULT 1
);

CREATE TABLE builder_masters (
  builderid INTEGER NOT NULL REFERENCES builders (id) ON DELETE CASCADE,
  masterid INTEGER NOT NULL REFERENCES masters (id) ON DELETE CASCADE,
  PRIMARY KEY (builderid, masterid)
);

CREATE TABLE workers (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  info TEXT NOT NULL DEFAULT '{}',
  paused INTEGER NOT NULL DEFAULT 0 CHECK (paused IN (0, 1)),
  graceful INTEGER NOT NULL DEFAULT 0 CHECK (graceful IN (0, 1)),
  revision INTEGER NOT NULL DEFAULT 1
);

CREATE TABLE buildsets (
  id INTEGER PRIMARY KEY,
  external_idstring TEXT,
  reason TEXT,
  scheduler TEXT,
  submitted_at REAL NOT NULL,
  complete INTEGER NOT NULL DEFAULT 0 CHECK (complete IN (0, 1)),
  complete_at REAL,
  results INTEGER,
  sourcestamps TEXT NOT NULL DEFAULT '[]',
  revision INTEGER NOT NULL DEFAULT 1
);

CREATE TABLE buildrequests (
  id INTEGER PRIMARY KEY,
  buildsetid INTEGER NOT NULL REFERENCES buildsets (id) ON DELETE CASCADE,
  builderid INTEGER NOT NULL REFERENCES builders (id),
  priority INTEGER NOT NULL DEFAULT 0,
  claimed_by_masterid INTEGER, -- no REFERENCES: SQLite cannot drop a column a foreign key uses, and 0002 drops it
  claimed_at REAL,
  complete INTEGER NOT NULL DEFAULT 0 CHECK (complete IN (0, 1)),
  results INTEGER NOT NULL DEFAULT -1,
  submitted_at REAL NOT NULL,
  complete_at REAL,
  waited_for INTEGER NOT NULL DEFAULT 0 CHECK (waited_for IN (0, 1)),
  revision INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX buildrequests_builderid_complete ON buildrequests (builderid, complete);
CREATE INDEX buildrequests_buildsetid ON buildrequests (buildsetid);

CREATE TABLE builds (
  id INTEGER PRIMARY KEY,
  number INTEGER NOT NULL,
  builderid INTEGER NOT NULL REFERENCES builders (id),
  buildrequestid INTEGER NOT NULL REFERENCES buildrequests (id),
  workerid INTEGER REFERENCES workers (id),
  masterid INTEGER NOT NULL REFERENCES masters (id),
  started_at REAL NOT NULL,
  complete_at REAL,
  state_string TEXT NOT NULL DEFAULT '',
  results INTEGER,
  revision INTEGER NOT NULL DEFAULT 1,
  UNIQUE (builderid, number)
);
CREATE INDEX builds_buildrequestid ON builds (buildrequestid);

CREATE TABLE steps (
  id INTEGER PRIMARY KEY,
  number INTEGER NOT NULL,
  name TEXT NOT NULL,
  buildid INTEGER NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
  started_at REAL,
  complete_at REAL,
  state_string TEXT NOT NULL DEFAULT '',
  results INTEGER,
  urls TEXT NOT NULL DEFAULT '[]',
  hidden INTEGER NOT NULL DEFAULT 0 CHECK (hidden IN (0, 1)),
  revision INTEGER NOT NULL DEFAULT 1,
  UNIQUE (buildid, number),
  UNIQUE (buildid, name)
);

-- Application-defined resource types, with the same revision guarantees.
CREATE TABLE resources (
  type TEXT NOT NULL,
  id TEXT NOT NULL,
  state TEXT NOT NULL,
  revision INTEGER NOT NULL DEFAULT 1,
  PRIMARY KEY (type, id)
);
