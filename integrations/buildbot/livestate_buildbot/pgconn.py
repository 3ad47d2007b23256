"""One PostgreSQL connection driven by the Twisted reactor, without threads:
psycopg2's asynchronous mode, its socket watched by the reactor.

The reactor watches a duplicate (os.dup) of libpq's socket, never libpq's own
descriptor: libpq closes its socket when the server ends the session
(pg_terminate_backend, a restart), and a reactor left holding a closed
descriptor fails on it, or on whatever file reuses the number, and can hang
the master's shutdown. The duplicate stays open until this object lets go of
it, however libpq treats its own.

Thread safety: reactor thread only. Object lifetimes: a Connection is used
once; after it is lost or closed, make another.
"""

import os
from collections import deque
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import psycopg2.extensions
from twisted.internet import defer
from twisted.python import failure

# TCP keepalives, so that a network cut is noticed even without traffic.
_CONNECT_OPTIONS = dict(keepalives=1, keepalives_idle=10, keepalives_interval=5, keepalives_count=3)


class ConnectionLost(Exception):
    """The connection failed, or was lost or closed."""


def libpq_url(url):
    """A SQLAlchemy-style URL (``postgresql+psycopg2://``) as libpq reads it."""
    scheme, sep, rest = url.partition('://')
    if sep and scheme.startswith(('postgresql+', 'postgres+')):
        return 'postgresql://' + rest
    return url


def redact(url):
    """`url` for a log line: the password hidden."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url if '://' in url else _redact_conninfo(url)
        host = parts.hostname or ''
        netloc = f'{parts.username}:***@{host}' + (f':{parts.port}' if parts.port else '')
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return '(a PostgreSQL URL)'


def _redact_conninfo(text):
    words = []
    for word in text.split():
        name, sep, _ = word.partition('=')
        words.append(f'{name}=***' if sep and name.strip().lower() == 'password' else word)
    return ' '.join(words)


class _Descriptor:
    """The duplicate of libpq's socket, as the reactor sees it."""

    def __init__(self, fd, owner):
        self.fd = fd
        self._owner = owner

    def fileno(self):
        return self.fd

    def doRead(self):
        self._owner._step()

    def doWrite(self):
        self._owner._step()

    def connectionLost(self, reason):
        self._owner._lose(ConnectionLost(f'the reactor dropped the socket: {reason.getErrorMessage()}'))

    def logPrefix(self):
        return 'livestate'


class Connection:
    """connect() once, then query() as often as needed: queries run one
    after the other, each Deferred firing with the rows (a list of tuples,
    or None for a statement without rows) or failing with the psycopg2 error
    or ConnectionLost. `on_notify(notify)` gets each notification;
    `on_lost(error)` is called once when the connection is lost."""

    def __init__(self, reactor, url, application_name='livestate-buildbot'):
        self._reactor = reactor
        self._url = libpq_url(url)
        self._application_name = application_name.encode('utf-8')[:63].decode('utf-8', 'ignore')
        self._pg = None
        self._descriptor = None
        self._reading = self._writing = False
        self._current = None  # (deferred, cursor or None): what poll() is finishing
        self._pending = deque()
        self._timer = None
        self.closed = False
        self.on_notify = None
        self.on_lost = None

    # -- public ------------------------------------------------------------

    def connect(self, timeout):
        """Fires with None once connected; fails with ConnectionLost."""
        done = defer.Deferred()
        self._current = (done, None)
        try:
            self._pg = psycopg2.connect(self._url, async_=1, application_name=self._application_name,
                                        **_CONNECT_OPTIONS)
        except psycopg2.Error as error:  # a URL libpq can't read
            self._lose(ConnectionLost(_one_line(error)))
            return done
        self._timer = self._reactor.callLater(
            timeout, self._lose, ConnectionLost(f'no connection within {timeout:g} s'))
        self._step()
        return done

    def query(self, sql, params=None):
        if self.closed:
            return defer.fail(ConnectionLost('the connection is closed'))
        done = defer.Deferred()
        self._pending.append((sql, params, done))
        if self._current is None:
            self._start_next()
        return done

    @property
    def busy(self):
        return self._current is not None or bool(self._pending)

    def close(self):
        """Closes without calling on_lost; what waits fails with ConnectionLost."""
        self.on_lost = None
        self._lose(ConnectionLost('closed'))

    # -- the state machine ---------------------------------------------------

    def _start_next(self):
        while self._pending and not self.closed:
            sql, params, done = self._pending.popleft()
            try:
                cursor = self._pg.cursor()
                cursor.execute(sql, params)
            except (psycopg2.InterfaceError, psycopg2.OperationalError) as error:
                self._pending.appendleft((sql, params, done))
                self._lose(ConnectionLost(_one_line(error)))
                return
            except (psycopg2.Error, ValueError, TypeError) as error:  # refused before it was sent
                done.errback(failure.Failure(error))
                continue
            self._current = (done, cursor)
            self._step()
            return
        self._watch(read=not self.closed, write=False)

    def _step(self):
        if self.closed or self._pg is None:
            return
        connecting = self._current is not None and self._current[1] is None
        try:
            state = self._pg.poll()
        except psycopg2.Error as error:
            if self._pg.closed or self._current is None or \
                    isinstance(error, (psycopg2.OperationalError, psycopg2.InterfaceError)):
                self._lose(ConnectionLost(_one_line(error)))
            else:  # the server refused the statement; the connection goes on
                done, _ = self._current
                self._current = None
                self._notifications()
                done.errback(failure.Failure(error))
                if self._current is None:
                    self._start_next()
            return
        if connecting and not self._same_socket():
            self._redup()
        if state == psycopg2.extensions.POLL_OK:
            # What finished is taken first: a notification's handler may
            # start the next query.
            finished, self._current = self._current, None
            if finished is not None:
                done, cursor = finished
                if cursor is None and self._timer is not None:
                    if self._timer.active():
                        self._timer.cancel()
                    self._timer = None
                rows = cursor.fetchall() if cursor is not None and cursor.description is not None else None
            self._notifications()
            if finished is not None:
                done.callback(rows)
            if self._current is None and not self.closed:
                self._start_next()
        elif state == psycopg2.extensions.POLL_READ:
            self._watch(read=True, write=False)
        elif state == psycopg2.extensions.POLL_WRITE:
            self._watch(read=True, write=True)

    def _notifications(self):
        if not self._pg.notifies:
            return
        notes = list(self._pg.notifies)
        del self._pg.notifies[:]
        for note in notes:
            if self.on_notify is not None and not self.closed:
                self.on_notify(note)

    # -- the duplicated socket -------------------------------------------------

    def _same_socket(self):
        if self._descriptor is None:
            return False
        try:
            mine, theirs = os.fstat(self._descriptor.fd), os.fstat(self._pg.fileno())
        except (OSError, psycopg2.Error):
            return False
        return (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino)

    def _redup(self):
        # While connecting, libpq may open a new socket per address it tries.
        self._unwatch()
        try:
            self._descriptor = _Descriptor(os.dup(self._pg.fileno()), self)
        except (OSError, psycopg2.Error) as error:
            self._lose(ConnectionLost(f'cannot watch the socket: {error}'))

    def _watch(self, read, write):
        if self._descriptor is None:
            return
        if read != self._reading:
            (self._reactor.addReader if read else self._reactor.removeReader)(self._descriptor)
            self._reading = read
        if write != self._writing:
            (self._reactor.addWriter if write else self._reactor.removeWriter)(self._descriptor)
            self._writing = write

    def _unwatch(self):
        if self._descriptor is None:
            return
        self._watch(read=False, write=False)
        os.close(self._descriptor.fd)
        self._descriptor = None

    def _lose(self, error):
        if self.closed:
            return
        self.closed = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._unwatch()
        if self._pg is not None:
            try:
                self._pg.close()
            except psycopg2.Error:
                pass
        waiting = [self._current[0]] if self._current is not None else []
        waiting += [done for _, _, done in self._pending]
        self._current = None
        self._pending.clear()
        for done in waiting:
            done.errback(failure.Failure(error))
        on_lost, self.on_lost = self.on_lost, None
        if on_lost is not None:
            on_lost(error)


def _one_line(error):
    return ' '.join(str(error).split()) or type(error).__name__


def quote_identifier(name):
    return '"' + name.replace('"', '""') + '"'
