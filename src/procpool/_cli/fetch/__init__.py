"""``procpool fetch``: download many URLs, politely, robustly and resumably.

``command`` holds the arguments; ``setup`` builds a run from them; ``crawler`` is the
parent's loop; ``schedule`` and ``robots`` its per-host tables; ``worker`` what runs in
the pool's processes; ``output``, ``source``, ``report`` and ``inbox`` the edges.
"""

from procpool._cli.fetch.command import register as register
