"""The tokeniser used for IMDB reviews (and for new text given to a trained model).

Rules, applied in this order:

1. HTML line breaks (``<br />``, ``<br/>``, ``<br>``, any case) become a space.
2. The text is lower-cased (``str.lower``, so non-ASCII letters are lowered too).
3. Tokens are maximal runs of word characters (Unicode letters, digits, underscore), where an
   apostrophe between two such runs stays inside the word (``don't``, ``director's``), and every
   other non-space character is a token of its own (punctuation is split off and kept:
   ``"great!!"`` -> ``["great", "!", "!"]``).

Changing these rules changes every encoded corpus, so :data:`TOKENIZER_VERSION` is part of the
IMDB cache key.
"""

from __future__ import annotations

import re

TOKENIZER_VERSION = 1
_BREAK = re.compile(r"<br\s*/?\s*>", re.IGNORECASE)
_TOKEN = re.compile(r"\w+(?:'\w+)*|[^\w\s]")


def tokenize(text: str) -> list[str]:
    """Split ``text`` into lower-case tokens by the rules of the module docstring.

    >>> tokenize("A <br /><br />great film, isn't it?!")
    ['a', 'great', 'film', ',', "isn't", 'it', '?', '!']
    """
    if not isinstance(text, str):
        raise TypeError(f"tokenize expected str, got {type(text).__name__}")
    return _TOKEN.findall(_BREAK.sub(" ", text).lower())
