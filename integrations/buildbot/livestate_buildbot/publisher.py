"""Publishing a master's messages: each produce() is queued and sent with the
others of its reactor turn in one statement (wire v1 payloads, the master's
origin and sequence, bodies too large for a notification by reference, the
durable queues' copies). While PostgreSQL is away the queue waits, bounded,
and the connection is made again with backoff; the master never stops for it.

Thread safety: reactor thread only.
"""

import json
from collections import deque, namedtuple

import psycopg2
from twisted.internet import defer
from twisted.python import log
from twisted.python.failure import Failure

from . import keys, schema, wire
from .jsontext import InvalidBody, dumps
from .pgconn import Connection, ConnectionLost, redact

_Queued = namedtuple('_Queued', 'key body_text sequence')

# At most this many messages a statement, so that one batch stays a few MB.
_BATCH = 2000
_PRUNE_EVERY = 1000


class _InDoubt(Exception):
    """The connection was lost while the batch was committing."""


class Publisher:
    def __init__(self, reactor, url, channel, origin, max_queued, to_json):
        self._reactor = reactor
        self._url = url
        self._channel = channel
        self.origin = origin
        self._max_queued = max_queued
        self._to_json = to_json  # json.dumps' `default`: datetimes and unknown types
        self._queue = deque()
        self.sequence = 0  # the last sequence given out
        self.settled = 0  # every sequence up to this one is committed or given up
        self._last_body = self._last_text = None
        self._connection = None
        self._connected = False
        self._sending = False
        self._in_flight = None
        self._flush_call = None
        self._reconnect_call = None
        self._backoff = schema.Backoff()
        self._tables_ready = False
        self._down_since = None
        self._outage_told = False
        self._stopping = False
        self._waiters = []  # (sequence, Deferred) for flushed()
        self._since_prune = 0
        self._dropped_unreported = 0
        self._last_drop_report = None
        self.stats = dict(sent=0, batches=0, refused=0, dropped=0, in_doubt=0, by_reference=0, reconnects=0)

    # -- producing ----------------------------------------------------------------

    def publish(self, key, body):
        """Queues one message; returns its sequence, or None when it is refused
        (logged; its sequence is used up, so other masters see a gap)."""
        self.sequence += 1
        try:
            wire_key = keys.escape_key(key)
            if any('\x00' in element for element in wire_key):
                raise keys.InvalidKey('a key element holds a NUL character, which PostgreSQL text can\'t')
            if body is not self._last_body:  # the messages of one change share their body
                self._last_text = dumps(body, self._to_json)
                self._last_body = body
        except (keys.InvalidKey, InvalidBody, TypeError) as error:
            self._last_body = self._last_text = None
            self.stats['refused'] += 1
            log.msg(f'livestate: refused to publish {".".join(map(str, key))}: {error}; '
                    'this master delivered it locally, other masters see a gap')
            self._update_settled()
            return None
        self._queue.append(_Queued(wire_key, self._last_text, self.sequence))
        if len(self._queue) > self._max_queued:
            self._drop_oldest()
        self._schedule_flush()
        return self.sequence

    def flushed(self):
        """Fires once every message published so far is committed or given up."""
        if self.settled >= self.sequence:
            return defer.succeed(None)
        waiter = []
        done = defer.Deferred(lambda _: self._waiters.remove(waiter[0]) if waiter[0] in self._waiters else None)
        waiter.append((self.sequence, done))
        self._waiters.append(waiter[0])
        return done

    # -- the connection -------------------------------------------------------------

    def start(self):
        self._down_since = self._reactor.seconds()  # until the first connection
        self._connect()

    @defer.inlineCallbacks
    def stop(self, timeout=5.0):
        """Sends what is queued, for at most `timeout` seconds while connected,
        then closes."""
        if (self._queue or self._sending) and self._connected:
            waited = self.flushed()
            timer = self._reactor.callLater(timeout, waited.cancel)
            try:
                yield waited
            except defer.CancelledError:
                log.msg(f'livestate: stopping with {len(self._queue)} message(s) not sent to '
                        f'{redact(self._url)}')
            if timer.active():
                timer.cancel()
        elif self._queue:
            log.msg(f'livestate: stopping with {len(self._queue)} message(s) not sent: {redact(self._url)} '
                    'is unreachable')
        self._stopping = True
        for call in (self._flush_call, self._reconnect_call):
            if call is not None and call.active():
                call.cancel()
        if self._connection is not None:
            self._connection.close()

    def _connect(self):
        self._reconnect_call = None
        if self._stopping:
            return
        connection = Connection(self._reactor, self._url, f'livestate-publish {self.origin}')
        connection.on_lost = self._lost
        self._connection = connection

        def connected(_):
            if self._outage_told:
                log.msg(f'livestate: publishing to {redact(self._url)} again, after '
                        f'{self._reactor.seconds() - self._down_since:.1f} s')
            self._down_since = None
            self._outage_told = False
            self._connected = True
            self._backoff.reset()
            self._schedule_flush()

        d = connection.connect(timeout=10)
        d.addCallbacks(connected, lambda _: None)  # on_lost has been told

    def _lost(self, error):
        self._connected = False
        if self._stopping:
            return
        if self._down_since is None:
            self._down_since = self._reactor.seconds()
        if not self._outage_told:
            self._outage_told = True
            log.msg(f'livestate: no publishing connection to {redact(self._url)} ({error}); '
                    f'{len(self._queue)} message(s) wait; connecting again')
        self.stats['reconnects'] += 1
        if self._reconnect_call is None:
            self._reconnect_call = self._reactor.callLater(self._backoff.delay(), self._connect)

    # -- sending ----------------------------------------------------------------------

    def _schedule_flush(self):
        if self._flush_call is None and not self._stopping:
            self._flush_call = self._reactor.callLater(0, self._flush)

    def _flush(self):
        self._flush_call = None
        if self._sending or not self._connected or not self._queue:
            return
        batch = [self._queue.popleft() for _ in range(min(_BATCH, len(self._queue)))]
        self._sending = True
        self._in_flight = batch
        d = self._send(self._connection, batch)
        d.addBoth(self._sent, batch)

    def _sent(self, result, batch):
        self._sending = False
        self._in_flight = None
        if isinstance(result, Failure):
            error = result.value
            if isinstance(error, ConnectionLost):
                self._queue.extendleft(reversed(batch))  # not committed: sent again, same sequences
            elif isinstance(error, _InDoubt):
                self.stats['in_doubt'] += len(batch)
                log.msg(f'livestate: the connection was lost while {len(batch)} message(s) committed; '
                        'they may or may not have been sent (if not, other masters see a gap)')
            else:
                self.stats['dropped'] += len(batch)
                log.err(result, f'livestate: PostgreSQL refused {len(batch)} message(s); dropped '
                                '(other masters see a gap)')
        else:
            self.stats['sent'] += len(batch)
            self.stats['batches'] += 1
            self._since_prune += len(batch)
            if self._since_prune >= _PRUNE_EVERY and self._connected:
                self._since_prune = 0
                self._connection.query(schema.PRUNE_SQL).addErrback(
                    lambda f: log.msg(f'livestate: pruning old bodies and queued messages failed: {f.value}'))
        self._update_settled()
        if self._queue:
            self._schedule_flush()

    @defer.inlineCallbacks
    def _send(self, connection, batch):
        if not self._tables_ready:
            yield connection.query(schema.TABLES_SQL)
            self._tables_ready = True
        outgoing = []
        references = {}  # id(body_text) -> row id: one row per shared body
        in_transaction = False
        try:
            for message in batch:
                entry = wire.Outgoing(message.key, message.body_text, 0, message.sequence)
                if id(message.body_text) in references or \
                        wire.encoded_size(self.origin, entry) > wire.MAX_PAYLOAD_BYTES:
                    if id(message.body_text) not in references:
                        if not in_transaction:
                            yield connection.query('BEGIN')
                            in_transaction = True
                        rows = yield connection.query(schema.STORE_BODY_SQL, [message.body_text])
                        references[id(message.body_text)] = rows[0][0]
                        self.stats['by_reference'] += 1
                    entry = wire.Outgoing(message.key, None, references[id(message.body_text)], message.sequence)
                outgoing.append(entry)
            params = dict(origin=self.origin, channel=self._channel, payloads=wire.encode(self.origin, outgoing),
                          sequences=[m.sequence for m in batch], keys=[json.dumps(list(m.key)) for m in batch],
                          bodies=[m.body_text for m in batch])
        except Exception:
            if in_transaction:
                yield connection.query('ROLLBACK').addErrback(lambda _: None)
            raise
        try:
            yield connection.query(schema.SEND_SQL, params)
            if in_transaction:
                yield connection.query('COMMIT')
        except ConnectionLost as error:
            # A lone statement, or the COMMIT, may have committed before the loss.
            raise _InDoubt(str(error)) from None
        except psycopg2.Error as error:
            if in_transaction and not connection.closed:
                yield connection.query('ROLLBACK').addErrback(lambda _: None)
            if getattr(error, 'pgcode', None) == schema.UNDEFINED_TABLE:
                self._tables_ready = False  # dropped by hand, or a database restored: made again
                raise ConnectionLost('the connector\'s tables are gone; creating them again') from None
            raise

    # -- bookkeeping ---------------------------------------------------------------------

    def _update_settled(self):
        if self._in_flight:
            self.settled = self._in_flight[0].sequence - 1
        elif self._queue:
            self.settled = self._queue[0].sequence - 1
        else:
            self.settled = self.sequence
        ready = [done for until, done in self._waiters if until <= self.settled]
        self._waiters = [(until, done) for until, done in self._waiters if until > self.settled]
        for done in ready:
            done.callback(None)

    def _drop_oldest(self):
        dropped = self._queue.popleft()
        self.stats['dropped'] += 1
        self._dropped_unreported += 1
        self._update_settled()
        now = self._reactor.seconds()
        if self._last_drop_report is None or now - self._last_drop_report >= 60:
            state = (f'has been unreachable for {now - self._down_since:.0f} s' if self._down_since is not None
                     else 'is too slow')
            log.msg(f'livestate: ERROR: PostgreSQL at {redact(self._url)} {state} and more than '
                    f'max_queued={self._max_queued} messages wait to be sent: dropped the oldest '
                    f'({self._dropped_unreported} since the last report). Other masters miss them: they see '
                    'a gap and look for build requests themselves.')
            self._last_drop_report = now
            self._dropped_unreported = 0
