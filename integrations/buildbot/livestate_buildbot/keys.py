"""Routing-key elements beyond 7-bit ASCII, escaped as wire v1 carries them.

A key element on the wire is 7-bit ASCII. Text that isn't (Buildbot's log
slugs allow any letter: ``steps.12.logs.résumé.new``) travels percent-escaped,
as RFC 3986 writes a URL's bytes: ``r%C3%A9sum%C3%A9``. The rules are those of
the C++ codec (``livestate::wire::escape_key_element``, docs/WIRE.md), and
tests/data/wire_vectors.json holds the vectors both check:

- the canonical escape of a text writes every byte of 0x80 and above, and
  every ``%``, as ``%XX`` with uppercase hex digits, and nothing else;
- a text that is 7-bit ASCII and doesn't read back as something else is sent
  as it is (``100%``, ``builds``);
- an element is read back only when it is the canonical escape of a text that
  needs escaping; every other element means itself.
"""

_UPPER_HEX = '0123456789ABCDEF'
_HEX_VALUE = {c: i for i, c in enumerate(_UPPER_HEX)}


class InvalidKey(ValueError):
    """A routing key livestate can't carry: empty, or an element that is not
    a string or not valid Unicode (a lone surrogate)."""


def _canonical_escape(data):
    out = []
    for byte in data:
        if byte >= 0x80 or byte == 0x25:
            out.append('%' + _UPPER_HEX[byte >> 4] + _UPPER_HEX[byte & 0xF])
        else:
            out.append(chr(byte))
    return ''.join(out)


def _unescape_once(element):
    """The text `element` is the canonical escape of, or None."""
    if '%' not in element or not element.isascii():
        return None
    out = bytearray()
    i = 0
    size = len(element)
    while i < size:
        c = element[i]
        if c != '%':
            out.append(ord(c))
            i += 1
            continue
        high = _HEX_VALUE.get(element[i + 1]) if i + 1 < size else None
        low = _HEX_VALUE.get(element[i + 2]) if i + 2 < size else None
        if high is None or low is None:
            return None
        value = high * 16 + low
        if value < 0x80 and value != 0x25:  # escaped needlessly: not canonical
            return None
        out.append(value)
        i += 3
    try:
        return out.decode('utf-8')
    except UnicodeDecodeError:
        return None


def _escapes_something(element):
    text = _unescape_once(element)
    while text is not None:
        if not text.isascii():
            return True
        text = _unescape_once(text)
    return False


def escape_key_element(text):
    """`text` as a key element: 7-bit ASCII, and unescape_key_element() gives
    `text` back. Raises InvalidKey for a non-string or a lone surrogate."""
    if not isinstance(text, str):
        raise InvalidKey(f'key element {text!r} is not a string')
    if text.isascii() and not _escapes_something(text):
        return text
    try:
        data = text.encode('utf-8')
    except UnicodeEncodeError as error:
        raise InvalidKey(f'key element {text!r} is not valid Unicode: {error.reason} '
                         f'at offset {error.start}') from None
    return _canonical_escape(data)


def unescape_key_element(element):
    """The text a key element stands for."""
    if not _escapes_something(element):
        return element
    return _unescape_once(element)


def escape_key(elements):
    """A routing key of text elements as the wire's tuple of ASCII elements."""
    key = tuple(escape_key_element(element) for element in elements)
    if not key:
        raise InvalidKey('a routing key needs at least one element')
    return key


def unescape_key(elements):
    """The wire's ASCII elements as the text elements they stand for."""
    return tuple(unescape_key_element(element) for element in elements)
