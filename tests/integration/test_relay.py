"""The relay (issue #3): the event store's log -> JetStream, in order, once, on the right subjects.

Every test runs on SQLite and on a real PostgreSQL (``store_url``) against a real nats-server
started in a temp dir. Nothing sleeps and hopes: waits are on conditions, with deadlines.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import nats
import nats.js.errors
import pytest
from eventsourcing.persistence import IntegrityError
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig

from contracts.catalogue import decode_message
from contracts.subjects import EVENT_SUBJECTS, STREAM, event_subject
from domain.actors import Actor, Role
from domain.assistance import AssistanceReferral, ReferralStatus
from domain.case import Case
from domain.feedback import Feedback
from domain.vocabulary import Channel, ComplainantRole, SharedItem, TransferReason
from services.application.mechanism import ComplaintMechanism
from services.application.store import is_published
from services.demo.walk import (
    AGENCIES,
    COORDINATOR,
    build_demo_network,
    caseworker_actor,
    walk_cases,
)
from services.nats.client import DUPLICATE_WINDOW
from services.nats.server import EmbeddedNats
from services.relay.relay import (
    APPLICATION_NAME,
    PREVIOUS_POSITION_HEADER,
    Relay,
    StreamOfAnotherStore,
    ensure_stream,
    run_relay,
    store_id_of,
)
from services.relay.routing import Router
from services.relay.translating import SUBJECT_TOKENS
from services.settings import Settings
from tests.relay_stores import stream_contents

START = datetime(2025, 9, 1, tzinfo=UTC)


# ---------------------------------------------------------------------------------- fixtures


@pytest.fixture
async def nc(nats_server: EmbeddedNats) -> AsyncIterator[NatsClient]:
    client = await nats.connect(nats_server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
    yield client
    await client.close()


@pytest.fixture
async def js(nc: NatsClient) -> JetStreamContext:
    context = nc.jetstream()
    await ensure_stream(context)
    return context


# ---------------------------------------------------------------------------------- helpers


async def walk(app: ComplaintMechanism, cases: int, seed: int) -> None:
    """Realistic intake through the real application (in a thread: it is synchronous)."""

    def _walk() -> None:
        build_demo_network(app, START)
        walk_cases(app, cases, random.Random(seed), START)

    await asyncio.to_thread(_walk)


@dataclass(frozen=True)
class Transfer:
    case_id: UUID
    referral_id: UUID
    from_agency: str
    to_agency: str


def transfer_a_case_with_an_open_referral(app: ComplaintMechanism) -> Transfer:
    """Transfer a case whose referral is still waiting, then have the provider accept it:
    the referral's events straddle the transfer."""
    made = app.recorder.select_notifications(1, 100_000, topics=[_topic(AssistanceReferral.Made)])
    for notification in made:
        referral = app.get_referral(notification.originator_id)
        case = app.get_case(referral.case_id)
        if referral.status is not ReferralStatus.REFERRED or case.is_closed:
            continue
        to_agency = next(a.code for a in AGENCIES if a.code != case.custodian)
        at = max(case.modified_on, referral.modified_on) + timedelta(hours=1)
        app.transfer_case(
            case.id,
            actor=COORDINATOR,
            to_agency=to_agency,
            reason=TransferReason.CAPACITY,
            shared=(SharedItem.ALLEGATION_SUMMARY,),
            at=at,
        )
        app.accept_referral(
            referral.id, actor=caseworker_actor(referral.provider), at=at + timedelta(hours=1)
        )
        return Transfer(case.id, referral.id, case.custodian, to_agency)
    raise AssertionError("the walk left no open referral on an open case")


def _topic(cls: type[Any]) -> str:
    from eventsourcing.utils import get_topic  # noqa: PLC0415

    return get_topic(cls)


def stored(app: ComplaintMechanism) -> list[Any]:
    """Every notification of the store, in position order."""
    return list(app.recorder.select_notifications(1, 1_000_000))


def expected_subjects(app: ComplaintMechanism) -> dict[int, str]:
    """ADR 3's routing, computed independently of the relay by replaying the whole log."""
    holders: dict[UUID, str] = {}
    referral_cases: dict[UUID, UUID] = {}
    concerned: dict[UUID, str] = {}
    subjects: dict[int, str] = {}
    for notification in stored(app):
        event: Any = app.mapper.to_domain_event(notification)
        oid = event.originator_id
        if isinstance(event, Case.Received):
            holders[oid] = event.actor.agency
        elif isinstance(event, Case.Transferred):
            holders[oid] = event.to_agency
        if isinstance(event, AssistanceReferral.Made):
            referral_cases[oid] = event.case_id
        if isinstance(event, Feedback.Received):
            concerned[oid] = event.concerned_agency
        if isinstance(event, Case.Event):
            agency = holders[oid]
        elif isinstance(event, AssistanceReferral.Event):
            agency = holders[referral_cases[oid]]
        elif isinstance(event, Feedback.Event):
            agency = concerned[oid]
        else:
            agency = "network"
        subjects[notification.id] = event_subject(agency, *SUBJECT_TOKENS[type(event)])
    return subjects


@dataclass(frozen=True)
class StreamMessage:
    seq: int
    subject: str
    msg_id: str
    previous: int
    position: int


async def stream_messages(js: JetStreamContext) -> list[StreamMessage]:
    """The whole stream, by sequence number."""
    messages = []
    for raw in await stream_contents(js, STREAM):
        position = decode_message(raw.data).position
        assert isinstance(position, int)
        headers = raw.headers
        messages.append(
            StreamMessage(
                raw.seq,
                raw.subject,
                headers["Nats-Msg-Id"],
                int(headers[PREVIOUS_POSITION_HEADER]),
                position,
            )
        )
    return messages


async def stream_count(js: JetStreamContext) -> int:
    return int((await js.stream_info(STREAM)).state.messages)


async def wait_until(
    condition: Callable[[], Awaitable[bool]], within: float = 15.0, what: str = ""
) -> None:
    deadline = time.monotonic() + within
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.05)


def assert_stream_is_the_store(app: ComplaintMechanism, messages: list[StreamMessage]) -> None:
    notifications = stored(app)
    sid = store_id_of(app.recorder)
    positions = [n.id for n in notifications]
    assert [m.position for m in messages] == positions, "order or completeness differs"
    assert [m.seq for m in messages] == list(range(1, len(positions) + 1))
    assert [m.msg_id for m in messages] == [f"{sid}:{p}" for p in positions]
    assert [m.previous for m in messages] == [0, *positions[:-1]]
    subjects = expected_subjects(app)
    assert [m.subject for m in messages] == [subjects[p] for p in positions]


# ---------------------------------------------------------------------------------- tests


async def test_every_stored_event_reaches_the_stream_once_in_position_order(
    app: ComplaintMechanism, js: JetStreamContext
) -> None:
    # given a store with realistic cases, one transferred while its referral was open
    await walk(app, 40, seed=3)
    transfer = await asyncio.to_thread(transfer_a_case_with_an_open_referral, app)
    relay = Relay(app, js)

    # when the relay makes a pass
    published = await relay.publish_pending()

    # then every event is in the stream once, in position order, with its id and subject
    notifications = stored(app)
    assert published == len(notifications)
    messages = await stream_messages(js)
    assert_stream_is_the_store(app, messages)
    # the transferred case: its referral was made under the old agency, accepted under the new
    by_position = {m.position: m.subject for m in messages}
    referral_subjects = [
        by_position[n.id] for n in notifications if n.originator_id == transfer.referral_id
    ]
    assert referral_subjects[0].startswith(f"cbcm.v1.evt.{transfer.from_agency}.")
    assert referral_subjects[-1] == event_subject(
        transfer.to_agency, "assistance_referral", "accepted"
    )
    case_subjects = [
        by_position[n.id] for n in notifications if n.originator_id == transfer.case_id
    ]
    assert case_subjects[-1] == event_subject(transfer.to_agency, "case", "transferred")
    # and its position is recorded: a second pass publishes nothing
    assert await relay.recorded_position() == notifications[-1].id
    assert await relay.publish_pending() == 0


async def test_a_restarted_relay_resumes_after_its_recorded_position(
    app: ComplaintMechanism, js: JetStreamContext, reopen: Callable[[], ComplaintMechanism]
) -> None:
    # given a relay that published a first part of the log
    await walk(app, 15, seed=5)
    first = await Relay(app, js).publish_pending()
    assert await stream_count(js) == first

    # when intake goes on and a new relay, on a new application (empty caches), starts
    await walk(app, 15, seed=6)
    await asyncio.to_thread(transfer_a_case_with_an_open_referral, app)
    restarted = Relay(reopen(), js)
    second = await restarted.publish_pending()

    # then it published only what came after the recorded position, routed as before
    assert first + second == len(stored(app))
    assert_stream_is_the_store(app, await stream_messages(js))
    assert restarted.router.store_lookups > 0  # it did route events of known aggregates


async def test_routing_from_any_point_of_the_log_is_that_of_the_events_position(
    app: ComplaintMechanism, reopen: Callable[[], ComplaintMechanism]
) -> None:
    # given a log where a case moved to another agency after its referral was made
    await walk(app, 40, seed=3)
    await asyncio.to_thread(transfer_a_case_with_an_open_referral, app)
    expected = expected_subjects(app)
    fresh_app = reopen()

    def route_each_event_from_a_cold_start() -> list[tuple[int, str, str]]:
        wrong = []
        for notification in stored(fresh_app):
            # a relay restarted just before this event: nothing cached
            router = Router(fresh_app)
            event = fresh_app.mapper.to_domain_event(notification)
            agency = router.agency_of(event, notification.id)
            subject = event_subject(agency, *SUBJECT_TOKENS[type(event)])
            if subject != expected[notification.id]:
                wrong.append((notification.id, subject, expected[notification.id]))
        return wrong

    # then every event routes as it would have in one uninterrupted pass
    assert await asyncio.to_thread(route_each_event_from_a_cold_start) == []


async def test_a_lost_position_neither_republishes_nor_duplicates(
    app: ComplaintMechanism, js: JetStreamContext
) -> None:
    # given everything published
    await walk(app, 10, seed=8)
    total = await Relay(app, js).publish_pending()
    before = await js.stream_info(STREAM)

    # when a relay whose position was lost (a fresh tracking row) makes a pass
    rewound = Relay(app, js, tracking_name=f"{APPLICATION_NAME}-rewound")
    assert await rewound.publish_pending() == 0  # the stream's tail says it is all there

    # then the stream is unchanged, and the rewound relay's position caught up
    after = await js.stream_info(STREAM)
    assert after.state.messages == before.state.messages == total
    assert after.state.last_seq == before.state.last_seq
    assert await rewound.recorded_position() == stored(app)[-1].id
    assert_stream_is_the_store(app, await stream_messages(js))


async def test_jetstream_drops_an_event_published_twice_within_the_window(
    app: ComplaintMechanism, js: JetStreamContext
) -> None:
    # given everything published
    await walk(app, 3, seed=8)
    await Relay(app, js).publish_pending()
    first = await js.get_msg(STREAM, 1)
    assert first.subject is not None and first.data is not None and first.headers is not None

    # when the first event is published again with its message id (as a relay that crashed
    # before recording its position would, without the stream tail check)
    ack = await js.publish(
        first.subject, first.data, headers={"Nats-Msg-Id": first.headers["Nats-Msg-Id"]}
    )

    # then JetStream acknowledges it as a duplicate and stores nothing
    assert ack.duplicate
    assert ack.seq == 1
    assert_stream_is_the_store(app, await stream_messages(js))


async def test_a_stream_holding_another_stores_events_is_refused(
    app: ComplaintMechanism, js: JetStreamContext
) -> None:
    # given a stream whose last event came from another store (say, a store recreated empty)
    await js.publish(
        event_subject("unhcr", "case", "received"),
        b"{}",
        headers={"Nats-Msg-Id": "0123456789abcdef:41"},
    )
    await walk(app, 1, seed=2)

    # then the relay publishes nothing after it: positions of two stores would be mixed
    with pytest.raises(StreamOfAnotherStore):
        await Relay(app, js).publish_pending()
    assert await stream_count(js) == 1
    assert await Relay(app, js).recorded_position() == 0


async def test_intake_during_a_nats_outage_arrives_when_nats_is_back(
    app: ComplaintMechanism, nc: NatsClient, nats_server: EmbeddedNats
) -> None:
    # given a relay following the log (subscription on PostgreSQL, polling on SQLite)
    js = nc.jetstream(timeout=0.5)  # API calls fail fast while NATS is down
    await ensure_stream(js)
    stop = asyncio.Event()
    relay = Relay(app, js, publish_timeout=0.5, max_backoff=0.5)
    task = asyncio.create_task(relay.run(stop))
    restarted: EmbeddedNats | None = None
    try:
        await walk(app, 5, seed=9)
        count = len(stored(app))
        await wait_until(lambda: _has(js, count), what="the first events")

        # when NATS stops while intake goes on, then comes back on the same port and store
        await asyncio.to_thread(nats_server.stop)
        await walk(app, 15, seed=10)
        await wait_until(_async(lambda: relay.failures > 0), what="the relay to notice")
        recorded_during_outage = await relay.recorded_position()
        assert recorded_during_outage <= count  # nothing counted as published meanwhile
        restarted = EmbeddedNats(nats_server.store_dir, port=nats_server.port)
        await asyncio.to_thread(restarted.start)
        total = len(stored(app))
        await wait_until(lambda: _has(js, total), within=20, what="the backlog")

        # then the backlog arrived, nothing lost, nothing twice, in order
        assert_stream_is_the_store(app, await stream_messages(js))
        await wait_until(
            lambda: _recorded(relay, stored(app)[-1].id), what="the position to be recorded"
        )
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        # the client closed while its server is up: closed after, it would be reconnecting to
        # a stopped server, and nats-py swallows the cancellation of a reconnect (nats.py
        # PR 981), which once held this test's event loop open at teardown for good
        await nc.close()
        if restarted is not None:
            await asyncio.to_thread(restarted.stop)


async def _has(js: JetStreamContext, count: int) -> bool:
    try:
        return await stream_count(js) >= count
    except (nats.errors.Error, nats.js.errors.Error):
        return False


def _async(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def _check() -> bool:
        return check()

    return _check


async def _recorded(relay: Relay, position: int) -> bool:
    return await relay.recorded_position() == position


async def test_follows_new_events_as_they_are_stored(
    app: ComplaintMechanism, js: JetStreamContext
) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(Relay(app, js).run(stop))
    try:
        for seed in (1, 2):
            await walk(app, 5, seed=seed)
            count = len(stored(app))
            await wait_until(lambda c=count: _has(js, c), what="new events")  # type: ignore[misc]
        assert_stream_is_the_store(app, await stream_messages(js))
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_pipelined_publishing_keeps_position_order_over_thousands_of_events(
    app: ComplaintMechanism, js: JetStreamContext
) -> None:
    # given a relay following the log with many small windows in flight while intake goes on
    stop = asyncio.Event()
    relay = Relay(app, js, batch_size=300, window=50)
    task = asyncio.create_task(relay.run(stop))
    try:
        await walk(app, 100, seed=12)
        await walk(app, 100, seed=13)
        total = len(stored(app))
        assert total > 2500
        await wait_until(lambda: _has(js, total), within=30, what="every event")
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)

    # then stream sequence order is position order, every event once
    assert_stream_is_the_store(app, await stream_messages(js))


async def test_a_hole_in_the_store_positions_is_bridged_by_the_previous_position(
    app: ComplaintMechanism,
    js: JetStreamContext,
    reopen: Callable[[], ComplaintMechanism],
    store_url: str,
) -> None:
    # given two writers racing on one case: the loser is refused in the database
    await walk(app, 2, seed=4)
    case_id = next(n.originator_id for n in stored(app) if n.topic == _topic(Case.Received))
    mine, theirs = app.repository.get(case_id), reopen().repository.get(case_id)
    at = mine.modified_on + timedelta(hours=1)
    for case in (mine, theirs):
        case.trigger_event(Case.InvestigationAcknowledged, actor=COORDINATOR, timestamp=at)
    app.save(mine)
    with pytest.raises(IntegrityError):
        app.save(theirs)
    await walk(app, 2, seed=14)

    # when the relay publishes
    await Relay(app, js).publish_pending()

    # then PostgreSQL's positions have a hole (the refused insert used a sequence number),
    # SQLite's do not, and on both each message names the position published before it
    positions = [n.id for n in stored(app)]
    holes = len(set(range(1, positions[-1] + 1)) - set(positions))
    assert holes == (1 if store_url.startswith("postgres") else 0)
    assert_stream_is_the_store(app, await stream_messages(js))


async def test_run_relay_publishes_until_stopped(
    app: ComplaintMechanism, settings: Settings, nc: NatsClient, nats_server: EmbeddedNats
) -> None:
    # given the relay process started on the configured store
    stop = asyncio.Event()
    task = asyncio.create_task(run_relay(settings, stop, nats_server.url))
    js = nc.jetstream()

    # when complaints are recorded
    await walk(app, 3, seed=15)
    total = len(stored(app))

    # then they reach the stream, and the relay stops when asked
    await wait_until(lambda: _has(js, total), what="the events")
    stop.set()
    await asyncio.wait_for(task, 10)
    assert_stream_is_the_store(app, await stream_messages(js))


async def test_the_stream_keeps_everything_and_ensuring_it_twice_is_harmless(
    nc: NatsClient,
) -> None:
    js = nc.jetstream()
    # given a stream someone made with a looser configuration
    await js.add_stream(
        StreamConfig(name=STREAM, subjects=[EVENT_SUBJECTS], storage=StorageType.FILE)
    )

    # when it is ensured, twice
    await ensure_stream(js)
    info = await ensure_stream(js)

    # then it has the fixed configuration
    config = info.config
    assert config.subjects == [EVENT_SUBJECTS]
    assert config.storage == StorageType.FILE
    assert config.num_replicas == 1
    assert config.duplicate_window == DUPLICATE_WINDOW
    assert config.deny_delete and config.deny_purge
    # and nothing can be removed from it
    ack = await js.publish(event_subject("unhcr", "case", "received"), b"{}")
    with pytest.raises(nats.js.errors.APIError):
        await js.purge_stream(STREAM)
    with pytest.raises(nats.js.errors.APIError):
        await js.delete_msg(STREAM, ack.seq)
    assert await stream_count(js) == 1


async def test_the_mechanisms_own_records_never_leave_the_store(
    app: ComplaintMechanism, js: JetStreamContext
) -> None:
    # given cases, then a complaint with a receipt, reads of personal data and a retried-request
    # record, the last ones at the tail of the log
    await walk(app, 5, seed=11)

    def internal_records() -> UUID:
        at = datetime.now(UTC)
        operator = Actor("op-1", AGENCIES[0].code, Role.INTAKE_OPERATOR)
        written = app.receive_complaint(
            actor=operator,
            at=at,
            received_at=at,
            channel=Channel.WEB_FORM,
            complainant_role=ComplainantRole.ANONYMOUS,
            immediate_safety_risk=False,
            narrative="a guard asked for sex",
            receipt=("ABCDEFGH", "$argon2id$verifier"),
        )
        reader = Actor("fp-1", AGENCIES[0].code, Role.FOCAL_POINT)
        for _ in range(2):
            app.record_personal_data_read(
                written.id, actor=reader, fields=("narrative",), purpose="case", at=at
            )
        return written.id

    case_id = await asyncio.to_thread(internal_records)
    relay = Relay(app, js)

    # when the relay makes a pass
    published = await relay.publish_pending()

    # then only the published events are in the stream, each linked to the one before it
    notifications = stored(app)
    events = [app.mapper.to_domain_event(n) for n in notifications]
    public = [n.id for n, e in zip(notifications, events, strict=True) if is_published(e)]
    assert len(public) < len(notifications)  # receipt and reads were stored...
    messages = await stream_messages(js)
    assert published == len(public)
    assert [m.position for m in messages] == public  # ...and never published
    assert [m.previous for m in messages] == [0, *public[:-1]]
    received_positions = [
        n.id for n, e in zip(notifications, events, strict=True) if e.originator_id == case_id
    ]
    assert received_positions[0] in public
    # and a second pass publishes nothing
    assert await relay.publish_pending() == 0

    # when more is published after that tail of internal records, by the same relay and by
    # a restarted one
    await walk(app, 1, seed=12)
    await relay.publish_pending()
    await walk(app, 1, seed=13)
    await Relay(app, js).publish_pending()

    # then each new message still links to the last *published* event before it (the
    # internal records are not in the stream: a link to one would stop every projector)
    notifications = stored(app)
    events = [app.mapper.to_domain_event(n) for n in notifications]
    public = [n.id for n, e in zip(notifications, events, strict=True) if is_published(e)]
    messages = await stream_messages(js)
    assert [m.position for m in messages] == public
    assert [m.previous for m in messages] == [0, *public[:-1]]


def test_two_stores_of_networks_established_apart_have_different_ids(
    app: ComplaintMechanism, reopen: Callable[[], ComplaintMechanism], tmp_path: Any
) -> None:
    # given two stores whose first event is the establishment of their network (same id)
    from services.bootstrap import complaint_mechanism  # noqa: PLC0415
    from services.settings import Settings  # noqa: PLC0415

    other = complaint_mechanism(Settings(data_dir=tmp_path / "other"))
    try:
        build_demo_network(app, START)
        build_demo_network(other, START + timedelta(microseconds=1))
        first, second = stored(app)[0], stored(other)[0]
        assert first.originator_id == second.originator_id
        # then their ids differ, so their messages can never pass for each other's
        assert store_id_of(app.recorder) != store_id_of(other.recorder)
        assert store_id_of(app.recorder) == store_id_of(reopen().recorder)
    finally:
        other.close()
