"""Which notices were sent about a case (issue #18): the case's index of its notifications.

A ``Notification`` is its own record, with an id derived from (recipient, kind, subject): a
case's notices cannot be found from the case's id alone. ``CaseNotices`` is the case's list of
them, recorded in the same commit as the notices it names, so the custody trail finds a case's
notices by two key look-ups instead of a scan of the whole log, and the list is in the hash
chain like every other event: a notice the list names that the log no longer holds shows.

It lives in a record of its own (like the personal-data read log) so that telling people
about a case never changes the case's version.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.errors import InvalidCommand
from domain.recording import RecordedAggregate

CASE_NOTICES_NAMESPACE = UUID("8e3b1c52-7a4d-4f09-b6e1-3d5c2a9f0e71")


def case_notices_id(case_id: UUID) -> UUID:
    """The id of a case's index of notices."""
    return uuid5(CASE_NOTICES_NAMESPACE, f"case-notices:{case_id}")


class CaseNotices(RecordedAggregate):
    """The notifications recorded about one case, in the order they were recorded."""

    class Started(Aggregate.Created):
        case_id: UUID

    class Indexed(Aggregate.Event):
        """These notifications (ids of ``Notification`` records) were recorded about the
        case, in the same commit as this event."""

        notices: tuple[UUID, ...]

    @classmethod
    def start(cls, *, case_id: UUID, at: datetime) -> CaseNotices:
        """The (empty) index of a case, created with its first notice."""
        return cls(case_id=case_id, timestamp=at)

    @staticmethod
    def create_id(case_id: UUID, **_: object) -> UUID:
        return case_notices_id(case_id)

    @event(Started)
    def __init__(self, *, case_id: UUID, timestamp: datetime) -> None:
        self.case_id = case_id
        self.notices: tuple[UUID, ...] = ()

    def index(self, *, notices: tuple[UUID, ...], at: datetime) -> None:
        """Name ``notices`` as recorded about the case (each at most once)."""
        if not notices:
            raise InvalidCommand("an index entry names at least one notice")
        if len(set(notices)) != len(notices) or set(notices) & set(self.notices):
            raise InvalidCommand("a notice is indexed once")
        self._indexed(notices=notices, timestamp=max(at, self.modified_on))

    @event(Indexed)
    def _indexed(self, *, notices: tuple[UUID, ...], timestamp: datetime) -> None:
        self.notices = (*self.notices, *notices)
