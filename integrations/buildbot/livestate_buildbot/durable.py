"""Consumers with a persistent name: livestate's durable queues (docs/WIRE.md,
"Durable queues"), shared with C++ consumers and producers.

A queue is a row of livestate_mq_queues; every producer (this plug-in
included) copies each matching message into livestate_mq_queued in the
transaction that sends it. A consumer holds the name's advisory lock on a
connection of its own, delivers what waits in the table, in order, before
anything live, skips a live message it already delivered from the table, and
deletes what it delivered (in batches, every 200 ms): at least once, across
restarts of this master, of the producers and of PostgreSQL.

Thread safety: reactor thread only.
"""

import json

import psycopg2
from buildbot.mq import base
from buildbot.util import tuplematch
from twisted.internet import defer
from twisted.python import log

from . import keys, schema
from .pgconn import Connection, ConnectionLost, redact

LOCK_SQL = "SELECT pg_try_advisory_lock(hashtextextended('livestate.queue.' || %s, 0))"
CLAIM_SQL = ('INSERT INTO livestate_mq_queues (name, filter, any_suffix) VALUES (%(name)s, %(filter)s::text[], false)'
             ' ON CONFLICT (name) DO UPDATE SET last_active = now()'
             ' RETURNING (filter IS NOT DISTINCT FROM %(filter)s::text[] AND NOT any_suffix)')
EXPIRED_SQL = ('UPDATE livestate_mq_queues q SET expired = 0 FROM'
               ' (SELECT expired FROM livestate_mq_queues WHERE name = %s FOR UPDATE) old'
               ' WHERE q.name = %s RETURNING old.expired')
BACKLOG_SQL = 'SELECT id, origin, sequence, key, body FROM livestate_mq_queued WHERE queue = %s ORDER BY id'
ACK_SQL = ('DELETE FROM livestate_mq_queued WHERE queue = %s AND (id = ANY(%s::bigint[]) OR (origin, sequence) IN'
           ' (SELECT * FROM unnest(%s::text[], %s::bigint[])))')
ACK_INTERVAL = 0.2


class PersistentNameInUse(Exception):
    """Another consumer (in this or another process) has the name, or the
    name's queue was made with another filter."""


class DurableQueueRef(base.QueueRef):
    __slots__ = ('_mq', 'filter', 'name', '_connection', '_catching_up', '_buffer', '_from_table', '_ids',
                 '_acks', '_ack_call', '_stopped')

    def __init__(self, mq, callback, filter, name):
        super().__init__(callback)
        self._mq = mq
        self.filter = filter
        self.name = name
        self._connection = None
        self._catching_up = True
        self._buffer = []
        self._from_table = set()  # (origin, sequence) delivered from the table, not yet heard live
        self._ids = []  # rows delivered, to delete
        self._acks = []  # (origin, sequence) delivered live, to delete
        self._ack_call = None
        self._stopped = False

    @defer.inlineCallbacks
    def start(self):
        if any(queue.name == self.name for queue in self._mq.durable):
            raise PersistentNameInUse(f'durable consumer {self.name!r} is already active in this master')
        connection = Connection(self._mq._reactor, self._mq.url, f'livestate-queue {self.name}')
        try:
            yield connection.connect(timeout=10)
            yield connection.query(schema.TABLES_SQL)
            [(locked,)] = yield connection.query(LOCK_SQL, [self.name])
            if not locked:
                raise PersistentNameInUse(f'durable consumer {self.name!r} is already active (in this or '
                                          'another process): stop it first')
            wire_filter = [None if e is None else keys.escape_key_element(e) for e in self.filter]
            [(same,)] = yield connection.query(CLAIM_SQL, dict(name=self.name, filter=wire_filter))
            if not same:
                raise PersistentNameInUse(f'durable consumer {self.name!r} was made with another filter than '
                                          f'{self.filter}: use that filter, or another name')
            expired = yield connection.query(EXPIRED_SQL, [self.name, self.name])
        except BaseException:
            connection.close()
            raise
        if expired and expired[0][0]:
            log.msg(f'livestate: durable consumer {self.name!r} lost {expired[0][0]} message(s) to retention '
                    'while no consumer was active')
        self._connection = connection
        connection.on_lost = self._lost
        self._mq.durable.append(self)  # live messages from now on: buffered while catching up
        yield self._mq.publisher.flushed()  # this master's messages so far are in the table
        yield self._read_table()
        self._catching_up = False
        for origin, sequence, key, body in self._buffer:
            self._deliver_live(key, body, origin, sequence)
        self._buffer = []
        return self

    def offer(self, key, body, origin, sequence):
        if self._stopped or not tuplematch.matchTuple(key, self.filter):
            return
        if self._catching_up:
            self._buffer.append((origin, sequence, key, body))
        else:
            self._deliver_live(key, body, origin, sequence)

    def catch_up(self):
        """After a reconnect: what was committed meanwhile is in the table."""
        if not self._catching_up and not self._stopped:
            self._read_table().addErrback(log.err, f'livestate: durable consumer {self.name!r}')

    def stopConsuming(self):
        if self._stopped:
            return defer.succeed(None)
        self._stopped = True
        self.callback = None
        if self._ack_call is not None and self._ack_call.active():
            self._ack_call.cancel()
        if self in self._mq.durable:
            self._mq.durable.remove(self)
        d = self._acknowledge()
        d.addBoth(lambda _: self._connection.close() if self._connection is not None else None)
        return d

    # -- delivering -----------------------------------------------------------------------------

    def _deliver_live(self, key, body, origin, sequence):
        if origin is not None and sequence:
            if (origin, sequence) in self._from_table:
                self._from_table.discard((origin, sequence))
                return
            self._acks.append((origin, sequence))
        self._mq.invokeQref(self, key, body)
        self._acknowledge_soon()

    @defer.inlineCallbacks
    def _read_table(self):
        rows = yield self._connection.query(BACKLOG_SQL, [self.name])
        delivered_live = set(self._acks)  # delivered, their rows not deleted yet
        for row_id, origin, sequence, key, body in rows:
            if self._stopped:
                return
            if row_id in self._ids:
                continue
            if (origin, sequence) in delivered_live:
                self._ids.append(row_id)
                continue
            try:
                body = json.loads(body)
            except ValueError:
                log.msg(f'livestate: durable consumer {self.name!r} dropped an unreadable queued message')
                self._ids.append(row_id)
                continue
            if len(self._from_table) > 100000:
                self._from_table.clear()
            self._from_table.add((origin, sequence))
            self._ids.append(row_id)
            self._mq.invokeQref(self, keys.unescape_key(key), body)
        self._acknowledge_soon()

    # -- acknowledging ------------------------------------------------------------------------------

    def _acknowledge_soon(self):
        if self._ack_call is None and not self._stopped:
            self._ack_call = self._mq._reactor.callLater(ACK_INTERVAL, self._acknowledge)

    def _acknowledge(self):
        self._ack_call = None
        settled = self._mq.publisher.settled
        own = self._mq.origin
        # This master's rows exist once its send committed: the others wait.
        ready = [(o, s) for o, s in self._acks if o != own or s <= settled]
        waiting = [(o, s) for o, s in self._acks if o == own and s > settled]
        if (not ready and not self._ids) or self._connection is None or self._connection.closed:
            if waiting:
                self._acknowledge_soon()
            return defer.succeed(None)
        ids, self._ids, self._acks = self._ids, [], waiting
        d = self._connection.query(ACK_SQL, [self.name, ids, [o for o, _ in ready], [s for _, s in ready]])
        d.addErrback(lambda f: log.msg(f'livestate: durable consumer {self.name!r}: acknowledging failed (those '
                                       f'messages will be delivered again): {f.value}'))
        if waiting:
            self._acknowledge_soon()
        return d

    def _lost(self, error):
        if self._stopped:
            return
        log.msg(f'livestate: durable consumer {self.name!r} lost its connection to {redact(self._mq.url)} '
                f'({error}); reconnecting')
        self._connection = None
        self._mq._reactor.callLater(1.0, self._reconnect)

    @defer.inlineCallbacks
    def _reconnect(self):
        if self._stopped:
            return
        connection = Connection(self._mq._reactor, self._mq.url, f'livestate-queue {self.name}')
        try:
            yield connection.connect(timeout=10)
            [(locked,)] = yield connection.query(LOCK_SQL, [self.name])
        except (ConnectionLost, psycopg2.Error) as error:
            connection.close()
            self._lost(error)
            return
        if not locked:
            connection.close()
            log.msg(f'livestate: durable consumer {self.name!r} stops: another process took its name while '
                    'its connection was lost')
            yield self.stopConsuming()
            return
        self._connection = connection
        connection.on_lost = self._lost
        yield self._read_table()
