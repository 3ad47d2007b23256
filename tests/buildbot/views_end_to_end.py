#!/usr/bin/python3
"""Live views of a real Buildbot database, end to end.

Two Buildbot 3.7 masters share one database on PostgreSQL (a database of this
test's own) with the buildbot migration set applied, their MQ the plug-in
(livestate_buildbot.mq). Master A has the change source and the scheduler of
"parent"; master B the worker, and "parent" triggers "child-1" and "child-2"
there (a Trigger step that waits for them).

1. `livestate migrate --set buildbot` applies the set to the database that
   `buildbot create-master` made, and Buildbot runs with it installed: every
   build succeeds.
2. A C++ program (buildbot_follow_views) keeps live views of build requests and
   of builds over the database, following the masters' messages through
   livestate's transport, one pair directly and one pair through a
   FaultyConnector (reordered, dropped, duplicated, delayed); Buildbot's
   messages carry no _rev, so every view takes them as hints.
3. After the builds finish, verify() finds no difference in any view (the
   direct ones at the first verify), and the views saw no anomaly but what
   the faults caused.
4. `livestate view builds --source buildbot --json` prints every build.
5. The same set on SQLite: one master on a SQLite database (SimpleMQ) with
   the set applied runs a triggered build, and `livestate view --source
   buildbot` reads its builds with their revisions.

usage: views_end_to_end.py LIVESTATE_CLI FOLLOWER   (LIVESTATE_TEST_PG in the environment)
Exit 77 (skipped) without a PostgreSQL server or Buildbot.
"""

import json
import os
import sqlite3
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import end_to_end as e2e  # exits 77 when PostgreSQL or Buildbot is missing
from end_to_end import Failed, check, say

CHANGES = 3  # each: a parent build, and a triggered buildset of two children


def wait_for_builds(cluster, timeout):
    """Every buildset complete, and as many as expected?"""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        total, complete = cluster.sql('SELECT count(*), count(*) FILTER (WHERE complete <> 0) FROM buildsets')[0]
        if total == 2 * CHANGES and complete == total:
            return True
        time.sleep(0.1)
    return False


def sqlite_master(work, cli):
    """One master on SQLite with the buildbot set: Buildbot builds, views read."""
    basedir, worker_dir = os.path.join(work, 'solo'), os.path.join(work, 'solo-worker')
    database = os.path.join(basedir, 'state.sqlite')
    port = e2e.free_port()
    subprocess.run(['buildbot', 'create-master', '--quiet', basedir], check=True)
    with open(os.path.join(e2e.HERE, 'views.cfg.in')) as template:
        config = (template.read().replace('@PLUGIN_DIR@', repr(e2e.PLUGIN_DIR)).replace('@ROLE@', repr('solo'))
                  .replace('@BUILDBOT_DB@', repr('sqlite:///state.sqlite')).replace('@LIVESTATE_DB@', 'None')
                  .replace('@PB_PORT@', str(port)))
    with open(os.path.join(basedir, 'master.cfg'), 'w') as cfg:
        cfg.write(config)
    subprocess.run(['buildbot-worker', 'create-worker', '--quiet', worker_dir, f'127.0.0.1:{port}', 'w1',
                    'w1-password'], check=True)
    migrate = subprocess.run([cli, 'migrate', '--set', 'buildbot', '--db', 'sqlite:' + database],
                             capture_output=True, text=True)
    check(migrate.returncode == 0 and 'applied migration 1 (revisions) of set buildbot' in migrate.stdout,
          f'the buildbot set applied to a SQLite database ({migrate.stderr.strip()})')
    log = os.path.join(basedir, 'twistd.log')
    master = e2e.Process('solo', ['buildbot', 'start', '--nodaemon', basedir], log)
    worker = None
    try:
        e2e.wait_for_log(log, 'BuildMaster is running', 0, 30, master)
        worker = e2e.Process('solo-worker', ['buildbot-worker', 'start', '--nodaemon', worker_dir],
                             os.path.join(worker_dir, 'twistd.log'))
        e2e.wait_for_log(log, "worker 'w1' attaching", 0, 30, worker)
        subprocess.run(['buildbot', 'sendchange', '--master', f'127.0.0.1:{port}', '--auth', 'change:change-password',
                        '--who', 'views', '--branch', 'main', 'src/file.c'], check=True, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with sqlite3.connect(database) as connection:
                total, complete = connection.execute(
                    'SELECT count(*), count(complete_at) FROM builds').fetchone()
            if total == 3 and complete == 3:
                break
            time.sleep(0.1)
        printed = subprocess.run([cli, 'view', 'builds', '--source', 'buildbot', '--db', 'sqlite:' + database,
                                  '--json'], capture_output=True, text=True)
        rows = [json.loads(line) for line in printed.stdout.splitlines()]
        check(printed.returncode == 0 and len(rows) == 3 and all(row['complete'] and row['results'] == 0 and
                                                                 row['_rev'] > 0 for row in rows),
              'on SQLite too, Buildbot ran the triggered builds with the set installed, and livestate view '
              '--source buildbot reads them with their revisions')
    finally:
        for process in (worker, master):
            if process is not None:
                process.stop()


def run(work, cli, follower):
    cluster = e2e.Cluster(work, os.environ['LIVESTATE_TEST_PG'], cli, template='views.cfg.in')
    follow = None
    try:
        cluster.create()
        migrate = subprocess.run([cli, 'migrate', '--set', 'buildbot', '--db', cluster.db_url], capture_output=True,
                                 text=True)
        check(migrate.returncode == 0 and 'applied migration 1 (revisions) of set buildbot' in migrate.stdout,
              f'the buildbot set applied to the database buildbot create-master made ({migrate.stderr.strip()})')
        cluster.start('livestate')

        follow = subprocess.Popen([follower, cluster.db_url], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  text=True)
        ready = follow.stdout.readline()
        check(json.loads(ready or '{}').get('ready') is True, 'the C++ live views have their snapshots')

        # At once: `buildbot sendchange` takes seconds to start.
        senders = [subprocess.Popen(['buildbot', 'sendchange', '--master', f'127.0.0.1:{cluster.ports["a"]}', '--auth',
                                     'change:change-password', '--who', 'views', '--branch', 'main', '--comments',
                                     f'change {i}', 'src/file.c'], stdout=subprocess.DEVNULL)
                   for i in range(CHANGES)]
        check(all(sender.wait(60) == 0 for sender in senders), f'{CHANGES} changes sent to master A')
        check(wait_for_builds(cluster, 60), f'{2 * CHANGES} buildsets complete (parents and triggered children)')
        builds = cluster.sql('SELECT b.results, m.name, bd.name FROM builds b JOIN masters m ON m.id = b.masterid'
                             ' JOIN builders bd ON bd.id = b.builderid')
        check(len(builds) == 3 * CHANGES and all(results == 0 for results, _, _ in builds),
              f'Buildbot ran all {3 * CHANGES} builds with the set installed, each a success')
        check(all(master.endswith('/b') for _, master, _ in builds), 'every build ran on master B')

        out, _ = follow.communicate('done\n', timeout=60)
        lines = [json.loads(line) for line in out.splitlines() if line.strip()]
        views = [line for line in lines if 'view' in line]
        summary = lines[-1] if lines else {}
        for view in views:
            say(f'view {view["view"]}: {view["entries"]} entries, {view["messages"]} messages, '
                f'{view["hints"]} hints, {view["reload_queries"]} reload queries, {view["resyncs"]} resyncs, '
                f'anomalies {view["anomalies"]}')
        faults = next((line['faults'] for line in lines if 'faults' in line), {})
        say(f'faults injected: {faults}; verify attempts: {summary.get("verify_attempts")}')
        check(follow.returncode == 0 and summary.get('converged') is True and len(views) == 4,
              'every view equals the database after the builds finish')
        check(all(view['entries'] == 3 * CHANGES for view in views),
              f'each view holds the {3 * CHANGES} build requests or builds')
        direct = [view for view in views if 'faults' not in view['view']]
        check(all(view['clean_at_first_verify'] and not view['anomalies'] and view['hints'] > 0 for view in direct),
              'the direct views were equal at the first verify, took every message as a hint, saw no anomaly')
        check(faults.get('dropped', 0) > 0 and faults.get('duplicated', 0) > 0 and faults.get('reordered', 0) > 0,
              'the faulty views converged through drops, duplicates and reordering')

        printed = subprocess.run([cli, 'view', 'builds', '--source', 'buildbot', '--db', cluster.db_url, '--json'],
                                 capture_output=True, text=True)
        rows = [json.loads(line) for line in printed.stdout.splitlines()]
        check(printed.returncode == 0 and len(rows) == 3 * CHANGES and all(row['_rev'] > 0 for row in rows),
              'livestate view builds --source buildbot prints every build with its revision')
        cluster.stop()
        sqlite_master(work, cli)
        say('passed')
        return 0
    except (Failed, subprocess.TimeoutExpired, ValueError) as failure:
        say(f'FAILED: {failure}')
        cluster.print_logs(30)
        return 1
    finally:
        if follow is not None and follow.poll() is None:
            follow.kill()
            follow.wait()
        cluster.stop()
        cluster.drop()


def main():
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    work = tempfile.mkdtemp(prefix='livestate-buildbot-views-')
    try:
        status = run(work, sys.argv[1], sys.argv[2])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    say(f'views end-to-end test: {time.monotonic() - e2e.STARTED:.1f} s')
    return status


if __name__ == '__main__':
    sys.exit(main())
