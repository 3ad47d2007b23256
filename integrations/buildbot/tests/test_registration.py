"""c['mq'] = livestate_buildbot.mq(db_url=...) is all a master.cfg needs:
Buildbot's config check accepts it, as often as master.cfg is read again."""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

try:
    from buildbot.config.errors import capture_config_errors
    from buildbot.config.master import MasterConfig
    from buildbot.mq.connector import MQConnector
    from twisted.python.reflect import namedObject
except ImportError:  # pragma: no cover
    MasterConfig = None

import livestate_buildbot  # noqa: E402


@unittest.skipIf(MasterConfig is None, 'needs Buildbot (apt-get install python3-buildbot)')
class Registration(unittest.TestCase):
    def load(self, mq):
        config = MasterConfig()
        with capture_config_errors() as errors:
            config.load_mq('master.cfg', {'mq': mq})
        return config, errors.errors

    def test_the_one_line_of_configuration_passes_buildbots_check(self):
        config, errors = self.load(livestate_buildbot.mq(db_url='postgresql://buildbot@db/buildbot'))
        self.assertEqual(errors, [])
        self.assertEqual(config.mq['type'], 'livestate')
        self.assertEqual(config.mq['db_url'], 'postgresql://buildbot@db/buildbot')

    def test_reading_master_cfg_again_registers_the_same_thing(self):
        livestate_buildbot.mq(db_url='postgresql://db/buildbot')
        first = dict(MQConnector.classes['livestate'])
        config, errors = self.load(livestate_buildbot.mq(db_url='postgresql://db/buildbot', channel='ci', origin='m1',
                                                         listen=False, debug=True))
        self.assertEqual(errors, [])
        self.assertEqual(MQConnector.classes['livestate'], first)
        self.assertEqual(MQConnector.classes['simple']['class'], 'buildbot.mq.simple.SimpleMQ')

    def test_buildbot_finds_the_class_by_the_name_it_was_given(self):
        livestate_buildbot.mq(db_url='postgresql://db/buildbot')
        from livestate_buildbot.connector import LivestateMQ
        self.assertIs(namedObject(MQConnector.classes['livestate']['class']), LivestateMQ)

    def test_unknown_keys_are_still_refused_by_buildbot(self):
        mq = livestate_buildbot.mq(db_url='postgresql://db/buildbot')
        mq['router_url'] = 'ws://crossbar'
        _, errors = self.load(mq)
        self.assertEqual(len(errors), 1)

    def test_bad_options_are_refused_in_master_cfg(self):
        for options in (dict(db_url=''), dict(db_url=None), dict(db_url='postgresql://db', channel=''),
                        dict(db_url='postgresql://db', max_queued=0), dict(db_url='postgresql://db', origin='')):
            with self.subTest(options):
                self.assertRaises(ValueError, livestate_buildbot.mq, **options)


if __name__ == '__main__':
    unittest.main()
