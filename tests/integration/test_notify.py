"""The notifier against real servers (issue #18): a STARTTLS SMTP server (aiosmtpd) and an
HTTP SMS gateway, fed by the real relay over a real nats-server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nats
import pytest

from contracts.subjects import STREAM
from domain.actors import Role
from domain.notification import Notification, notification_id
from domain.vocabulary import (
    Channel,
    ComplainantRole,
    NotificationChannel,
    NotificationDelivery,
    NotificationKind,
)
from projections.base import open_read_model
from services.application.mechanism import ComplaintMechanism
from services.bootstrap import complaint_mechanism
from services.nats.server import EmbeddedNats
from services.notify import outbox, scheduler
from services.notify.channels import channels_from
from services.notify.intake import NotifierIntake
from services.notify.sender import Sender
from services.notify.service import notifier_path, run_notifier
from services.notify.settings import NotifySettings
from services.projector.runner import open_projection, read_position, run_projector
from services.relay.relay import run_relay
from services.settings import Settings
from tests.notify_world import SmsGateway, SmtpServer, register_email
from tests.world import COORDINATOR, OPERATOR, establish

FP1, FP2, FP_NONE = "fp-unhcr-1", "fp-unhcr-2", "fp-unhcr"
FP1_MAIL = "fp1@unhcr.test"
FP2_PHONE = "+243810000001"


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[SmtpServer]:
    server = SmtpServer(tmp_path).start()
    yield server
    server.stop()


@pytest.fixture
def gateway() -> Iterator[SmsGateway]:
    server = SmsGateway().start()
    yield server
    server.stop()


def notify_settings(smtp: SmtpServer, gateway: SmsGateway, **more: Any) -> NotifySettings:
    return NotifySettings(
        smtp_host="127.0.0.1",
        smtp_port=smtp.port,
        smtp_ca_file=smtp.cert,
        smtp_from="cbcm@network.test",
        sms_gateway_url=gateway.url,
        sms_gateway_style="rapidpro",
        sms_gateway_token="gateway-token",
        notify_inbox_url="https://cbcm.network.test",
        **more,
    )


def network_with_contacts(app: ComplaintMechanism, at: datetime) -> None:
    establish(app, at)
    register_email(
        app,
        COORDINATOR,
        user=FP1,
        organisation="unhcr",
        role=Role.FOCAL_POINT,
        email_address=FP1_MAIL,
        at=at,
    )
    app.register_staff_contact(
        actor=COORDINATOR,
        user=FP2,
        organisation="unhcr",
        role=Role.FOCAL_POINT,
        email=None,
        phone=FP2_PHONE,
        channels=(NotificationChannel.SMS,),
        quiet_hours=None,
        delivery=NotificationDelivery.IMMEDIATE,
        at=at,
    )
    register_email(
        app,
        COORDINATOR,
        user="coord-1",
        organisation="ocha",
        role=Role.COORDINATOR,
        email_address="coordinator@ocha.test",
        at=at,
    )


def receive(app: ComplaintMechanism, at: datetime, *, urgent: bool) -> Any:
    return app.receive_complaint(
        actor=OPERATOR,
        at=at,
        received_at=at,
        channel=Channel.HOTLINE,
        complainant_role=ComplainantRole.ANONYMOUS,
        immediate_safety_risk=urgent,
        narrative="what was said",
    )


@pytest.fixture
def store(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data", event_store=f"sqlite:///{tmp_path / 'events.sqlite3'}"
    )


@pytest.fixture
async def stack(
    store: Settings, nats_server: EmbeddedNats, smtp: SmtpServer, gateway: SmsGateway
) -> AsyncIterator[ComplaintMechanism]:
    """The relay and the notifier running, each on its own application over one store."""
    app = complaint_mechanism(store)
    notifier_app = complaint_mechanism(store)
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(run_relay(store, stop, nats_server.url)),
        asyncio.create_task(
            run_notifier(
                notifier_app,
                notify_settings(smtp, gateway),
                store.data_dir,
                nats_server.url,
                stop,
            )
        ),
    ]
    try:
        yield app
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        app.close()
        notifier_app.close()


async def eventually(condition: Any, bound: float, what: str) -> None:
    deadline = time.monotonic() + bound
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {bound}s waiting for {what}")
        await asyncio.sleep(0.02)


async def test_an_urgent_complaint_reaches_the_focal_points_within_a_minute_of_the_write(
    stack: ComplaintMechanism, smtp: SmtpServer, gateway: SmsGateway, nats_server: EmbeddedNats
) -> None:
    # given the unhcr focal points: one by email, one by SMS, one who registered no contact
    app = stack
    now = datetime.now(UTC)
    await asyncio.to_thread(network_with_contacts, app, now)

    # when an intake operator records a complaint flagged as an immediate safety risk
    written_at = time.monotonic()
    written = await asyncio.to_thread(receive, app, datetime.now(UTC), urgent=True)

    # then the email focal point's mailbox has it, over STARTTLS, within 60 s of the write
    await eventually(lambda: any(FP1_MAIL in m.to for m in smtp.mails), 60, "the email")
    mail = next(m for m in smtp.mails if FP1_MAIL in m.to)
    assert mail.arrived - written_at < 60
    print(f"\nurgent complaint -> focal point's mailbox: {mail.arrived - written_at:.2f} s")
    assert mail.tls
    assert mail.subject == "[PSEA] 1 urgent case (immediate safety risk)"
    assert "https://cbcm.network.test/v1/inbox/unhcr" in mail.body
    assert str(written.id) not in mail.raw.decode()
    # ... and the SMS focal point's phone, through the gateway's JSON API
    await eventually(lambda: gateway.messages, 60, "the SMS")
    sms = gateway.messages[0]
    assert sms.fields["urns"] == [f"tel:{FP2_PHONE}"]
    assert sms.fields["text"].startswith("1 urgent case")
    assert sms.headers["Authorization"] == "Token gateway-token"
    assert sms.arrived - written_at < 60

    # and the log says who was told, and that the one without a contact could not be
    def notice(user: str) -> Any:
        return notification_id(user, NotificationKind.URGENT_CASE, str(written.id))

    await eventually(
        lambda: all(app.notification_recorded(notice(u)) for u in (FP1, FP2, FP_NONE)),
        30,
        "three notification events",
    )
    stored = {
        user: app.mapper.to_domain_event(app.recorder.select_events(notice(user))[0])
        for user in (FP1, FP2, FP_NONE)
    }
    assert isinstance(stored[FP1], Notification.Sent)
    assert stored[FP1].channels == (NotificationChannel.EMAIL,)
    assert isinstance(stored[FP2], Notification.Sent)
    assert stored[FP2].channels == (NotificationChannel.SMS,)
    assert isinstance(stored[FP_NONE], Notification.GivenUp)
    assert stored[FP_NONE].reason == "no_address"
    # ... published on the network's subject, with no address in it
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()

        async def published() -> bytes | None:
            try:
                msg = await js.get_last_msg(STREAM, "cbcm.v1.evt.network.notification.given_up")
            except nats.js.errors.NotFoundError:
                return None
            return msg.data

        deadline = time.monotonic() + 30
        data = await published()
        while data is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            data = await published()
        assert data is not None
        assert b'"reason":"no_address"' in data
        sent = await js.get_last_msg(STREAM, "cbcm.v1.evt.network.notification.sent")
        assert FP1_MAIL.encode() not in sent.data
        assert FP2_PHONE.encode() not in sent.data
    finally:
        await nc.close()


class Clock:
    """A clock the test moves."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def move(self, by: timedelta) -> None:
        self.now += by


async def test_deadlines_move_with_the_clock_due_soon_and_overdue_arrive_once_each(
    store: Settings, nats_server: EmbeddedNats, smtp: SmtpServer, gateway: SmsGateway
) -> None:
    # given a case received now at unhcr, projected into the notifier's intake
    app = complaint_mechanism(store)
    start = datetime.now(UTC).replace(microsecond=0)
    clock = Clock(start)
    await asyncio.to_thread(network_with_contacts, app, start)
    case = await asyncio.to_thread(receive, app, start, urgent=False)
    stop = asyncio.Event()
    settings = notify_settings(smtp, gateway)
    path = notifier_path(store.data_dir)
    # the intake runs as in the service; the test ticks the scheduler and the sender itself
    tasks = [
        asyncio.create_task(run_relay(store, stop, nats_server.url)),
        asyncio.create_task(run_projector(NotifierIntake(now=start), path, nats_server.url, stop)),
    ]
    try:
        last = app.recorder.max_notification_id()
        await eventually(lambda: read_position(path) == last, 30, "the intake at the head")
        db = open_read_model(path)
        sender = Sender(
            db,
            app,
            channels_from(settings),
            base_url=settings.notify_inbox_url,
            max_attempts=3,
            retry_base=1,
            retry_max=1,
            clock=clock,
        )

        async def tick_and_send() -> None:
            await asyncio.to_thread(
                scheduler.tick, db, clock(), due_soon=timedelta(hours=4), digest_hour=23
            )
            await sender.run_once()

        def mails_to_fp1(subject: str) -> int:
            return sum(1 for m in smtp.mails if FP1_MAIL in m.to and m.subject == subject)

        await sender.run_once()
        assert mails_to_fp1("[PSEA] 1 new case") == 1

        # when the clock moves through the assessment deadline (24 h), looked at often
        for hours in (1, 10, 19.5, 20.5, 21, 22, 23.5, 24.5, 25, 30, 48, 72):
            clock.now = start + timedelta(hours=hours)
            await tick_and_send()
            await tick_and_send()

        # then "due soon" and "overdue" each reached the focal point once
        assert mails_to_fp1("[PSEA] 1 action due soon") == 1
        assert mails_to_fp1("[PSEA] 1 action overdue") == 1
        rows = db.execute(
            "SELECT kind, about FROM notify_outbox WHERE recipient = ? AND kind LIKE 'action_%'",
            (FP1,),
        ).fetchall()
        assert sorted(r["kind"] for r in rows) == ["action_due_soon", "action_overdue"]
        assert all(r["about"].startswith(f"{case.id}:assess:") for r in rows)
        db.close()
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        app.close()


async def test_a_refusing_server_is_retried_then_given_up_and_counted_in_the_digest(
    tmp_path: Path, smtp: SmtpServer, gateway: SmsGateway
) -> None:
    # given a notice to a focal point and an SMTP server that refuses every attempt
    store = Settings(data_dir=tmp_path / "d", event_store=f"sqlite:///{tmp_path / 'e.sqlite3'}")
    app = complaint_mechanism(store)
    start = datetime.now(UTC).replace(microsecond=0, minute=0, hour=5)
    await asyncio.to_thread(network_with_contacts, app, start)
    settings = notify_settings(smtp, gateway)
    clock = Clock(start)
    db = open_projection(NotifierIntake(now=start), tmp_path / "notify.sqlite3")
    db.execute("BEGIN IMMEDIATE")
    for user, role, org in ((FP1, "focal_point", "unhcr"), ("coord-1", "coordinator", "ocha")):
        db.execute(
            "INSERT INTO notify_contacts VALUES (?, ?, ?, 'email', NULL, NULL, NULL,"
            " 'immediate', 1)",
            (user, org, role),
        )
    outbox.enqueue(db, recipient=FP1, kind=NotificationKind.NEW_CASE, about="case-1", at=start)
    db.execute("COMMIT")
    smtp.refuse_next(100)
    sender = Sender(
        db,
        app,
        channels_from(settings),
        base_url="https://x.test",
        max_attempts=3,
        retry_base=60,
        retry_max=600,
        clock=clock,
    )

    # when the sender tries, and the clock moves past each back-off
    await sender.run_once()
    first = outbox.get(db, "fp-unhcr-1|new_case|case-1")
    assert first is not None and first.state == "pending" and first.attempts == 1
    assert first.next_attempt_at == start + timedelta(seconds=60)
    await sender.run_once()  # not due yet: nothing happens
    assert outbox.get(db, first.key).attempts == 1  # type: ignore[union-attr]
    clock.move(timedelta(seconds=60))
    await sender.run_once()
    assert outbox.get(db, first.key).next_attempt_at == clock() + timedelta(seconds=120)  # type: ignore[union-attr]
    clock.move(timedelta(seconds=120))
    await sender.run_once()

    # then after 3 attempts it is given up, in the outbox and in the log
    last = outbox.get(db, first.key)
    assert last is not None and last.state == "undelivered" and last.attempts == 3
    given_up = app.repository.get(notification_id(FP1, NotificationKind.NEW_CASE, "case-1"))
    assert given_up is not None
    # and the coordinator's digest at the digest hour counts it (the server works again)
    smtp.refuse_next(0)
    clock.now = start.replace(hour=7)
    scheduler.tick(db, clock(), due_soon=timedelta(hours=4), digest_hour=6)
    await sender.run_once()
    digests = [m for m in smtp.mails if "coordinator@ocha.test" in m.to]
    assert len(digests) == 1
    assert digests[0].subject == (
        "[PSEA] 0 actions overdue across the network, 1 notification undelivered"
    )
    db.close()
    app.close()
