"""Staff contacts and notices in the domain (issue #18): who keeps a contact, what a
contact needs, quiet hours across midnight and zones, one notice per key."""

from __future__ import annotations

from datetime import UTC, datetime, time

import pytest

from domain.actors import Actor, Role
from domain.errors import ActionNotPermitted, InvalidCode, InvalidCommand
from domain.notification import (
    Notification,
    QuietHours,
    StaffContact,
    contact_id,
    notification_id,
)
from domain.vocabulary import NotificationChannel, NotificationDelivery, NotificationKind

AT = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
ME = Actor("fp-1", "unhcr", Role.FOCAL_POINT)
COLLEAGUE = Actor("fp-2", "unhcr", Role.FOCAL_POINT)
COORDINATOR = Actor("coord-1", "ocha", Role.COORDINATOR)


def register(actor: Actor, **changes: object) -> StaffContact:
    values: dict[str, object] = {
        "user": "fp-1",
        "organisation": "unhcr",
        "role": Role.FOCAL_POINT,
        "email": "fp-1@unhcr.test",
        "phone": None,
        "channels": (NotificationChannel.EMAIL,),
        "quiet_hours": None,
        "delivery": NotificationDelivery.IMMEDIATE,
        "at": AT,
    }
    values.update(changes)
    return StaffContact.register(actor=actor, **values)  # type: ignore[arg-type]


def test_a_person_or_the_coordinator_keeps_a_contact_and_no_colleague_does() -> None:
    assert register(ME).id == contact_id("fp-1")
    assert register(COORDINATOR).user == "fp-1"
    with pytest.raises(ActionNotPermitted):
        register(COLLEAGUE)
    contact = register(ME)
    with pytest.raises(ActionNotPermitted):
        contact.erase_personal_data(actor=COLLEAGUE, at=AT)


@pytest.mark.parametrize(
    "changes",
    [
        {"email": "no-at-sign"},
        {"channels": (NotificationChannel.SMS,)},
        {"phone": "0812345678", "channels": (NotificationChannel.SMS,)},
        {"channels": ()},
        {"channels": (NotificationChannel.EMAIL, NotificationChannel.EMAIL)},
    ],
)
def test_a_contact_needs_an_address_for_each_channel(changes: dict[str, object]) -> None:
    with pytest.raises(InvalidCommand):
        register(ME, **changes)


def test_a_contact_is_for_an_account_id_not_a_name() -> None:
    with pytest.raises(InvalidCode):
        register(COORDINATOR, user="Jane Doe")


def test_an_erased_contact_has_no_address_and_cannot_be_erased_twice() -> None:
    contact = register(ME)
    contact.erase_personal_data(actor=ME, at=AT)
    assert contact.address(NotificationChannel.EMAIL) is None
    with pytest.raises(InvalidCommand):
        contact.erase_personal_data(actor=ME, at=AT)


@pytest.mark.parametrize(
    ("at", "until"),
    [
        (datetime(2026, 3, 2, 21, 30, tzinfo=UTC), datetime(2026, 3, 3, 5, 0, tzinfo=UTC)),
        (datetime(2026, 3, 3, 3, 0, tzinfo=UTC), datetime(2026, 3, 3, 5, 0, tzinfo=UTC)),
        (datetime(2026, 3, 2, 12, 0, tzinfo=UTC), None),
        (datetime(2026, 3, 2, 20, 59, tzinfo=UTC), None),
    ],
)
def test_quiet_hours_across_midnight_in_the_persons_zone(
    at: datetime, until: datetime | None
) -> None:
    quiet = QuietHours(time(22, 0), time(6, 0), "Africa/Kinshasa")  # UTC+1
    assert quiet.quiet_until(at) == until


def test_quiet_hours_need_two_times_and_a_known_zone() -> None:
    with pytest.raises(InvalidCommand):
        QuietHours(time(22, 0), time(22, 0))
    with pytest.raises(InvalidCommand):
        QuietHours(time(22, 0), time(6, 0), "Mars/Olympus")


def test_a_notice_is_one_per_recipient_kind_and_subject() -> None:
    def sent(about: str) -> Notification:
        return Notification.sent(
            recipient="fp-1",
            kind=NotificationKind.NEW_CASE,
            about=about,
            case_id=None,
            urgent=False,
            count=1,
            channels=(NotificationChannel.EMAIL,),
            attempts=1,
            at=AT,
        )

    assert sent("a").id == sent("a").id == notification_id("fp-1", NotificationKind.NEW_CASE, "a")
    assert sent("a").id != sent("b").id
    with pytest.raises(InvalidCommand):
        sent("not a subject: it has spaces")
