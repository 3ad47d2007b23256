"""The escaping of key elements holds its two promises on every text, not
only on the shared vectors: escaping can always be read back, and an
element that reads as something else is exactly that something's escape."""

import os
import random
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from livestate_buildbot.keys import escape_key_element, unescape_key_element  # noqa: E402

# Characters that make escapes, half-escapes and their look-alikes.
ALPHABET = ['%', '2', '5', 'C', '3', 'A', '9', 'c', 'a', 'F', 'x', '.', 'é', '\u00a0', '𝄞', '日']


class Escaping(unittest.TestCase):
    def texts(self, count=20000, seed=7):
        generator = random.Random(seed)
        for _ in range(count):
            yield ''.join(generator.choice(ALPHABET) for _ in range(generator.randint(0, 12)))

    def test_every_text_escapes_to_ascii_and_reads_back(self):
        for text in self.texts():
            element = escape_key_element(text)
            self.assertTrue(element.isascii(), text)
            self.assertEqual(unescape_key_element(element), text, element)

    def test_an_element_that_reads_as_another_text_is_that_texts_escape(self):
        for element in self.texts():
            if not element.isascii():
                continue
            text = unescape_key_element(element)
            if text != element:
                self.assertEqual(escape_key_element(text), element)

    def test_ascii_that_reads_as_itself_is_sent_as_itself(self):
        for element in self.texts():
            if element.isascii() and unescape_key_element(element) == element:
                self.assertEqual(escape_key_element(element), element)


if __name__ == '__main__':
    unittest.main()
