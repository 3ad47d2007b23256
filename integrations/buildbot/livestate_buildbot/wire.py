"""livestate's wire format, version 1, in Python: the payloads of PostgreSQL
notifications (docs/WIRE.md is the contract; ``core/src/wire.cpp`` is the C++
codec, and tests/data/wire_vectors.json holds the vectors both check).

    {"v":1,"o":"<origin>","m":[{"s":<seq>,"k":["buildrequests","17","claimed"],"b":{...}}, ...]}

Pure functions, no I/O: encode() packs entries into payloads of at most
MAX_PAYLOAD_BYTES, as the C++ producer packs them, byte for byte; decode()
reads untrusted payloads, keeps the valid entries and refuses the rest with
the C++ decoder's reasons.
"""

import json
import math
import re
from collections import namedtuple

from .jsontext import MAX_DEPTH, dumps
from .jsontext import _quote as _quote_text

# PostgreSQL refuses NOTIFY payloads of 8000 bytes or more.
MAX_PAYLOAD_BYTES = 7999

_UINT64_MAX = 2**64 - 1
_INT64_MAX = 2**63 - 1

# The refusals, by the C++ decoder's names (wire::to_string(ProblemKind)).
NOT_JSON = 'not JSON'
NOT_AN_ENVELOPE = 'not an envelope'
UNSUPPORTED_VERSION = 'unsupported version'
BAD_ORIGIN = 'bad origin'
BAD_MESSAGE = 'bad message'
BAD_KEY = 'bad routing key'
BAD_SEQUENCE = 'bad sequence'
BAD_REFERENCE = 'bad reference'
TOO_DEEP = 'too deeply nested'


class TooLong(ValueError):
    """One entry alone makes a payload longer than the limit: its body must
    travel by reference."""


# An entry to encode: `key`, a tuple of 7-bit ASCII elements (keys.escape_key);
# `body_text`, the body as jsontext.dumps() wrote it, or None when it travels
# by `reference` (a livestate_mq_bodies id); `sequence`, 0 for none.
Outgoing = namedtuple('Outgoing', 'key body_text reference sequence')
Outgoing.__new__.__defaults__ = (None, 0, 0)

Problem = namedtuple('Problem', 'kind detail')
Incoming = namedtuple('Incoming', 'key body reference sequence')


class Decoded:
    """What decode() read: `origin` (or None), `messages` (Incoming, in
    payload order), `refused_sequences` and `problems` (one per refused entry,
    or one for the whole payload)."""

    __slots__ = ('origin', 'messages', 'refused_sequences', 'problems')

    def __init__(self):
        self.origin = None
        self.messages = []
        self.refused_sequences = []
        self.problems = []


def _head(origin):
    if not origin:
        return '{"v":1,"m":['
    return '{"v":1,"o":' + dumps(origin) + ',"m":['


def _entry(message):
    parts = ['{']
    if message.sequence:
        parts.append(f'"s":{message.sequence},')
    parts.append('"k":[')
    parts.append(','.join(_quote_text(element) for element in message.key))
    if message.body_text is not None:
        parts.append('],"b":')
        parts.append(message.body_text)
    else:
        parts.append(f'],"r":{message.reference}')
    parts.append('}')
    return ''.join(parts)


def _size(text):
    return len(text) if text.isascii() else len(text.encode('utf-8'))


def encoded_size(origin, message):
    """Bytes of the payload that would carry `message` alone."""
    return _size(_head(origin)) + _size(_entry(message)) + 2


def encode(origin, messages, limit=MAX_PAYLOAD_BYTES):
    """The payloads carrying `messages`, in order, each at most `limit` bytes:
    a payload takes entries until the next no longer fits. Raises TooLong
    when one entry alone is too long."""
    payloads = []
    head = _head(origin)
    head_size = _size(head)
    current, current_size = [], 0
    for message in messages:
        entry = _entry(message)
        entry_size = _size(entry)
        if head_size + entry_size + 2 > limit:
            raise TooLong(f'message {".".join(message.key)} takes {head_size + entry_size + 2} bytes in a '
                          f'payload of its own, more than the limit of {limit}: send its body by reference')
        if current and current_size + 1 + entry_size + 2 > limit:
            payloads.append(head + ','.join(current) + ']}')
            current, current_size = [], 0
        if not current:
            current_size = head_size + entry_size
        else:
            current_size += 1 + entry_size
        current.append(entry)
    if current:
        payloads.append(head + ','.join(current) + ']}')
    return payloads


# ---------------------------------------------------------------------------
# Decoding: untrusted input; nothing but MemoryError leaves decode().

def _nested_deeper_than(text, limit):
    """Brackets outside strings, counted as the C++ decoder counts them,
    before parsing: for text that is not JSON (valid JSON is measured after
    parsing, faster)."""
    depth = 0
    in_string = False
    i, size = 0, len(text)
    while i < size:
        c = text[i]
        if in_string:
            if c == '\\':
                i += 1
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in '[{':
            depth += 1
            if depth > limit:
                return True
        elif c in ']}':
            depth -= 1
        i += 1
    return False


def _value_deeper_than(value, limit):
    """Does a parsed value nest deeper than `limit`? Level by level, no recursion."""
    level = [value] if isinstance(value, (dict, list)) else []
    depth = 1
    while level:
        if depth > limit:
            return True
        inner = []
        for container in level:
            for member in (container.values() if isinstance(container, dict) else container):
                if isinstance(member, (dict, list)):
                    inner.append(member)
        level = inner
        depth += 1
    return False


def _refuse_constant(name):
    raise ValueError(f'{name} is not JSON')


def _finite_float(text):
    value = float(text)
    if math.isinf(value):
        raise ValueError(f'number overflow parsing {text!r}')
    return value


def _integer(text):
    # Beyond 64 bits a number is a double to livestate, as to nlohmann.
    value = int(text)
    if -2**63 <= value <= _UINT64_MAX:
        return value
    return _finite_float(text)


_SURROGATE_ESCAPE = re.compile(r'\\u[dD][89a-fA-F]')


def _has_surrogate(value):
    if isinstance(value, str):
        return any('\ud800' <= c <= '\udfff' for c in value)
    if isinstance(value, dict):
        return any(_has_surrogate(k) or _has_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_surrogate(v) for v in value)
    return False


def _parse(text):
    value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float,
                       parse_int=_integer)
    # A \uD800 escape without its pair is not JSON to livestate (nor to RFC 8259's UTF-8).
    if _SURROGATE_ESCAPE.search(text) and _has_surrogate(value):
        raise ValueError('a lone surrogate escape')
    return value


def _describe(value):
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, dict):
        return 'an object'
    if isinstance(value, list):
        return 'an array'
    return 'a string'


def _is_integer(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _as_sequence(value):
    return value if _is_integer(value) and 0 <= value <= _UINT64_MAX else None


def _decode_entry(decoded, index, entry):
    def refuse(kind, what):
        decoded.problems.append(Problem(kind, f'entry {index}: {what}'))
        if sequence:
            decoded.refused_sequences.append(sequence)

    sequence = None
    if not isinstance(entry, dict):
        return refuse(BAD_MESSAGE, f'{_describe(entry)}, not an object')
    if 's' in entry:
        sequence = _as_sequence(entry['s'])
    if 'k' not in entry:
        return refuse(BAD_MESSAGE, 'no "k" (routing key)')
    key = entry['k']
    if not isinstance(key, list) or not key:
        return refuse(BAD_KEY, f'"k" is {_describe(key)}, not a non-empty array of strings')
    for position, element in enumerate(key):
        if not isinstance(element, str):
            return refuse(BAD_KEY, f'"k" element {position} is {_describe(element)}, not a string')
        if not element.isascii():
            return refuse(BAD_KEY, f'"k" element {position} is not 7-bit ASCII: {element[:32]!r}')
    has_body, has_reference = 'b' in entry, 'r' in entry
    if not has_body and not has_reference:
        return refuse(BAD_MESSAGE, 'neither "b" (body) nor "r" (reference)')
    if has_body and has_reference:
        return refuse(BAD_MESSAGE, 'both "b" (body) and "r" (reference); one is needed')
    reference = None
    if has_reference:
        reference = entry['r']
        if not _is_integer(reference) or not 0 < reference <= _INT64_MAX:
            return refuse(BAD_REFERENCE, f'"r" is {_describe(reference)}, not a positive 64-bit integer')
    if 's' in entry and sequence is None:
        return refuse(BAD_SEQUENCE, f'"s" is {_describe(entry["s"])}, not an unsigned 64-bit integer')
    decoded.messages.append(Incoming(tuple(key), entry.get('b'), reference, sequence))


def _refused(kind, what):
    decoded = Decoded()
    decoded.problems.append(Problem(kind, what[:200]))
    return decoded


def _too_deep(payload):
    from .deep import stream_position
    decoded = _refused(TOO_DEEP, f'nested deeper than {MAX_DEPTH} levels')
    decoded.origin, decoded.refused_sequences = stream_position(payload)
    return decoded


def decode(payload):
    """Decodes one payload (str, or bytes in UTF-8)."""
    if isinstance(payload, (bytes, bytearray)):
        try:
            payload = bytes(payload).decode('utf-8')
        except UnicodeDecodeError as error:
            return _refused(NOT_JSON, f'not JSON: invalid UTF-8 at byte {error.start}')
    if payload.startswith('\ufeff'):  # a byte-order mark, skipped as nlohmann skips it
        payload = payload[1:]
    # Nesting is judged before anything else, as the C++ decoder judges it;
    # the brackets of a payload with few of them are not worth counting.
    few_brackets = payload.count('[') + payload.count('{') <= MAX_DEPTH
    try:
        envelope = _parse(payload)
    except RecursionError:
        return _too_deep(payload)
    except ValueError as error:
        if not few_brackets and _nested_deeper_than(payload, MAX_DEPTH):
            return _too_deep(payload)
        return _refused(NOT_JSON, f'not JSON: {error}')
    if not few_brackets and _value_deeper_than(envelope, MAX_DEPTH):
        return _too_deep(payload)
    if not isinstance(envelope, dict):
        return _refused(NOT_AN_ENVELOPE, f'the payload is {_describe(envelope)}, not a JSON object')
    if 'v' not in envelope:
        return _refused(NOT_AN_ENVELOPE, 'no "v" (format version)')
    version = envelope['v']
    if not _is_integer(version) or version != 1:
        return _refused(UNSUPPORTED_VERSION, f'"v" is {_describe(version)}; this reads version 1')
    if 'm' not in envelope:
        return _refused(NOT_AN_ENVELOPE, 'no "m" (messages)')
    messages = envelope['m']
    if not isinstance(messages, list):
        return _refused(NOT_AN_ENVELOPE, f'"m" is {_describe(messages)}, not an array')
    origin = envelope.get('o')
    if 'o' in envelope and not isinstance(origin, str):
        return _refused(BAD_ORIGIN, f'"o" is {_describe(origin)}, not a string')
    decoded = Decoded()
    decoded.origin = origin
    for index, entry in enumerate(messages):
        _decode_entry(decoded, index, entry)
    return decoded
