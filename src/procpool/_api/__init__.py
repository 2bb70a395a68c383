"""The public API: the Pool and Executor facades, results, futures, imap, progress.

Users import these names from ``procpool``."""
