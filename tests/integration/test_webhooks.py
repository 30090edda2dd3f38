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
import ipaddress
import json
import secrets
import socket
import ssl
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpcore
import httpx
import nats
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from dnslib import QTYPE, RR, A, DNSRecord
from dnslib.server import BaseResolver, DNSServer
from nats.aio.client import Client as NatsClient

from contracts.subjects import STREAM
from domain.actors import Actor, Role
from domain.vocabulary import Channel, ComplainantRole, SharedItem, TransferReason
from domain.webhooks import (
    WEBHOOK_REGISTRY_ID,
    WebhookRegistry,
    WebhookSecret,
    webhook_endpoint_id,
    webhook_secret_id,
)
from services.application.mechanism import ComplaintMechanism
from services.application.webhooks import AGENCY_EVENT_TYPES
from services.bootstrap import complaint_mechanism
from services.nats.server import EmbeddedNats, free_port
from services.relay.relay import Relay, ensure_stream
from services.settings import Settings
from services.webhooks.deliverer import Deliverer, DeliveryPolicy, run_deliverer
from services.webhooks.outbox import Outbox
from services.webhooks.pinning import IPAddress
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
    store: str

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
        yield Stack(app, nats_server, nc, outbox, tmp_path, store)
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


async def test_a_deliverer_stopped_while_it_marks_a_delivery_does_not_send_it_again(
    stack: Stack,
    receiver: tuple[NodeReceiver, dict[str, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``cbcm webhooks deliver`` stopping (its senders cancelled) while a worker thread marks
    a delivery the receiver accepted. Before, the cancellation went on at once: the deliverer
    closed its outbox under the thread, the mark was lost, and the restarted deliverer sent
    the delivery again (a thread caught inside SQLite could crash the process). Now the
    cancellation waits for the thread to finish."""
    marking = threading.Event()
    closed = threading.Event()
    delivered, close = Outbox.delivered, Outbox.close

    def slow_delivered(outbox: Outbox, item: Any, attempt: Any) -> None:
        if not marking.is_set():
            marking.set()
            # still at it when the deliverer stops: it waits for the outbox to be closed
            # under it (at most a second, when nothing closes it first)
            closed.wait(1.0)
        delivered(outbox, item, attempt)

    def close_and_tell(outbox: Outbox) -> None:
        close(outbox)
        closed.set()

    monkeypatch.setattr(Outbox, "delivered", slow_delivered)
    monkeypatch.setattr(Outbox, "close", close_and_tell)
    node, keys = receiver
    received = "org.psea.cbcm.case.received.v1"
    _, since = stack.register("unhcr", node.url("/unhcr"), keys["/unhcr"], {received})
    walk_sea_case(stack.app)
    await stack.publish()
    want = expected_for(await stack.stream(), "unhcr", {received}, since)
    assert len(want) == 1
    settings = Settings(data_dir=stack.tmp, event_store=stack.store)

    async def deliverer(stop: asyncio.Event) -> None:
        await run_deliverer(settings, stack.nats.url, stop, nats_options={})

    # given a delivery the receiver accepted, being marked as delivered
    stop = asyncio.Event()
    task = asyncio.create_task(deliverer(stop))
    assert await asyncio.to_thread(marking.wait, 30)
    # when the deliverer is stopped then, and started again
    stop.set()
    await asyncio.wait_for(task, 20)
    again = asyncio.Event()
    task = asyncio.create_task(deliverer(again))
    try:
        await until(lambda: stack.outbox.stream_seq() > 0 and not stack.outbox.queued())
    finally:
        again.set()
        await asyncio.wait_for(task, 20)
    # then the agency received it once: the mark was kept, nothing is sent again
    assert [line["ce"]["id"] for line in node.verified("/unhcr")] == want
    assert [a.outcome for a in stack.outbox.attempts(last=10)] == ["delivered"]


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


# ------------------------------------------------------------------ DNS rebinding (#19)

PUBLIC = "93.184.216.34"
"""A global address the test's DNS server gives: never dialled (the test's dialer refuses
every address off this machine, as the workplace requires; see ``LoopbackNetwork``)."""


class RebindingDns:
    """A real DNS server (dnslib's, UDP on a free loopback port) that answers each name's
    first query with ``first`` and every later one with ``then`` (TTL 0), as an attacker's
    server does to pass a check and then point the connect elsewhere."""

    def __init__(self, first: str, then: str) -> None:
        self.first, self.then = first, then
        self.asked: list[str] = []
        self.port = free_port()
        outer = self

        class Answers(BaseResolver):  # type: ignore[misc]
            def resolve(self, request: DNSRecord, handler: object) -> DNSRecord:
                name = str(request.q.qname)
                reply = request.reply()
                if QTYPE[request.q.qtype] == "A":
                    seen = name in outer.asked
                    outer.asked.append(name)
                    address = outer.then if seen else outer.first
                    reply.add_answer(RR(name, QTYPE.A, rdata=A(address), ttl=0))
                return reply

        self.server = DNSServer(Answers(), port=self.port, address="127.0.0.1", tcp=False)

    def __enter__(self) -> RebindingDns:
        self.server.start_thread()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.stop()

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        """The deliverer's resolver in these tests: asks this server, as a stub resolver
        asks the one in /etc/resolv.conf."""

        def ask() -> list[IPAddress]:
            answer = DNSRecord.question(host, "A").send("127.0.0.1", self.port, timeout=5)
            return [
                ipaddress.ip_address(str(rr.rdata))
                for rr in DNSRecord.parse(answer).rr
                if rr.rtype == QTYPE.A
            ]

        return await asyncio.to_thread(ask)


class LoopbackNetwork(httpcore.AsyncNetworkBackend):
    """What opens TCP connections for the deliverer in these tests: loopback addresses are
    dialled for real; ``PUBLIC`` is routed to ``public_to`` on loopback when given (a stand-
    in for a public receiver), else refused; anything else is refused. Every address it is
    asked for is recorded. Nothing leaves the machine."""

    def __init__(self, public_to: int | None = None) -> None:
        self.asked: list[str] = []
        self.public_to = public_to
        self.real = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        self.asked.append(host)
        if host == PUBLIC and self.public_to is not None:
            host, port = "127.0.0.1", self.public_to
        elif not ipaddress.ip_address(host).is_loopback:
            raise httpcore.ConnectError("the test network dials loopback only")
        return await self.real.connect_tcp(host, port, timeout=timeout)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("no unix sockets here")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class Listener:
    """A TCP port on loopback that counts the connections made to it (the internal service
    a rebinding attack aims the deliverer at): it must see none."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


def run_pinned(
    stack: Stack, resolver: Any, dialer: httpcore.AsyncNetworkBackend, verify: Any = None
) -> Running:
    deliverer = Deliverer(
        stack.app,
        stack.outbox,
        stack.nats.url,
        policy=FAST,
        resolver=resolver,
        dialer=dialer,
        verify=verify,
    )
    stop = asyncio.Event()
    return Running(deliverer, stop, asyncio.create_task(deliverer.run(stop)))


async def test_a_rebinding_dns_server_cannot_aim_a_delivery_at_an_internal_address(
    stack: Stack,
) -> None:
    """The DNS server answers the first query with a public address and every later one
    with 127.0.0.1, where a service listens. The deliverer connects only to the address it
    checked: the public one (refused by the test's network, so it is retried), then, asked
    again, the name gives 127.0.0.1 and the attempt is refused before any connection. The
    listener on loopback sees nothing. Without the pin (the client resolving the name again
    for its connect) it does."""
    listener = Listener()
    with RebindingDns(first=PUBLIC, then="127.0.0.1") as dns:
        url = f"https://hooks.rebind.test:{listener.port}/cbcm"
        stack.register("unhcr", url, new_secret(), {"org.psea.cbcm.case.received.v1"})
        walk_sea_case(stack.app)
        await stack.publish()
        network = LoopbackNetwork()
        running = run_pinned(stack, dns.resolve, network)
        try:
            await until(lambda: len(stack.outbox.attempts(last=10)) >= 3)
        finally:
            await running.halt()
            listener.close()
    attempts = sorted(stack.outbox.attempts(last=10), key=lambda a: a.attempt)
    assert listener.accepted == 0  # not one connection reached the internal service
    assert network.asked == [PUBLIC]  # only the checked public address was ever dialled
    assert [a.error for a in attempts[:3]] == [
        "ConnectError",
        "AddressNotAllowed",
        "AddressNotAllowed",
    ]
    assert len(dns.asked) == len(attempts)  # one resolution per attempt, no second one


async def test_a_pinned_delivery_still_speaks_tls_to_the_name(stack: Stack, tmp_path: Path) -> None:
    """The pinned connection goes to the checked address, but TLS and HTTP are the name's:
    the server sees the name as SNI and as Host, and the deliverer verifies the server's
    certificate against the name (a certificate for another name is refused)."""
    name = "hooks.pinned.test"
    ca, server_context = tls_for(tmp_path, name)
    receiver = TlsReceiver(server_context)
    with RebindingDns(first=PUBLIC, then=PUBLIC) as dns:
        right, _ = stack.register(
            "unhcr", f"https://{name}/cbcm", new_secret(), {"org.psea.cbcm.case.received.v1"}
        )
        wrong, _ = stack.register(  # the same server, reached under a name not on its cert
            "unhcr",
            "https://other.pinned.test/cbcm",
            new_secret(),
            {"org.psea.cbcm.case.received.v1"},
        )
        walk_sea_case(stack.app)
        await stack.publish()
        network = LoopbackNetwork(public_to=receiver.port)
        running = run_pinned(
            stack, dns.resolve, network, verify=ssl.create_default_context(cafile=ca)
        )

        def outcomes(endpoint: Any) -> list[str]:
            return [a.outcome for a in stack.outbox.attempts(last=50) if a.endpoint_id == endpoint]

        try:
            await until(lambda: "delivered" in outcomes(right) and len(outcomes(wrong)) >= 2)
        finally:
            await running.halt()
            receiver.close()
    assert outcomes(right).count("delivered") == 1
    assert receiver.seen == [(name, name)]  # (SNI, Host): the name, though dialled by address
    assert set(network.asked) == {PUBLIC}
    assert set(outcomes(wrong)) == {"failed"}  # certificate not for that name: nothing sent
    failed = [a for a in stack.outbox.attempts(last=50) if a.endpoint_id == wrong]
    assert {a.error for a in failed} == {"ConnectError"}


def tls_for(directory: Path, name: str) -> tuple[str, ssl.SSLContext]:
    """A CA file and a server context with a certificate for ``name`` that CA signed."""
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cbcm test ca")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = directory / "ca.pem"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    chain = directory / "server.pem"
    chain.write_bytes(
        cert.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(chain)
    return str(ca_file), context


class TlsReceiver:
    """An HTTPS server on loopback that records (SNI, Host) of each request and answers 204."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.seen: list[tuple[str | None, str | None]] = []
        sni: dict[int, str | None] = {}  # the connection's socket -> the name it asked for

        def remember(sock: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext) -> None:
            sni[id(sock)] = server_name

        context.sni_callback = remember
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                outer.seen.append((sni.get(id(self.connection)), self.headers.get("Host")))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # the handshake in each request's own thread (on its first read), never in the
        # accepting one: a client that gives up on the certificate holds up no other
        self.server.socket = context.wrap_socket(
            self.server.socket, server_side=True, do_handshake_on_connect=False
        )
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


async def test_a_removed_endpoints_secrets_are_shredded_and_no_one_elses(stack: Stack) -> None:
    """Someone with every copy of the database and the key ring, after the coordinator
    removed an endpoint, reads none of its secrets (the one it had and the one before its
    rotation): their data key was destroyed with the removal. Another endpoint's secret still
    opens, and deliveries to it are still signed."""
    first, rotated, other = new_secret(), new_secret(), new_secret()
    removed, _ = stack.register(
        "unhcr", "https://hooks.unhcr.example/a", first, {"org.psea.cbcm.case.received.v1"}
    )
    kept, _ = stack.register(
        "wfp", "https://hooks.wfp.example/b", other, {"org.psea.cbcm.case.received.v1"}
    )
    stack.app.rotate_webhook_secret(
        removed, actor=COORDINATOR, secret=rotated, at=datetime.now(UTC)
    )
    assert stack.app.webhook_endpoint(removed).secret == rotated
    assert stack.app.webhook_endpoint(removed).previous_secret == first
    stack.app.remove_webhook(removed, actor=COORDINATOR, at=datetime.now(UTC))

    # an attacker's own process on the same store and keys
    attacker = complaint_mechanism(Settings(data_dir=stack.tmp, event_store=stack.store))
    try:
        readable = []
        for aggregate_id in (
            WEBHOOK_REGISTRY_ID,
            webhook_secret_id(removed),
            webhook_secret_id(kept),
        ):
            for stored in attacker.recorder.select_events(aggregate_id):
                readable.append(repr(vars(attacker.mapper.to_domain_event(stored))))
        seen = "\n".join(readable)
        assert first not in seen and rotated not in seen  # gone, in every event
        assert other in seen  # the other endpoint's still opens
        assert attacker.webhook_endpoint(kept).secret == other
        erased = [
            e
            for e in attacker.events.get(webhook_secret_id(removed))
            if isinstance(e, WebhookSecret.Erased)
        ]
        assert len(erased) == 1 and erased[0].actor == COORDINATOR
    finally:
        attacker.close()
    # and nothing in the database file holds them in clear, nor their key bytes
    raw = b"".join(p.read_bytes() for p in stack.tmp.glob("events.sqlite3*"))
    for gone in (first, rotated):
        assert gone.encode() not in raw
        assert base64.b64decode(gone.removeprefix("whsec_")) not in raw


class TricklingReceiver:
    """A receiver that answers its status line, then one header line every 0.3 s for as long
    as the test runs: each read gets a byte in time, so per-read timeouts never fire."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.stopping = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\n")
                while not self.stopping.wait(0.3):
                    conn.sendall(b"X-Slow: a\r\n")
            except OSError:
                return

    def close(self) -> None:
        self.stopping.set()
        self.sock.close()


# Attack (review of #19): httpx's timeouts are per read, so a receiver trickling its headers
# held one attempt for as long as it liked (45 hours at the default 10 s): the attempt neither
# failed nor counted toward disabling the endpoint. An attempt now has one deadline.
async def test_a_receiver_that_trickles_its_answer_fails_the_attempt_at_the_deadline(
    stack: Stack,
) -> None:
    receiver = TricklingReceiver()
    try:
        stack.register(
            "unhcr",
            f"http://127.0.0.1:{receiver.port}/slow",
            new_secret(),
            {"org.psea.cbcm.case.received.v1"},
        )
        walk_sea_case(stack.app)
        await stack.publish()
        deliverer = Deliverer(
            stack.app,
            stack.outbox,
            stack.nats.url,
            policy=replace(FAST, timeout=1),
            clock=lambda: datetime.now(UTC),
        )
        stop = asyncio.Event()
        running = Running(deliverer, stop, asyncio.create_task(deliverer.run(stop)))
        try:
            await until(lambda: len(stack.outbox.attempts(last=10)) >= 2)
        finally:
            await running.halt()
    finally:
        receiver.close()
    attempts = stack.outbox.attempts(last=10)
    assert all(a.outcome == "failed" and a.error == "Timeout" for a in attempts)
