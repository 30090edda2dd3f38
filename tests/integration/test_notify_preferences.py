"""Preferences (issue #18): quiet hours hold back all but urgent notices, a digest gathers a
person's notices into one daily message, and the Twilio-style gateway gets its form; against
the real STARTTLS SMTP server and HTTP gateway of ``tests.notify_world``."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import pytest

from domain.actors import Role
from domain.notification import QuietHours
from domain.vocabulary import NotificationChannel, NotificationDelivery, NotificationKind
from services.application.mechanism import ComplaintMechanism
from services.notify import outbox, scheduler
from services.notify.channels import channels_from
from services.notify.intake import NotifierIntake
from services.notify.sender import Sender
from services.notify.settings import NotifySettings
from services.projector.runner import open_projection
from tests.in_memory import in_memory_mechanism
from tests.notify_world import SmsGateway, SmtpServer
from tests.world import COORDINATOR

START = datetime(2026, 6, 1, 21, 0, tzinfo=UTC)  # 23:00 in Juba (UTC+2)
QUIET = QuietHours(time(22, 0), time(6, 0), "Africa/Juba")


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SmtpServer, SmsGateway]]:
    smtp = SmtpServer(tmp_path_factory.mktemp("smtp")).start()
    gateway = SmsGateway().start()
    yield smtp, gateway
    smtp.stop()
    gateway.stop()


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


def _setup(
    tmp_path: Path,
    smtp: SmtpServer,
    gateway: SmsGateway,
    *,
    delivery: NotificationDelivery,
    style: str = "rapidpro",
) -> tuple[ComplaintMechanism, sqlite3.Connection, Sender, Clock]:
    app = in_memory_mechanism()
    app.register_staff_contact(
        actor=COORDINATOR,
        user="fp-1",
        organisation="unhcr",
        role=Role.FOCAL_POINT,
        email=f"fp-1.{tmp_path.name}@unhcr.test",
        phone="+211920000001",
        channels=(NotificationChannel.EMAIL, NotificationChannel.SMS),
        quiet_hours=QUIET,
        delivery=delivery,
        at=START,
    )
    db = open_projection(NotifierIntake(now=START), tmp_path / "notify.sqlite3")
    db.execute(
        "INSERT INTO notify_contacts VALUES ('fp-1', 'unhcr', 'focal_point', 'email,sms',"
        " '22:00:00', '06:00:00', 'Africa/Juba', ?, 1)",
        (delivery.value,),
    )
    settings = NotifySettings(
        smtp_host="127.0.0.1",
        smtp_port=smtp.port,
        smtp_ca_file=smtp.cert,
        sms_gateway_url=gateway.url,
        sms_gateway_style=style,  # type: ignore[arg-type]
        sms_gateway_account="AC123",
        sms_gateway_token="secret",
        sms_from="+15550000000",
    )
    clock = Clock()
    sender = Sender(
        db,
        app,
        channels_from(settings),
        base_url="https://cbcm.test",
        max_attempts=3,
        retry_base=1,
        retry_max=1,
        clock=clock,
    )
    return app, db, sender, clock


def _enqueue(db: sqlite3.Connection, kind: NotificationKind, about: str, at: datetime) -> None:
    db.execute("BEGIN IMMEDIATE")
    outbox.enqueue(
        db,
        recipient="fp-1",
        kind=kind,
        about=about,
        organisation="unhcr",
        urgent=kind is NotificationKind.URGENT_CASE,
        at=at,
    )
    db.execute("COMMIT")


def _mine(smtp: SmtpServer, tmp_path: Path) -> list[str]:
    return [m.subject for m in smtp.mails if f"fp-1.{tmp_path.name}@unhcr.test" in m.to]


async def test_quiet_hours_hold_back_a_new_case_but_not_an_urgent_one(
    tmp_path: Path, servers: tuple[SmtpServer, SmsGateway]
) -> None:
    smtp, gateway = servers
    _, db, sender, clock = _setup(tmp_path, smtp, gateway, delivery=NotificationDelivery.IMMEDIATE)
    # given a new case and an urgent one at 23:00 local time, in the person's quiet hours
    _enqueue(db, NotificationKind.NEW_CASE, "case-new", START)
    _enqueue(db, NotificationKind.URGENT_CASE, "case-urgent", START)

    # when the sender runs now
    await sender.run_once()

    # then only the urgent one went, by email and SMS; the other waits for 06:00 local
    assert _mine(smtp, tmp_path) == ["[PSEA] 1 urgent case (immediate safety risk)"]
    waiting = outbox.get(db, "fp-1|new_case|case-new")
    assert waiting is not None and waiting.state == "pending"
    assert waiting.next_attempt_at == datetime(2026, 6, 2, 4, 0, tzinfo=UTC)
    # when the clock reaches the end of the quiet hours
    clock.now = datetime(2026, 6, 2, 4, 0, tzinfo=UTC)
    await sender.run_once()
    assert _mine(smtp, tmp_path)[-1] == "[PSEA] 1 new case"
    db.close()


async def test_a_digest_gathers_the_days_notices_into_one_message(
    tmp_path: Path, servers: tuple[SmtpServer, SmsGateway]
) -> None:
    smtp, gateway = servers
    _, db, sender, clock = _setup(tmp_path, smtp, gateway, delivery=NotificationDelivery.DIGEST)
    clock.now = START.replace(hour=10)  # noon in Juba: no quiet hours
    # given three notices during the day for someone who chose a digest
    for about in ("a", "b"):
        _enqueue(db, NotificationKind.NEW_CASE, about, clock.now)
    _enqueue(db, NotificationKind.ACTION_OVERDUE, "c", clock.now)
    await sender.run_once()
    assert _mine(smtp, tmp_path) == []

    # when the digest hour comes (07:00 UTC here), twice
    clock.now = START.replace(day=2, hour=7)
    for _ in range(2):
        scheduler.tick(db, clock.now, due_soon=timedelta(hours=4), digest_hour=7)
        await sender.run_once()

    # then one message counts them all
    assert _mine(smtp, tmp_path) == ["[PSEA] 1 action overdue; 2 new cases"]
    states = dict(db.execute("SELECT about, state FROM notify_outbox").fetchall())
    assert states == {"a": "digested", "b": "digested", "c": "digested", "2026-06-02": "sent"}
    db.close()


async def test_a_twilio_style_gateway_gets_its_form_with_basic_auth(
    tmp_path: Path, servers: tuple[SmtpServer, SmsGateway]
) -> None:
    smtp, gateway = servers
    before = len(gateway.messages)
    _, db, sender, _ = _setup(
        tmp_path, smtp, gateway, delivery=NotificationDelivery.IMMEDIATE, style="twilio"
    )
    _enqueue(db, NotificationKind.URGENT_CASE, "case-1", START)
    await sender.run_once()
    sms = gateway.messages[before]
    assert sms.fields == {
        "To": "+211920000001",
        "From": "+15550000000",
        "Body": "1 urgent case (immediate safety risk).\nSee https://cbcm.test/v1/inbox/unhcr",
    }
    assert sms.headers["Authorization"].startswith("Basic ")
    db.close()
