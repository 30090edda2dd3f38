"""Notifications (issue #18): latency from the write to the SMTP server's acceptance at 100
complaints a second, and what the notifier costs the rest of the event flow.

The pipeline runs as in production: an embedded nats-server, ``cbcm relay``,
``cbcm project inbox`` and ``cbcm notify`` as subprocesses; the SMTP server (aiosmtpd, with
STARTTLS required) runs in this process and notes when each message arrives. Every complaint
goes to an agency with one focal point, who has an email address: one message per command.

Two phases at the same rate, each after a warm-up: without the notifier (the baseline), then
with it. In both, the inbox projector's lag (commit -> the inbox read model's position) is
measured per command by polling the read model; with the notifier, also the latency from
the commit to the SMTP server's acceptance of that complaint's message (matched by its
Message-ID, which follows from the notice's key). Figures are printed and recorded for
``cbcm bench``'s table, not asserted (only that every message arrived).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from domain.actors import Actor, Role
from domain.notification import notification_key
from domain.vocabulary import AgencyType, Channel, ComplainantRole, NotificationKind
from services.bootstrap import complaint_mechanism
from services.nats.server import EmbeddedNats
from services.notify.messages import message_id
from services.projector.runner import read_model_path, read_position
from services.settings import Settings
from tests.bench.results import Figure, Target, quick, record
from tests.notify_world import SmtpServer, register_email, wait_until

pytestmark = pytest.mark.bench

CBCM = str(Path(sys.executable).parent / "cbcm")
RATE = 100.0
PHASE_SECONDS = float(os.environ.get("CBCM_BENCH_PHASE_SECONDS", "8" if quick() else "20"))
WARM_UP_SECONDS = 2.0
COORDINATOR = Actor("coord-1", "ocha", Role.COORDINATOR)
OPERATOR = Actor("op-1", "unhcr", Role.INTAKE_OPERATOR)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


class Poller(threading.Thread):
    """Notes when the inbox read model first shows each position."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.seen: list[tuple[int, float]] = []
        self.running = True

    def run(self) -> None:
        last = -1
        while self.running:
            position = read_position(self.path) if self.path.exists() else 0
            if position != last:
                self.seen.append((position, time.monotonic()))
                last = position
            time.sleep(0.002)

    def visible_at(self, position: int) -> float | None:
        for seen, at in self.seen:
            if seen >= position:
                return at
        return None


def drive(app: object, seconds: float) -> list[tuple[str, int, float]]:
    """Complaints at ``RATE`` for ``seconds``: (case id, position, commit time) each."""
    written = []
    interval = 1.0 / RATE
    start = time.monotonic()
    count = int(seconds * RATE)
    for i in range(count):
        due = start + i * interval
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        at = datetime.now(UTC)
        answer = app.receive_complaint(  # type: ignore[attr-defined]
            actor=OPERATOR,
            at=at,
            received_at=at,
            channel=Channel.HOTLINE,
            complainant_role=ComplainantRole.ANONYMOUS,
            immediate_safety_risk=i % 10 == 0,
            narrative="what was said",
        )
        written.append((str(answer.id), answer.position, time.monotonic()))
    return written


def test_notify_latency_and_cost(tmp_path: Path) -> None:
    store = Settings(data_dir=tmp_path / "data", event_store=f"sqlite:///{tmp_path / 'e.sqlite3'}")
    app = complaint_mechanism(store)
    now = datetime.now(UTC)
    app.establish_network(actor=COORDINATOR, name="Bench network", at=now)
    for code in ("ocha", "unhcr"):
        app.register_agency(
            actor=COORDINATOR, code=code, name=code, agency_type=AgencyType.UN_AGENCY, at=now
        )
    app.appoint_focal_point(actor=COORDINATOR, agency="unhcr", user="fp-1", at=now)
    register_email(
        app,
        COORDINATOR,
        user="fp-1",
        organisation="unhcr",
        role=Role.FOCAL_POINT,
        email_address="fp-1@unhcr.test",
        at=now,
    )
    smtp = SmtpServer(tmp_path).start()
    processes: dict[str, subprocess.Popen[bytes]] = {}
    with EmbeddedNats(tmp_path / "nats") as server:
        env = {
            **os.environ,
            **smtp.env(),
            "CBCM_DATA_DIR": str(store.data_dir),
            "CBCM_EVENT_STORE": str(store.event_store),
            "CBCM_NATS_URL": server.url,
            "CBCM_LOG_FORMAT": "json",
        }
        env.pop("CBCM_METRICS_ADDR", None)

        def start(name: str, *args: str) -> None:
            with (tmp_path / f"{name}.log").open("ab") as out:
                processes[name] = subprocess.Popen(
                    [CBCM, *args], env=env, stdout=out, stderr=subprocess.STDOUT
                )

        inbox = read_model_path(store.data_dir, "inbox")
        try:
            start("relay", "relay")
            start("inbox", "project", "inbox")
            head = app.recorder.max_notification_id() or 0
            wait_until(lambda: inbox.exists() and read_position(inbox) >= head, 60, "inbox")

            def phase() -> tuple[list[float], list[tuple[str, int, float]]]:
                drive(app, WARM_UP_SECONDS)
                poller = Poller(inbox)
                poller.start()
                written = drive(app, PHASE_SECONDS)
                last = written[-1][1]
                wait_until(lambda: read_position(inbox) >= last, 120, "inbox caught up")
                time.sleep(0.05)
                poller.running = False
                poller.join()
                lags = []
                for _, position, committed in written:
                    seen = poller.visible_at(position)
                    assert seen is not None
                    lags.append(max(0.0, seen - committed))
                return lags, written

            without, _ = phase()
            # the notifier takes in what the baseline wrote (it was written minutes ago:
            # news, so it is sent) before the measured phase starts
            start("notify", "notify")
            cases = int((WARM_UP_SECONDS + PHASE_SECONDS) * RATE)
            wait_until(lambda: len(smtp.mails) >= cases, 300, "the baseline's messages")
            with_notifier, written = phase()

            def key(case_id: str, urgent: bool) -> str:
                kind = NotificationKind.URGENT_CASE if urgent else NotificationKind.NEW_CASE
                return message_id(notification_key("fp-1", kind, case_id))

            wanted = {}
            for case_id, _, committed in written:
                wanted[key(case_id, True)] = committed
                wanted[key(case_id, False)] = committed

            def arrived() -> dict[str, float]:
                return {m.message_id: m.arrived for m in smtp.mails if m.message_id in wanted}

            wait_until(lambda: len(arrived()) >= len(written), 300, "every message")
            latency = [at - wanted[mid] for mid, at in arrived().items()]
            urgent_ids = {key(case_id, True) for case_id, _, _ in written}
            urgent = [at - wanted[mid] for mid, at in arrived().items() if mid in urgent_ids]
        finally:
            for process in processes.values():
                process.terminate()
            for process in processes.values():
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
            smtp.stop()
    app.close()

    p50, p99 = pct(latency, 0.5) * 1000, pct(latency, 0.99) * 1000
    base99, with99 = pct(without, 0.99) * 1000, pct(with_notifier, 0.99) * 1000
    u50, u99 = pct(urgent, 0.5) * 1000, pct(urgent, 0.99) * 1000
    print(
        f"\nnotify: {len(latency)} messages at {RATE:.0f} commands/s, write -> accepted by "
        f"SMTP p50 {p50:.0f} ms, p99 {p99:.0f} ms; the urgent ones ({len(urgent)}, sent "
        f"first) p50 {u50:.0f} ms, p99 {u99:.0f} ms\n"
        f"inbox lag p99 without the notifier {base99:.0f} ms, with it {with99:.0f} ms "
        f"(ratio {with99 / base99:.2f})"
    )
    record(
        Figure(
            "notify (#18)",
            "write -> SMTP accepted p50",
            "sqlite",
            p50,
            "ms",
            better="lower",
            target=Target("value", "<", 60_000),
        )
    )
    record(
        Figure(
            "notify (#18)",
            "write -> SMTP accepted p99",
            "sqlite",
            p99,
            "ms",
            better="lower",
            target=Target("value", "<", 60_000),
        )
    )
    record(
        Figure(
            "notify (#18)",
            "write -> SMTP accepted p99, urgent",
            "sqlite",
            u99,
            "ms",
            better="lower",
            target=Target("value", "<", 60_000),
        )
    )
    record(
        Figure(
            "notify (#18)",
            "inbox lag p99 with the notifier",
            "sqlite",
            with99,
            "ms",
            baseline=base99,
            baseline_name="inbox lag p99 without it",
            better="lower",
        )
    )
