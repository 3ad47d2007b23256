"""Bodies are written as livestate's C++ producers write them, and what
livestate can't carry is refused before anything is sent."""

import datetime
import json
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from livestate_buildbot.jsontext import MAX_BODY_DEPTH, InvalidBody, dumps, float_text  # noqa: E402


class Bodies(unittest.TestCase):
    def test_a_body_reads_back_as_the_value_it_was(self):
        body = {'buildid': 7, 'name': 'résumé', 'results': None, 'complete': True, 'ratio': 0.25,
                'list': [1, 'two', [3]], 'nested': {'a': {'b': {}}}}
        self.assertEqual(json.loads(dumps(body)), body)

    def test_members_are_sorted_and_nothing_is_spaced(self):
        self.assertEqual(dumps({'b': 1, 'a': [1, 2], 'é': 'x', 'z': {}}), '{"a":[1,2],"b":1,"z":{},"é":"x"}')

    def test_tuples_are_arrays_and_names_become_text_as_json_dumps_makes_them(self):
        self.assertEqual(dumps((1, 2)), '[1,2]')
        self.assertEqual(dumps({7: 'a', None: 'c', 2.5: 'd'}), '{"2.5":"d","7":"a","null":"c"}')
        self.assertEqual(dumps({True: 'b'}), '{"true":"b"}')

    def test_nan_and_infinities_are_refused(self):
        for value in (float('nan'), float('inf'), -float('inf'), {'a': [float('nan')]}):
            with self.subTest(repr(value)):
                self.assertRaises(InvalidBody, dumps, value)

    def test_integers_beyond_64_bits_are_refused(self):
        self.assertEqual(dumps([2**64 - 1, -2**63]), '[18446744073709551615,-9223372036854775808]')
        self.assertRaises(InvalidBody, dumps, 2**64)
        self.assertRaises(InvalidBody, dumps, -2**63 - 1)

    def test_the_deepest_body_a_consumer_accepts_is_sent_and_one_deeper_refused(self):
        deepest = []
        for _ in range(MAX_BODY_DEPTH - 1):
            deepest = [deepest]
        self.assertEqual(dumps(deepest), '[' * MAX_BODY_DEPTH + ']' * MAX_BODY_DEPTH)
        self.assertRaises(InvalidBody, dumps, [deepest])

    def test_a_body_that_contains_itself_is_refused_not_a_crash(self):
        loop = {}
        loop['self'] = loop
        self.assertRaises(InvalidBody, dumps, loop)

    def test_unknown_types_go_through_default_as_in_json_dumps(self):
        when = datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)

        def default(value):
            return int(value.timestamp()) if isinstance(value, datetime.datetime) else None
        self.assertEqual(dumps({'at': when, 'odd': object()}, default), '{"at":1704164645,"odd":null}')
        self.assertRaises(TypeError, dumps, object())
        self.assertRaises(TypeError, dumps, object(), lambda value: value)

    def test_a_lone_surrogate_becomes_the_replacement_character(self):
        self.assertEqual(dumps('a\ud800b'), '"a\ufffdb"')

    def test_floats_are_laid_out_as_nlohmann_lays_them_out(self):
        cases = [(0.0, '0.0'), (-0.0, '-0.0'), (5.0, '5.0'), (0.1, '0.1'), (1e-4, '0.0001'), (1e-5, '1e-05'),
                 (1e15, '1e+15'), (123456789012345.0, '123456789012345.0'), (1.5e300, '1.5e+300'),
                 (-2.5e-300, '-2.5e-300'), (5e-324, '5e-324'), (1700000000.5, '1700000000.5')]
        for value, text in cases:
            with self.subTest(repr(value)):
                self.assertEqual(float_text(value), text)
                self.assertEqual(float(text), value)


if __name__ == '__main__':
    unittest.main()
