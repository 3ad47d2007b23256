#!/usr/bin/python3
"""Real Buildbot 3.7 masters on livestate, end to end.

Two masters share one Buildbot database on PostgreSQL (a database of this
test's own, created and dropped). Master A has the change source and the
scheduler; master B has the only worker. Their MQ is livestate_buildbot.mq().

1. A change sent to A (`buildbot sendchange`) must be built on B: A's build
   request reaches B only through LISTEN/NOTIFY.
2. `livestate watch --stats` sees the whole lifecycle, from both masters,
   with no malformed payload and no gap; a log slug beyond ASCII travels
   escaped.
3. B's listening connection is terminated (pg_terminate_backend, again and
   again) while a second change arrives: B still builds it, since after
   listening again it looks for the work it didn't hear of.
4. The watched messages, replayed with `livestate replay` through faults,
   converge.
5. The negative control: the same masters on Buildbot's SimpleMQ; the same
   check must fail (B never hears of the request).

usage: end_to_end.py LIVESTATE_CLI [TRACE_OUT]   (LIVESTATE_TEST_PG in the environment)
Exit 77 (skipped) without a PostgreSQL server or Buildbot.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from urllib.parse import urlsplit, urlunsplit

HERE = os.path.dirname(os.path.abspath(__file__))
PLUGIN_DIR = os.path.normpath(os.path.join(HERE, '..', '..', 'integrations', 'buildbot'))
STARTED = time.monotonic()

try:
    import psycopg2
except ImportError:
    print('end_to_end: skipped: no psycopg2 (apt-get install python3-psycopg2)')
    sys.exit(77)
if not os.environ.get('LIVESTATE_TEST_PG') or not shutil.which('buildbot') or not shutil.which('buildbot-worker'):
    print('end_to_end: skipped: needs LIVESTATE_TEST_PG (tests/pg/with-test-postgres.sh) and Buildbot '
          '(apt-get install python3-buildbot buildbot-worker)')
    sys.exit(77)


def say(text):
    print(f'[{time.monotonic() - STARTED:5.1f} s] {text}', flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def with_database(url, name):
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path='/' + name))


class Failed(Exception):
    pass


def check(condition, what):
    if not condition:
        raise Failed(what)
    say(f'ok: {what}')


class Process:
    """A daemon of the test, in the foreground, ended by its pid."""

    def __init__(self, name, args, log_path, **kwargs):
        self.name = name
        self.log_path = log_path
        self.output = open(log_path + '.out', 'ab')
        self.popen = subprocess.Popen(args, stdout=self.output, stderr=subprocess.STDOUT, **kwargs)

    def terminate(self):
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)

    def stop(self, timeout=15):
        self.terminate()
        if self.popen.poll() is None:
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self.output.close()


def log_size(path):
    return os.path.getsize(path) if os.path.exists(path) else 0


def wait_for_log(path, text, since, timeout, process=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path):
            with open(path, 'rb') as f:
                f.seek(since)
                if text.encode() in f.read():
                    return
        if process is not None and process.popen.poll() is not None:
            raise Failed(f'{process.name} exited ({process.popen.returncode}) before logging {text!r}')
        time.sleep(0.05)
    raise Failed(f'{path} did not say {text!r} within {timeout} s')


class Cluster:
    def __init__(self, work, pg_url, cli, template='master.cfg.in'):
        self.work = work
        self.template = template
        self.cli = cli
        self.db_name = f'livestate_buildbot_{os.getpid()}'
        self.admin_url = pg_url
        self.db_url = with_database(pg_url, self.db_name)
        self.ports = {'a': free_port(), 'b': free_port()}
        self.processes = {}

    def sql(self, query, params=None, url=None):
        connection = psycopg2.connect(url or self.db_url)
        connection.autocommit = True
        try:
            with connection.cursor() as cursor:
                cursor.execute(query, params)
                return cursor.fetchall() if cursor.description else None
        finally:
            connection.close()

    def create(self):
        self.sql(f'DROP DATABASE IF EXISTS {self.db_name}', url=self.admin_url)
        self.sql(f'CREATE DATABASE {self.db_name}', url=self.admin_url)
        subprocess.run(['buildbot', 'create-master', '--quiet', '--db', self.db_url, self.dir('a')], check=True)
        os.makedirs(self.dir('b'))
        with open(os.path.join(self.dir('a'), 'buildbot.tac')) as tac:
            text = tac.read()
        with open(os.path.join(self.dir('b'), 'buildbot.tac'), 'w') as tac:
            tac.write(text.replace(repr(self.dir('a')), repr(self.dir('b'))))
        with open(os.path.join(HERE, self.template)) as template:
            config = template.read()
        for role in 'ab':
            filled = (config.replace('@PLUGIN_DIR@', repr(PLUGIN_DIR)).replace('@ROLE@', repr(role))
                      .replace('@BUILDBOT_DB@', repr(self.db_url)).replace('@LIVESTATE_DB@', repr(self.db_url))
                      .replace('@PB_PORT@', str(self.ports[role])))
            with open(os.path.join(self.dir(role), 'master.cfg'), 'w') as cfg:
                cfg.write(filled)
        subprocess.run(['buildbot-worker', 'create-worker', '--quiet', self.dir('w'), f'127.0.0.1:{self.ports["b"]}',
                        'w1', 'w1-password'], check=True)

    def dir(self, role):
        return os.path.join(self.work, role)

    def start(self, mq):
        for role in 'ab':
            with open(os.path.join(self.dir(role), 'mq'), 'w') as f:
                f.write(mq)
        since = {role: log_size(self.log(role)) for role in 'abw'}
        for role in 'ab':
            self.processes[role] = Process(role, ['buildbot', 'start', '--nodaemon', self.dir(role)], self.log(role))
        for role in 'ab':
            wait_for_log(self.log(role), 'BuildMaster is running', since[role], 30, self.processes[role])
        self.processes['w'] = Process('w', ['buildbot-worker', 'start', '--nodaemon', self.dir('w')], self.log('w'))
        wait_for_log(self.log('b'), "worker 'w1' attaching", since['b'], 30, self.processes['w'])
        wait_for_log(self.log('w'), 'Connected to', since['w'], 30, self.processes['w'])
        say(f'masters A and B ({mq}) running, the worker attached to B')

    def stop(self):
        stopping = [self.processes.pop(role) for role in ('w', 'a', 'b') if role in self.processes]
        for process in stopping:  # all at once: each takes a while to stop cleanly
            process.terminate()
        for process in stopping:
            process.stop()

    def log(self, role):
        return os.path.join(self.dir(role), 'twistd.log')

    def print_logs(self, lines=40):
        """The last lines of every daemon's log, after a failure."""
        for role in 'abw':
            path = self.log(role)
            if os.path.exists(path):
                with open(path, encoding='utf-8', errors='replace') as f:
                    print(f'--- {path} (last lines)\n' + ''.join(f.readlines()[-lines:]))

    def drop(self):
        try:
            self.sql(f'DROP DATABASE IF EXISTS {self.db_name} WITH (FORCE)', url=self.admin_url)
        except psycopg2.Error as error:
            say(f'could not drop {self.db_name}: {error}')

    def send_change(self, comment):
        subprocess.run(['buildbot', 'sendchange', '--master', f'127.0.0.1:{self.ports["a"]}', '--auth',
                        'change:change-password', '--who', 'end-to-end', '--branch', 'main', '--comments', comment,
                        'src/file.c'], check=True, stdout=subprocess.DEVNULL)
        say(f'sent change {comment!r} to master A')

    def requests(self):
        """(buildrequestid, complete, results, the name of the master that built it, claimed)"""
        return self.sql(
            'SELECT r.id, r.complete, r.results, m.name, c.brid IS NOT NULL FROM buildrequests r'
            ' LEFT JOIN buildrequest_claims c ON c.brid = r.id'
            ' LEFT JOIN builds b ON b.buildrequestid = r.id LEFT JOIN masters m ON m.id = b.masterid ORDER BY r.id')

    def built_on_b(self, count, timeout):
        """Are `count` requests complete, all built by B, within `timeout` s?"""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = self.requests()
            if len(rows) >= count and all(row[1] for row in rows[:count]):
                return all(row[2] == 0 and row[3] is not None and row[3].endswith('/b') for row in rows[:count])
            time.sleep(0.1)
        return False


class Terminator(threading.Thread):
    """Ends master B's listening connection again and again."""

    def __init__(self, cluster):
        super().__init__(daemon=True)
        self.cluster = cluster
        self.terminated = 0
        self.done = threading.Event()

    def run(self):
        connection = psycopg2.connect(self.cluster.db_url)
        connection.autocommit = True
        with connection.cursor() as cursor:
            while not self.done.is_set():
                cursor.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                               " WHERE application_name LIKE 'livestate-listen master-b-%%'")
                self.terminated += cursor.fetchone()[0]
                time.sleep(0.02)
        connection.close()


def watch_lines(path):
    messages, controls, stats = [], [], None
    with open(path, encoding='utf-8') as f:
        for line in f:
            record = json.loads(line)
            if 'key' in record:
                messages.append(record)
            elif 'control' in record:
                controls.append(record)
            elif 'stats' in record:
                stats = record['stats']
    return messages, controls, stats


def run(work, cli, trace_out):
    cluster = Cluster(work, os.environ['LIVESTATE_TEST_PG'], cli)
    watch = None
    try:
        cluster.create()
        say(f'Buildbot database {cluster.db_name} created; masters A (pb {cluster.ports["a"]}) and '
            f'B (pb {cluster.ports["b"]}) configured')
        cluster.start('livestate')

        watch_out = os.path.join(work, 'watch.jsonl')
        with open(watch_out, 'wb') as out:
            watch = subprocess.Popen([cli, 'watch', '--db', cluster.db_url, '--stats'], stdout=out,
                                     stderr=subprocess.PIPE)
        if b'listening on channel' not in watch.stderr.readline():
            raise Failed('livestate watch did not listen')

        cluster.send_change('first')
        check(cluster.built_on_b(1, 30), 'the first change, sent to A, was built on B')

        terminator = Terminator(cluster)
        terminator.start()
        time.sleep(0.2)
        cluster.send_change('second')
        deadline = time.monotonic() + 10
        while len(cluster.requests()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # A's announcements are out: B was not listening
        terminator.done.set()
        terminator.join()
        check(terminator.terminated > 0, f'B\'s listening connection was terminated ({terminator.terminated} times) '
                                         'while the second change arrived')
        check(cluster.built_on_b(2, 30), 'the second change was built on B all the same')
        with open(cluster.log('b'), encoding='utf-8', errors='replace') as f:
            b_log = f.read()
        check('lost the listening connection' in b_log and 'again after' in b_log,
              'B said it lost its listening connection and listened again')

        time.sleep(0.5)  # the last messages reach the watch
        watch.send_signal(signal.SIGTERM)
        watch.wait(10)
        messages, controls, stats = watch_lines(watch_out)
        keys = ['.'.join(m['key']) for m in messages]
        say(f'livestate watch saw {len(messages)} messages and {len(controls)} control events')
        check(stats is not None and stats.get('malformed') == 0, f'no malformed payload (stats: {stats})')
        check(stats.get('gaps') == 0 and not [c for c in controls if c.get('control') == 'gap'], 'no gap')

        def seen(pattern):
            parts = pattern.split('.')
            return any(len(k.split('.')) == len(parts) and all(p == '*' or p == e for p, e in zip(parts, k.split('.')))
                       for k in keys)
        lifecycle = ['changes.*.new', 'buildsets.*.new', 'buildrequests.*.new', 'buildrequests.*.claimed',
                     'builds.*.new', 'steps.*.new', 'steps.*.finished', 'builds.*.finished',
                     'buildrequests.*.complete', 'buildsets.*.complete',
                     'steps.*.logs.r%C3%A9sum%C3%A9.new', 'steps.*.logs.r%C3%A9sum%C3%A9.finished']
        missing = [pattern for pattern in lifecycle if not seen(pattern)]
        check(not missing, f'the watch saw the whole lifecycle, from both masters (missing: {missing})')

        trace = os.path.join(work, 'trace.jsonl')
        with open(trace, 'w', encoding='utf-8') as f:
            for m in messages:
                f.write(json.dumps({'key': m['key'], 'body': m['body']}, ensure_ascii=False) + '\n')
        if trace_out:
            shutil.copy(trace, trace_out)
        replay = subprocess.run([cli, 'replay', trace, '--reorder', '0.2', '--drop', '0.05', '--duplicate', '0.05',
                                 '--seed', '3', '--json'], capture_output=True, text=True)
        check(replay.returncode == 0 and '"converged":true' in replay.stdout,
              'the recorded trace, replayed through faults, converges')

        cluster.stop()
        cluster.start('simple')
        cluster.send_change('third')
        built = cluster.built_on_b(3, 6)
        rows = cluster.requests()
        check(not built and len(rows) == 3 and not rows[2][4],
              'negative control: on SimpleMQ, B never hears of the third request (unclaimed after 6 s)')
        say('passed')
        return 0
    except Failed as failure:
        say(f'FAILED: {failure}')
        cluster.print_logs()
        return 1
    finally:
        if watch is not None and watch.poll() is None:
            watch.kill()
            watch.wait()
        cluster.stop()
        cluster.drop()


def main():
    # Stopped from outside (ctest's timeout): the masters, the worker and the
    # database go with it (run()'s finally).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if len(sys.argv) not in (2, 3):
        print(__doc__)
        return 2
    work = tempfile.mkdtemp(prefix='livestate-buildbot-')
    try:
        status = run(work, sys.argv[1], sys.argv[2] if len(sys.argv) == 3 else None)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    say(f'end-to-end test: {time.monotonic() - STARTED:.1f} s')
    return status


if __name__ == '__main__':
    sys.exit(main())
