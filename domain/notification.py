"""Telling staff that something waits for them (issue #18): their contact records, and the
notifications the network sent or gave up on.

A ``StaffContact`` is one account's addresses and preferences. The addresses are personal
data of staff (``PersonalText``): sealed at rest under the record's own data key, never
published, erasable. The person registers their own; the coordinator registers anyone's.

A ``Notification`` is one notice to one account, of one kind, about one subject: its id is
derived from that triple (``notification_id``), so the log can hold at most one of each. It
is created sent or given up, and never changes. It names the account, the kind, when, the
channels used and how many attempts it took: never an address, never the case's content.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import TypedDict, Unpack
from uuid import UUID, uuid5
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from eventsourcing.domain import Aggregate, event

from domain.actors import Actor, Role, validate_code, validate_user
from domain.errors import ActionNotPermitted, InvalidCommand
from domain.personal_data import ERASED, PersonalText
from domain.recording import RecordedAggregate
from domain.vocabulary import NotificationChannel, NotificationDelivery, NotificationKind

CONTACT_NAMESPACE = UUID("0b8a3f1e-6d2c-4e8a-9a57-2f4c1d9e7b31")
NOTIFICATION_NAMESPACE = UUID("5c7d2e90-3b1a-4f6e-8d42-9e0a1b2c3d4e")

EMAIL_PATTERN = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,189}\.[^@\s]{1,63}$")
PHONE_PATTERN = re.compile(r"^\+[1-9][0-9]{6,14}$")
"""E.164: what every SMS gateway takes."""
ABOUT_PATTERN = re.compile(r"^[A-Za-z0-9._:+-]{1,200}$")
"""What a notification is about: a case id, a case id with an action and its deadline, or
a day (ids and codes only: nothing a person typed)."""
REASON_PATTERN = re.compile(r"^[a-z0-9_]{1,64}$")

URGENT_KINDS = frozenset({NotificationKind.URGENT_CASE})
"""Kinds that go through whatever the person's quiet hours or digest preference."""


def contact_id(user: str) -> UUID:
    """The id of ``user``'s contact record (one per account)."""
    return uuid5(CONTACT_NAMESPACE, f"staff-contact:{user}")


def notification_key(recipient: str, kind: NotificationKind | str, about: str) -> str:
    """The one key of a notice: who, which kind, about what."""
    return f"{recipient}|{NotificationKind(kind).value}|{about}"


def notification_id(recipient: str, kind: NotificationKind | str, about: str) -> UUID:
    """The id of the one notice of ``kind`` to ``recipient`` about ``about``."""
    return uuid5(NOTIFICATION_NAMESPACE, notification_key(recipient, kind, about))


@dataclass(frozen=True)
class QuietHours:
    """Hours (local to ``zone``) during which only urgent notices are sent; the others wait
    until ``end``. ``start`` after ``end`` spans midnight (22:00 to 06:00)."""

    start: time
    end: time
    zone: str = "UTC"

    def __post_init__(self) -> None:
        if self.start == self.end:
            raise InvalidCommand("quiet hours need a start and an end that differ")
        if self.start.tzinfo is not None or self.end.tzinfo is not None:
            raise InvalidCommand("quiet hours are local times: give the zone separately")
        try:
            ZoneInfo(self.zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise InvalidCommand(f"unknown time zone {self.zone!r}") from None

    def quiet_until(self, at: datetime) -> datetime | None:
        """When the quiet hours around ``at`` end (``None``: ``at`` is not in them)."""
        local = at.astimezone(ZoneInfo(self.zone))
        now = local.time().replace(tzinfo=None)
        spans_midnight = self.start > self.end
        inside = (
            (now >= self.start or now < self.end)
            if spans_midnight
            else self.start <= now < self.end
        )
        if not inside:
            return None
        end = local.replace(hour=self.end.hour, minute=self.end.minute, second=0, microsecond=0)
        if end <= local:
            end += timedelta(days=1)
        return end.astimezone(at.tzinfo)


def _require_self_or_coordinator(actor: Actor, user: str) -> None:
    if actor.role is Role.COORDINATOR or actor.user == user:
        return
    raise ActionNotPermitted("only the person or the network coordinator keeps their contact")


class ContactPreferences(TypedDict):
    """A staff contact's addresses and preferences, as its commands (``StaffContact.register``
    and ``change``, and the application's ``register_staff_contact``) take them. The events
    and the methods that apply them name each field themselves: they are what is stored."""

    organisation: str
    role: Role
    email: str | None
    phone: str | None
    channels: tuple[NotificationChannel, ...]
    quiet_hours: QuietHours | None
    delivery: NotificationDelivery


def _check_preferences(preferences: ContactPreferences) -> None:
    email, phone, channels = preferences["email"], preferences["phone"], preferences["channels"]
    if email is not None and not EMAIL_PATTERN.fullmatch(email):
        raise InvalidCommand("email is not an e-mail address")
    if phone is not None and not PHONE_PATTERN.fullmatch(phone):
        raise InvalidCommand("phone is not an E.164 number (+ and 7 to 15 digits)")
    if not channels:
        raise InvalidCommand("a contact needs at least one channel")
    if len(set(channels)) != len(channels):
        raise InvalidCommand("a channel is named twice")
    if NotificationChannel.EMAIL in channels and email is None:
        raise InvalidCommand("the email channel needs an email address")
    if NotificationChannel.SMS in channels and phone is None:
        raise InvalidCommand("the sms channel needs a phone number")


class StaffContact(RecordedAggregate):
    """How to reach one staff account, and when."""

    class Registered(Aggregate.Created):
        actor: Actor
        user: str
        organisation: str
        role: Role
        email: PersonalText | None
        phone: PersonalText | None
        channels: tuple[NotificationChannel, ...]
        quiet_hours: QuietHours | None
        delivery: NotificationDelivery

    class Changed(Aggregate.Event):
        actor: Actor
        organisation: str
        role: Role
        email: PersonalText | None
        phone: PersonalText | None
        channels: tuple[NotificationChannel, ...]
        quiet_hours: QuietHours | None
        delivery: NotificationDelivery

    class PersonalDataErased(Aggregate.Event):
        """The record's data key was destroyed: its addresses can no longer be read."""

        actor: Actor

    @staticmethod
    def create_id(user: str, **_: object) -> UUID:
        return contact_id(user)

    @classmethod
    def register(
        cls, *, actor: Actor, user: str, at: datetime, **preferences: Unpack[ContactPreferences]
    ) -> StaffContact:
        """Record how to reach ``user`` (the person themself, or the coordinator)."""
        validate_user(user)
        validate_code("organisation", preferences["organisation"])
        _require_self_or_coordinator(actor, user)
        _check_preferences(preferences)
        return cls(actor=actor, user=user, timestamp=at, **preferences)

    @event(Registered)
    def __init__(
        self,
        *,
        actor: Actor,
        user: str,
        organisation: str,
        role: Role,
        email: str | None,
        phone: str | None,
        channels: tuple[NotificationChannel, ...],
        quiet_hours: QuietHours | None,
        delivery: NotificationDelivery,
        timestamp: datetime,
    ) -> None:
        self.user = user
        self.organisation = organisation
        self.role = role
        self.email = email
        self.phone = phone
        self.channels = channels
        self.quiet_hours = quiet_hours
        self.delivery = delivery
        self.erased = False

    def change(
        self, *, actor: Actor, at: datetime, **preferences: Unpack[ContactPreferences]
    ) -> None:
        """Replace the addresses and preferences (after an erasure too: new ones are sealed
        under a new key)."""
        validate_code("organisation", preferences["organisation"])
        _require_self_or_coordinator(actor, self.user)
        _check_preferences(preferences)
        self._changed(actor=actor, timestamp=at, **preferences)

    @event(Changed)
    def _changed(
        self,
        *,
        actor: Actor,
        organisation: str,
        role: Role,
        email: str | None,
        phone: str | None,
        channels: tuple[NotificationChannel, ...],
        quiet_hours: QuietHours | None,
        delivery: NotificationDelivery,
        timestamp: datetime,
    ) -> None:
        self.organisation = organisation
        self.role = role
        self.email = email
        self.phone = phone
        self.channels = channels
        self.quiet_hours = quiet_hours
        self.delivery = delivery
        self.erased = False

    def erase_personal_data(self, *, actor: Actor, at: datetime) -> None:
        """Destroy the addresses for good (the person, or the coordinator)."""
        _require_self_or_coordinator(actor, self.user)
        if self.erased:
            raise InvalidCommand(f"the contact of {self.user!r} is already erased")
        self._personal_data_erased(actor=actor, timestamp=at)

    @event(PersonalDataErased)
    def _personal_data_erased(self, *, actor: Actor, timestamp: datetime) -> None:
        self.email = None if self.email is None else ERASED
        self.phone = None if self.phone is None else ERASED
        self.erased = True

    def address(self, channel: NotificationChannel) -> str | None:
        """Where to send on ``channel`` (``None``: none, or erased)."""
        if self.erased:
            return None
        value = self.email if channel is NotificationChannel.EMAIL else self.phone
        return None if value is None or value == ERASED else value


def _check_notice(recipient: str, about: str, attempts: int) -> None:
    validate_user(recipient)
    if not ABOUT_PATTERN.fullmatch(about):
        raise InvalidCommand("a notification is about an id, a code or a day")
    if attempts < 0:
        raise InvalidCommand("attempts cannot be negative")


class Notification(RecordedAggregate):
    """One notice to one account: sent, or given up on. Created once, never changed."""

    class Sent(Aggregate.Created):
        recipient: str
        kind: NotificationKind
        about: str
        case_id: UUID | None
        urgent: bool
        count: int
        channels: tuple[NotificationChannel, ...]
        attempts: int

    class GivenUp(Aggregate.Created):
        recipient: str
        kind: NotificationKind
        about: str
        case_id: UUID | None
        urgent: bool
        count: int
        attempts: int
        reason: str

    @classmethod
    def sent(
        cls,
        *,
        recipient: str,
        kind: NotificationKind,
        about: str,
        case_id: UUID | None,
        urgent: bool,
        count: int,
        channels: tuple[NotificationChannel, ...],
        attempts: int,
        at: datetime,
    ) -> Notification:
        """Record that the notice was accepted for delivery on ``channels``."""
        _check_notice(recipient, about, attempts)
        if not channels:
            raise InvalidCommand("a sent notice names the channels that took it")
        notice: Notification = cls._create(
            cls.Sent,
            id=notification_id(recipient, kind, about),
            recipient=recipient,
            kind=kind,
            about=about,
            case_id=case_id,
            urgent=urgent,
            count=count,
            channels=channels,
            attempts=attempts,
            timestamp=at,
        )
        return notice

    @classmethod
    def given_up(
        cls,
        *,
        recipient: str,
        kind: NotificationKind,
        about: str,
        case_id: UUID | None,
        urgent: bool,
        count: int,
        attempts: int,
        reason: str,
        at: datetime,
    ) -> Notification:
        """Record that the notice could not be delivered (``reason``: a short code)."""
        _check_notice(recipient, about, attempts)
        if not REASON_PATTERN.fullmatch(reason):
            raise InvalidCommand("a reason is a short code")
        notice: Notification = cls._create(
            cls.GivenUp,
            id=notification_id(recipient, kind, about),
            recipient=recipient,
            kind=kind,
            about=about,
            case_id=case_id,
            urgent=urgent,
            count=count,
            attempts=attempts,
            reason=reason,
            timestamp=at,
        )
        return notice
