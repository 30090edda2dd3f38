"""The id of an event store: what tells one store's log from another's (ADR 3, ADR 14)."""

from __future__ import annotations

import hashlib
from typing import Any

from eventsourcing.persistence import Notification

from services.event_store.custody import store_nonce


def store_id(first: Notification, nonce: str | None = None) -> str:
    """16 hex chars of SHA-256 over the first notification's originator id, topic and stored
    state, and, for a store made since issue 15, the random nonce drawn with its first event.

    Stable for the store's lifetime (the first event and the nonce never change). Without the
    nonce (a store made before it existed: its id stays what it was), two stores whose first
    event is the same (the demo network, established at the same time) would share an id.
    A changed first event changes the id either way.
    """
    digest = hashlib.sha256()
    if nonce is not None:
        digest.update(b"cbcm/store/v2\0" + nonce.encode() + b"\0")
    digest.update(f"{first.originator_id}:{first.topic}:".encode())
    digest.update(first.state)
    return digest.hexdigest()[:16]


def store_id_of(recorder: Any) -> str | None:
    """The id of the store ``recorder`` writes to (None while it holds no event)."""
    first = recorder.select_notifications(None, 1)
    if not first:
        return None
    nonce = store_nonce(recorder) if hasattr(recorder, "writer") else None
    return store_id(first[0], nonce)
