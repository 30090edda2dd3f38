"""SIGKILL of ``cbcm notify`` mid-batch (issue #18): a real subprocess killed twice while it
takes in the stream and sends to a real STARTTLS SMTP server; restarted, it loses nothing
and sends nothing twice beyond the one message that was with the server when it died (same
Message-ID, ADR 18), and the log holds each notice exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import nats
import pytest

from domain.actors import Role
from domain.notification import Notification
from domain.vocabulary import Channel, ComplainantRole
from projections.base import open_read_model
from services.bootstrap import complaint_mechanism
from services.nats.server import EmbeddedNats
from services.notify.service import sender_path
from services.relay.relay import Relay, ensure_shares_stream, ensure_stream
from services.settings import Settings
from tests.fault.stack import CBCM, tail
from tests.notify_world import SmtpServer, register_email, wait_until
from tests.world import COORDINATOR, FOCAL_POINTS, OPERATOR, establish

pytestmark = pytest.mark.fault

CASES = 60


def test_sigkill_mid_batch_loses_nothing_and_duplicates_nothing(tmp_path: Path) -> None:
    # given 60 complaints at unhcr, whose 3 focal points each have an email address
    store = Settings(
        data_dir=tmp_path / "data", event_store=f"sqlite:///{tmp_path / 'events.sqlite3'}"
    )
    app = complaint_mechanism(store)
    now = datetime.now(UTC)
    establish(app, now)
    users = FOCAL_POINTS["unhcr"]
    for user in users:
        register_email(
            app,
            COORDINATOR,
            user=user,
            organisation="unhcr",
            role=Role.FOCAL_POINT,
            email_address=f"{user}@unhcr.test",
            at=now,
        )
    for i in range(CASES):
        at = datetime.now(UTC)
        app.receive_complaint(
            actor=OPERATOR,
            at=at,
            received_at=at,
            channel=Channel.HOTLINE,
            complainant_role=ComplainantRole.ANONYMOUS,
            immediate_safety_risk=i % 3 == 0,
            narrative="what was said",
        )
    expected = CASES * len(users)
    smtp = SmtpServer(tmp_path).start()
    smtp.inbox.delay = 0.02  # a server that takes its time: the kill lands mid-batch
    with EmbeddedNats(tmp_path / "nats") as server:
        asyncio.run(_publish(app, server.url))
        env = {
            **os.environ,
            **smtp.env(),
            "CBCM_DATA_DIR": str(store.data_dir),
            "CBCM_EVENT_STORE": str(store.event_store),
            "CBCM_NATS_URL": server.url,
            "CBCM_LOG_FORMAT": "json",
            "CBCM_NOTIFY_TICK_SECONDS": "3600",
        }
        env.pop("CBCM_METRICS_ADDR", None)
        log = tmp_path / "notify.log"

        def start() -> subprocess.Popen[bytes]:
            with log.open("ab") as out:
                return subprocess.Popen([CBCM, "notify"], env=env, stdout=out, stderr=out)

        try:
            # when the notifier is killed twice mid-batch, and restarted each time
            kills = []
            for at_least in (1, expected // 2):
                process = start()
                wait_until(
                    lambda n=at_least: len(smtp.mails) >= n,  # type: ignore[misc]
                    60,
                    f"{at_least} mails\n{tail(log)}",
                )
                process.send_signal(signal.SIGKILL)
                process.wait()
                kills.append(len(smtp.mails))
            process = start()

            # then every notice arrives, and the log records each once
            def done() -> bool:
                distinct = {m.message_id for m in smtp.mails}
                return len(distinct) >= expected

            wait_until(done, 120, lambda: f"{len(smtp.mails)} mails\n{tail(log)}")
            path = sender_path(store.data_dir)

            def settled() -> bool:
                db = open_read_model(path, readonly=True)
                try:
                    states = dict(
                        db.execute("SELECT state, count(*) FROM notify_outbox GROUP BY state")
                    )
                finally:
                    db.close()
                return states == {"sent": expected}

            wait_until(settled, 60, lambda: tail(log))
            process.send_signal(signal.SIGTERM)
            assert process.wait(30) == 0
        finally:
            if process.poll() is None:
                process.kill()
            smtp.stop()

    mails = smtp.mails
    per_id = Counter(m.message_id for m in mails)
    assert kills[0] < expected and kills[1] < expected
    # both kills were mid-batch: each restart found notices in flight and recovered them
    recovered = [line for line in log.read_text().splitlines() if "notify.recovered" in line]
    assert len(recovered) == 2, recovered
    assert len(per_id) == expected
    # at most the message with the server at each kill came again, with its Message-ID
    assert len(mails) - len(per_id) <= len(kills)
    assert all(n <= 2 for n in per_id.values())
    recorded = [
        e
        for n in app.recorder.select_notifications(start=1, limit=100_000)
        if isinstance(e := app.mapper.to_domain_event(n), Notification.Sent)
    ]
    assert len(recorded) == expected
    assert len({(e.recipient, e.kind, e.about) for e in recorded}) == expected
    print(
        f"\nkilled at {kills} mails; {len(mails)} delivered for {expected} notices "
        f"({len(mails) - len(per_id)} repeated with the same Message-ID)"
    )
    app.close()


async def _publish(app: object, url: str) -> None:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await ensure_stream(js)
        await ensure_shares_stream(js)
        await Relay(app, js).publish_pending()  # type: ignore[arg-type]
    finally:
        await nc.close()
