"""Signed webhooks (issue #19) against a real receiver: the deliverer reads a real nats-server's
``CBCM_EVENTS`` (filled by the real relay from a real event store) and posts to a Node
receiver that verifies every delivery with the ``standardwebhooks`` npm package.

What is attacked: need-to-know (an endpoint registered for every type still gets only its
agency's events), order per case, retries (same ``webhook-id``), an endpoint failing for
the configured days (disabled by an event in the log, its events kept and sent once enabled
again), forged and replayed deliveries (refused by the receiver)."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from nats.aio.client import Client as NatsClient

from contracts.subjects import STREAM
from domain.actors import Actor, Role
from domain.vocabulary import Channel, ComplainantRole, SharedItem, TransferReason
from domain.webhooks import WEBHOOK_REGISTRY_ID, WebhookRegistry, webhook_endpoint_id
from services.application.mechanism import ComplaintMechanism
from services.application.webhooks import AGENCY_EVENT_TYPES
from services.bootstrap import complaint_mechanism
from services.nats.server import EmbeddedNats
from services.relay.relay import Relay, ensure_stream
from services.settings import Settings
from services.webhooks.deliverer import Deliverer, DeliveryPolicy
from services.webhooks.outbox import Outbox
from services.webhooks.signing import signed_headers
from tests.scenario import at, receive, walk_sea_case
from tests.webhook_receiving import NodeReceiver
from tests.world import COORDINATOR, FOCAL_POINT, establish

WFP_OPERATOR = Actor("op-wfp-1", "wfp", Role.INTAKE_OPERATOR)
FAST = DeliveryPolicy(
    retry_first=timedelta(milliseconds=50),
    retry_most=timedelta(milliseconds=200),
    disable_after=timedelta(days=5),
    timeout=5,
)


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


async def until(check: Callable[[], Awaitable[bool] | bool], within: float = 30.0) -> None:
    """Wait for a condition (never a fixed sleep)."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out waiting for a condition")
        await asyncio.sleep(0.05)


@dataclass
class Stack:
    app: ComplaintMechanism
    nats: EmbeddedNats
    nc: NatsClient
    outbox: Outbox
    tmp: Path

    async def publish(self) -> None:
        await Relay(self.app, self.nc.jetstream()).publish_pending()

    def register(self, agency: str, url: str, secret: str, types: set[str]) -> Any:
        written = self.app.register_webhook(
            actor=COORDINATOR,
            agency=agency,
            url=url,
            secret=secret,
            event_types=tuple(sorted(types)),
            at=datetime.now(UTC),
        )
        return webhook_endpoint_id(written.version), written.position

    async def stream(self) -> list[tuple[str, dict[str, Any]]]:
        """Every message of CBCM_EVENTS, subject and CloudEvent, read back from NATS."""
        js = self.nc.jetstream()
        last = (await js.stream_info(STREAM)).state.last_seq
        out = []
        for seq in range(1, last + 1):
            raw = await js.get_msg(STREAM, seq=seq)
            out.append((raw.subject, json.loads(raw.data or b"{}")))
        return out


@pytest.fixture
async def stack(
    request: pytest.FixtureRequest, tmp_path: Path, nats_server: EmbeddedNats
) -> AsyncIterator[Stack]:
    """On SQLite, or on PostgreSQL when a test asks (``indirect`` parameter ``postgres``)."""
    if getattr(request, "param", "sqlite") == "postgres":
        store = str(request.getfixturevalue("postgres_url"))
    else:
        store = f"sqlite:///{tmp_path / 'events.sqlite3'}"
    app = complaint_mechanism(Settings(data_dir=tmp_path, event_store=store))
    establish(app, at(-24))
    nc = await nats.connect(nats_server.url)
    await ensure_stream(nc.jetstream())
    outbox = Outbox(tmp_path / "webhooks" / "deliveries.sqlite3")
    try:
        yield Stack(app, nats_server, nc, outbox, tmp_path)
    finally:
        await nc.close()
        outbox.close()
        app.close()


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[NodeReceiver, dict[str, str]]]:
    secrets_by_path = {"/unhcr": new_secret(), "/wfp": new_secret()}
    node = NodeReceiver(tmp_path / "received.jsonl", secrets_by_path).start()
    yield node, secrets_by_path
    node.stop()


@dataclass
class Running:
    deliverer: Deliverer
    stop: asyncio.Event
    task: asyncio.Task[None]

    async def halt(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 20)


def run(stack: Stack, clock: Callable[[], datetime] | None = None) -> Running:
    deliverer = Deliverer(
        stack.app,
        stack.outbox,
        stack.nats.url,
        policy=FAST,
        clock=clock or (lambda: datetime.now(UTC)),
    )
    stop = asyncio.Event()
    return Running(deliverer, stop, asyncio.create_task(deliverer.run(stop)))


def a_wfp_complaint(app: ComplaintMechanism, hours: float) -> None:
    app.receive_complaint(
        actor=WFP_OPERATOR,
        at=at(hours),
        received_at=at(hours),
        channel=Channel.HOTLINE,
        complainant_role=ComplainantRole.WITNESS,
        immediate_safety_risk=False,
        narrative="heard at the distribution",
    )


def expected_for(
    messages: list[tuple[str, dict[str, Any]]], agency: str, types: set[str], after: int
) -> list[str]:
    """What an agency's endpoint must get, worked out from the stream with plain string
    tests (not the deliverer's routing): its subjects, its types, after its registration."""
    return [
        ce["id"]
        for subject, ce in messages
        if subject.startswith(f"cbcm.v1.evt.{agency}.")
        and ce["type"] in types
        and ce["position"] > after
    ]


@pytest.mark.parametrize(
    "stack", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
async def test_each_agency_receives_its_own_events_signed_in_order_and_no_other(
    stack: Stack, receiver: tuple[NodeReceiver, dict[str, str]]
) -> None:
    node, keys = receiver
    every_type = set(AGENCY_EVENT_TYPES)
    _, unhcr_at = stack.register("unhcr", node.url("/unhcr"), keys["/unhcr"], every_type)
    _, wfp_at = stack.register("wfp", node.url("/wfp"), keys["/wfp"], every_type)
    walk_sea_case(stack.app)  # a unhcr case, its referral to a clinic, its investigation
    a_wfp_complaint(stack.app, 1)
    case = receive(stack.app)
    stack.app.transfer_case(  # custody moves to wfp: from here on its events are wfp's
        case,
        actor=FOCAL_POINT,
        to_agency="wfp",
        reason=TransferReason.RECEIVED_BY_WRONG_AGENCY,
        shared=(SharedItem.ALLEGATION_SUMMARY,),
        at=at(1),
    )
    await stack.publish()
    messages = await stack.stream()
    want_unhcr = expected_for(messages, "unhcr", every_type, unhcr_at)
    want_wfp = expected_for(messages, "wfp", every_type, wfp_at)
    assert len(want_unhcr) >= 10 and len(want_wfp) >= 2

    running = run(stack)
    try:
        # every delivery received and recorded as sent (the receiver has a message a moment
        # before the deliverer marks its row: stopping in between leaves it queued, to resend)
        await until(
            lambda: (
                len(node.verified("/unhcr")) >= len(want_unhcr)
                and len(node.verified("/wfp")) >= len(want_wfp)
                and not stack.outbox.queued()
            )
        )
    finally:
        await running.halt()

    lines = node.lines()
    assert all(line["ok"] for line in lines), [line["error"] for line in lines if not line["ok"]]
    for path, want in (("/unhcr", want_unhcr), ("/wfp", want_wfp)):
        got = node.verified(path)
        assert [line["ce"]["id"] for line in got] == want  # every one, once, in stream order
        assert all(line["webhook_id"] == line["ce"]["id"] for line in got)
        assert all(line["content_type"] == "application/cloudevents+json" for line in got)
        assert all(line["ce"]["specversion"] == "1.0" for line in got)
    assert stack.outbox.queued() == {}
    delivered = stack.outbox.attempts(last=1000)
    assert {a.outcome for a in delivered} == {"delivered"}
    assert len(delivered) == len(want_unhcr) + len(want_wfp)


async def test_only_the_registered_types_are_sent_and_from_the_registration_on(
    stack: Stack, receiver: tuple[NodeReceiver, dict[str, str]]
) -> None:
    node, keys = receiver
    walk_sea_case(stack.app)  # before the registration: not sent
    received = "org.psea.cbcm.case.received.v1"
    _, since = stack.register("unhcr", node.url("/unhcr"), keys["/unhcr"], {received})
    walk_sea_case(stack.app)
    walk_sea_case(stack.app)
    await stack.publish()
    want = expected_for(await stack.stream(), "unhcr", {received}, since)
    assert len(want) == 2
    running = run(stack)
    try:
        await until(lambda: len(node.verified("/unhcr")) >= 2)
        await until(lambda: stack.outbox.stream_seq() > 0 and not stack.outbox.queued())
    finally:
        await running.halt()
    assert [line["ce"]["id"] for line in node.verified("/unhcr")] == want


async def test_an_endpoint_down_for_the_configured_days_is_disabled_then_gets_everything(
    stack: Stack, receiver: tuple[NodeReceiver, dict[str, str]]
) -> None:
    """The receiver is down; the controlled clock runs days ahead; the deliverer records the
    endpoint disabled (no actor, reason failing) once the limit is reached, keeps its events,
    and sends them all, in order and with their ids, once the coordinator enables it again."""
    node, keys = receiver
    port = node.port
    node.stop()  # down: connections refused
    shift = [timedelta(days=-6)]  # the deliverer's clock runs six days behind, for now
    started = datetime.now(UTC) + shift[0]
    endpoint, since = stack.register(
        "unhcr", f"http://127.0.0.1:{port}/unhcr", keys["/unhcr"], set(AGENCY_EVENT_TYPES)
    )
    walk_sea_case(stack.app)
    await stack.publish()
    want = expected_for(await stack.stream(), "unhcr", set(AGENCY_EVENT_TYPES), since)

    running = run(stack, clock=lambda: datetime.now(UTC) + shift[0])
    try:
        await until(lambda: len(stack.outbox.attempts(last=5)) >= 3)  # failing, retried
        assert stack.app.webhook_endpoint(endpoint).enabled  # not yet: days have not passed
        shift[0] = timedelta(0)  # six days of failures later
        await until(lambda: not stack.app.webhook_endpoint(endpoint).enabled)
        registry = stack.app.webhook_registry()
        assert registry is not None
        disabled = [
            e
            for e in stack.app.events.get(WEBHOOK_REGISTRY_ID)
            if isinstance(e, WebhookRegistry.EndpointDisabled)
        ]
        assert len(disabled) == 1 and disabled[0].actor is None
        assert disabled[0].reason == "failing" and disabled[0].failing_since >= started
        waiting = stack.outbox.queued()[str(endpoint)]
        assert waiting == len(want)  # nothing lost, nothing sent

        # The coordinator hears of it, the agency fixes its receiver, the endpoint is enabled
        node.port = port
        node.start()
        stack.app.enable_webhook(endpoint, actor=COORDINATOR, at=datetime.now(UTC))
        await until(lambda: len(node.verified("/unhcr")) >= len(want))
    finally:
        await running.halt()
    got = node.verified("/unhcr")
    assert [line["ce"]["id"] for line in got] == want
    assert all(line["webhook_id"] == line["ce"]["id"] for line in got)
    failed = [a for a in stack.outbox.attempts(last=10_000) if a.outcome == "failed"]
    assert failed and all(a.error == "ConnectError" for a in failed)
    assert {a.webhook_id for a in failed} <= set(want)  # retries kept their ids


async def test_a_receiver_still_on_the_old_secret_verifies_for_a_while_after_a_rotation(
    stack: Stack, receiver: tuple[NodeReceiver, dict[str, str]]
) -> None:
    node, keys = receiver
    received = "org.psea.cbcm.case.received.v1"
    endpoint, _ = stack.register("unhcr", node.url("/unhcr"), keys["/unhcr"], {received})
    stack.app.rotate_webhook_secret(
        endpoint, actor=COORDINATOR, secret=new_secret(), at=datetime.now(UTC)
    )  # the receiver has not been given the new one yet
    walk_sea_case(stack.app)
    await stack.publish()
    running = run(stack)
    try:
        await until(lambda: len(node.lines()) >= 1)
    finally:
        await running.halt()
    assert [line["ok"] for line in node.lines()] == [True]


async def test_a_forged_or_replayed_delivery_is_refused_by_the_receiver(
    receiver: tuple[NodeReceiver, dict[str, str]],
) -> None:
    node, keys = receiver
    body = json.dumps({"specversion": "1.0", "id": "c:1", "type": "t", "subject": "c"}).encode()
    now = datetime.now(UTC)
    attempts = {
        "genuine": (keys["/unhcr"], "c:1", now, body),
        "another agency's secret": (keys["/wfp"], "c:1", now, body),
        "made-up secret": (new_secret(), "c:1", now, body),
        "replayed ten minutes later": (keys["/unhcr"], "c:1", now - timedelta(minutes=10), body),
    }
    async with httpx.AsyncClient() as client:
        for name, (secret, webhook_id, when, content) in attempts.items():
            headers = signed_headers(secret, webhook_id, when, content)
            answer = await client.post(node.url("/unhcr"), content=content, headers=headers)
            assert answer.status_code == (204 if name == "genuine" else 401), name
        # a captured genuine delivery with its body changed
        headers = signed_headers(keys["/unhcr"], "c:1", now, body)
        tampered = body.replace(b'"t"', b'"u"')
        answer = await client.post(node.url("/unhcr"), content=tampered, headers=headers)
        assert answer.status_code == 401
    assert [line["ok"] for line in node.lines()] == [True, False, False, False, False]
