"""The Node.js consumer example (``docs/examples/node-consumer/``, issue #19) keeps working:
installed by ``npm ci`` from its committed lock (the ``nats``, ``cloudevents`` and ``ajv``
npm packages), it
connects to a real nats-server running the committed ``deploy/nats/cbcm.conf`` with agency
A's credentials, reads A's events and shares through A's provisioned consumers, the statistics
releases and the checkpoints, and validates each (ajv strict) against ``docs/contracts/``. The
messages come from the real relay over a demo workload, the real statistics publisher and the
real checkpoint publisher. Node and npm are required: fails, never skips.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import nats
import pytest
from nacl.public import PrivateKey

from contracts.audit import CHECKPOINT_SUBJECT
from contracts.subjects import SHARES_STREAM, STREAM
from domain.personal_data import DataSubject
from domain.vocabulary import ErasureReason
from projections.stats import StatisticsProjection
from services.audit.checkpoints import checkpoint_once
from services.audit.keys import load_log_origin, load_signing_key
from services.cli.contracts import COMMITTED
from services.demo.network import COORDINATOR
from services.demo.walk import AGENCIES, build_demo_network, walk_cases
from services.nats.server import ConfiguredNats, free_port
from services.nats.setup import provision_agency_consumers, write_nats_setup
from services.projector.publication import StatisticsPublisher
from services.projector.runner import open_projection
from services.relay.share_keys import public_key_of
from tests.integration.test_nats_isolation import (
    DEPLOYED,
    Network,
    last_published,
    relay_until_published,
)
from tests.node_packages import REPO, installed, node_and_npm
from tests.statistics_cases import store
from tests.unit.test_statistics_releases import CASES

EXAMPLE = REPO / "docs" / "examples" / "node-consumer"
CODES = [a.code for a in AGENCIES]
START = datetime(2025, 9, 1, tzinfo=UTC)
DEADLINE = 60.0


@dataclass(frozen=True)
class Agency:
    """The network, and the agency A whose consumer the example runs as."""

    network: Network
    code: str


async def _subject_counts(network: Network, agency: str) -> tuple[int, int]:
    """How many messages of ``agency`` the events and the shares streams hold."""
    async with await nats.connect(network.url, **network.options("relay")) as nc:
        js = nc.jetstream()
        events = await js.stream_info(STREAM, subjects_filter=f"cbcm.v1.evt.{agency}.>")
        shares = await js.stream_info(SHARES_STREAM, subjects_filter=f"cbcm.v1.share.{agency}.>")
        return (
            sum((events.state.subjects or {}).values()),
            sum((shares.state.subjects or {}).values()),
        )


async def _most_shared(network: Network) -> tuple[str, str]:
    """The agency with which the most cases were shared, and one of those cases."""
    async with await nats.connect(network.url, **network.options("relay")) as nc:
        info = await nc.jetstream().stream_info(SHARES_STREAM, subjects_filter="cbcm.v1.share.>")
    cases: dict[str, set[str]] = {}
    for subject in info.state.subjects or {}:
        tokens = subject.split(".")
        cases.setdefault(tokens[3], set()).add(tokens[-1])
    # two cases at least: one to erase (its shares withdrawn), one whose shares stay
    agency = max(sorted(cases), key=lambda code: len(cases[code]), default=None)
    assert agency is not None and len(cases[agency]) >= 2, cases
    return agency, min(cases[agency])


@pytest.fixture(scope="module")
def agency(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agency]:
    """The committed configuration running; the demo network with every agency's share key
    registered, cases walked, one case shared with A then erased, all published by the
    relay; every agency's consumers provisioned."""
    tmp = tmp_path_factory.mktemp("node-consumer")
    port = free_port()
    setup = write_nats_setup(tmp / "bus", CODES, port=port)
    server = ConfiguredNats(
        tmp / "server", port=port, config_file=DEPLOYED, environment=setup.server_environment
    ).start()
    net = Network(setup, server, tmp / "data", f"sqlite:///{tmp / 'events.sqlite3'}")

    async def nothing() -> None:
        return None

    try:
        app = net.app()
        try:
            build_demo_network(app, START)
            for i, code in enumerate(CODES):
                app.register_agency_share_key(
                    actor=COORDINATOR,
                    agency=code,
                    public_key=public_key_of(PrivateKey.generate()),
                    at=START + timedelta(hours=3, minutes=i),
                )
            walk_cases(app, 20, random.Random(19), START + timedelta(hours=4))
            net.last_position = last_published(app)
        finally:
            app.close()
        asyncio.run(relay_until_published(net, nothing))
        code, case_id = asyncio.run(_most_shared(net))
        app = net.app()
        try:
            app.erase_personal_data(
                UUID(case_id),
                actor=COORDINATOR,
                subjects=(DataSubject.SURVIVOR,),
                reason=ErasureReason.SURVIVOR_REQUEST,
                at=datetime.now(UTC),
            )
            net.last_position = last_published(app)
        finally:
            app.close()
        asyncio.run(relay_until_published(net, nothing))
        done = asyncio.run(provision_agency_consumers(net.url, CODES, net.options("provision")))
        # the witnesses' consumers wait for CBCM_AUDIT (the first checkpoint): not read here
        missing = [p for p in done if p.stream in (STREAM, SHARES_STREAM) and not p.ready]
        assert missing == []
        yield Agency(net, code)
    finally:
        server.stop()


class Consumer:
    """The example running as a process: its JSON lines as they come."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[dict[str, Any]] = []

    async def next_line(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        raw = await self.process.stdout.readline()
        if not raw:
            assert self.process.stderr is not None
            error = (await self.process.stderr.read()).decode()[-3000:]
            raise AssertionError(f"the Node consumer ended: {error}")
        line: dict[str, Any] = json.loads(raw)
        self.lines.append(line)
        return line

    async def until(self, done: Any, what: str) -> None:
        try:
            async with asyncio.timeout(DEADLINE):
                while not done(self.messages()):
                    await self.next_line()
        except TimeoutError:
            raise AssertionError(f"the Node consumer did not report {what}") from None

    def messages(self) -> list[dict[str, Any]]:
        return [line for line in self.lines if "subject" in line]


async def test_the_node_consumer_validates_every_message_of_its_agency_and_sees_no_other(
    agency: Agency,
) -> None:
    network, A = agency.network, agency.code
    script = installed(EXAMPLE) / "consumer.mjs"
    node, _ = node_and_npm()
    events, shares = await _subject_counts(network, A)
    assert events > 0 and shares > 1  # a share and its withdrawal notice at least
    environment = {
        **os.environ,
        **network.setup.client_environment(f"agency-{A}"),
        "CBCM_AGENCY": A,
        "CBCM_CONTRACTS_DIR": str(REPO / COMMITTED),
    }
    process = await asyncio.create_subprocess_exec(
        node,
        str(script),
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    consumer = Consumer(process)
    try:
        # given the consumer, connected and subscribed with A's credentials
        async with asyncio.timeout(DEADLINE):
            while not any(line.get("ready") for line in consumer.lines):
                await consumer.next_line()
        # every published schema compiled by ajv in strict mode
        [ready] = [line for line in consumer.lines if line.get("ready")]
        assert ready["schemas"] == len(list((REPO / COMMITTED / "schemas").glob("*.json")))

        # when a statistics release and a checkpoint are published while it listens
        stats_db = network.data_dir / "stats-node.sqlite3"
        publisher = StatisticsPublisher(
            network.url,
            nats_options=network.options("project-stats"),
            clock=lambda: datetime(2026, 8, 15, tzinfo=UTC),
        )
        db = open_projection(StatisticsProjection(), stats_db)
        store(db, CASES, 0)
        db.commit()
        try:
            await publisher.publish(db, 7)
        finally:
            db.close()
            await publisher.close()
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

        # then it reads every event and share of A, the release and the checkpoint
        def complete(seen: list[dict[str, Any]]) -> bool:
            sources = [m["source"] for m in seen]
            core = [m["schema"] for m in seen if m["source"] == "core"]
            return (
                sources.count(STREAM) >= events
                and sources.count(SHARES_STREAM) >= shares
                and "org.psea.cbcm.stats.release.v1" in core
                and "org.psea.cbcm.audit.checkpoint.v1" in core
            )

        await consumer.until(complete, "every message of A")
        sources = [m["source"] for m in consumer.messages()]
        assert (sources.count(STREAM), sources.count(SHARES_STREAM)) == (events, shares)
        invalid = [m for m in consumer.messages() if not m["valid"]]
        assert invalid == [], json.dumps(invalid[:3], indent=1)

        # and when a malformed checkpoint reaches the subject (position 0), it is refused
        async with await nats.connect(network.url, **network.options("audit-checkpoint")) as forger:
            forged = {"store": "0" * 16, "position": 0}
            await forger.publish(CHECKPOINT_SUBJECT, json.dumps(forged).encode())
            await forger.flush()
        await consumer.until(lambda seen: any(not m["valid"] for m in seen), "the refusal")
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(DEADLINE):
        while "summary" not in consumer.lines[-1]:
            await consumer.next_line()
        await process.wait()
    summary = consumer.lines[-1]["summary"]
    messages = consumer.messages()
    [refused] = [m for m in messages if not m["valid"]]
    assert refused["subject"] == CHECKPOINT_SUBJECT
    assert any("position" in e and ">= 1" in e for e in refused["errors"]), refused
    assert process.returncode == 0
    assert summary["valid"] == len(messages) - 1 > 0
    assert summary["invalid"] == 1
    # none of another agency's subjects, and every CloudEvent named its schema
    assert summary["foreign"] == 0
    for message in messages:
        subject = message["subject"]
        assert subject.startswith(
            (
                f"cbcm.v1.evt.{A}.",
                f"cbcm.v1.share.{A}.",
                "cbcm.v1.stats.release.",
                CHECKPOINT_SUBJECT,
            )
        ), subject
    kinds = set(summary["bySchema"])
    assert {
        "org.psea.cbcm.case.received.v1",
        "org.psea.cbcm.case.shared.v1",
        "org.psea.cbcm.case.share_withdrawn.v1",
        "org.psea.cbcm.stats.release.v1",
        "org.psea.cbcm.audit.checkpoint.v1",
    } <= kinds
    print(
        f"node consumer ({A}): {summary['valid']} valid, {summary['invalid']} invalid, "
        f"{len(kinds)} schemas"
    )
