"""What the relay publishes, byte for byte (issue #16): however it reads, decodes and
translates (one parse a stored state, personal fields opened only where the translation
reads them, the translating in a process of its own), every message it puts in
``CBCM_EVENTS`` is the one the plain path makes: each stored event decoded whole by the
application's mapper (every sealed field opened), translated by ``to_cloud_event`` and
encoded, on the subject the router gives, with the same headers. Shares too: the same
envelope, and a sealed box that opens to the same values.

The store: the demo network with two agencies holding share keys, cases walked through the
application, then some cases' personal data erased (later events' sealed fields of those
people open to ``ERASED``, which the derived flags read), then more cases. Runs on SQLite
and on PostgreSQL (``store_url``), in the relay's worker thread and in its translating
process. The store is written once per test process and store (``demo_template``, which
``test_relay_translating_attacks.py`` reads too); each test reads a copy of its own
(``tests.relay_stores``).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import msgspec
import nats
import nats.js.errors
import pytest
from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import get_topic
from nacl.public import PrivateKey
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from contracts.shares import decode_share
from contracts.subjects import PREVIOUS_POSITION_HEADER, SHARES_STREAM, STREAM, event_subject
from domain.case import Case
from domain.personal_data import DataSubject, PersonDetails
from domain.vocabulary import (
    Channel,
    ComplainantRole,
    ErasureReason,
    SharedItem,
    TransferReason,
)
from services.application.mechanism import ComplaintMechanism
from services.application.store import is_published
from services.demo.network import COORDINATOR, intake_operator_actor
from services.demo.walk import build_demo_network, demo_start, walk_cases
from services.event_store.encoding import UNOPENED
from services.event_store.store_id import store_id_of
from services.nats.server import EmbeddedNats
from services.relay.publisher import AckPublisher
from services.relay.relay import (
    EXPECTED_LAST_SEQUENCE_HEADER,
    MSG_ID_HEADER,
    Relay,
    RelayStalled,
    ensure_shares_stream,
    ensure_stream,
)
from services.relay.routing import Router
from services.relay.share_keys import open_share, public_key_of
from services.relay.sharing import Sharer
from services.relay.translating import SUBJECT_TOKENS, Poison, TranslatorProcess
from services.relay.translation import encode, to_cloud_event
from services.settings import Settings
from tests.relay_stores import stream_contents
from tests.store_templates import StoreTemplate

EXPECTED_STREAM = "Nats-Expected-Stream"
KEYED = ("wfp", "unicef")
"""Demo agencies that register a share key (the others have none: no share)."""


@pytest.fixture
async def nc(nats_server: EmbeddedNats) -> AsyncIterator[NatsClient]:
    client = await nats.connect(nats_server.url)
    yield client
    await client.close()


@pytest.fixture
async def js(nc: NatsClient) -> JetStreamContext:
    context = nc.jetstream()
    await ensure_stream(context)
    await ensure_shares_stream(context)
    return context


@pytest.fixture
def store_url(demo_template: StoreTemplate[dict[str, PrivateKey]], tmp_path: Path) -> Iterator[str]:
    """A copy of the demo's store for the test (its keys in the ``settings``' data dir)."""
    with demo_template.copy(tmp_path / "data") as url:
        yield url


def demo_store(app: ComplaintMechanism) -> dict[str, PrivateKey]:
    """The demo's cases, erasures among them; the share keys' private halves."""
    start = demo_start()
    network = build_demo_network(app, start)
    assert set(KEYED) <= set(network.agencies)
    keys = {agency: PrivateKey.generate() for agency in KEYED}
    for agency, key in keys.items():
        app.register_agency_share_key(
            actor=COORDINATOR, agency=agency, public_key=public_key_of(key), at=network.modified_on
        )
    walk_cases(app, 60, random.Random(16), start + timedelta(hours=1))
    # erase some people's data: every subject of one case, the survivor of others
    received = [
        UUID(str(n.originator_id))
        for n in app.recorder.select_notifications(1, 10**6)
        if n.topic.endswith("Case.Received")
    ]
    assert len(received) >= 10
    for i, case_id in enumerate(received[:: max(1, len(received) // 6)]):
        case = app.get_case(case_id)
        subjects = tuple(DataSubject) if i == 0 else (DataSubject.SURVIVOR,)
        app.erase_personal_data(
            case_id,
            actor=COORDINATOR,
            subjects=subjects,
            reason=ErasureReason.SURVIVOR_REQUEST,
            at=case.modified_on + timedelta(minutes=1),
        )
    walk_cases(app, 20, random.Random(61), start + timedelta(days=3))
    # blank personal values: given (sealed) but not "given" for the derived flags, which only
    # the opened value tells apart from a real one
    at = start + timedelta(days=40)
    blank = app.receive_complaint(
        actor=intake_operator_actor("unhcr"),
        at=at,
        received_at=at,
        channel=Channel.HOTLINE,
        complainant_role=ComplainantRole.WITNESS,
        immediate_safety_risk=False,
        narrative="What was said, in the complainant's words",
        complainant=PersonDetails(name=" ", phone=""),
        survivor=PersonDetails(address="\t"),
    ).id
    app.transfer_case(
        blank,
        actor=COORDINATOR,
        to_agency="wfp",
        reason=TransferReason.CAPACITY,
        shared=(SharedItem.ALLEGATION_SUMMARY,),
        note="   ",
        at=at + timedelta(hours=1),
    )
    return keys


def erased_cases(app: ComplaintMechanism) -> list[UUID]:
    return [
        UUID(str(n.originator_id))
        for n in app.recorder.select_notifications(1, 10**6)
        if n.topic.endswith("Case.PersonalDataErased")
    ]


class _Share(msgspec.Struct):
    """A share message as published, its sealed box set aside and opened."""

    subject: str
    envelope: dict[str, Any]
    opened: dict[str, Any]


def _share(subject: str, data: bytes, key: PrivateKey) -> _Share:
    envelope = msgspec.json.decode(data)
    envelope["data"].pop("sealed")
    return _Share(subject, envelope, open_share(data, key).to_json())


def plain_path(
    app: ComplaintMechanism, keys: dict[str, PrivateKey]
) -> tuple[list[tuple[str, bytes, dict[str, str]]], dict[str, _Share]]:
    """The messages of the whole store as the plain path makes them: the events, and the
    shares by message id."""
    sid = store_id_of(app.recorder)
    source = f"urn:cbcm:store:{sid}"
    router = Router(app)
    sharer = Sharer(app, router)
    events: list[tuple[str, bytes, dict[str, str]]] = []
    shares: dict[str, _Share] = {}
    previous = 0
    for n in app.recorder.select_notifications(1, 10**6):
        event = app.mapper.to_domain_event(n)  # every sealed field opened
        if not is_published(event):
            continue
        subject = event_subject(router.agency_of(event, n.id), *SUBJECT_TOKENS[type(event)])
        payload = encode(to_cloud_event(event, source=source, position=n.id))
        headers = {
            MSG_ID_HEADER: f"{sid}:{n.id}",
            PREVIOUS_POSITION_HEADER: str(previous),
            EXPECTED_LAST_SEQUENCE_HEADER: str(len(events)),
            EXPECTED_STREAM: STREAM,
        }
        events.append((subject, payload, headers))
        share = sharer.share_of(event, n.id, source)
        if share is not None:
            recipient = decode_share(share.payload).data.recipient
            shares[f"{sid}:{n.id}:share"] = _share(share.subject, share.payload, keys[recipient])
        previous = n.id
    return events, shares


def a_transfer(
    app: ComplaintMechanism, keys: dict[str, PrivateKey]
) -> tuple[dict[int, tuple[str, bytes, dict[str, str]]], int, int]:
    """The plain path's event messages by position, and the positions of the first transferred
    case's receipt and of its transfer (its events before that go under the agency it came
    from)."""
    events = plain_path(app, keys)[0]
    by_position = {int(h[MSG_ID_HEADER].rsplit(":", 1)[1]): (s, p, h) for s, p, h in events}
    notifications = app.recorder.select_notifications(1, 10**6)
    transferred = next(n for n in notifications if n.topic.endswith("Case.Transferred"))
    received = next(
        n.id
        for n in notifications
        if n.originator_id == transferred.originator_id and n.originator_version == 1
    )
    return by_position, received, transferred.id


async def published(
    js: JetStreamContext, stream: str
) -> list[tuple[int, str, bytes, dict[str, str]]]:
    """What ``stream`` holds: sequence, subject, data and headers of each message (a share
    purged with its case's erasure is not there)."""
    return [(m.seq, m.subject, m.data, m.headers) for m in await stream_contents(js, stream)]


@pytest.mark.parametrize("in_process", [False, True], ids=["thread", "process"])
async def test_the_relay_publishes_what_the_plain_path_makes_byte_for_byte(
    app: ComplaintMechanism,
    nc: NatsClient,
    js: JetStreamContext,
    in_process: bool,
    settings: Settings,
    demo_template: StoreTemplate[dict[str, PrivateKey]],
    translator_process: Callable[..., TranslatorProcess],
) -> None:
    # given the demo's store, with share keys and erasures
    keys = demo_template.made
    expected_events, expected_shares = plain_path(app, keys)
    assert any(b'"has_survivor_details":true' in p for _, p, _ in expected_events), (
        "no derived flag read an opened field"
    )
    erased = {str(c) for c in erased_cases(app)}

    # when the relay publishes it in batches smaller than the store (several reads, windows)
    publisher = AckPublisher(nc)
    process = translator_process(settings) if in_process else None
    relay = Relay(app, js, publisher=publisher, batch_size=97, window=64, process=process)
    try:
        await relay.publish_pending()
    finally:
        await publisher.close()
        if process is not None:
            await asyncio.to_thread(process.close)

    # then every event message is the plain path's, byte for byte, headers and subject too
    events = await published(js, STREAM)
    assert len(events) == len(expected_events)
    for (_, *got), want in zip(events, expected_events, strict=True):
        assert tuple(got) == want
    # and every share left in its stream (those of erased cases were withdrawn) has the
    # plain path's envelope and headers, and its sealed box opens to the same values
    shares = [
        m for m in await published(js, SHARES_STREAM) if m[3][MSG_ID_HEADER].endswith(":share")
    ]
    assert len(shares) >= 3, "too few shares left to compare"
    withdrawn = set(expected_shares) - {h[MSG_ID_HEADER] for *_, h in shares}
    assert all(expected_shares[i].envelope["subject"] in erased for i in withdrawn)
    for seq, subject, data, headers in shares:
        assert headers == {
            MSG_ID_HEADER: headers[MSG_ID_HEADER],
            EXPECTED_LAST_SEQUENCE_HEADER: str(seq - 1),
            EXPECTED_STREAM: SHARES_STREAM,
        }
        expected = expected_shares[headers[MSG_ID_HEADER]]
        assert _share(subject, data, keys[expected.opened["recipient"]]) == expected
    # nothing in a message is a placeholder for a field that was never opened
    assert not any(UNOPENED.encode() in d for _, _, d, _ in events + shares)


async def test_a_translating_process_killed_mid_backlog_is_started_again_losing_nothing(
    app: ComplaintMechanism,
    nc: NatsClient,
    js: JetStreamContext,
    settings: Settings,
    demo_template: StoreTemplate[dict[str, PrivateKey]],
    translator_process: Callable[..., TranslatorProcess],
) -> None:
    # given the demo's store, and a relay translating in a process of its own
    keys = demo_template.made
    expected_events, _ = plain_path(app, keys)
    publisher = AckPublisher(nc)
    process = translator_process(settings)
    relay = Relay(app, js, publisher=publisher, batch_size=40, window=40, process=process)
    stop = asyncio.Event()
    running = asyncio.ensure_future(relay.run(stop, poll_interval=0.01))
    try:
        # when its translating process is killed three times while it publishes the backlog
        killed: list[int] = []
        for part in (1, 2, 3):
            at = len(expected_events) * part // 4
            await wait_for(lambda at=at: _stream_holds(js, at), f"{at} messages")  # type: ignore[misc]
            pid = process.pid
            assert pid is not None and pid not in killed
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        # then it starts another each time and publishes everything
        await wait_for(lambda: _stream_holds(js, len(expected_events)), "the whole store")
    finally:
        stop.set()
        await running
        await publisher.close()
        await asyncio.to_thread(process.close)
    assert relay.failures >= 1
    # once, in order, byte for byte what the plain path makes (a fresh router in each new
    # process routes as the one killed would have)
    events = await published(js, STREAM)
    assert [tuple(m[1:]) for m in events] == expected_events


async def _stream_holds(js: JetStreamContext, count: int) -> bool:
    return int((await js.stream_info(STREAM)).state.messages) >= count


async def wait_for(
    condition: Callable[[], Awaitable[bool]], what: str, within: float = 120.0
) -> None:
    deadline = time.monotonic() + within
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("in_process", [False, True], ids=["thread", "process"])
async def test_an_event_that_does_not_decode_stalls_the_relay_there_in_either_place(
    app: ComplaintMechanism,
    nc: NatsClient,
    js: JetStreamContext,
    settings: Settings,
    in_process: bool,
    demo_template: StoreTemplate[dict[str, PrivateKey]],
    translator_process: Callable[..., TranslatorProcess],
) -> None:
    # given the demo's store, then an event of a published class that does not decode, then
    # more events
    keys = demo_template.made
    expected_events, _ = plain_path(app, keys)
    app.recorder.insert_events(
        [
            StoredEvent(
                originator_id=uuid4(),
                originator_version=1,
                topic=get_topic(Case.Received),
                state=b'{"not": "a complaint"}',
            )
        ]
    )
    poison = app.recorder.max_notification_id()
    assert poison is not None
    walk_cases(app, 3, random.Random(3), demo_start() + timedelta(days=50))

    # when the relay publishes, translating in a thread or in its process
    publisher = AckPublisher(nc)
    process = translator_process(settings) if in_process else None
    relay = Relay(app, js, publisher=publisher, batch_size=97, window=64, process=process)
    try:
        with pytest.raises(RelayStalled) as stalled:
            await relay.publish_pending()
    finally:
        await publisher.close()
        if process is not None:
            await asyncio.to_thread(process.close)

    # then it stalls at that event, naming its position, topic and the error's type only,
    # after publishing every event before it, as the plain path makes them
    assert stalled.value.poison == Poison(
        poison, get_topic(Case.Received), "MapperDeserialisationError"
    )
    events = await published(js, STREAM)
    assert [tuple(m[1:]) for m in events] == expected_events
    assert await relay.recorded_position() == poison - 1


async def test_the_translating_process_asked_out_of_turn_answers_as_a_fresh_one(
    app: ComplaintMechanism,
    settings: Settings,
    demo_template: StoreTemplate[dict[str, PrivateKey]],
    translator_process: Callable[..., TranslatorProcess],
) -> None:
    # given the demo's store: a case received at position `received`, transferred at
    # `transferred_at` (its events before that go under the agency it came from)
    by_position, received, transferred_at = a_transfer(app, demo_template.made)
    read = published = received  # from the event after its receipt
    size = transferred_at - received
    process = translator_process(settings)
    try:
        # and a translating process that answered the batch after the case's receipt up to
        # its transfer (a full one: it read the next one ahead; its router knows the transfer)
        first = await asyncio.to_thread(process.next_batch, read, published, size)
        assert first.count == size

        # when it is asked for that batch again (out of turn: the relay never does)
        again = await asyncio.to_thread(process.next_batch, read, published, size)
    finally:
        await asyncio.to_thread(process.close)

    # then it answers as a fresh process would: the case's events before its transfer
    # under the agency it came from, every message as the plain path makes it
    want = [by_position[p][:2] for p in sorted(by_position) if received < p <= transferred_at]
    assert len({subject.split(".")[3] for subject, _ in want}) == 2
    assert [(o.subject, o.payload) for o in first.translated.out] == want
    assert [(o.subject, o.payload) for o in again.translated.out] == want
