"""What the event store adapter raises to the application and the entry points."""

from __future__ import annotations


class EventStoreUnavailable(RuntimeError):
    """The event store cannot be reached; nothing was recorded."""


class OutcomeUnknown(EventStoreUnavailable):
    """The event store failed while a command was being committed and cannot be asked yet
    whether the commit went through: it may have been recorded (a retry with the same
    Idempotency-Key records nothing twice)."""
