"""No personal data in any notification (issue #18): a canary in every personal field of
every event class is in no email, no SMS, no log line and no notification event (stored or
published); the staff's own addresses are only where they must be: the envelope they are
sent to."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog.testing

from domain.actors import Actor, Role
from domain.notification import Notification
from services.application.store import is_published
from services.bootstrap import complaint_mechanism
from services.notify import scheduler
from services.notify.channels import channels_from
from services.notify.intake import NotifierIntake
from services.notify.sender import Sender
from services.notify.settings import NotifySettings
from services.projector.runner import apply_batch, open_projection
from services.relay.translation import encode, to_cloud_event
from services.settings import Settings
from tests.canary import INVESTIGATOR, PROVIDER, new_canaries, walk_every_event_type
from tests.conftest import T0
from tests.notify_world import SmsGateway, SmtpServer, register_email
from tests.world import COORDINATOR


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[SmtpServer, SmsGateway]]:
    smtp, gateway = SmtpServer(tmp_path).start(), SmsGateway().start()
    yield smtp, gateway
    smtp.stop()
    gateway.stop()


@pytest.mark.postgres
async def test_no_canary_reaches_a_message_a_log_line_or_a_notification_event(
    tmp_path: Path, servers: tuple[SmtpServer, SmsGateway], store_url: str
) -> None:
    smtp, gateway = servers
    # given a store where every personal field holds a canary, and contacts for everyone
    # the walk involves (the focal point's own address and number are canaries too)
    store = Settings(data_dir=tmp_path / "d", event_store=store_url)
    app = complaint_mechanism(store)
    canaries = new_canaries()
    before = T0 - timedelta(hours=1)
    for actor in (INVESTIGATOR, PROVIDER, COORDINATOR, Actor("fp-b1", "ngo-b", Role.FOCAL_POINT)):
        register_email(
            app,
            COORDINATOR,
            user=actor.user,
            organisation=actor.agency,
            role=actor.role,
            email_address=f"{actor.user}@staff.test",
            at=before,
        )
    await asyncio.to_thread(walk_every_event_type, app, canaries)
    settings = NotifySettings(
        smtp_host="127.0.0.1",
        smtp_port=smtp.port,
        smtp_ca_file=smtp.cert,
        sms_gateway_url=gateway.url,
        notify_inbox_url="https://cbcm.test",
    )
    now = T0.replace(hour=12)
    clock = [now]
    intake = NotifierIntake(now=T0 - timedelta(days=1))
    db = open_projection(intake, tmp_path / "notify.sqlite3")
    sender = Sender(
        db,
        app,
        channels_from(settings),
        base_url=settings.notify_inbox_url,
        max_attempts=2,
        retry_base=1,
        retry_max=1,
        clock=lambda: clock[0],
    )

    # when the notifier takes in the whole log, sends, and the clock runs on for days
    with structlog.testing.capture_logs() as logs:
        messages = []
        for n in app.recorder.select_notifications(start=1, limit=10_000):
            event = app.mapper.to_domain_event(n)
            if is_published(event):
                messages.append((n.id, to_cloud_event(event, source="urn:t", position=n.id)))
        apply_batch(intake, db, messages)
        for hours in (0, 30, 24 * 40):
            clock[0] = now + timedelta(hours=hours)
            scheduler.tick(db, clock[0], due_soon=timedelta(hours=4), digest_hour=6)
            while await sender.run_once():
                pass
    kinds = {r[0] for r in db.execute("SELECT DISTINCT kind FROM notify_outbox")}
    db.close()

    # then notices of every kind the walk calls for went out
    assert {
        "urgent_case",
        "new_case",
        "transfer_received",
        "investigation_referral",
        "assistance_referral",
        "action_overdue",
        "coordinator_digest",
    } <= kinds
    assert smtp.mails and gateway.messages
    addresses = {"contact.email", "contact.phone"}
    sent = b"\n".join(m.raw for m in smtp.mails) + b"\n".join(s.body for s in gateway.messages)
    # ... and no case's personal data is in any of them
    assert _found(canaries, sent, skip=addresses) == []
    # ... the focal point's own address only where it was sent to
    assert any(canaries["contact.email"] in m.to for m in smtp.mails)
    # and nothing personal, staff addresses included, in any log line
    assert logs
    assert _found(canaries, repr(logs).encode()) == []
    # nor in any notification event, stored or as published
    notices: list[Any] = []
    for n in app.recorder.select_notifications(start=1, limit=100_000):
        event = app.mapper.to_domain_event(n)
        if isinstance(event, Notification.Sent | Notification.GivenUp):
            notices.append(event)
    assert len(notices) > 10
    stored = "\n".join(repr(e) for e in notices).encode()
    published = b"\n".join(encode(to_cloud_event(e, source="urn:t")) for e in notices)
    assert _found(canaries, stored + published) == []
    assert b"@staff.test" not in stored + published
    app.close()


def _found(canaries: dict[str, str], where: bytes, skip: set[str] | None = None) -> list[str]:
    return [
        field
        for field, canary in canaries.items()
        if field not in (skip or set())
        and (canary.encode() in where or canary.removeprefix("CANARY-").encode() in where)
    ]
