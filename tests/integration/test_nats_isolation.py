"""Isolation on NATS (issue #6, ADR 6): the committed ``deploy/nats/cbcm.conf`` on a real
nats-server, with TLS files and nkeys written by ``cbcm nats setup``'s code in a temp dir.

Agency A (``unhcr``) and agency B (``unicef``) of the demo network connect with their own
credentials; the services (relay, projector, statistics, checkpoints) with theirs. What the
server refuses shows to the client as a permissions violation and the message goes nowhere;
what it allows arrives. Nothing sleeps and hopes: every wait is on a condition, with a
deadline.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import random
import socket
import sqlite3
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nats
import nats.errors
import nats.js.errors
import nkeys
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from typer.testing import CliRunner

from contracts.asyncapi import component_key
from contracts.audit import (
    AUDIT_STREAM,
    CHECKPOINT_SUBJECT,
    COSIGNATURE_SCHEMA,
    ERASURE_NOTICE_SCHEMA,
    ERASURE_NOTICE_SUBJECT,
    AuditCosignatureV1,
    agency_cosignature_subject,
    decode_checkpoint,
    decode_cosignature,
    decode_erasure_notice,
    encode_cosignature,
)
from contracts.statistics import decode_release
from contracts.subjects import SHARES_STREAM, STREAM, record_shares
from domain.actors import Actor, Role
from domain.personal_data import DataSubject
from domain.vocabulary import Channel, ComplainantRole, ErasureReason
from domain.webhooks import webhook_endpoint_id
from projections.inbox import InboxProjection
from projections.stats import StatisticsProjection
from services.application.mechanism import ComplaintMechanism
from services.application.store import is_published
from services.application.webhooks import AGENCY_EVENT_TYPES
from services.audit.checkpoints import checkpoint_once, verify_checkpoint
from services.audit.keys import (
    LogIdentity,
    load_log_origin,
    load_public_key,
    load_signing_key,
    load_witness_key,
    witness_dir,
    witness_vkey,
)
from services.audit.note import cosign, format_note, parse_checkpoint, parse_note
from services.audit.witness import WitnessBook, cosigner_name, run_witness
from services.bootstrap import complaint_mechanism
from services.cli.main import cli
from services.demo.network import COORDINATOR as DEMO_COORDINATOR
from services.demo.walk import AGENCIES, build_demo_network, walk_cases
from services.event_store.store_id import store_id_of
from services.nats.client import nats_connect_options
from services.nats.config import (
    AGENCY_API_PREFIX,
    agency_consumers,
    agency_user,
    network_users,
    server_config,
)
from services.nats.server import ConfiguredNats, free_port
from services.nats.setup import NatsSetup, provision_agency_consumers, write_nats_setup
from services.notify.service import notifier_path, run_notifier
from services.notify.settings import NotifySettings
from services.projector.publication import StatisticsPublisher
from services.projector.runner import open_projection, rebuild, run_projector
from services.relay.relay import ensure_shares_stream, run_relay
from services.settings import Settings
from services.webhooks.deliverer import Deliverer
from services.webhooks.outbox import Outbox
from tests.integration.test_headers_on_the_wire import strict_headers
from tests.integration.test_relay import wait_until
from tests.notify_world import SmtpServer, register_email
from tests.statistics_cases import store
from tests.unit.test_statistics_releases import CASES
from tests.webhook_receiving import NodeReceiver
from tests.world import COORDINATOR as WORLD_COORDINATOR

DEPLOYED = Path(__file__).resolve().parents[2] / "deploy" / "nats" / "cbcm.conf"
GUIDE = Path(__file__).resolve().parents[2] / "docs" / "integrator-guide.md"
CODES = [a.code for a in AGENCIES]
A, B = "unhcr", "unicef"
START = datetime(2025, 9, 1, tzinfo=UTC)
DEADLINE = 15.0
REFUSED_WAIT = 0.5
"""How long a refused request waits for an answer that must not come."""


# ---------------------------------------------------------------------------------- fixtures


@dataclass
class Network:
    """The demo network's NATS, its event store, and every user's settings."""

    setup: NatsSetup
    server: ConfiguredNats
    data_dir: Path
    store: str
    last_position: int = 0

    def settings(self, user: str) -> Settings:
        env = self.setup.client_environment(user)
        return Settings(
            data_dir=self.data_dir,
            event_store=self.store,
            **{name.removeprefix("CBCM_").lower(): value for name, value in env.items()},
        )

    def options(self, user: str) -> dict[str, Any]:
        return nats_connect_options(self.settings(user), user)

    @property
    def url(self) -> str:
        return self.setup.url

    def app(self) -> ComplaintMechanism:
        return complaint_mechanism(self.settings("relay"))


def last_published(app: ComplaintMechanism) -> int:
    """The store position of the last event the relay publishes."""
    last = 0
    for notification in app.recorder.select_notifications(1, 1_000_000):
        if is_published(app.mapper.to_domain_event(notification)):
            last = notification.id
    return last


async def stream_subjects(network: Network, after: int = 0) -> dict[int, str]:
    """Sequence -> subject of the events stream's messages after sequence ``after``, as the
    inbox projector's user reads them."""
    async with connected(network, "project-inbox") as (nc, _):
        js = nc.jetstream()
        last = (await js.stream_info(STREAM)).state.last_seq
        return {seq: (await js.get_msg(STREAM, seq)).subject for seq in range(after + 1, last + 1)}


async def stream_tail(nc: NatsClient) -> tuple[int, int]:
    """(last sequence, store position of the last message) of the events stream."""
    js = nc.jetstream()
    state = (await js.stream_info(STREAM)).state
    if not state.messages:
        return 0, 0
    raw = await js.get_msg(STREAM, state.last_seq)
    return int(state.last_seq), int((raw.headers or {})["Nats-Msg-Id"].split(":")[1])


async def relay_until_published(network: Network, then: Callable[[], Awaitable[None]]) -> None:
    """Run the real relay with its credentials until the stream holds the store's last
    published event, running ``then`` meanwhile."""
    stop = asyncio.Event()
    relay = asyncio.create_task(run_relay(network.settings("relay"), stop, network.url))
    async with connected(network, "project-inbox") as (reader, _):

        async def caught_up() -> bool:
            if relay.done():
                relay.result()
                raise AssertionError("the relay stopped")
            try:
                return (await stream_tail(reader))[1] == network.last_position
            except nats.errors.Error:
                return False  # no stream yet

        try:
            await then()
            await wait_until(
                caught_up, DEADLINE, f"the relay publishes up to {network.last_position}"
            )
        finally:
            stop.set()
            await relay


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    """The committed configuration running; the demo network and 25 cases published by the
    relay; a checkpoint published; every agency's consumers provisioned."""
    tmp = tmp_path_factory.mktemp("nats-isolation")
    port = free_port()
    setup = write_nats_setup(tmp / "bus", CODES, port=port)
    server = ConfiguredNats(
        tmp / "server",
        port=port,
        config_file=DEPLOYED,
        environment=setup.server_environment,
    ).start()
    net = Network(setup, server, tmp / "data", f"sqlite:///{tmp / 'events.sqlite3'}")
    try:
        app = net.app()
        try:
            build_demo_network(app, START)
            walk_cases(app, 25, random.Random(6), START + timedelta(hours=1))
            net.last_position = last_published(app)
        finally:
            app.close()

        async def prepare() -> None:
            async def nothing() -> None:
                return None

            await relay_until_published(net, nothing)
            app = net.app()
            try:
                key = load_signing_key(net.settings("audit-checkpoint"))
                await checkpoint_once(
                    app,
                    key,
                    net.url,
                    nats_options=net.options("audit-checkpoint"),
                    origin=load_log_origin(net.settings("audit-checkpoint")),
                )
            finally:
                app.close()
            done = await provision_agency_consumers(net.url, CODES, net.options("provision"))
            assert all(p.ready for p in done), [p for p in done if not p.ready]

        asyncio.run(prepare())
        yield net
    finally:
        server.stop()


# ---------------------------------------------------------------------------------- clients


@dataclass
class Violations:
    """The errors the server reported to one client (its ``error_cb``)."""

    seen: list[str] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def record(self, error: Exception) -> None:
        """The client's ``error_cb``."""
        self.seen.append(str(error).lower())
        self.changed.set()

    async def refused(self, operation: str, subject: str, within: float = DEADLINE) -> None:
        """Wait until the server refused ``operation`` (publish, subscription) on ``subject``."""
        wanted = f'permissions violation for {operation} to "{subject.lower()}"'
        try:
            async with asyncio.timeout(within):
                while not any(wanted in seen for seen in self.seen):
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            raise AssertionError(f"no refusal of {operation} to {subject}: {self.seen}") from None


async def refused_or_connected(network: Network, user: str, **options: Any) -> NatsClient:
    """A connection as ``user`` (``options`` override), or the error that refused it."""
    async with asyncio.timeout(DEADLINE):
        return await nats.connect(
            network.url,
            allow_reconnect=False,
            max_reconnect_attempts=1,  # 0 would mean "forever" to nats-py
            connect_timeout=5,
            **{**network.options(user), **options},
        )


@asynccontextmanager
async def connected(
    network: Network, user: str, **options: Any
) -> AsyncIterator[tuple[NatsClient, Violations]]:
    violations = Violations()
    nc = await refused_or_connected(network, user, error_cb=violations.record, **options)
    try:
        yield nc, violations
    finally:
        await nc.close()


class Inbox:
    """What one subscription received."""

    def __init__(self) -> None:
        self.messages: list[Msg] = []
        self.arrived = asyncio.Event()

    async def take(self, msg: Msg) -> None:
        """The subscription's callback."""
        self.messages.append(msg)
        self.arrived.set()

    async def first(self, within: float = DEADLINE) -> Msg:
        async with asyncio.timeout(within):
            await self.arrived.wait()
        return self.messages[0]


async def unanswered(nc: NatsClient, subject: str, payload: bytes = b"") -> bool:
    """True if a request on ``subject`` gets no answer at all."""
    try:
        await nc.request(subject, payload, timeout=REFUSED_WAIT)
    except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
        return True
    return False


def agency_api(*tokens: str) -> str:
    """A JetStream API subject as an agency's account names it."""
    return ".".join((AGENCY_API_PREFIX, *tokens))


# ---------------------------------------------------------------------------------- the file


def test_the_committed_configuration_is_the_generators_for_the_demo_network() -> None:
    assert DEPLOYED.read_text() == server_config(CODES), (
        "deploy/nats/cbcm.conf is stale: run `cbcm nats config --out deploy/nats/cbcm.conf`"
    )


def test_the_configuration_holds_public_keys_only(network: Network) -> None:
    text = DEPLOYED.read_text()
    for user, seed_file in network.setup.seed_files.items():
        seed = seed_file.read_bytes().strip().decode()
        assert seed.startswith("SU") and seed not in text, user
    assert "BEGIN" not in text  # no PEM key or certificate
    assert "password:" not in text and "token:" not in text  # nkeys are the only users


# ---------------------------------------------------------------------------------- refused


async def test_an_agency_cannot_subscribe_to_another_agencys_events_or_shares(
    network: Network,
) -> None:
    async with connected(network, f"agency-{A}") as (nc, violations):
        for subject in (
            f"cbcm.v1.evt.{B}.>",
            f"cbcm.v1.evt.{B}.case.received",
            f"cbcm.v1.share.{B}.>",
            "cbcm.v1.evt.>",
            "cbcm.v1.evt.*.case.received",
            "cbcm.v1.share.>",
            "_INBOX.>",
            f"_INBOX.{B}.>",
        ):
            await nc.subscribe(subject)
            await violations.refused("subscription", subject)


async def test_an_agency_cannot_publish_events_shares_statistics_or_checkpoints(
    network: Network,
) -> None:
    before = await stream_subjects(network)
    async with (
        connected(network, f"agency-{B}") as (b, _),
        connected(network, f"agency-{A}") as (a, violations),
    ):
        received = Inbox()
        for subject in (f"cbcm.v1.evt.{B}.>", f"cbcm.v1.share.{B}.>", "cbcm.v1.stats.>"):
            await b.subscribe(subject, cb=received.take)
        await b.flush()
        for subject in (
            f"cbcm.v1.evt.{B}.case.received",  # forging another agency's event
            f"cbcm.v1.evt.{A}.case.received",  # or its own: only the relay publishes events
            f"cbcm.v1.share.{B}.case.transferred",
            "cbcm.v1.stats.release.2026-q1",  # forging a statistics release
            CHECKPOINT_SUBJECT,
        ):
            await a.publish(subject, b'{"forged": true}')
            await violations.refused("publish", subject)
        await b.flush()
    assert received.messages == []
    assert await stream_subjects(network) == before


async def test_an_agency_can_create_no_consumer_nor_read_the_streams_by_sequence(
    network: Network,
) -> None:
    own, other = f"agency-{A}", f"agency-{B}"
    get = json.dumps({"seq": 1}).encode()
    refused = [
        # consumers: unfiltered, filtered to B, even filtered to its own subjects
        agency_api("CONSUMER", "CREATE", STREAM),
        agency_api("CONSUMER", "CREATE", STREAM, own),
        agency_api("CONSUMER", "CREATE", STREAM, own, f"cbcm.v1.evt.{B}.>"),
        agency_api("CONSUMER", "CREATE", STREAM, own, f"cbcm.v1.evt.{A}.>"),
        agency_api("CONSUMER", "DURABLE", "CREATE", STREAM, own),
        agency_api("CONSUMER", "CREATE", SHARES_STREAM, own, f"cbcm.v1.share.{B}.>"),
        f"$JS.API.CONSUMER.CREATE.{STREAM}.{own}.cbcm.v1.evt.{B}.>",
        # B's consumer, and the list of everyone's
        agency_api("CONSUMER", "MSG", "NEXT", STREAM, other),
        agency_api("CONSUMER", "INFO", STREAM, other),
        agency_api("CONSUMER", "LIST", STREAM),
        # messages by sequence or last by subject, and stream info listing subjects
        agency_api("STREAM", "MSG", "GET", STREAM),
        agency_api("STREAM", "MSG", "GET", SHARES_STREAM),
        agency_api("DIRECT", "GET", STREAM),
        agency_api("DIRECT", "GET", STREAM, f"cbcm.v1.evt.{B}.case.received"),
        agency_api("STREAM", "INFO", STREAM),
        f"$JS.API.STREAM.MSG.GET.{STREAM}",
        f"$JS.API.DIRECT.GET.{STREAM}",
        f"$JS.API.STREAM.INFO.{STREAM}",
    ]
    async with connected(network, f"agency-{A}") as (nc, violations):
        answers = await asyncio.gather(*(unanswered(nc, subject, get) for subject in refused))
        for subject in refused:
            await violations.refused("publish", subject)
    assert all(answers), [s for s, quiet in zip(refused, answers, strict=True) if not quiet]


async def test_the_server_holds_a_created_consumers_filter_to_its_create_subject(
    network: Network,
) -> None:
    """What the provision user's grants rely on: on the filtered create subject, a body that
    filters on anything else is refused by the server itself."""
    events = agency_consumers(A)[0]
    subject = f"$JS.API.CONSUMER.CREATE.{STREAM}.{events.name}.{events.filter_subject}"
    async with connected(network, "provision") as (nc, _):
        for body in (
            {"filter_subject": f"cbcm.v1.evt.{B}.>"},
            {"filter_subject": "cbcm.v1.evt.>"},
            {"filter_subjects": [f"cbcm.v1.evt.{B}.>"]},
        ):
            request = {"stream_name": STREAM, "config": {"name": events.name, **body}}
            answer = await nc.request(subject, json.dumps(request).encode(), timeout=5)
            assert json.loads(answer.data)["error"]["err_code"] in (10131, 10137), body


async def test_a_reply_subject_cannot_aim_an_answer_at_a_stream(network: Network) -> None:
    """Why an agency has an account of its own: in the services' account, the answer to a
    request is published on its reply subject, and a stream capturing that subject keeps it.
    From the agency's account, the reply subject is the agency's own."""
    before = await stream_subjects(network)
    info = agency_api("CONSUMER", "INFO", STREAM, f"agency-{A}")
    async with connected(network, f"agency-{A}") as (nc, _):
        await nc.publish(info, b"", reply=f"cbcm.v1.evt.{B}.case.received")
        # answered in order with the one before it: once this arrives, so has that one
        await nc.request(info, b"", timeout=5)
    assert await stream_subjects(network) == before


async def test_plain_text_is_refused(network: Network) -> None:
    def plain() -> tuple[bytes, bytes]:
        with socket.create_connection(("127.0.0.1", network.server.port), timeout=5) as s:
            greeting = s.recv(4096)
            s.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\nPING\r\n')
            answer = b""
            while chunk := s.recv(4096):  # until the server closes the connection
                answer += chunk
            return greeting, answer

    greeting, answer = await asyncio.to_thread(plain)
    assert greeting.startswith(b"INFO ") and b'"tls_required":true' in greeting
    assert b"PONG" not in answer and b"+OK" not in answer


async def test_an_unknown_nkey_is_refused(network: Network, tmp_path: Path) -> None:
    stranger = tmp_path / "stranger.nk"
    stranger.write_bytes(nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER))
    with pytest.raises(nats.errors.Error, match=r"(?i)authorization"):
        await refused_or_connected(network, f"agency-{A}", nkeys_seed=str(stranger))


async def test_a_server_certificate_from_another_ca_is_refused(network: Network) -> None:
    """The client holds the server to the configured CA: a default context (the system's
    CAs) does not trust the network's server."""
    with pytest.raises((ssl.SSLError, OSError, nats.errors.Error)):
        await refused_or_connected(network, f"agency-{A}", tls=ssl.create_default_context())


# ---------------------------------------------------------------------------------- allowed


async def test_an_agency_receives_statistics_and_checkpoints(network: Network) -> None:
    stats_path = network.data_dir / "stats-publish.sqlite3"
    async with connected(network, f"agency-{A}") as (nc, _):
        stats, checkpoints = Inbox(), Inbox()
        await nc.subscribe("cbcm.v1.stats.>", cb=stats.take)
        await nc.subscribe(CHECKPOINT_SUBJECT, cb=checkpoints.take)
        await nc.flush()

        publisher = StatisticsPublisher(
            network.url,
            nats_options=network.options("project-stats"),
            clock=lambda: datetime(2026, 8, 15, tzinfo=UTC),
        )
        db = open_projection(StatisticsProjection(), stats_path)
        store(db, CASES, 0)  # statistics whose first quarter is closed and past its embargo
        db.commit()
        try:
            await publisher.publish(db, 7)
        finally:
            db.close()
            await publisher.close()
        report = await stats.first()
        assert report.subject == "cbcm.v1.stats.release.2026-q1"
        assert decode_release(report.data).release.id == "2026-q1-v1"

        app = network.app()
        try:
            settings = network.settings("audit-checkpoint")
            await checkpoint_once(
                app,
                load_signing_key(settings),
                network.url,
                nats_options=network.options("audit-checkpoint"),
                origin=load_log_origin(settings),
            )
        finally:
            app.close()
        checkpoint = decode_checkpoint((await checkpoints.first()).data)
        assert verify_checkpoint(load_public_key(settings), checkpoint)


async def test_an_agency_runs_a_witness_on_its_own_consumer(network: Network) -> None:
    """``cbcm audit witness --name <agency>`` with the agency's credentials keeps the network's
    checkpoints, through the consumer provisioned for it on CBCM_AUDIT."""
    settings = network.settings(f"agency-{A}")
    book_path = network.data_dir / f"witness-{A}.sqlite3"
    # the log it pins, as the network's operator gives it (cbcm audit witness --log VKEY)
    publisher = network.settings("audit-checkpoint")
    log = LogIdentity(load_log_origin(publisher), load_public_key(publisher))
    settings = settings.model_copy(update={"witness_dir": network.data_dir / f"witness-{A}"})
    stop = asyncio.Event()
    witness = asyncio.create_task(
        run_witness(settings, stop, network.url, db_path=book_path, name=A, identity=log)
    )

    async def kept() -> bool:
        if witness.done():
            witness.result()
            raise AssertionError("the witness stopped")
        if not book_path.exists():
            return False
        with WitnessBook.open(book_path, readonly=True) as book:
            return book.last_sequence() > 0

    async def published() -> bool:
        if witness.done():
            witness.result()
            raise AssertionError("the witness stopped")
        return bool(await cosignatures_of(network, A))

    try:
        await wait_until(kept, DEADLINE, f"{A}'s witness keeps a checkpoint")
        # and publishes its cosignature from its own account, into CBCM_AUDIT (issue 15)
        await wait_until(published, DEADLINE, f"{A}'s cosignature reaches CBCM_AUDIT")
    finally:
        stop.set()
        await witness
    with WitnessBook.open(book_path, readonly=True) as book:
        assert all(c.key_id for s in book.stores() for c in book.checkpoints(s))

    # then the operator's verify, naming the agency's witness in its policy, counts the
    # published cosignature (and without reading NATS, with no book at hand, has none)
    vkey = witness_vkey(cosigner_name(A), load_witness_key(witness_dir(settings, log.origin)))
    env = {
        "CBCM_DATA_DIR": str(network.data_dir),
        "CBCM_EVENT_STORE": network.store,
        **network.setup.client_environment("audit-checkpoint"),
    }
    args = ["audit", "verify", "--witness", vkey, "--witness-db", str(book_path) + ".none"]
    without = await asyncio.to_thread(CliRunner().invoke, cli, args, env=env)
    assert without.exit_code == 5, without.output
    done = await asyncio.to_thread(
        CliRunner().invoke, cli, [*args, "--cosignatures-from-nats"], env=env
    )
    assert done.exit_code == 0, done.output
    assert "vouched for by" in done.output and cosigner_name(A) in done.output


async def cosignatures_of(network: Network, agency: str) -> list[Any]:
    """The cosignatures CBCM_AUDIT holds on the agency's subject (read as the operator)."""
    nc = await nats.connect(network.url, **network.options("audit-checkpoint"))
    try:
        js = nc.jetstream()
        try:
            msg = await js.get_msg("CBCM_AUDIT", subject=agency_cosignature_subject(agency))
        except nats.js.errors.NotFoundError:
            return []
        return [decode_cosignature(msg.data or b"")]
    finally:
        await nc.close()


async def test_an_agency_consumes_its_own_events_and_only_those(network: Network) -> None:
    subjects = await stream_subjects(network)
    own = sorted(
        seq for seq, subject in subjects.items() if subject.startswith(f"cbcm.v1.evt.{A}.")
    )
    assert own and len(own) < len(subjects)

    async with connected(network, f"agency-{A}") as (nc, _):
        js = nc.jetstream(prefix=AGENCY_API_PREFIX)
        sub = await js.pull_subscribe_bind(f"agency-{A}", stream=STREAM)
        got: list[Msg] = []
        while len(got) < len(own):
            batch = await sub.fetch(100, timeout=5)
            for msg in batch:
                await msg.ack()
            got += batch

        async def all_acked() -> bool:
            info = await js.consumer_info(STREAM, f"agency-{A}")
            return info.num_pending == 0 and info.num_ack_pending == 0

        # its acks reach the consumer: nothing is left to deliver again
        await wait_until(all_acked, DEADLINE, f"{A}'s acks")
    assert [m.metadata.sequence.stream for m in got] == own


async def test_events_flow_from_the_relay_to_a_projector_over_tls_with_their_credentials(
    network: Network,
) -> None:
    already = max(await stream_subjects(network))
    app = network.app()
    try:
        await asyncio.to_thread(walk_cases, app, 10, random.Random(8), START + timedelta(days=60))
        network.last_position = last_published(app)
    finally:
        app.close()
    inbox_path = network.data_dir / "inbox.sqlite3"
    applied: list[int] = [0]
    stop = asyncio.Event()
    projector = asyncio.create_task(
        run_projector(
            InboxProjection(),
            inbox_path,
            network.url,
            stop,
            on_commit=lambda _db, position: applied.append(position),
            nats_options=network.options("project-inbox"),
        )
    )

    async def projected() -> bool:
        if projector.done():
            projector.result()
            raise AssertionError("the projector stopped")
        return applied[-1] == network.last_position

    async with (
        connected(network, f"agency-{A}") as (a, _),
        connected(network, f"agency-{B}") as (b, _),
    ):
        a_own, b_own = Inbox(), Inbox()
        await a.subscribe(f"cbcm.v1.evt.{A}.>", cb=a_own.take)
        await b.subscribe(f"cbcm.v1.evt.{B}.>", cb=b_own.take)
        await a.flush()
        await b.flush()
        try:

            async def wait_projected() -> None:
                await wait_until(
                    projected, DEADLINE, f"the inbox projector applies {network.last_position}"
                )

            await relay_until_published(network, wait_projected)
        finally:
            stop.set()
            await projector
        await a.flush()
        await b.flush()
    # each agency saw exactly the new events on its own subjects, as they were published
    new = await stream_subjects(network, after=already)
    for agency, seen in ((A, a_own), (B, b_own)):
        wanted = [s for s in new.values() if s.startswith(f"cbcm.v1.evt.{agency}.")]
        assert [m.subject for m in seen.messages] == wanted, agency
    assert len({s.split(".")[3] for s in new.values()}) > 1
    # the projector's credentials also rebuild its read model from the whole stream
    rebuilt = await rebuild(
        InboxProjection(),
        network.data_dir / "inbox-rebuilt.sqlite3",
        network.url,
        nats_options=network.options("project-inbox"),
    )
    assert rebuilt == network.last_position


async def test_a_projector_makes_reads_and_deletes_its_own_rebuild_consumer_only(
    network: Network,
) -> None:
    """Issue #16, ADR 28: the rebuild's pull consumer is the only consumer a projector user may
    make besides its durable one: on the event stream, with its own name, on the filtered
    create subject. An ephemeral consumer of any other kind (the ordered push consumer the
    rebuild used to make, or one delivering elsewhere), another stream's, another
    projector's, and fetching from or deleting another's, are refused."""
    attempts = [
        # an unnamed ephemeral consumer (push, delivering where it likes) and flow control
        (f"$JS.API.CONSUMER.CREATE.{STREAM}", {"deliver_subject": "cbcm.v1.stats.leak"}),
        (f"$JS.FC.{STREAM}.x.y", None),
        # its rebuild consumer's name, but unfiltered, or on another stream
        (f"$JS.API.CONSUMER.CREATE.{STREAM}.cbcm-inbox-rebuild", {"name": "cbcm-inbox-rebuild"}),
        (f"$JS.API.CONSUMER.DURABLE.CREATE.{STREAM}.cbcm-inbox-rebuild", None),
        (
            f"$JS.API.CONSUMER.CREATE.{SHARES_STREAM}.cbcm-inbox-rebuild.cbcm.v1.share.>",
            {"name": "cbcm-inbox-rebuild", "filter_subject": "cbcm.v1.share.>"},
        ),
        (
            f"$JS.API.CONSUMER.CREATE.{AUDIT_STREAM}.cbcm-inbox-rebuild.{CHECKPOINT_SUBJECT}",
            {"name": "cbcm-inbox-rebuild", "filter_subject": CHECKPOINT_SUBJECT},
        ),
        # another projector's rebuild consumer, the notifier's, an agency's
        (
            f"$JS.API.CONSUMER.CREATE.{STREAM}.cbcm-assistance-rebuild.cbcm.v1.evt.>",
            {"name": "cbcm-assistance-rebuild", "filter_subject": "cbcm.v1.evt.>"},
        ),
        (f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.cbcm-assistance-rebuild", {"batch": 1}),
        (f"$JS.API.CONSUMER.DELETE.{STREAM}.cbcm-assistance-rebuild", None),
        (f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.cbcm-notify", {"batch": 1}),
        (f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.agency-{A}", {"batch": 1}),
        (f"$JS.API.CONSUMER.MSG.NEXT.{SHARES_STREAM}.agency-{A}", {"batch": 1}),
        (f"$JS.API.CONSUMER.DELETE.{STREAM}.agency-{A}", None),
        (f"$JS.API.CONSUMER.LIST.{STREAM}", None),
    ]
    async with connected(network, "project-inbox") as (nc, violations):
        answers = await asyncio.gather(
            *(
                unanswered(nc, subject, json.dumps(body or {}).encode())
                for subject, body in attempts
            )
        )
        for subject, _ in attempts:
            await violations.refused("publish", subject)
        for subject in ("cbcm.v1.share.>", "_INBOX.project-assistance.>", "$JS.FC.>"):
            await nc.subscribe(subject)
            await violations.refused("subscription", subject)
        # on its own create subject, the server holds the body to the subject's name and
        # filter: another filter is refused, another name is ignored (the consumer made is
        # the subject's)
        own = f"$JS.API.CONSUMER.CREATE.{STREAM}.cbcm-inbox-rebuild.cbcm.v1.evt.>"
        js = nc.jetstream()
        for config, made in (
            ({"name": "cbcm-inbox-rebuild", "filter_subject": f"cbcm.v1.evt.{B}.>"}, None),
            ({"name": "cbcm-assistance-rebuild", "filter_subject": "cbcm.v1.evt.>"}, True),
        ):
            request = {"stream_name": STREAM, "config": config}
            answer = json.loads((await nc.request(own, json.dumps(request).encode(), 5)).data)
            if made is None:
                assert answer["error"]["err_code"] == 10131, config
            else:
                assert answer["name"] == "cbcm-inbox-rebuild", answer
                await js.delete_consumer(STREAM, "cbcm-inbox-rebuild")
    quiet = [s for (s, _), unanswered_ in zip(attempts, answers, strict=True) if not unanswered_]
    assert quiet == []

    # and what it may do is enough: a rebuild over TLS with its credentials, its consumer
    # gone at the end
    rebuilt = await rebuild(
        InboxProjection(),
        network.data_dir / "inbox-rebuilt-own.sqlite3",
        network.url,
        nats_options=network.options("project-inbox"),
    )
    assert rebuilt == network.last_position
    async with connected(network, "project-inbox") as (nc, _):
        with pytest.raises(nats.js.errors.NotFoundError):
            await nc.jetstream().delete_consumer(STREAM, "cbcm-inbox-rebuild")


async def test_a_projectors_consumer_pushing_elsewhere_reaches_no_agency(
    network: Network,
) -> None:
    """What subject permissions cannot refuse (ADR 28 section 2): the body of a create request
    on a projector's own create subject may name a delivery subject, making its consumer a
    push consumer of the whole event stream. Aimed at what the agencies receive (the
    statistics, an agency's shares), it delivers nothing: a push consumer delivers only to
    a subscription in the services' account, where no user may subscribe to anything but its
    own inbox (an agency's subscription through its import does not count, nor does a
    stream). Aimed at the projector's own inbox (the control), it delivers the stream."""
    shares_before = await _stream_count(network, SHARES_STREAM)
    name = "cbcm-inbox"  # the one it may look at (its durable; made again by its projector)
    create = f"$JS.API.CONSUMER.CREATE.{STREAM}.{name}.cbcm.v1.evt.>"
    async with (
        connected(network, f"agency-{B}") as (b, _),
        connected(network, "project-inbox") as (projector, _),
    ):
        received = Inbox()
        for subject in ("cbcm.v1.stats.>", f"cbcm.v1.share.{B}.>"):
            await b.subscribe(subject, cb=received.take)
        await b.flush()
        js = projector.jetstream()
        control = Inbox()
        await projector.subscribe("_INBOX.project-inbox.control", cb=control.take)
        await projector.flush()
        last = (await js.stream_info(STREAM)).state.last_seq
        for deliver in (
            "cbcm.v1.stats.leak",
            f"cbcm.v1.share.{B}.case.transferred",
            "_INBOX.project-inbox.control",
        ):
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await js.delete_consumer(STREAM, name)
            config = {
                "name": name,
                "durable_name": name,
                "filter_subject": "cbcm.v1.evt.>",
                "deliver_subject": deliver,
                "ack_policy": "none",
            }
            request = json.dumps({"stream_name": STREAM, "config": config}).encode()
            answer = json.loads((await projector.request(create, request, 5)).data)
            assert answer.get("name") == name, answer  # accepted: see the docstring
            info = await js.consumer_info(STREAM, name)
            if deliver.startswith("_INBOX.project-inbox."):
                assert info.push_bound, info  # interest: what the others lack

                async def delivered() -> bool:
                    info = await js.consumer_info(STREAM, name)
                    return info.delivered.stream_seq == last

                await wait_until(delivered, DEADLINE, "the control's deliveries")
                assert len(control.messages) > 0
            else:
                assert not info.push_bound and info.delivered.stream_seq == 0, info
        await js.delete_consumer(STREAM, name)
        await b.flush()
    assert received.messages == []
    assert await _stream_count(network, SHARES_STREAM) == shares_before


async def _stream_count(network: Network, stream: str) -> int:
    async with connected(network, "relay") as (nc, _):
        return int((await nc.jetstream().stream_info(stream)).state.messages)


async def test_only_the_relay_withdraws_shares_from_the_share_stream(network: Network) -> None:
    # given the share stream (the relay withdraws what was shared of an erased case)
    withdrawn = record_shares("case", "transferred", "6f1e0c52-4a57-4d0e-9c86-1b7f3d2e9a44")
    async with connected(network, "relay") as (relay, _):
        js = relay.jetstream()
        await ensure_shares_stream(js)

        # when the relay purges one case's shares, then the server lets it
        purged = await js.purge_stream(SHARES_STREAM, subject=withdrawn)
        assert purged is True

    # and when an agency tries the same, the server refuses it
    async with connected(network, f"agency-{A}") as (a, violations):
        subject = f"$JS.API.STREAM.PURGE.{SHARES_STREAM}"
        await a.publish(subject, json.dumps({"filter": withdrawn}).encode())
        await violations.refused("publish", subject)


async def test_the_webhook_deliverer_reads_the_stream_with_its_own_credentials(
    network: Network, tmp_path: Path
) -> None:
    """Issue #19: the ``webhooks`` user of the committed configuration is enough for the
    deliverer (its durable consumer, made again at start, and its acks), over TLS; agency B's
    endpoint gets B's new events, verified by the Node receiver, and none of another's."""
    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    receiver = NodeReceiver(tmp_path / "received.jsonl", {"/a": secret}).start()
    app = network.app()
    try:
        written = app.register_webhook(
            actor=WORLD_COORDINATOR,
            agency=B,
            url=receiver.url("/a"),
            secret=secret,
            event_types=tuple(sorted(AGENCY_EVENT_TYPES)),
            at=datetime.now(UTC),
        )
        already = max(await stream_subjects(network))
        await asyncio.to_thread(walk_cases, app, 6, random.Random(19), START + timedelta(days=90))
        network.last_position = last_published(app)
        deliverer_app = complaint_mechanism(network.settings("webhooks"))
        outbox = Outbox(tmp_path / "deliveries.sqlite3")
        stop = asyncio.Event()
        deliverer = asyncio.create_task(
            Deliverer(
                deliverer_app, outbox, network.url, nats_options=network.options("webhooks")
            ).run(stop)
        )
        try:

            async def nothing() -> None:
                return None

            await relay_until_published(network, nothing)
            js_reader = await stream_messages_after(network, already)
            wanted = [
                ce["id"]
                for subject, ce in js_reader
                if subject.startswith(f"cbcm.v1.evt.{B}.") and ce["position"] > written.position
            ]
            assert wanted, sorted({s.split(".")[3] for s, _ in js_reader})

            async def delivered() -> bool:
                if deliverer.done():
                    deliverer.result()
                    raise AssertionError("the deliverer stopped")
                return len(receiver.verified("/a")) >= len(wanted)

            await wait_until(delivered, DEADLINE, "the deliverer sends B's events")
        finally:
            stop.set()
            await deliverer
            outbox.close()
            deliverer_app.close()
    finally:
        app.close()
        receiver.stop()
    assert [line["ce"]["id"] for line in receiver.verified("/a")] == wanted
    assert all(line["ok"] for line in receiver.lines())


async def stream_messages_after(network: Network, after: int) -> list[tuple[str, Any]]:
    """(subject, CloudEvent) of the events stream's messages after sequence ``after``."""
    async with connected(network, "project-inbox") as (nc, _):
        js = nc.jetstream()
        last = (await js.stream_info(STREAM)).state.last_seq
        out = []
        for seq in range(after + 1, last + 1):
            raw = await js.get_msg(STREAM, seq)
            out.append((raw.subject, json.loads(raw.data or b"{}")))
        return out


async def test_a_cosignature_an_agency_forges_for_another_witness_counts_for_nothing(
    network: Network,
) -> None:
    # given the network's checkpoint in CBCM_AUDIT, and a policy naming agency A's witness
    witness_key = Ed25519PrivateKey.generate()  # A's witness key, which B does not hold
    vkey = witness_vkey(cosigner_name(A), witness_key.public_key())
    operator = await nats.connect(network.url, **network.options("audit-checkpoint"))
    try:
        raw = await operator.jetstream().get_last_msg("CBCM_AUDIT", CHECKPOINT_SUBJECT)
    finally:
        await operator.close()
    note = decode_checkpoint(raw.data or b"").note
    assert note is not None
    text, signatures = parse_note(note)

    # when agency B publishes, on its own subject, a cosignature in A's witness's name made
    # with a key of its own, and tries A's subject too
    forged = format_note(
        text, [*signatures, cosign(text, cosigner_name(A), Ed25519PrivateKey.generate(), 1)]
    )
    message = AuditCosignatureV1(
        witness=cosigner_name(A),
        origin=parse_checkpoint(text).origin,
        size=parse_checkpoint(text).size,
        note=forged,
    )
    async with connected(network, f"agency-{B}") as (b, violations):
        await b.publish(agency_cosignature_subject(B), encode_cosignature(message))
        await b.publish(agency_cosignature_subject(A), encode_cosignature(message))
        await violations.refused("publish", agency_cosignature_subject(A))
        await b.flush()

    async def arrived() -> bool:
        return any(c.note == forged for c in await cosignatures_of(network, B))

    await wait_until(arrived, DEADLINE, "B's forged cosignature reaches CBCM_AUDIT")

    # then verify, collecting every published cosignature, counts none for A's witness
    env = {
        "CBCM_DATA_DIR": str(network.data_dir),
        "CBCM_EVENT_STORE": network.store,
        **network.setup.client_environment("audit-checkpoint"),
    }
    # (the policy names B's witness too, one of the two enough: B's subject is read)
    b_vkey = witness_vkey(cosigner_name(B), Ed25519PrivateKey.generate().public_key())
    args = ["audit", "verify", "--witness", vkey, "--witness", b_vkey, "--quorum", "1"]
    args.append("--cosignatures-from-nats")
    missing_book = ["--witness-db", str(network.data_dir / "no-book.sqlite3")]
    done = await asyncio.to_thread(CliRunner().invoke, cli, [*args, *missing_book], env=env)
    assert done.exit_code == 5, done.output
    assert "no signed checkpoint" in done.output


async def test_webhook_endpoint_state_reaches_no_agency_and_no_url_or_secret_crosses_the_bus(
    network: Network, tmp_path: Path
) -> None:
    """Issue #19: while endpoints of A and B are registered, rotated, retyped, disabled by
    the coordinator, enabled, disabled for failing and removed, with the relay, the webhook
    deliverer and the notifier (which tells the coordinator and A's focal points of A's
    disabling) running on their own credentials, every user of the configuration listens on
    every subject it may subscribe to, and agency B pulls its own consumer afterwards. No
    message anyone could see holds a URL or a secret (in any encoding); what the stream
    gained is the notifier's notices only (on the network's subjects, which no agency
    imports); and B learns nothing of A's endpoint."""
    coordinator = DEMO_COORDINATOR
    a_point = next(a for a in AGENCIES if a.code == A).focal_points[0]
    b_point = next(a for a in AGENCIES if a.code == B).focal_points[0]
    smtp = SmtpServer(tmp_path).start()
    app = network.app()
    captured: dict[str, list[tuple[str, bytes, str]]] = {}
    listeners: list[NatsClient] = []
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    apps: list[ComplaintMechanism] = []
    try:
        for user, organisation, role in (
            (coordinator.user, coordinator.agency, Role.COORDINATOR),
            (a_point, A, Role.FOCAL_POINT),
            (b_point, B, Role.FOCAL_POINT),
        ):
            register_email(
                app,
                coordinator,
                user=user,
                organisation=organisation,
                role=role,
                email_address=f"{user}@staff.test",
                at=datetime.now(UTC),
            )
        # the contacts on the stream before the notifier starts (it records notices as soon
        # as it runs: the store's end moves on from then)
        network.last_position = last_published(app)
        await relay_until_published(network, _nothing)
        notify_app = complaint_mechanism(network.settings("project-notify"))
        apps.append(notify_app)
        tasks.append(
            asyncio.create_task(
                run_notifier(
                    notify_app,
                    NotifySettings(
                        smtp_host="127.0.0.1",
                        smtp_port=smtp.port,
                        smtp_ca_file=smtp.cert,
                        notify_inbox_url="https://cbcm.network.test",
                    ),
                    tmp_path / "notify",
                    network.url,
                    stop,
                    nats_options=network.options("project-notify"),
                    tick_seconds=0.1,
                )
            )
        )
        deliverer_app = complaint_mechanism(network.settings("webhooks"))
        apps.append(deliverer_app)
        outbox = Outbox(tmp_path / "deliveries.sqlite3")
        tasks.append(
            asyncio.create_task(
                Deliverer(
                    deliverer_app, outbox, network.url, nats_options=network.options("webhooks")
                ).run(stop)
            )
        )
        # the notifier knows the three contacts before we start

        async def contacts_known() -> bool:
            return _contacts_known(tmp_path / "notify") == 3

        await wait_until(contacts_known, 60, "the notifier's contacts")

        # every user of the configuration listens on everything it may subscribe to
        for user in network_users(CODES):
            seen = captured.setdefault(user.name, [])

            async def take(msg: Msg, seen: list[tuple[str, bytes, str]] = seen) -> None:
                seen.append((msg.subject, msg.data, repr(msg.headers)))

            nc = await refused_or_connected(network, user.name)
            listeners.append(nc)
            for subject in user.subscribe:
                await nc.subscribe(subject, cb=take)
            await nc.flush()
        before = max(await stream_subjects(network))

        # when the coordinator works on endpoints of A and B, and A's fails for days
        urls = {
            A: f"http://127.0.0.1:{free_port()}/{A}-{os.urandom(8).hex()}",
            B: f"http://127.0.0.1:{free_port()}/{B}-{os.urandom(8).hex()}",
        }
        keys = {agency: "whsec_" + base64.b64encode(os.urandom(32)).decode() for agency in urls}
        rotated = "whsec_" + base64.b64encode(os.urandom(32)).decode()
        now = datetime.now(UTC)
        ids = {}
        for agency, url in urls.items():
            written = app.register_webhook(
                actor=WORLD_COORDINATOR,
                agency=agency,
                url=url,
                secret=keys[agency],
                event_types=("org.psea.cbcm.case.received.v1",),
                at=now,
            )
            ids[agency] = webhook_endpoint_id(written.version)
        app.rotate_webhook_secret(ids[A], actor=WORLD_COORDINATOR, secret=rotated, at=now)
        app.set_webhook_event_types(
            ids[B],
            actor=WORLD_COORDINATOR,
            event_types=tuple(sorted(AGENCY_EVENT_TYPES)),
            at=now,
        )
        app.disable_webhook(ids[B], actor=WORLD_COORDINATOR, at=now)
        app.enable_webhook(ids[B], actor=WORLD_COORDINATOR, at=now)
        app.disable_failing_webhook(
            ids[A], failing_since=now - timedelta(days=6), limit=timedelta(days=5), at=now
        )
        told = f"{ids[A]}:v{app.webhook_registry_version()}"
        app.remove_webhook(ids[B], actor=WORLD_COORDINATOR, at=now)

        # the relay runs on: the notifier's notices reach the stream as it records them
        tasks.append(asyncio.create_task(run_relay(network.settings("relay"), stop, network.url)))

        async def both_told_on_the_stream() -> bool:
            kinds = [
                ce["data"]["recipient"]
                for subject, ce in await stream_messages_after(network, before)
                if subject.endswith(".sent") and ce["data"]["kind"] == "webhook_disabled"
            ]
            return {coordinator.user, a_point} <= set(kinds)

        await wait_until(both_told_on_the_stream, 90, "the notices on the stream")
        network.last_position = last_published(app)
        await wait_until(
            lambda: _published_up_to(network), 60, "the relay at the store's last event"
        )
        # B pulls what its own consumer holds now (what its account can read of the stream)
        async with connected(network, agency_user(B)) as (nc, _):
            js = nc.jetstream(prefix=AGENCY_API_PREFIX)
            sub = await js.pull_subscribe_bind(agency_user(B), stream=STREAM)
            pulled: list[bytes] = []
            while True:
                try:
                    batch = await sub.fetch(100, timeout=1)
                except TimeoutError:
                    break
                for msg in batch:
                    pulled.append(msg.subject.encode() + b" " + msg.data)
                    await msg.ack()
        for nc in listeners:
            await nc.flush()
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        for nc in listeners:
            await nc.close()
        for opened in apps:
            opened.close()
        app.close()
        smtp.stop()
    # the stream holds the store's end again for the module's other tests (the notifier
    # recorded notices until it stopped)
    after = network.app()
    try:
        network.last_position = last_published(after)
    finally:
        after.close()
    await relay_until_published(network, _nothing)

    # then no message anyone could see holds a URL, a host's path or a secret, in any form
    forms = [u.encode() for u in urls.values()] + [
        u.rsplit("/", 1)[1].encode() for u in urls.values()
    ]
    for secret in (*keys.values(), rotated):
        raw = base64.b64decode(secret.removeprefix("whsec_"))
        forms += [secret.encode(), secret.removeprefix("whsec_").encode(), raw, raw.hex().encode()]
        forms += [base64.urlsafe_b64encode(raw).rstrip(b"=")]
    wire = b"\n".join(
        s.encode() + b" " + d + b" " + h.encode() for seen in captured.values() for s, d, h in seen
    ) + b"\n".join(pulled)
    assert sum(len(seen) for seen in captured.values()) > 0
    assert [f for f in forms if f in wire] == []
    # what the stream gained is the notifier's notices, on the network's subjects only
    gained = await stream_messages_after(network, before)
    assert gained and {s for s, _ in gained} <= {
        "cbcm.v1.evt.network.notification.sent",
        "cbcm.v1.evt.network.notification.given_up",
    }
    about_a = [ce for _, ce in gained if ce["data"]["kind"] == "webhook_disabled"]
    assert {ce["data"]["recipient"] for ce in about_a} == {coordinator.user, a_point}
    assert {ce["data"]["about"] for ce in about_a} == {told}
    gained_bytes = b"\n".join(json.dumps(ce).encode() for _, ce in gained)
    assert [f for f in forms if f in gained_bytes] == []
    # and B learns nothing of A's endpoint: not on anything B's user received or pulled, and
    # not by mail to B's focal point
    b_saw = b"\n".join(
        s.encode() + b" " + d + b" " + h.encode() for s, d, h in captured[agency_user(B)]
    ) + b"\n".join(pulled)
    for secret_of_a in (str(ids[A]).encode(), b"webhook", b"notification"):
        assert secret_of_a not in b_saw
    assert not [m for m in smtp.mails if f"{b_point}@staff.test" in m.to and "webhook" in m.subject]
    to_a = [m for m in smtp.mails if f"{a_point}@staff.test" in m.to and "webhook" in m.subject]
    assert [m.subject for m in to_a] == [
        "[PSEA] 1 webhook endpoint disabled after failing deliveries"
    ]


async def _nothing() -> None:
    return None


async def _published_up_to(network: Network) -> bool:
    """The stream holds the store up to ``network.last_position`` at least (the notifier
    may record more meanwhile)."""
    async with connected(network, "project-inbox") as (reader, _):
        return (await stream_tail(reader))[1] >= network.last_position


def _contacts_known(data_dir: Path) -> int:
    path = notifier_path(data_dir)
    if not path.exists():
        return 0
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(db.execute("SELECT count(*) FROM notify_contacts").fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        db.close()


async def test_an_agencys_cosignature_and_an_erasure_notice_carry_the_documented_headers(
    network: Network,
) -> None:
    """The headers of the two audit messages the other tests do not read off the wire: an
    agency's witness's cosignature (from its own account, on core NATS into CBCM_AUDIT) and
    the checkpoint publisher's erasure notices, as the server stored them, held to the
    AsyncAPI document made strict and to what the integrator guide says of them."""
    # given an erasure in the log, then a checkpoint over it (with its erasure notices)
    app = network.app()
    try:
        at = datetime.now(UTC)
        case = app.receive_complaint(
            actor=Actor("op-headers", A, Role.INTAKE_OPERATOR),
            at=at,
            received_at=at,
            channel=Channel.HOTLINE,
            complainant_role=ComplainantRole.WITNESS,
            immediate_safety_risk=False,
            narrative="told at the distribution point",
        )
        handler = next(a for a in AGENCIES if a.code == A).focal_points[0]
        erased = app.erase_personal_data(
            case.id,
            actor=Actor(handler, A, Role.FOCAL_POINT),
            subjects=(DataSubject.COMPLAINANT,),
            reason=ErasureReason.COMPLAINANT_REQUEST,
            at=at,
        )
        network.last_position = last_published(app)
        store = store_id_of(app.recorder)
    finally:
        app.close()
    await relay_until_published(network, _nothing)
    checkpointer = network.app()
    try:
        await checkpoint_once(
            checkpointer,
            load_signing_key(network.settings("audit-checkpoint")),
            network.url,
            nats_options=network.options("audit-checkpoint"),
            origin=load_log_origin(network.settings("audit-checkpoint")),
        )
    finally:
        checkpointer.close()
    # ... and agency A's witness cosigning it from A's account
    settings = network.settings(f"agency-{A}")
    publisher = network.settings("audit-checkpoint")
    log = LogIdentity(load_log_origin(publisher), load_public_key(publisher))
    settings = settings.model_copy(update={"witness_dir": network.data_dir / f"witness-{A}"})
    book_path = network.data_dir / f"witness-{A}.sqlite3"  # its book, if it ran before
    stop = asyncio.Event()
    witness = asyncio.create_task(
        run_witness(settings, stop, network.url, db_path=book_path, name=A, identity=log)
    )

    async def audit_messages() -> list[tuple[str, dict[str, str], bytes]]:
        nc = await nats.connect(network.url, **network.options("audit-checkpoint"))
        try:
            js = nc.jetstream()
            last = (await js.stream_info(AUDIT_STREAM)).state.last_seq
            out = []
            for seq in range(1, last + 1):
                try:
                    raw = await js.get_msg(AUDIT_STREAM, seq)
                except nats.js.errors.NotFoundError:
                    continue
                out.append((str(raw.subject), dict(raw.headers or {}), raw.data or b""))
            return out
        finally:
            await nc.close()

    async def cosigned_since_the_erasure() -> bool:
        if witness.done():
            witness.result()
            raise AssertionError("the witness stopped")
        subjects = [s for s, _, _ in await audit_messages()]
        cosignature = agency_cosignature_subject(A)
        return cosignature in subjects and (
            len(subjects) - 1 - subjects[::-1].index(cosignature)
            > max(i for i, s in enumerate(subjects) if s == ERASURE_NOTICE_SUBJECT)
        )

    try:
        await wait_until(cosigned_since_the_erasure, 60, f"{A}'s cosignature after it")
    finally:
        stop.set()
        await witness

    # when the stored messages are read back with their headers
    stored = await audit_messages()
    strict = strict_headers()
    notices = [(h, decode_erasure_notice(d)) for s, h, d in stored if s == ERASURE_NOTICE_SUBJECT]
    cosignatures = [h for s, h, _ in stored if s == agency_cosignature_subject(A)]

    # then an agency's cosignature carries no header at all, as documented
    assert cosignatures and all(h == {} for h in cosignatures)
    assert [str(e) for e in strict[component_key(COSIGNATURE_SCHEMA)].iter_errors({})] == []
    # ... and each erasure notice exactly Nats-Msg-Id <store>:erasure:<32 hex of its MAC> and
    # Nats-Expected-Stream, one per erased key of this erasure (the case's and its records')
    ours = [(h, n) for h, n in notices if n.position == erased.position]
    assert ours
    for headers, notice in ours:
        assert set(headers) == {"Nats-Msg-Id", "Nats-Expected-Stream"}
        assert headers["Nats-Expected-Stream"] == AUDIT_STREAM
        assert headers["Nats-Msg-Id"] == f"{store}:erasure:{notice.mac[:32]}"
        assert notice.subject == "complainant"
        errors = strict[component_key(ERASURE_NOTICE_SCHEMA)].iter_errors(headers)
        assert [str(e) for e in errors] == []
    assert str(case.id) in {n.record for _, n in ours}
    # ... which is what the integrator guide says of them
    guide = GUIDE.read_text()
    said = " ".join(guide.split("Cosignatures carry only", 1)[1].split("**Positions.**")[0].split())
    assert "or nothing (an agency's witness" in said
    assert "carry `Nats-Msg-Id: <store-id>:erasure:<32 hex of the notice's MAC>` and" in said
    assert "`Nats-Expected-Stream`" in said
