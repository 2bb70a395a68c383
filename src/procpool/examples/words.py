"""The ``procpool run`` example: a small bit of work per line of ``words.txt``.

From a clone of the repository::

    procpool run procpool.examples.words:count_letters src/procpool/examples/words.txt

From anywhere, ``python -m procpool.examples.words`` prints the path of the bundled
``words.txt``::

    procpool run procpool.examples.words:count_letters "$(python -m procpool.examples.words)"

Run the command twice: the second run finds every word stored and does nothing.
"""

from __future__ import annotations

import os
import time
from collections import Counter

VOWELS = frozenset("aeiouy")

#: The bundled input file: one word per line.
WORDS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "words.txt")


def count_letters(word: str) -> dict[str, object]:
    """Count the letters of one word (a stand-in for real per-line work)."""
    time.sleep(0.004)  # stands for the slow part: a request, a parse, a model call
    letters = Counter(word)
    return {
        "word": word,
        "letters": len(word),
        "vowels": sum(n for letter, n in letters.items() if letter in VOWELS),
        "most_common": letters.most_common(1)[0][0] if word else None,
    }


if __name__ == "__main__":
    print(WORDS_FILE)
