"""Bundled examples (``procpool run procpool.examples.words:count_letters``)."""
