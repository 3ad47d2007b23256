"""The SQL livestate's producers and durable consumers run: the same tables,
locks and statements as the C++ connector (docs/WIRE.md), so that Python and
C++ processes share one database's queues and bodies."""

import random

# The connector's tables, created by whichever process comes first (the
# transaction-level lock, the C++ connector's, keeps two from racing).
TABLES_SQL = (
    'BEGIN;'
    'SELECT pg_advisory_xact_lock(7308416553390571923);'
    'CREATE TABLE IF NOT EXISTS livestate_mq_bodies ('
    ' id BIGSERIAL PRIMARY KEY, body TEXT NOT NULL, created_at TIMESTAMPTZ NOT NULL DEFAULT now());'
    'CREATE TABLE IF NOT EXISTS livestate_mq_queues ('
    ' name TEXT PRIMARY KEY, filter TEXT[] NOT NULL, any_suffix BOOLEAN NOT NULL,'
    ' created_at TIMESTAMPTZ NOT NULL DEFAULT now(), last_active TIMESTAMPTZ NOT NULL DEFAULT now(),'
    ' expired BIGINT NOT NULL DEFAULT 0);'
    'CREATE TABLE IF NOT EXISTS livestate_mq_queued ('
    ' queue TEXT NOT NULL REFERENCES livestate_mq_queues (name) ON DELETE CASCADE,'
    ' id BIGSERIAL, origin TEXT NOT NULL, sequence BIGINT NOT NULL, key TEXT[] NOT NULL, body TEXT NOT NULL,'
    ' created_at TIMESTAMPTZ NOT NULL DEFAULT now(), PRIMARY KEY (queue, id));'
    'CREATE INDEX IF NOT EXISTS livestate_mq_queued_message ON livestate_mq_queued (queue, origin, sequence);'
    'COMMIT')

STORE_BODY_SQL = 'INSERT INTO livestate_mq_bodies (body) VALUES (%s) RETURNING id'
FETCH_BODY_SQL = 'SELECT body FROM livestate_mq_bodies WHERE id = %s'

# One statement sends a batch: the durable queues' copies (one row per
# message and matching queue, in message order) and the notifications, so
# that both or neither commit. The messages travel as text beside the
# payloads, as the C++ connector sends payloads PostgreSQL's json functions
# can't read.
SEND_SQL = (
    'WITH batch AS ('
    '  SELECT u.position, u.sequence, ARRAY(SELECT json_array_elements_text(u.key::json)) AS key, u.body'
    '  FROM unnest(%(sequences)s::bigint[], %(keys)s::text[], %(bodies)s::text[])'
    '       WITH ORDINALITY AS u(sequence, key, body, position)'
    '  WHERE EXISTS (SELECT 1 FROM livestate_mq_queues)),'
    ' queued AS ('
    '  INSERT INTO livestate_mq_queued (queue, origin, sequence, key, body)'
    '  SELECT q.name, %(origin)s, b.sequence, b.key, b.body FROM batch b JOIN livestate_mq_queues q'
    '  ON (cardinality(q.filter) = cardinality(b.key)'
    '      OR (q.any_suffix AND cardinality(b.key) >= cardinality(q.filter)))'
    '  AND NOT EXISTS (SELECT 1 FROM unnest(q.filter) WITH ORDINALITY AS f(element, i)'
    '                  WHERE f.element IS NOT NULL AND f.element IS DISTINCT FROM b.key[f.i])'
    '  ORDER BY b.position, q.name)'
    ' SELECT count(pg_notify(%(channel)s, p.payload))'
    ' FROM unnest(%(payloads)s::text[]) WITH ORDINALITY AS p(payload, position)')

# Old bodies, and messages of queues whose consumer never came back (each
# queue remembers how many it lost, to tell its consumer).
BODY_RETENTION_SECONDS = 600
QUEUE_RETENTION_SECONDS = 7 * 24 * 3600
PRUNE_SQL = (
    f'DELETE FROM livestate_mq_bodies WHERE created_at < now() - make_interval(secs => {BODY_RETENTION_SECONDS});'
    'WITH gone AS (DELETE FROM livestate_mq_queued'
    f' WHERE created_at < now() - make_interval(secs => {QUEUE_RETENTION_SECONDS}) RETURNING queue)'
    ' UPDATE livestate_mq_queues q SET expired = q.expired + c.n'
    ' FROM (SELECT queue, count(*) AS n FROM gone GROUP BY queue) c WHERE q.name = c.queue')

UNDEFINED_TABLE = '42P01'


class Backoff:
    """Exponential backoff with jitter: 0.1 s doubling to 5 s, as the C++
    connector reconnects."""

    def __init__(self, initial=0.1, maximum=5.0):
        self._initial = initial
        self._maximum = maximum
        self._next = initial
        self.attempts = 0

    def delay(self):
        self.attempts += 1
        delay = self._next * random.uniform(0.5, 1.0)
        self._next = min(self._next * 2, self._maximum)
        return delay

    def reset(self):
        self._next = self._initial
        self.attempts = 0
