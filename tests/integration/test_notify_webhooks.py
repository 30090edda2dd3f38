"""The coordinator and the agency are told when a webhook endpoint is disabled for failing
(issue #19, ADR 18): a real ``cbcm notify`` process, killed (SIGKILL) and restarted, reading
the registry's disablings from the store, sending through a real STARTTLS SMTP server
(aiosmtpd), fed the contacts by the real relay over a real nats-server.

What is attacked: a notice lost or doubled across a kill (after the notice is in the outbox
while the SMTP server refuses, and right after the server accepted it), another agency's
focal points told of an endpoint that is not theirs, a URL or a secret in a message.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import pytest

from domain.actors import Role
from domain.notification import notification_id
from domain.vocabulary import NotificationKind
from domain.webhooks import webhook_endpoint_id
from projections.base import open_read_model
from services.application.mechanism import ComplaintMechanism
from services.application.webhooks import AGENCY_EVENT_TYPES
from services.bootstrap import complaint_mechanism
from services.nats.server import EmbeddedNats
from services.notify import outbox as notices
from services.notify import webhooks
from services.notify.intake import NotifierIntake
from services.notify.service import notifier_path, sender_path
from services.projector.runner import open_projection
from services.relay.relay import run_relay
from services.settings import Settings
from tests.fault.stack import Service, service_env, tail, wait_until
from tests.notify_world import SmtpServer, register_email
from tests.world import COORDINATOR, establish

COORDINATOR_MAIL = "coordinator@ocha.test"
UNHCR_MAIL = "fp1@unhcr.test"
WFP_MAIL = "fp1@wfp.test"
BASE = "https://cbcm.network.test"


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[SmtpServer]:
    server = SmtpServer(tmp_path).start()
    yield server
    server.stop()


def contacts(app: ComplaintMechanism, at: datetime) -> None:
    establish(app, at)
    for user, organisation, role, address in (
        ("coord-1", "ocha", Role.COORDINATOR, COORDINATOR_MAIL),
        ("fp-unhcr-1", "unhcr", Role.FOCAL_POINT, UNHCR_MAIL),
        ("fp-wfp-1", "wfp", Role.FOCAL_POINT, WFP_MAIL),
    ):
        register_email(
            app,
            COORDINATOR,
            user=user,
            organisation=organisation,
            role=role,
            email_address=address,
            at=at,
        )


def rows(path: Path, sql: str, *args: object) -> list[tuple[object, ...]]:
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return [tuple(r) for r in db.execute(sql, args)]
    except sqlite3.OperationalError:  # not made yet
        return []
    finally:
        db.close()


async def test_a_disabled_endpoint_is_told_once_to_the_coordinator_and_its_agency_across_kills(
    tmp_path: Path, nats_server: EmbeddedNats, smtp: SmtpServer
) -> None:
    # given a network with contacts for the coordinator and a focal point of unhcr and wfp,
    # and an endpoint for each agency
    data = tmp_path / "data"
    store = Settings(data_dir=data, event_store=f"sqlite:///{tmp_path / 'events.sqlite3'}")
    app = complaint_mechanism(store)
    now = datetime.now(UTC)
    await asyncio.to_thread(contacts, app, now - timedelta(hours=1))
    urls = {a: f"http://127.0.0.1:9/{a}-{secrets.token_hex(8)}" for a in ("unhcr", "wfp")}
    keys = {a: new_secret() for a in urls}
    endpoints: dict[str, UUID] = {}
    for agency, url in urls.items():
        written = app.register_webhook(
            actor=COORDINATOR,
            agency=agency,
            url=url,
            secret=keys[agency],
            event_types=tuple(sorted(AGENCY_EVENT_TYPES)),
            at=now,
        )
        endpoints[agency] = webhook_endpoint_id(written.version)
    stop = asyncio.Event()
    relay = asyncio.create_task(run_relay(store, stop, nats_server.url))
    env = service_env(
        CBCM_DATA_DIR=str(data),
        CBCM_EVENT_STORE=store.event_store or "",
        CBCM_NATS_URL=nats_server.url,
        CBCM_NOTIFY_INBOX_URL=BASE,
        CBCM_NOTIFY_TICK_SECONDS="0.1",
        CBCM_NOTIFY_RETRY_BASE_SECONDS="0.1",
        CBCM_NOTIFY_RETRY_MAX_SECONDS="0.2",
        CBCM_NOTIFY_MAX_ATTEMPTS="100",
        CBCM_METRICS_ADDR="127.0.0.1:0",
        **smtp.env(),
    )
    notifier = Service("notify", ["notify"], env, tmp_path, "notify.started")
    intake, outbox = notifier_path(data), sender_path(data)

    def webhook_rows(state: str | None = None) -> list[tuple[object, ...]]:
        return rows(
            outbox,
            "SELECT recipient, about, state, attempts FROM notify_outbox"
            " WHERE kind = 'webhook_disabled'" + ("" if state is None else " AND state = ?"),
            *(() if state is None else (state,)),
        )

    def mails_to(address: str) -> list[str]:
        """The Message-IDs of the webhook notices to ``address`` (not the daily digest)."""
        return [m.message_id for m in smtp.mails if address in m.to and "webhook" in m.subject]

    def check() -> None:
        notifier.check_alive()
        if relay.done():
            relay.result()

    try:
        notifier.start()
        await asyncio.to_thread(
            wait_until,
            lambda: len(rows(intake, "SELECT user FROM notify_contacts")) == 3,
            60,
            lambda: f"the notifier knows the contacts; its log:\n{tail(notifier.log)}",
            check,
        )

        # when the deliverer disables unhcr's endpoint for failing, while the SMTP server
        # refuses everything, and the notifier is killed once the notices wait in its outbox
        smtp.refuse_next(10**6)
        app.disable_failing_webhook(
            endpoints["unhcr"],
            failing_since=now - timedelta(days=6),
            limit=timedelta(days=5),
            at=datetime.now(UTC),
        )
        await asyncio.to_thread(
            wait_until,
            lambda: len([r for r in webhook_rows() if int(r[3]) >= 1]) == 2,  # type: ignore[call-overload]
            60,
            "both notices tried",
            check,
        )
        notifier.kill()
        assert mails_to(COORDINATOR_MAIL) == [] and mails_to(UNHCR_MAIL) == []
        # ... restarted with the server accepting, and killed again as soon as it delivered
        smtp.refuse_next(0)
        notifier.start()
        await asyncio.to_thread(
            wait_until,
            lambda: mails_to(COORDINATOR_MAIL) and mails_to(UNHCR_MAIL),
            60,
            "the two mails",
            check,
        )
        notifier.kill()
        # ... and restarted: a second endpoint disabled is told too, after the first
        notifier.start()
        app.disable_failing_webhook(
            endpoints["wfp"],
            failing_since=now - timedelta(days=6),
            limit=timedelta(days=5),
            at=datetime.now(UTC),
        )
        # (the registry: started, two registrations, then the two disablings)
        last = app.webhook_registry_version()
        about = {"unhcr": f"{endpoints['unhcr']}:v{last - 1}", "wfp": f"{endpoints['wfp']}:v{last}"}
        told = [
            ("coord-1", "unhcr"),
            ("fp-unhcr-1", "unhcr"),
            ("coord-1", "wfp"),
            ("fp-wfp-1", "wfp"),
        ]
        ids = [
            notification_id(user, NotificationKind.WEBHOOK_DISABLED, about[agency])
            for user, agency in told
        ]
        await asyncio.to_thread(
            wait_until,
            lambda: (
                all(app.notification_recorded(i) for i in ids) and len(webhook_rows("sent")) == 4
            ),
            60,
            "the four notices sent and in the log",
            check,
        )
        assert notifier.terminate() == 0
    finally:
        notifier.reap()
        stop.set()
        await relay

    # then each of the four notices reached its person under one Message-ID (a repeat after
    # the kill that follows an acceptance carries the same one: the window ADR 18 accepts)
    assert len(set(mails_to(COORDINATOR_MAIL))) == 2
    assert len(set(mails_to(UNHCR_MAIL))) == 1
    assert len(set(mails_to(WFP_MAIL))) == 1
    assert set(mails_to(UNHCR_MAIL)).isdisjoint(mails_to(WFP_MAIL))
    # ... and the log holds each notice once
    for notice in ids:
        assert len(app.recorder.select_events(notice)) == 1
    assert len(webhook_rows()) == 4
    # the message says what happened and where to look, nothing else
    coordinator = [m for m in smtp.mails if COORDINATOR_MAIL in m.to and "webhook" in m.subject]
    assert {m.subject for m in coordinator} == {
        "[PSEA] 1 webhook endpoint disabled after failing deliveries"
    }
    links = {f"{BASE}/v1/webhooks/{endpoints[a]}" for a in endpoints}
    assert {next(w for w in m.body.split() if w.startswith(BASE)) for m in coordinator} == links
    agency_mail = next(m for m in smtp.mails if UNHCR_MAIL in m.to)
    assert str(endpoints["wfp"]) not in agency_mail.raw.decode()
    wire = b"\n".join(m.raw for m in smtp.mails)
    for agency, url in urls.items():
        assert url.encode() not in wire
        assert url.rsplit("/", 1)[1].encode() not in wire
        assert keys[agency].removeprefix("whsec_").encode() not in wire
    app.close()


async def test_a_disabling_by_the_coordinator_or_before_the_notifiers_history_tells_no_one(
    tmp_path: Path,
) -> None:
    """Only the deliverer's disablings for failing are news; older ones are history."""
    store = Settings(data_dir=tmp_path, event_store=f"sqlite:///{tmp_path / 'events.sqlite3'}")
    app = complaint_mechanism(store)
    now = datetime.now(UTC)
    establish(app, now - timedelta(days=30))
    made = []
    for agency in ("unhcr", "wfp", "ngo-a"):
        written = app.register_webhook(
            actor=COORDINATOR,
            agency=agency,
            url=f"http://127.0.0.1:9/{agency}",
            secret=new_secret(),
            event_types=("org.psea.cbcm.case.received.v1",),
            at=now - timedelta(days=20),
        )
        made.append(webhook_endpoint_id(written.version))
    app.disable_failing_webhook(  # long before the notifier started: history
        made[0],
        failing_since=now - timedelta(days=19),
        limit=timedelta(days=5),
        at=now - timedelta(days=10),
    )
    app.disable_webhook(made[1], actor=COORDINATOR, at=now)  # the coordinator's own
    made_db = open_projection(NotifierIntake(now=now), tmp_path / "notify.sqlite3")
    assert isinstance(made_db, sqlite3.Connection)
    source = made_db
    source.execute("BEGIN IMMEDIATE")
    source.execute(
        "INSERT INTO notify_contacts VALUES ('coord-1', 'ocha', 'coordinator', 'email',"
        " NULL, NULL, NULL, 'immediate', 1)"
    )
    source.execute("COMMIT")
    db = open_read_model(tmp_path / "sender.sqlite3")
    db.execute("BEGIN IMMEDIATE")
    notices.create(db)
    webhooks.create(db)
    db.execute("COMMIT")
    history_from = now - timedelta(hours=24)
    assert webhooks.follow(db, source, app, history_from=history_from) == 0
    # the third one fails for days now: told to the coordinator, once however often looked at
    app.disable_failing_webhook(
        made[2], failing_since=now - timedelta(days=6), limit=timedelta(days=5), at=now
    )
    assert webhooks.follow(db, source, app, history_from=history_from) == 1
    assert webhooks.follow(db, source, app, history_from=history_from) == 0
    abouts = [r[0] for r in db.execute("SELECT about FROM notify_outbox")]
    assert abouts == [f"{made[2]}:v{app.webhook_registry_version()}"]
    db.close()
    source.close()
    app.close()
