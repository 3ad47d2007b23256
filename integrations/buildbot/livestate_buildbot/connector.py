"""The Buildbot MQ implementation: Buildbot's own SimpleMQ for this master's
consumers, plus livestate's PostgreSQL transport between masters.

- produce(): published (queued, sent with the rest of its reactor turn), then
  delivered locally exactly as SimpleMQ delivers it;
- messages of other masters are delivered to the local consumers as if they
  had been produced here; this master's own come back on the channel and are
  skipped (never delivered twice);
- when the listening connection is made again, or an origin's sequence
  skipped, or a master was marked stopped, the botmaster looks for work
  (maybeStartBuildsForAllBuilders): requests announced meanwhile were not
  heard, and a dead master's last announcements may never have been sent;
- consumers with a persistent name are livestate's durable queues.
"""

import os
import secrets
import socket

from buildbot.mq.simple import SimpleMQ
from buildbot.util import toJson
from twisted.internet import defer
from twisted.python import log

from .durable import DurableQueueRef
from .listener import Listener
from .publisher import Publisher


def _default_origin(prefix):
    return f'{prefix or "buildbot-" + socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}'


class LivestateMQ(SimpleMQ):
    def __init__(self):
        super().__init__()
        self.publisher = None
        self.listener = None
        self.durable = []
        self._looking = None
        self._unknown_types = set()

    # -- configuration and lifetime ---------------------------------------------------------

    def reconfigServiceWithBuildbotConfig(self, new_config):
        options = new_config.mq
        if self.publisher is None:
            from twisted.internet import reactor
            self._reactor = getattr(self.master, 'reactor', None) or reactor
            self.url = options['db_url']
            self.channel = options.get('channel', 'livestate')
            self.origin = _default_origin(options.get('origin'))
            self.publisher = Publisher(self._reactor, self.url, self.channel, self.origin,
                                       options.get('max_queued', 100000), self._to_json)
            if options.get('listen', True):
                self.listener = Listener(self._reactor, self.url, self.channel, self.origin, self._deliver_remote,
                                         self._listening, self._gap)
            log.msg(f'livestate: this master publishes as origin {self.origin} on channel {self.channel!r}'
                    + ('' if self.listener else ' and does not listen'))
        elif (options['db_url'], options.get('channel', 'livestate'), options.get('listen', True)) != \
                (self.url, self.channel, self.listener is not None):
            log.msg('livestate: db_url, channel and listen take effect when the master restarts')
        return super().reconfigServiceWithBuildbotConfig(new_config)

    def startService(self):
        self.publisher.start()
        if self.listener is not None:
            self.listener.start()
        return super().startService()

    @defer.inlineCallbacks
    def stopService(self):
        for queue in list(self.durable):
            yield queue.stopConsuming()
        if self.listener is not None:
            self.listener.stop()
        yield self.publisher.stop()
        if self._looking is not None and self._looking.active():
            self._looking.cancel()
        yield super().stopService()

    # -- producing ----------------------------------------------------------------------------

    def produce(self, routingKey, data):
        sequence = self.publisher.publish(routingKey, data)
        super().produce(routingKey, data)
        self._after_delivery(routingKey, data, self.origin if sequence else None, sequence)

    def _after_delivery(self, key, body, origin, sequence):
        for queue in list(self.durable):
            queue.offer(key, body, origin, sequence)
        # A master marked stopped (by its own clean stop, or by another's
        # housekeeping when it died) had its claims released without a
        # message, and its last announcements may never have been sent.
        if len(key) == 3 and key[0] == 'masters' and key[2] == 'stopped':
            self._look_for_work('a master stopped')

    def _to_json(self, value):
        converted = toJson(value)  # what Buildbot's WAMP MQ sends: epoch seconds for datetimes, else None
        if converted is None and type(value) not in self._unknown_types:
            self._unknown_types.add(type(value))
            log.msg(f'livestate: a message body holds a {type(value).__name__}, which JSON has no type for: '
                    'sent as null (as Buildbot\'s WAMP MQ sends it)')
        return converted

    # -- consuming -----------------------------------------------------------------------------

    def startConsuming(self, callback, filter, persistent_name=None):
        if persistent_name is None:
            return super().startConsuming(callback, filter)
        if any(not isinstance(k, str) and k is not None for k in filter):
            raise AssertionError(f"{filter} is not a filter")
        queue = DurableQueueRef(self, callback, tuple(filter), persistent_name)
        return queue.start()

    def _deliver_remote(self, key, body, origin, sequence):
        SimpleMQ.produce(self, key, body)
        self._after_delivery(key, body, origin, sequence)

    # -- looking for work --------------------------------------------------------------------------

    def _listening(self):
        self._look_for_work('listening')
        for queue in list(self.durable):
            queue.catch_up()

    def _gap(self, origin, missed):
        log.msg(f'livestate: {missed} message(s) of {origin} never arrived; looking for work')
        self._look_for_work('gap')

    def _look_for_work(self, why):
        # Coalesced: a burst of reasons costs the botmaster one look.
        if self._looking is not None and self._looking.active():
            return
        self._looking = self._reactor.callLater(0, self._maybe_start_builds)

    def _maybe_start_builds(self):
        botmaster = getattr(self.master, 'botmaster', None)
        if botmaster is None or not self.running:
            return
        try:
            botmaster.maybeStartBuildsForAllBuilders()
        except Exception:
            log.err(None, 'livestate: asking the botmaster to look for work failed')
