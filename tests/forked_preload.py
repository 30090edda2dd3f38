"""Imported by a ``Forker`` before it forks (``tests/unit/test_forking.py``); nothing else
imports it."""
