"""Custody of the log itself: the rotation of the writer key (ADR 26).

The writer key marks every commit of the log (ADR 14). When the network replaces it, the
replacement is a fact of the log like any other: an event at the position from which the
new key marks, naming the key it retires, the key that takes over, and the retiring key's
word for the handover (a MAC the application computes; the domain only carries it). The
event holds no personal data and is never published.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.errors import InvalidCommand
from domain.recording import RecordedAggregate

ROTATIONS_NAMESPACE = UUID("6a1f0d7e-2b4c-4e8a-9f31-5c7d2e8b9a04")

KEY_ID_LENGTH = 16


def writer_key_rotation_id(active: str) -> UUID:
    """The id of the rotation that made ``active`` (a writer key id) the writer key."""
    return uuid5(ROTATIONS_NAMESPACE, f"writer-key:{active}")


def _key_id(name: str, value: str) -> None:
    if len(value) != KEY_ID_LENGTH or any(c not in "0123456789abcdef" for c in value):
        raise InvalidCommand(f"{name} must be a writer key id (16 lowercase hex characters)")


class WriterKeyRotation(RecordedAggregate):
    """One rotation of the writer key: from its position on, ``active`` marks every commit
    and ``retired`` marks nothing."""

    class Rotated(Aggregate.Created):
        retired: str
        active: str
        handover: str
        """The retired key's MAC over the store and both key ids (hex)."""

    @classmethod
    def rotate(cls, *, retired: str, active: str, handover: str, at: datetime) -> WriterKeyRotation:
        """Record that ``active`` takes over marking the log from ``retired``."""
        _key_id("the retired key", retired)
        _key_id("the new key", active)
        if retired == active:
            raise InvalidCommand("a rotation replaces the writer key with another key")
        return cls(retired=retired, active=active, handover=handover, timestamp=at)

    @staticmethod
    def create_id(active: str, **_: object) -> UUID:
        return writer_key_rotation_id(active)

    @event(Rotated)
    def __init__(self, *, retired: str, active: str, handover: str, timestamp: datetime) -> None:
        self.retired = retired
        self.active = active
        self.handover = handover
