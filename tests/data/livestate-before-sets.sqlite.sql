-- A SQLite database made by livestate before migration sets (main at 9f566c1):
-- `livestate migrate`, one master inserted, then `sqlite3 .dump`. Loaded by
-- tests/unit/migrator_upgrade.cpp to test the upgrade. Never edit.
PRAGMA foreign_keys=OFF;
CREATE TABLE livestate_schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL, applied_at REAL NOT NULL);
INSERT INTO livestate_schema_migrations VALUES(1,'initial','ff4563ac52dbb3ef1e296dc3607a5fd62b231d5bb6a0f183fe7655f6645de72b',1796546137.0839624405);
INSERT INTO livestate_schema_migrations VALUES(2,'buildrequest_claims','0f4742a86553cdc03795c647abfccab0216c46d112a5bf832f3846497fd5a308',1796546137.0918262005);
INSERT INTO livestate_schema_migrations VALUES(3,'resource_tombstones','f203e2c40e0b5e152a45629cf42c72b8b80e02b2be373d276128bdaf94b73aa4',1796546137.0921294689);
INSERT INTO livestate_schema_migrations VALUES(4,'pending_requests','e16ddbb64fd59586eb9f09848e888873a5548e98117389d749d0548ed791068a',1796546137.0922911166);
INSERT INTO livestate_schema_migrations VALUES(5,'resource_deleted_at','1bf653abd44e2781e2d3802c8a176770abb392f3d30d96a8cc4bc77ac1cd6f26',1796546137.0925366878);
CREATE TABLE masters (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  active INTEGER NOT NULL DEFAULT 0 CHECK (active IN (0, 1)),
  last_active REAL,
  revision INTEGER NOT NULL DEFAULT 1
);
INSERT INTO masters VALUES(1,'master-made-by-0.x',1,1795838740.0,1);
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
  complete INTEGER NOT NULL DEFAULT 0 CHECK (complete IN (0, 1)),
  results INTEGER NOT NULL DEFAULT -1,
  submitted_at REAL NOT NULL,
  complete_at REAL,
  waited_for INTEGER NOT NULL DEFAULT 0 CHECK (waited_for IN (0, 1)),
  revision INTEGER NOT NULL DEFAULT 1
, properties TEXT);
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
CREATE TABLE resources (
  type TEXT NOT NULL,
  id TEXT NOT NULL,
  state TEXT NOT NULL,
  revision INTEGER NOT NULL DEFAULT 1, deleted INTEGER NOT NULL DEFAULT 0 CHECK (deleted IN (0, 1)), deleted_at REAL,
  PRIMARY KEY (type, id)
);
CREATE TABLE buildrequest_claims (
  brid INTEGER PRIMARY KEY REFERENCES buildrequests (id) ON DELETE CASCADE,
  masterid INTEGER NOT NULL REFERENCES masters (id),
  claimed_at REAL NOT NULL
);
CREATE INDEX buildrequests_buildsetid ON buildrequests (buildsetid);
CREATE INDEX builds_buildrequestid ON builds (buildrequestid);
CREATE INDEX buildrequests_builderid ON buildrequests (builderid);
CREATE INDEX buildrequests_pending ON buildrequests (builderid) WHERE NOT complete;
CREATE INDEX resources_deleted ON resources (type, deleted_at) WHERE deleted;
