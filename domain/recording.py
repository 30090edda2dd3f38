"""The base of the domain's aggregates: every event carries the caller's time, with a zone.

The library would read the clock when no timestamp is given; here a missing or zone-less time
is refused instead, so no clock is ever read in the domain and every recorded time is
unambiguous (CloudEvents and auditors need the offset).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from eventsourcing.domain import Aggregate

from domain.errors import EarlierThanLastStep, InvalidCommand


def require_aware(name: str, value: object) -> None:
    """Refuse a time that is missing or has no time zone."""
    if not isinstance(value, datetime):
        raise InvalidCommand(f"{name} must be a datetime, given by the caller")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidCommand(f"{name} must carry a time zone")


class RecordedAggregate(Aggregate):
    """An aggregate whose events are all stamped with a caller-given, zone-aware time."""

    @classmethod
    def _create(cls, event_class: Any, *, id: Any = None, **kwargs: Any) -> Any:
        require_aware("at", kwargs.get("timestamp"))
        return super()._create(event_class, id=id, **kwargs)

    def trigger_event(self, event_class: Any, **kwargs: Any) -> None:
        timestamp = kwargs.get("timestamp")
        require_aware("at", timestamp)
        assert isinstance(timestamp, datetime)
        # A history that runs backwards would make deadlines and audits meaningless.
        if timestamp < self.modified_on:
            raise EarlierThanLastStep(
                f"at {timestamp.isoformat()} is earlier than the last recorded step of "
                f"{self.id} ({self.modified_on.isoformat()})",
                current_version=self.version,
            )
        super().trigger_event(event_class, **kwargs)
