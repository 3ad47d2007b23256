"""The wire format's shared vectors (tests/data/wire_vectors.json): the Python
codec must escape key elements, encode payloads and decode them exactly as
the vectors say, as the C++ codec must (tests/unit/wire_vectors.cpp)."""

import json
import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from livestate_buildbot import jsontext, keys, wire  # noqa: E402

VECTORS_PATH = os.environ.get('LIVESTATE_WIRE_VECTORS',
                              os.path.join(HERE, '..', '..', '..', 'tests', 'data', 'wire_vectors.json'))
with open(VECTORS_PATH, encoding='utf-8') as vectors_file:
    VECTORS = json.load(vectors_file)


def outgoing(message):
    key = keys.escape_key(message['key'])
    if 'reference' in message:
        return wire.Outgoing(key, None, message['reference'], message['sequence'])
    return wire.Outgoing(key, jsontext.dumps(message['body']), 0, message['sequence'])


def encode(vector):
    return wire.encode(vector['origin'], [outgoing(m) for m in vector['messages']],
                       vector.get('limit', wire.MAX_PAYLOAD_BYTES))


class KeyElements(unittest.TestCase):
    def test_elements_beyond_ascii_are_escaped_and_read_back_as_the_vectors_say(self):
        for vector in VECTORS['key_elements']:
            with self.subTest(vector['element']):
                self.assertEqual(keys.escape_key_element(vector['text']), vector['element'])
                self.assertEqual(keys.unescape_key_element(vector['element']), vector['text'])
                self.assertTrue(vector['element'].isascii())

    def test_elements_that_are_no_canonical_escape_mean_themselves_both_ways(self):
        for element in VECTORS['literal_elements']:
            with self.subTest(element):
                self.assertEqual(keys.escape_key_element(element), element)
                self.assertEqual(keys.unescape_key_element(element), element)

    def test_what_is_not_unicode_text_cant_become_a_key_element(self):
        # Python's text can't hold invalid UTF-8; its counterpart is a lone surrogate.
        for text in ('a\ud800', '\udfff'):
            with self.subTest(repr(text)):
                self.assertRaises(keys.InvalidKey, keys.escape_key_element, text)
        self.assertRaises(keys.InvalidKey, keys.escape_key_element, 17)
        self.assertRaises(keys.InvalidKey, keys.escape_key, ())

    def test_whole_keys_are_escaped_element_by_element_and_read_back(self):
        text = ('steps', '12', 'logs', 'résumé', 'new')
        key = keys.escape_key(text)
        self.assertEqual('.'.join(key), 'steps.12.logs.r%C3%A9sum%C3%A9.new')
        self.assertEqual(keys.unescape_key(key), text)


class Payloads(unittest.TestCase):
    def test_payloads_are_encoded_byte_for_byte_as_the_vectors_say(self):
        for vector in VECTORS['encode']:
            with self.subTest(vector['why']):
                self.assertEqual(encode(vector), vector['payloads'])
                for payload in vector['payloads']:
                    self.assertLessEqual(len(payload.encode('utf-8')), vector.get('limit', wire.MAX_PAYLOAD_BYTES))

    def test_messages_the_vectors_refuse_are_refused_when_encoding(self):
        errors = {'too deep': jsontext.InvalidBody, 'too long': wire.TooLong}
        for vector in VECTORS['encode_refused']:
            with self.subTest(vector['why']):
                self.assertRaises(errors[vector['error']], encode, vector)

    def test_payloads_are_decoded_into_the_vectors_messages_refusals_and_sequences(self):
        for vector in VECTORS['decode']:
            with self.subTest(vector['why']):
                payload = vector['payload'] if 'payload' in vector else bytes.fromhex(vector['payload_hex'])
                decoded = wire.decode(payload)
                self.assertEqual(decoded.origin, vector['origin'])
                self.assertEqual([problem.kind for problem in decoded.problems], vector['problems'])
                self.assertEqual(decoded.refused_sequences, vector['refused_sequences'])
                self.assertEqual(len(decoded.messages), len(vector['messages']))
                for message, expected in zip(decoded.messages, vector['messages']):
                    self.assertEqual(list(message.key), expected['key'])
                    self.assertEqual(message.body, expected['body'])
                    self.assertEqual(message.reference, expected['reference'])
                    self.assertEqual(message.sequence, expected['sequence'])
                    if 'text_key' in expected:
                        self.assertEqual(list(keys.unescape_key(message.key)), expected['text_key'])

    def test_a_decoded_payload_encodes_back_to_the_same_bytes(self):
        for vector in VECTORS['encode']:
            for payload in vector['payloads']:
                decoded = wire.decode(payload)
                self.assertEqual(decoded.problems, [])
                again = wire.encode(decoded.origin or '', [
                    wire.Outgoing(m.key, None if m.reference else jsontext.dumps(m.body), m.reference or 0,
                                  m.sequence or 0) for m in decoded.messages], 1 << 20)
                self.assertEqual(again, [payload])


if __name__ == '__main__':
    unittest.main()
