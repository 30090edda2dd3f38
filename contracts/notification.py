"""Messages about telling staff (issue #18): contact records and the notices sent.

A contact message says whose account it is, for which organisation and role, on which
channels and when: never the address itself (``has_email`` and ``has_phone`` say whether
one is kept). A notification message says who was told, of what kind, about which subject
(a case id, a case's action and deadline, or a day), and when: never where to.
"""

from __future__ import annotations

from datetime import time
from uuid import UUID

import msgspec

from contracts.actors import ActorRef
from contracts.envelope import EventData, Version
from contracts.vocabulary import NotificationChannel, NotificationDelivery, NotificationKind, Role


class QuietHoursV1(msgspec.Struct, frozen=True, kw_only=True):
    """Local hours in ``zone`` (an IANA name) when only urgent notices are sent."""

    start: time
    end: time
    zone: str


class StaffContactEventData(EventData, frozen=True, kw_only=True):
    """Fields of every contact message: the record, its version after the event, who acted."""

    contact_id: UUID
    version: Version
    actor: ActorRef


class StaffContactRegisteredV1(StaffContactEventData, frozen=True, kw_only=True):
    """``user`` (an account identifier) can be reached, for ``organisation`` in ``role``."""

    user: str
    organisation: str
    role: Role
    channels: tuple[NotificationChannel, ...]
    quiet_hours: QuietHoursV1 | None
    delivery: NotificationDelivery
    has_email: bool
    has_phone: bool


class StaffContactChangedV1(StaffContactEventData, frozen=True, kw_only=True):
    """The account's addresses or preferences were replaced."""

    organisation: str
    role: Role
    channels: tuple[NotificationChannel, ...]
    quiet_hours: QuietHoursV1 | None
    delivery: NotificationDelivery
    has_email: bool
    has_phone: bool


class StaffContactPersonalDataErasedV1(StaffContactEventData, frozen=True, kw_only=True):
    """The account's addresses were destroyed: it can no longer be reached."""


class NotificationEventData(EventData, frozen=True, kw_only=True):
    """Fields of every notification message: one notice to one account (its id follows
    from recipient, kind and subject, so there is at most one of each)."""

    notification_id: UUID
    version: Version
    recipient: str
    kind: NotificationKind
    about: str
    case_id: UUID | None
    urgent: bool
    count: int


class NotificationSentV1(NotificationEventData, frozen=True, kw_only=True):
    """The notice was accepted for delivery on ``channels`` after ``attempts`` tries."""

    channels: tuple[NotificationChannel, ...]
    attempts: int


class NotificationGivenUpV1(NotificationEventData, frozen=True, kw_only=True):
    """The notice could not be delivered (``reason``: a short code such as
    ``no_address`` or ``send_failed``); it shows in the coordinator's digest."""

    attempts: int
    reason: str
