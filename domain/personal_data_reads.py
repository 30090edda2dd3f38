"""Every read of a case's personal data is recorded: who, when, which case, which fields.

The record belongs to the case's custody trail but lives in an aggregate of its own, so that
reading a case never changes the case's version (a focal point who reads and then acts must
not be refused because of their own read).
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.actors import Actor
from domain.errors import InvalidCommand
from domain.recording import RecordedAggregate

READS_NAMESPACE = UUID("5d0c3f8a-3c55-4f0e-8f6e-2b9a41c7d6a3")


def reads_id(case_id: UUID) -> UUID:
    """The id of a case's personal-data read log."""
    return uuid5(READS_NAMESPACE, f"personal-data-reads:{case_id}")


class PersonalDataReads(RecordedAggregate):
    """The log of who read which personal fields of one case."""

    class Started(Aggregate.Created):
        case_id: UUID

    class Read(Aggregate.Event):
        actor: Actor
        fields: tuple[str, ...]
        purpose: str

    @classmethod
    def start(cls, *, case_id: UUID, at: datetime) -> PersonalDataReads:
        """The (empty) read log of a case, created with its first read."""
        return cls(case_id=case_id, timestamp=at)

    @staticmethod
    def create_id(case_id: UUID, **_: object) -> UUID:
        return reads_id(case_id)

    @event(Started)
    def __init__(self, *, case_id: UUID, timestamp: datetime) -> None:
        self.case_id = case_id
        self.reads: tuple[tuple[datetime, Actor, tuple[str, ...]], ...] = ()

    def record(self, *, actor: Actor, fields: tuple[str, ...], purpose: str, at: datetime) -> None:
        """Record that ``actor`` was shown ``fields`` (dotted field names, never values)."""
        if not fields:
            raise InvalidCommand("a personal-data read names the fields it showed")
        self._read(actor=actor, fields=tuple(sorted(set(fields))), purpose=purpose, timestamp=at)

    @event(Read)
    def _read(
        self, *, actor: Actor, fields: tuple[str, ...], purpose: str, timestamp: datetime
    ) -> None:
        self.reads = (*self.reads, (timestamp, actor, fields))
