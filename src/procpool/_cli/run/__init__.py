"""``procpool run``: a durable, resumable parallel map whose results go to SQLite.

``command`` holds the subcommands' arguments and messages; the rest is the job itself.
"""

from procpool._cli.run.command import register as register
