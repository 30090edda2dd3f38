"""The id of an event store: what tells one store's log from another's (ADR 3)."""

from __future__ import annotations

import hashlib

from eventsourcing.persistence import Notification


def store_id(first: Notification) -> str:
    """ADR 3: 16 hex chars of SHA-256 over the first notification's originator id, topic and
    stored state.

    Stable for the store's lifetime (the first event never changes) and different between
    stores: the first event is usually the network's establishment, whose id is the same in
    every store, but whose state holds the caller's time (to the microsecond) and the name.
    """
    digest = hashlib.sha256(f"{first.originator_id}:{first.topic}:".encode())
    digest.update(first.state)
    return digest.hexdigest()[:16]
