"""``procpool copy``: cp -r/-a with worker processes, resumable and verifiable.

``command`` holds the arguments; ``plan`` (targets, filters, the walk) and ``place``
(what the parent makes itself) run in the parent, ``runner`` feeds a ``procpool.Pool``,
``tasks`` and ``kernel`` run in the workers, ``journal`` remembers the chunks written,
``report`` shows progress and the summary.
"""

from procpool._cli.copy.command import register as register
