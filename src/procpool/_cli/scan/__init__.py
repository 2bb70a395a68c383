"""``procpool scan``: several processes read one large file by byte ranges.

``command`` holds the arguments and writes the results; ``ranges`` is what a worker
does with its range (count newlines, grep whole lines, hash a chunk).
"""

from procpool._cli.scan.command import register as register
