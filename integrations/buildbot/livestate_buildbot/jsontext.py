"""Message bodies as compact JSON text, written as livestate's C++ producers
write them (nlohmann's ``dump()``), so that a body sent from Python and the
same body sent from C++ are the same bytes:

- no whitespace; object members sorted by name (code point order, which is
  UTF-8's byte order); text as UTF-8 (no ``\\u`` escapes but those JSON
  requires, lowercase); a lone surrogate becomes U+FFFD, as nlohmann replaces
  invalid UTF-8;
- integers as written; floats with the shortest digits that read back
  (Python's ``repr``; nlohmann's Grisu2 may rarely pick other digits for the
  same double), laid out as nlohmann lays them out: ``5.0``, ``0.0001``,
  ``1e-05``, ``1e+15``.

What livestate can't carry is refused (InvalidBody): NaN and infinities (JSON
has no such numbers), integers beyond 64 bits, and nesting deeper than
MAX_BODY_DEPTH, which every consumer between processes refuses. Values JSON
has no type for go through `default`, as in ``json.dumps``: a datetime
becomes epoch seconds there, an unknown type null.
"""

import math
import re

from json.encoder import encode_basestring as _quote

# Nesting of a whole payload that consumers accept (wire::max_depth), and of a
# body inside it: the envelope, its "m" array and the entry take three levels.
MAX_DEPTH = 64
MAX_BODY_DEPTH = MAX_DEPTH - 3

_SURROGATE = re.compile('[\ud800-\udfff]')


class InvalidBody(ValueError):
    """A body no livestate consumer would accept; nothing of it was sent."""


def float_text(value):
    """A finite float as nlohmann writes it."""
    if value == 0:
        return '-0.0' if math.copysign(1.0, value) < 0 else '0.0'
    text = repr(value)
    sign = ''
    if text[0] == '-':
        sign, text = '-', text[1:]
    mantissa, _, exponent = text.partition('e')
    whole, _, fraction = mantissa.partition('.')
    digits = (whole + fraction).lstrip('0')
    power = (int(exponent) if exponent else 0) - len(fraction)  # value = digits * 10**power
    significant = digits.rstrip('0')
    power += len(digits) - len(significant)
    digits = significant
    count = len(digits)
    point = count + power  # where the decimal point falls in `digits`
    if count <= point <= 15:
        return sign + digits + '0' * (point - count) + '.0'
    if 0 < point <= 15:
        return sign + digits[:point] + '.' + digits[point:]
    if -4 < point <= 0:
        return sign + '0.' + '0' * -point + digits
    mantissa = digits[0] + ('.' + digits[1:] if count > 1 else '')
    exponent = point - 1
    return f"{sign}{mantissa}e{'-' if exponent < 0 else '+'}{abs(exponent):02d}"


def _no_default(value):
    raise TypeError(f'{type(value).__name__} is not JSON')


_JSON_TYPES = (str, int, float, dict, list, tuple, type(None))
_KEY_TEXT = {True: 'true', False: 'false', None: 'null'}


def _key(name):
    if isinstance(name, str):
        return name
    if isinstance(name, bool) or name is None:
        return _KEY_TEXT[name]
    if isinstance(name, int):
        return int.__repr__(name)
    if isinstance(name, float):
        return float_text(name)
    raise InvalidBody(f'an object member is named by a {type(name).__name__}, not a string')


def _write(value, out, depth, default):
    if isinstance(value, str):
        out.append(_quote(value))
    elif value is None:
        out.append('null')
    elif value is True:
        out.append('true')
    elif value is False:
        out.append('false')
    elif isinstance(value, int):
        if not -2**63 <= value < 2**64:
            raise InvalidBody(f'the integer {value} is beyond 64 bits')
        out.append(int.__repr__(value))
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidBody(f'{value} is not a JSON number (NaN and infinities are refused)')
        out.append(float_text(value))
    elif isinstance(value, (dict, list, tuple)):
        if depth == MAX_BODY_DEPTH:
            raise InvalidBody(f'the body nests deeper than {MAX_BODY_DEPTH} levels')
        if isinstance(value, dict):
            # Names made text as json.dumps makes them; of two that become
            # the same text the last counts, as a JSON reader keeps it.
            named = {_key(name): member for name, member in value.items()}
            members = sorted(named.items(), key=lambda item: item[0])
            out.append('{')
            for i, (name, member) in enumerate(members):
                if i:
                    out.append(',')
                out.append(_quote(name))
                out.append(':')
                _write(member, out, depth + 1, default)
            out.append('}')
        else:
            out.append('[')
            for i, member in enumerate(value):
                if i:
                    out.append(',')
                _write(member, out, depth + 1, default)
            out.append(']')
    else:
        replacement = default(value)
        if not isinstance(replacement, _JSON_TYPES):
            raise TypeError(f'{type(value).__name__} is not JSON, nor is what default() made of it')
        _write(replacement, out, depth, default)


def dumps(value, default=_no_default):
    """`value` as compact JSON text. `default(value)` replaces a value of a
    type JSON has none for (it may return any JSON-able value); raises
    InvalidBody for what livestate refuses, and TypeError when `default`
    gives up."""
    out = []
    _write(value, out, 0, default)
    text = ''.join(out)
    if not text.isascii() and _SURROGATE.search(text):
        text = _SURROGATE.sub('\ufffd', text)
    return text
