"""The application on eventsourcing's in-memory (POPO) store, for tests of its rules.

What a command refuses, records and answers does not depend on the store; what does (the
stored form, the chain and custody marks, personal data sealed at rest, positions, a second
application on the same store, transactions) is tested on SQLite and PostgreSQL
(``store_url`` in ``tests/conftest.py``; ``docs/testing.md``, "Which tests need which store").
``CBCM_EVENT_STORE`` has no in-memory scheme on purpose: a store that forgets every
allegation at a restart must not be one setting away in production, so only the tests build
one, here.
"""

from __future__ import annotations

from services.application.mechanism import ComplaintMechanism

IN_MEMORY = {"PERSISTENCE_MODULE": "eventsourcing.popo"}


def in_memory_mechanism() -> ComplaintMechanism:
    """A new application on a store of its own in this process's memory (no data keys: such
    a store keeps nothing at rest)."""
    return ComplaintMechanism(env=dict(IN_MEMORY))
