"""Exactly once per (recipient, kind, subject), searched by Hypothesis (issue #18).

Programs of complaints (urgent or not), transfers, clock moves, deliveries of the stream to
the notifier's intake in arbitrary batches (with redeliveries, as JetStream does after a
lost ack), scheduler ticks and sends, where a send may crash right after the server
accepted the message, or right after the notice was recorded in the log, before the outbox
heard of it. After a restart and a drain:
- every notice the events call for was delivered, and none the model does not know of;
- each notice reached its channel once, plus exactly one repeat (same Message-ID) per crash
  between acceptance and the outbox's commit: the window ADR 18 accepts;
- the log holds one notification event per outbox row, never two;
- due-soon and overdue come at most once per deadline, and overdue for every case whose
  deadline passed.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.actors import Actor, Role
from domain.notification import Notification
from domain.vocabulary import (
    Channel,
    ComplainantRole,
    NotificationChannel,
    NotificationDelivery,
    NotificationKind,
    SharedItem,
    TransferReason,
)
from services.application.mechanism import ComplaintMechanism
from services.application.store import is_published
from services.notify import scheduler
from services.notify.intake import NotifierIntake
from services.notify.messages import Message
from services.notify.sender import Sender
from services.projector.runner import apply_batch, open_projection, reset_projection
from services.relay.translation import to_cloud_event
from tests.in_memory import in_memory_mechanism
from tests.world import COORDINATOR, FOCAL_POINTS, establish

START = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
AGENCIES = ("unhcr", "wfp")
OPERATORS = {a: Actor(f"op-{a}", a, Role.INTAKE_OPERATOR) for a in AGENCIES}
HOLDERS = {a: Actor(FOCAL_POINTS[a][0], a, Role.FOCAL_POINT) for a in AGENCIES}
DUE_SOON = timedelta(hours=4)


class Crash(BaseException):
    """The process dies here (not an error the sender handles)."""


@dataclass
class RecordingChannel:
    """Accepts every message, as a server that always says 250; may die right after."""

    kind: NotificationChannel = NotificationChannel.EMAIL
    accepted: list[tuple[str, str, str]] = field(default_factory=list)
    crash_next: bool = False

    async def send(self, address: str, message: Message) -> None:
        self.accepted.append((address, message.message_id, message.subject))
        if self.crash_next:
            self.crash_next = False
            raise Crash

    async def close(self) -> None:
        return None


class DyingLog:
    """The application, except that recording a notice may be the last thing it does."""

    def __init__(self, app: ComplaintMechanism) -> None:
        self.app = app
        self.crash_next = False

    def record_notification(self, notice: Notification) -> Any:
        written = self.app.record_notification(notice)
        if self.crash_next:
            self.crash_next = False
            raise Crash
        return written

    def record_notifications(self, notices: list[Notification]) -> Any:
        written = self.app.record_notifications(notices)
        if self.crash_next:
            self.crash_next = False
            raise Crash
        return written

    def __getattr__(self, name: str) -> Any:
        return getattr(self.app, name)


SENDS = st.sampled_from(["ok", "crash_after_accept", "crash_after_log"])
step = st.one_of(
    st.tuples(st.just("receive"), st.sampled_from(AGENCIES), st.booleans()),
    st.tuples(st.just("transfer"), st.integers(0, 5)),
    st.tuples(st.just("clock"), st.floats(0.5, 30)),
    st.tuples(st.just("deliver"), st.integers(1, 8), st.booleans()),
    st.tuples(st.just("tick")),
    st.tuples(st.just("send"), SENDS),
    st.tuples(st.just("rebuild")),
)
first_case = st.tuples(
    st.tuples(st.just("receive"), st.sampled_from(AGENCIES), st.booleans()),
    st.just(("deliver", 1000, False)),
    st.tuples(st.just("send"), SENDS),
)
steps = st.builds(lambda head, tail: [*head, *tail], first_case, st.lists(step, max_size=25))
"""Programs start with a complaint delivered and a send (so most of them have something to
lose), then anything."""


@dataclass
class World:
    app: ComplaintMechanism
    db: sqlite3.Connection
    intake: NotifierIntake
    channel: RecordingChannel
    log: DyingLog
    now: datetime = START
    delivered: int = 0
    cases: list[tuple[UUID, str]] = field(default_factory=list)
    expected: set[str] = field(default_factory=set)
    crashes_after_accept: int = 0

    def sender(self) -> Sender:
        return Sender(
            self.db,
            self.log,  # type: ignore[arg-type]
            {NotificationChannel.EMAIL: self.channel},
            base_url="https://x.test",
            max_attempts=3,
            retry_base=1,
            retry_max=1,
            clock=lambda: self.now,
        )

    def messages(self) -> list[tuple[int, Any]]:
        found = []
        for n in self.app.recorder.select_notifications(start=1, limit=10_000):
            event = self.app.mapper.to_domain_event(n)
            if is_published(event):
                found.append((n.id, to_cloud_event(event, source="urn:test", position=n.id)))
        return found

    def previous(self) -> dict[int, int]:
        """Each published position's predecessor, as the relay's header says it: the
        mechanism's own records (a case's index of notices) are skipped."""
        positions = [position for position, _ in self.messages()]
        return dict(zip(positions[1:], positions, strict=False))


def _expect(world: World, recipients: tuple[str, ...], kind: NotificationKind, about: str) -> None:
    for user in recipients:
        world.expected.add(f"{user}|{kind.value}|{about}")


async def _send(world: World, how: str) -> None:
    world.channel.crash_next = how == "crash_after_accept"
    world.log.crash_next = how == "crash_after_log"
    sender = world.sender()
    try:
        await sender.run_once()
    except Crash:
        if how == "crash_after_accept":
            world.crashes_after_accept += 1
        # a new process: it starts by putting back what was in flight
        await world.sender().recover()
    world.channel.crash_next = False
    world.log.crash_next = False


async def _run(program: list[tuple[Any, ...]], tmp: Path) -> World:
    app = in_memory_mechanism()
    establish(app, START - timedelta(days=1))
    for agency in AGENCIES:
        for user in FOCAL_POINTS[agency]:
            app.register_staff_contact(
                actor=COORDINATOR,
                user=user,
                organisation=agency,
                role=Role.FOCAL_POINT,
                email=f"{user}@{agency}.test",
                phone=None,
                channels=(NotificationChannel.EMAIL,),
                quiet_hours=None,
                delivery=NotificationDelivery.IMMEDIATE,
                at=START - timedelta(days=1),
            )
    intake = NotifierIntake(now=START, history_grace=timedelta(days=2))
    db = open_projection(intake, tmp / "notify.sqlite3")
    world = World(app, db, intake, RecordingChannel(), DyingLog(app))
    # the network and the contacts are known to the intake before the program starts
    registry = world.messages()
    apply_batch(intake, db, registry)
    world.delivered = len(registry)
    for step in program:
        match step:
            case ("receive", agency, urgent):
                written = app.receive_complaint(
                    actor=OPERATORS[agency],
                    at=world.now,
                    received_at=world.now,
                    channel=Channel.HOTLINE,
                    complainant_role=ComplainantRole.ANONYMOUS,
                    immediate_safety_risk=urgent,
                    narrative="what was said",
                )
                world.cases.append((written.id, agency))
                kind = NotificationKind.URGENT_CASE if urgent else NotificationKind.NEW_CASE
                _expect(world, FOCAL_POINTS[agency], kind, str(written.id))
            case ("transfer", index):
                if not world.cases:
                    continue
                case_id, holder = world.cases[index % len(world.cases)]
                to = AGENCIES[1 - AGENCIES.index(holder)]
                written = app.transfer_case(
                    case_id,
                    actor=HOLDERS[holder],
                    to_agency=to,
                    reason=TransferReason.CAPACITY,
                    shared=(SharedItem.ALLEGATION_SUMMARY,),
                    note=None,
                    at=world.now,
                )
                world.cases[index % len(world.cases)] = (case_id, to)
                _expect(
                    world,
                    FOCAL_POINTS[to],
                    NotificationKind.TRANSFER_RECEIVED,
                    f"{case_id}:v{written.version}",
                )
            case ("clock", hours):
                world.now += timedelta(hours=hours)
            case ("deliver", size, again):
                messages = world.messages()
                start = max(0, world.delivered - (size if again else 0))
                batch = messages[start : world.delivered + size]
                done = apply_batch(intake, db, batch, world.previous())
                assert done.gap is None and done.stall is None
                world.delivered = max(world.delivered, start + len(batch))
            case ("rebuild",):
                # the intake's state dropped and the stream replayed from the start
                reset_projection(intake, db)
                world.delivered = 0
            case ("tick",):
                scheduler.tick(db, world.now, due_soon=DUE_SOON, digest_hour=24 - 1)
            case ("send", how):
                await _send(world, how)
    # drain: the whole stream, one more look at the clock, and everything sent
    apply_batch(intake, db, world.messages(), world.previous())
    await world.sender().recover()
    for _ in range(2):  # looked at twice: the second look must find nothing new
        scheduler.tick(db, world.now, due_soon=DUE_SOON, digest_hour=23)
        while await world.sender().run_once():
            pass
    return world


@settings(
    max_examples=35,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(program=steps)
def test_each_notice_is_sent_once_per_recipient_kind_and_subject(
    program: list[tuple[Any, ...]], tmp_path_factory: Any
) -> None:
    tmp = tmp_path_factory.mktemp("notify")
    world = asyncio.run(_run(program, tmp))
    db = world.db
    rows = db.execute("SELECT key, kind, state, about, recipient FROM notify_outbox").fetchall()
    keys = {r["key"] for r in rows}

    # every notice the events call for is there, and the case notices are exactly those
    case_kinds = {"new_case", "urgent_case", "transfer_received"}
    assert {r["key"] for r in rows if r["kind"] in case_kinds} == world.expected
    # every one ended: sent (all the focal points have an address)
    assert {r["state"] for r in rows} <= {"sent"}
    # each reached the server once, plus one repeat per crash between acceptance and commit,
    # with the same Message-ID (the receiver's way to tell)
    per_id = Counter(message_id for _, message_id, _ in world.channel.accepted)
    assert len(per_id) == len(keys)
    assert sum(per_id.values()) - len(per_id) == world.crashes_after_accept
    # the log holds exactly one notification per outbox row
    notices = [
        e
        for n in world.app.recorder.select_notifications(start=1, limit=100_000)
        if isinstance(e := world.app.mapper.to_domain_event(n), Notification.Sent)
    ]
    assert len(notices) == len(keys)
    assert {f"{e.recipient}|{e.kind.value}|{e.about}" for e in notices} == keys
    # deadlines: overdue for every open case whose assessment deadline passed, at most once
    for case_id, agency in world.cases:
        due = db.execute(
            "SELECT due_at FROM inbox_actions WHERE case_id = ? AND action = 'assess'",
            (str(case_id),),
        ).fetchone()
        overdue = [
            r for r in rows if r["kind"] == "action_overdue" and r["about"].startswith(str(case_id))
        ]
        if due is not None and datetime.fromisoformat(due[0]) <= world.now:
            assert {r["recipient"] for r in overdue} >= set(FOCAL_POINTS[agency])
    db.close()
