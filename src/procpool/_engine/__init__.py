"""The local backend: the scheduler thread and its parts (see engine.py)."""
