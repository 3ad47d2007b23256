"""What a payload too deep to build still tells: its origin and its entries'
sequences, read with a scanner that builds no value and keeps its nesting in
a list (the C++ decoder reads them with nlohmann's SAX parser, alike), so
that a listener can tell the origin's loss at once."""

import re
from json.decoder import scanstring

_NUMBER = re.compile(r'-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?')
_LITERALS = ('true', 'false', 'null')
_UINT64_MAX = 2**64 - 1


def stream_position(text):
    """(origin or None, [sequence, ...]) as far as `text` is JSON."""
    origin = None
    sequences = []
    containers = []  # '{' or '['
    expect_key = False
    envelope_key = entry_key = None
    messages_depth = 0
    i, size = 0, len(text)
    try:
        while i < size:
            c = text[i]
            depth = len(containers)
            if c in ' \t\n\r,:':
                if c == ',' and containers and containers[-1] == '{':
                    expect_key = True
                i += 1
            elif c in '{[':
                if c == '[' and depth == 1 and envelope_key == 'm':
                    messages_depth = 2
                containers.append(c)
                if len(containers) == 3:
                    entry_key = None
                expect_key = c == '{'
                i += 1
            elif c in '}]':
                if not containers:
                    break
                if depth == messages_depth:
                    messages_depth = 0
                containers.pop()
                expect_key = False
                i += 1
            elif c == '"':
                value, i = scanstring(text, i + 1)
                if expect_key:
                    if depth == 1:
                        envelope_key = value
                    if depth == 3 and messages_depth == 2:
                        entry_key = value
                    expect_key = False
                elif depth == 1 and envelope_key == 'o':
                    origin = value
            else:
                number = _NUMBER.match(text, i)
                if number:
                    i = number.end()
                    literal = number.group()
                    unsigned = not literal.startswith('-') and not number.group(1) and not number.group(2)
                    if unsigned and depth == 3 and messages_depth == 2 and entry_key == 's' \
                            and int(literal) <= _UINT64_MAX:
                        sequences.append(int(literal))
                    continue
                word = next((w for w in _LITERALS if text.startswith(w, i)), None)
                if word is None:
                    break
                i += len(word)
    except ValueError:  # a string that doesn't end: what was read stands
        pass
    return origin, sequences
