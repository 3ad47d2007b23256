"""The plug-in between masters, on a real PostgreSQL server (LIVESTATE_TEST_PG,
tests/pg/with-test-postgres.sh): LivestateMQ services in one reactor, each
with its own connections, as two masters have. Run with twisted.trial."""

import atexit
import math
import os
import subprocess
import sys
import uuid
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import psycopg2  # noqa: E402
from twisted.application import service  # noqa: E402
from twisted.internet import defer, reactor, task  # noqa: E402
from twisted.trial import unittest  # noqa: E402

import livestate_buildbot  # noqa: E402
from livestate_buildbot.connector import LivestateMQ  # noqa: E402
from livestate_buildbot.durable import PersistentNameInUse  # noqa: E402
from livestate_buildbot.pgconn import ConnectionLost  # noqa: E402

SERVER = os.environ.get('LIVESTATE_TEST_PG')
CLI = os.environ.get('LIVESTATE_CLI')
# A database of these tests' own, so that their durable queues and bodies
# never meet the C++ suites' on the same server (queues are database-wide).
DATABASE = f'livestate_buildbot_plugin_{os.getpid()}'
PG = urlunsplit(urlsplit(SERVER)._replace(path='/' + DATABASE)) if SERVER else None


def admin(statement):
    connection = psycopg2.connect(SERVER)
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(statement)
    connection.close()


_created = []


def create_database():
    """Once (trial has no class setup), dropped when the tests end."""
    if not _created:
        admin(f'DROP DATABASE IF EXISTS {DATABASE}')
        admin(f'CREATE DATABASE {DATABASE}')
        _created.append(DATABASE)
        atexit.register(admin, f'DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)')


class FakeBotmaster:
    def __init__(self):
        self.looks = 0

    def maybeStartBuildsForAllBuilders(self):
        self.looks += 1


class FakeMaster(service.MultiService):
    """What LivestateMQ asks of its master: its botmaster and its reactor."""

    def __init__(self):
        super().__init__()
        self.master = self
        self.botmaster = FakeBotmaster()
        self.reactor = reactor


class FakeConfig:
    def __init__(self, mq):
        self.mq = mq


@defer.inlineCallbacks
def eventually(predicate, timeout=10.0, what='the condition'):
    waited = 0.0
    while not predicate():
        if waited >= timeout:
            raise AssertionError(f'{what} did not hold within {timeout} s')
        yield task.deferLater(reactor, 0.02, lambda: None)
        waited += 0.02


def terminate(application_name):
    connection = psycopg2.connect(PG)
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute('SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = %s',
                       [application_name[:63]])
        count = cursor.fetchone()[0]
    connection.close()
    return count


class Transport(unittest.TestCase):
    timeout = 60

    def setUp(self):
        if not SERVER:
            raise unittest.SkipTest('needs LIVESTATE_TEST_PG (tests/pg/with-test-postgres.sh)')
        create_database()
        self.channel = 'test-' + uuid.uuid4().hex[:12]

    @defer.inlineCallbacks
    def master(self, db_url=None, **options):
        fake = FakeMaster()
        mq = LivestateMQ()
        yield mq.setServiceParent(fake)
        mq.reconfigServiceWithBuildbotConfig(FakeConfig(livestate_buildbot.mq(
            db_url=db_url or PG, channel=options.pop('channel', self.channel), **options)))
        yield fake.startService()
        self.addCleanup(fake.stopService)
        if db_url is None and mq.listener is not None:
            yield eventually(lambda: mq.listener.listening, what='listening')
        return mq

    def collect(self, mq, filter, persistent_name=None):
        got = []
        d = mq.startConsuming(lambda key, body: got.append((key, body)), filter, persistent_name)
        return d.addCallback(lambda qref: (got, qref))

    @defer.inlineCallbacks
    def test_a_message_reaches_the_other_master_with_its_key_read_back(self):
        a = yield self.master()
        b = yield self.master()
        got, _ = yield self.collect(b, ('steps', None, 'logs', None, 'new'))
        import datetime
        when = datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
        a.produce(('steps', '12', 'logs', 'résumé', 'new'), {'slug': 'résumé', 'at': when, 'odd': object()})
        yield eventually(lambda: got, what='B got the message')
        self.assertEqual(got, [(('steps', '12', 'logs', 'résumé', 'new'),
                                {'slug': 'résumé', 'at': 1704164645, 'odd': None})])

    @defer.inlineCallbacks
    def test_a_masters_own_messages_are_delivered_to_it_once(self):
        a = yield self.master()
        b = yield self.master()
        mine, _ = yield self.collect(a, ('builds', None, 'new'))
        theirs, _ = yield self.collect(b, ('builds', None, 'new'))
        a.produce(('builds', '1', 'new'), {'buildid': 1})
        a.produce(('builds', '2', 'new'), {'buildid': 2})
        yield eventually(lambda: len(theirs) == 2 and a.listener.stats['own'] == 2, what='both heard')
        self.assertEqual([key for key, _ in mine], [('builds', '1', 'new'), ('builds', '2', 'new')])
        self.assertEqual(mine, theirs)

    @defer.inlineCallbacks
    def test_a_body_over_the_payload_limit_travels_by_reference_once_per_change(self):
        a = yield self.master()
        b = yield self.master()
        got, _ = yield self.collect(b, ('logs', None, None))
        body = {'logid': 5, 'content': 'x' * 20000}
        a.produce(('logs', '5', 'append'), body)  # one change, announced on two paths
        a.produce(('logs', '5', 'finished'), body)
        a.produce(('logs', '6', 'new'), {'logid': 6})
        yield eventually(lambda: len(got) == 3, what='B got all three')
        self.assertEqual([key for key, _ in got], [('logs', '5', 'append'), ('logs', '5', 'finished'),
                                                   ('logs', '6', 'new')])
        self.assertEqual(got[0][1], body)
        self.assertEqual(got[1][1], body)
        self.assertEqual(a.publisher.stats['by_reference'], 1)
        self.assertEqual(b.listener.stats['by_reference'], 2)

    @defer.inlineCallbacks
    def test_a_refused_body_is_delivered_locally_and_seen_elsewhere_as_a_gap(self):
        a = yield self.master()
        b = yield self.master()
        mine, _ = yield self.collect(a, ('builds', None, None))
        theirs, _ = yield self.collect(b, ('builds', None, None))
        a.produce(('builds', '1', 'new'), {'buildid': 1})
        yield eventually(lambda: theirs, what='the first message arrived')
        looks = b.master.botmaster.looks
        a.produce(('builds', '1', 'update'), {'ratio': math.nan})
        a.produce(('builds', '1', 'finished'), {'buildid': 1})
        yield eventually(lambda: len(theirs) == 2, what='the third message arrived')
        self.assertEqual(len(mine), 3)
        self.assertEqual([key[2] for key, _ in theirs], ['new', 'finished'])
        self.assertEqual(a.publisher.stats['refused'], 1)
        self.assertEqual(b.listener.stats['gaps'], 1)
        yield eventually(lambda: b.master.botmaster.looks > looks, what='B looked for work')

    @defer.inlineCallbacks
    def test_a_terminated_listener_listens_again_and_looks_for_work(self):
        a = yield self.master()
        b = yield self.master()
        got, _ = yield self.collect(b, ('buildrequests', None, 'new'))
        looks = b.master.botmaster.looks
        self.assertEqual(terminate(f'livestate-listen {b.origin}'), 1)
        yield eventually(lambda: b.listener.stats['reconnects'] == 1 and b.listener.listening,
                         what='B listens again')
        yield eventually(lambda: b.master.botmaster.looks > looks, what='B looked for work')
        a.produce(('buildrequests', '9', 'new'), {'buildrequestid': 9, 'builderid': 1})
        yield eventually(lambda: got, what='B hears again')

    @defer.inlineCallbacks
    def test_every_master_looks_for_work_when_a_master_is_marked_stopped(self):
        a = yield self.master()
        b = yield self.master()
        yield task.deferLater(reactor, 0.1, lambda: None)
        looks = a.master.botmaster.looks, b.master.botmaster.looks
        # What Buildbot's housekeeping announces for a dead master, whose
        # claims it released without a message.
        a.produce(('masters', '3', 'stopped'), {'masterid': 3, 'name': 'gone', 'active': False})
        yield eventually(lambda: a.master.botmaster.looks > looks[0] and b.master.botmaster.looks > looks[1],
                         what='both masters looked for work')

    @defer.inlineCallbacks
    def test_a_bad_url_is_told_and_tried_again_not_raised(self):
        a = yield self.master(db_url='postgresql://[::1', listen=False)
        a.produce(('changes', '1', 'new'), {'changeid': 1})
        yield eventually(lambda: a.publisher.stats['reconnects'] >= 2, what='attempts go on')

    @defer.inlineCallbacks
    def test_a_listener_that_stops_answering_is_given_up_and_made_again(self):
        b = yield self.master()
        b.listener._probe_interval = 0.2
        b.listener._probe_timeout = 0.5
        connection = b.listener._connection
        # A server that stops answering: the socket stays open, nothing comes back.
        slow = connection.query('SELECT pg_sleep(3)')
        yield eventually(lambda: b.listener._connection is not connection and b.listener.listening, timeout=15,
                         what='a new listening connection')
        self.assertEqual(b.listener.stats['reconnects'], 1)
        yield self.assertFailure(slow, ConnectionLost)

    @defer.inlineCallbacks
    def test_a_master_without_postgresql_stays_up_and_bounds_what_it_keeps(self):
        with socket_closed_port() as port:
            a = yield self.master(db_url=f'postgresql://postgres@127.0.0.1:{port}/nowhere', max_queued=5)
            got, _ = yield self.collect(a, ('changes', None, 'new'))
            for i in range(12):
                a.produce(('changes', str(i), 'new'), {'changeid': i})
            self.assertEqual(len(got), 12)  # local delivery never waits for PostgreSQL
            self.assertEqual(a.publisher.stats['dropped'], 7)
            yield eventually(lambda: a.publisher.stats['reconnects'] >= 2, what='connection attempts go on')
            self.assertFalse(a.listener.listening)
            # Stopping doesn't wait for a server that isn't there.
            started = reactor.seconds()
            yield a.stopService()
            self.assertLess(reactor.seconds() - started, 2)

    @defer.inlineCallbacks
    def test_stopping_sends_what_is_queued_first(self):
        a = yield self.master()
        b = yield self.master()
        got, _ = yield self.collect(b, ('changes', None, 'new'))
        for i in range(50):
            a.produce(('changes', str(i), 'new'), {'changeid': i})
        yield a.stopService()
        self.assertEqual(a.publisher.settled, 50)
        yield eventually(lambda: len(got) == 50, what='B got everything A queued before it stopped')

    @defer.inlineCallbacks
    def test_a_durable_consumer_gets_what_was_produced_while_it_was_stopped(self):
        a = yield self.master()
        b = yield self.master()
        name = 'audit-' + uuid.uuid4().hex[:8]
        got, qref = yield self.collect(b, ('jobs', None, 'done'), name)
        a.produce(('jobs', '1', 'done'), {'n': 1})
        yield eventually(lambda: got, what='live delivery')
        yield qref.stopConsuming()
        for n in (2, 3, 4):
            a.produce(('jobs', str(n), 'done'), {'n': n})
        a.produce(('jobs', '5', 'failed'), {'n': 5})
        yield a.publisher.flushed()
        got2, qref2 = yield self.collect(b, ('jobs', None, 'done'), name)
        yield eventually(lambda: len(got2) == 3, what='the backlog')
        self.assertEqual([body['n'] for _, body in got2], [2, 3, 4])
        a.produce(('jobs', '6', 'done'), {'n': 6})
        b.produce(('jobs', '7', 'done'), {'n': 7})
        yield eventually(lambda: len(got2) == 5, what='live after the backlog')
        yield task.deferLater(reactor, 0.5, lambda: None)  # acknowledged
        yield qref2.stopConsuming()
        got3, qref3 = yield self.collect(b, ('jobs', None, 'done'), name)
        yield task.deferLater(reactor, 0.5, lambda: None)
        self.assertEqual(got3, [])
        self.assertEqual(sorted(body['n'] for _, body in got2), [2, 3, 4, 6, 7])
        yield qref3.stopConsuming()

    @defer.inlineCallbacks
    def test_a_durable_consumer_gets_what_was_sent_while_its_master_was_not_listening(self):
        a = yield self.master()
        b = yield self.master()
        name = 'outage-' + uuid.uuid4().hex[:8]
        got, qref = yield self.collect(b, ('jobs', None, 'done'), name)
        a.produce(('jobs', '1', 'done'), {'n': 1})
        yield eventually(lambda: got, what='live delivery')
        reconnect = b.listener._connect
        b.listener._connect = lambda: None  # the server stays out of reach for a while
        self.assertEqual(terminate(f'livestate-listen {b.origin}'), 1)
        yield eventually(lambda: not b.listener.listening, what='B stopped listening')
        a.produce(('jobs', '2', 'done'), {'n': 2})
        a.produce(('jobs', '3', 'done'), {'n': 3})
        yield a.publisher.flushed()
        b.listener._connect = reconnect
        reconnect()
        yield eventually(lambda: len(got) == 3, what='what was missed, from the table')
        yield task.deferLater(reactor, 0.5, lambda: None)
        self.assertEqual([body['n'] for _, body in got], [1, 2, 3])
        yield qref.stopConsuming()

    @defer.inlineCallbacks
    def test_a_second_consumer_of_a_durable_name_is_refused(self):
        a = yield self.master()
        b = yield self.master()
        name = 'once-' + uuid.uuid4().hex[:8]
        _, qref = yield self.collect(a, ('jobs', None, 'done'), name)
        yield self.assertFailure(self.collect(b, ('jobs', None, 'done'), name), PersistentNameInUse)
        yield self.assertFailure(self.collect(a, ('jobs', None, 'done'), name), PersistentNameInUse)
        yield qref.stopConsuming()
        yield self.assertFailure(self.collect(b, ('jobs', None, None), name), PersistentNameInUse)

    @defer.inlineCallbacks
    def test_a_message_from_a_cxx_producer_reaches_buildbot_consumers(self):
        if not CLI:
            raise unittest.SkipTest('needs LIVESTATE_CLI (the livestate command)')
        b = yield self.master(channel='livestate')
        marker = uuid.uuid4().hex[:8]
        got, _ = yield self.collect(b, ('steps', marker, 'logs', None, 'new'))
        yield task.deferLater(reactor, 0, lambda: None)
        done = yield deferred_run([CLI, 'produce', f'steps.{marker}.logs.r%C3%A9sum%C3%A9.new',
                                   '{"slug":"résumé"}', '--db', PG])
        self.assertEqual(done, 0)
        yield eventually(lambda: got, what='the C++ message arrived')
        self.assertEqual(got, [(('steps', marker, 'logs', 'résumé', 'new'), {'slug': 'résumé'})])


def deferred_run(args):
    return task.deferLater(reactor, 0, lambda: None).addCallback(
        lambda _: __import__('twisted.internet.utils', fromlist=['x']).getProcessValue(args[0], args[1:], os.environ))


class socket_closed_port:
    """A local port nothing listens on."""

    def __enter__(self):
        import socket
        with socket.socket() as s:
            s.bind(('127.0.0.1', 0))
            return s.getsockname()[1]

    def __exit__(self, *exc):
        return False


if __name__ == '__main__':
    subprocess.sys.exit(subprocess.call([sys.executable, '-m', 'twisted.trial', __name__]))
