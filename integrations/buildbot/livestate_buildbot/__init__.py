"""livestate for Buildbot: a Buildbot MQ that carries the masters' messages
over PostgreSQL LISTEN/NOTIFY in livestate's wire format, in place of WAMP
and its crossbar router (docs/BUILDBOT.md). In master.cfg:

    import livestate_buildbot
    c['mq'] = livestate_buildbot.mq(db_url='postgresql://buildbot@db/buildbot')
"""

__version__ = '0.1.0'

MQ_TYPE = 'livestate'
_CLASS = 'livestate_buildbot.connector.LivestateMQ'
_KEYS = frozenset({'db_url', 'channel', 'origin', 'listen', 'debug', 'max_queued'})


def register():
    """Makes c['mq'] = {'type': 'livestate', ...} known to Buildbot. Called by
    mq(); safe to call again (reconfig and checkconfig read master.cfg again)."""
    # Imported now: Buildbot puts sys.path back as it was once master.cfg has
    # run, and finds the class by name later (in sys.modules by then).
    import livestate_buildbot.connector  # noqa: F401
    from buildbot.mq.connector import MQConnector
    MQConnector.classes[MQ_TYPE] = {'class': _CLASS, 'keys': set(_KEYS)}


def mq(db_url, channel='livestate', origin=None, listen=True, debug=False, max_queued=100000):
    """The value of c['mq'] that makes this master's messages travel through
    livestate on the PostgreSQL database `db_url` (a libpq URL or conninfo;
    'postgresql+psycopg2://' is read as 'postgresql://').

    channel:    the NOTIFY channel, shared by every master (and livestate
                process) that must hear each other;
    origin:     a name for this master's messages (a random suffix is added
                at each start, so that sequences never collide);
    listen:     False for a master that only publishes;
    debug:      log every message, as SimpleMQ's debug does;
    max_queued: messages kept while PostgreSQL is away, beyond which the
                oldest are dropped (other masters see a gap).
    """
    if not isinstance(db_url, str) or not db_url:
        raise ValueError('livestate_buildbot.mq: db_url must be a PostgreSQL URL')
    if not isinstance(channel, str) or not channel or '\x00' in channel:
        raise ValueError('livestate_buildbot.mq: channel must be a non-empty string')
    if origin is not None and (not isinstance(origin, str) or not origin):
        raise ValueError('livestate_buildbot.mq: origin must be a non-empty string')
    if not isinstance(max_queued, int) or isinstance(max_queued, bool) or max_queued < 1:
        raise ValueError('livestate_buildbot.mq: max_queued must be a positive integer')
    register()
    config = {'type': MQ_TYPE, 'db_url': db_url, 'channel': channel, 'listen': bool(listen),
              'debug': bool(debug), 'max_queued': max_queued}
    if origin is not None:
        config['origin'] = origin
    return config
