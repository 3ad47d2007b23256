"""Hearing the other masters: one listening connection (LISTEN on the
channel), its payloads decoded, bodies sent by reference fetched in order,
each origin's sequence followed to see what was missed. A lost connection is
made again with backoff, forever; a silent one is probed (SELECT 1) and
given up when it doesn't answer.

Thread safety: reactor thread only.
"""

from collections import deque

import psycopg2
from twisted.internet import defer
from twisted.python import log

from . import keys, schema, wire
from .pgconn import Connection, ConnectionLost, quote_identifier, redact

# How long a silent origin's sequence is remembered (the C++ listener's
# forget_origins_after).
FORGET_ORIGINS_AFTER = 600.0


class Listener:
    """`deliver(key, body, origin, sequence)` gets each message of another
    origin, its key read back as text; `on_listening()` is called each time
    LISTEN is active again (messages sent meanwhile were not heard);
    `on_gap(origin, missed)` when an origin's sequence skipped."""

    def __init__(self, reactor, url, channel, own_origin, deliver, on_listening, on_gap,
                 probe_interval=2.0, probe_timeout=3.0):
        self._reactor = reactor
        self._url = url
        self._channel = channel
        self._own_origin = own_origin
        self._deliver = deliver
        self._on_listening = on_listening
        self._on_gap = on_gap
        self._probe_interval = probe_interval
        self._probe_timeout = probe_timeout
        self._connection = None
        self._backoff = schema.Backoff()
        self._reconnect_call = None
        self._probe_call = None
        self._probing = False
        self._stopped = False
        self._lost_at = None
        self._listening_since = None
        self._inbox = deque()  # (origin, wire.Incoming), in arrival order
        self._fetching = False
        self._expected = {}  # origin -> [next sequence, last heard]
        self._last_sweep = 0.0
        self._last_warning = {}
        self.listening = False
        self.stats = dict(notifications=0, messages=0, own=0, malformed=0, by_reference=0, missing_references=0,
                          gaps=0, reconnects=0)

    def start(self):
        self._connect()

    def stop(self):
        self._stopped = True
        for call in (self._reconnect_call, self._probe_call):
            if call is not None and call.active():
                call.cancel()
        if self._connection is not None:
            self._connection.close()
        self.listening = False

    # -- the connection ---------------------------------------------------------------

    @defer.inlineCallbacks
    def _connect(self):
        self._reconnect_call = None
        if self._stopped:
            return
        connection = Connection(self._reactor, self._url, f'livestate-listen {self._own_origin}')
        connection.on_notify = self._notified
        self._connection = connection
        try:
            yield connection.connect(timeout=10)
            yield connection.query('LISTEN ' + quote_identifier(self._channel))
        except (ConnectionLost, psycopg2.Error) as error:
            connection.close()
            self._lost(error)
            return
        connection.on_lost = self._lost
        self.listening = True
        self._listening_since = self._reactor.seconds()
        self._expected.clear()  # what was missed meanwhile is told by on_listening, not as gaps
        if self._lost_at is not None:
            log.msg(f'livestate: listening to {redact(self._url)} again after '
                    f'{self._reactor.seconds() - self._lost_at:.1f} s; looking for work missed meanwhile')
        self._lost_at = None
        self._backoff.reset()
        self._arm_probe()
        self._on_listening()

    def _lost(self, error):
        self.listening = False
        self._inbox.clear()
        self._fetching = self._probing = False
        if self._stopped:
            return
        if self._lost_at is None:
            self._lost_at = self._reactor.seconds()
            self.stats['reconnects'] += 1
            log.msg(f'livestate: lost the listening connection to {redact(self._url)} ({error}); '
                    'connecting again')
        if self._reconnect_call is None:
            self._reconnect_call = self._reactor.callLater(self._backoff.delay(), self._connect)

    # -- liveness ------------------------------------------------------------------------

    def _arm_probe(self):
        if self._probe_call is not None and self._probe_call.active():
            self._probe_call.reset(self._probe_interval)
        elif not self._stopped:
            self._probe_call = self._reactor.callLater(self._probe_interval, self._probe)

    def _probe(self):
        connection = self._connection
        if not self.listening or connection is None or connection.closed or self._probing:
            return
        # Queued behind a query in flight, if any: together they must answer in time.
        self._probing = True
        timeout = self._reactor.callLater(self._probe_timeout, self._unanswered, connection)

        def answered(_):
            self._probing = False
            if timeout.active():
                timeout.cancel()
            self._arm_probe()

        connection.query('SELECT 1').addCallbacks(answered, lambda _: timeout.cancel() if timeout.active() else None)

    def _unanswered(self, connection):
        if connection is self._connection and not connection.closed:
            connection.on_lost = None
            connection.close()
            self._lost(ConnectionLost(f'no answer to a probe within {self._probe_timeout:g} s'))

    # -- receiving -------------------------------------------------------------------------

    def _notified(self, note):
        if note.channel != self._channel:
            return
        self.stats['notifications'] += 1
        self._arm_probe()
        decoded = wire.decode(note.payload)
        for problem in decoded.problems:
            self.stats['malformed'] += 1
            self._warn(problem.kind, f'livestate: refused a payload on channel {self._channel!r}: '
                                     f'{problem.kind}: {problem.detail}')
        origin = decoded.origin
        if origin is not None and origin == self._own_origin:
            self.stats['own'] += len(decoded.messages)
            return
        for sequence in decoded.refused_sequences:
            self._follow(origin, sequence)
        for message in decoded.messages:
            if message.sequence:
                self._follow(origin, message.sequence)
            self._inbox.append((origin, message))
        self._pump()

    def _follow(self, origin, sequence):
        if origin is None or not sequence:
            return
        now = self._reactor.seconds()
        if now - self._last_sweep > 60:
            self._last_sweep = now
            for name in [n for n, (_, heard) in self._expected.items() if now - heard > FORGET_ORIGINS_AFTER]:
                del self._expected[name]
        expected = self._expected.get(origin)
        if expected is None:
            missed = sequence - 1 if now - self._listening_since >= FORGET_ORIGINS_AFTER else 0
            self._expected[origin] = expected = [sequence + 1, now]
        else:
            missed = sequence - expected[0]
            expected[0] = max(expected[0], sequence + 1)
            expected[1] = now
        if missed > 0:
            self.stats['gaps'] += 1
            self._on_gap(origin, missed)

    def _pump(self):
        while self._inbox and not self._fetching:
            origin, message = self._inbox[0]
            if message.reference is not None:
                self._fetch(message.reference)
                return
            self._inbox.popleft()
            self.stats['messages'] += 1
            try:
                key = keys.unescape_key(message.key)
                self._deliver(key, message.body, origin, message.sequence)
            except Exception:
                log.err(None, 'livestate: delivering a message failed')

    def _fetch(self, reference):
        self._fetching = True
        connection = self._connection

        def fetched(rows):
            self._fetching = False
            origin, message = self._inbox.popleft()
            body = None
            try:
                body = wire.json.loads(rows[0][0]) if rows else None
            except ValueError:
                rows = None
            if not rows:
                self.stats['missing_references'] += 1
                self._warn('missing', f'livestate: dropped {".".join(message.key)}: its body '
                                      f'(livestate_mq_bodies row {reference}) is gone or unreadable')
            else:
                self.stats['by_reference'] += 1
                self._inbox.appendleft((origin, message._replace(reference=None, body=body)))
            self._pump()

        def failed(error):
            if connection is self._connection and not connection.closed:
                self._fetching = False
                self._inbox.popleft()
                self.stats['missing_references'] += 1
                self._warn('missing', f'livestate: cannot read body {reference}: {error.value}')
                self._pump()

        connection.query(schema.FETCH_BODY_SQL, [reference]).addCallbacks(fetched, failed)

    def _warn(self, kind, text):
        now = self._reactor.seconds()
        if now - self._last_warning.get(kind, -1e9) >= 60:
            self._last_warning[kind] = now
            log.msg(text)
