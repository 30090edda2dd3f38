"""A secured three-node cluster from ``cbcm nats setup --node ...``: TLS on clients and
routes, routes authenticated, the per-agency accounts on every node; run on three real
nats-server processes (free loopback ports, temp dirs)."""

from __future__ import annotations

import asyncio
import shlex
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import nats.errors
import nats.js.errors
import pytest

from services.nats.client import nats_servers
from services.nats.server import ConfiguredNats, free_port
from services.nats.setup import ClusterNode, NatsSetup, write_nats_setup
from services.relay.relay import ensure_stream

AGENCIES = ("unicef", "wfp")


def read_env(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        name, _, quoted = line.partition("=")
        values[name] = shlex.split(quoted)[0] if quoted else ""
    return values


def ports(count: int) -> list[int]:
    found: set[int] = set()
    while len(found) < count:
        found.add(free_port())
    return sorted(found)


async def connect(setup: NatsSetup, user: str, url: str | None = None) -> nats.NATS:
    context = ssl.create_default_context(cafile=str(setup.ca_file))
    return await nats.connect(
        nats_servers(url or setup.url),
        nkeys_seed=str(setup.seed_files[user]),
        inbox_prefix=f"_INBOX.{user}",
        tls=context,
        connect_timeout=2,
        max_reconnect_attempts=1,
    )


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[tuple[NatsSetup, dict[str, ConfiguredNats]]]:
    numbers = ports(6)
    nodes = [ClusterNode(f"n{i + 1}", "127.0.0.1", numbers[i], numbers[i + 3]) for i in range(3)]
    setup = write_nats_setup(tmp_path / "nats", AGENCIES, nodes=nodes)
    servers = {
        node.name: ConfiguredNats(
            store_dir=tmp_path / "logs" / node.name,
            port=node.port,
            config_file=setup.config_file,
            environment=read_env(setup.directory / "nodes" / f"{node.name}.env"),
        )
        for node in nodes
    }
    for server in servers.values():
        server.store_dir.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(server.start)
    try:
        yield setup, servers
    finally:
        for server in servers.values():
            await asyncio.to_thread(server.stop)


async def r3_stream_when_clustered(setup: NatsSetup, within: float = 60.0) -> int:
    """Create the event stream with three replicas as the relay; how many peers hold it."""
    nc = await connect(setup, "relay")
    try:
        js = nc.jetstream()
        deadline = time.monotonic() + within
        while True:
            try:
                info = await ensure_stream(js, replicas=3)
                assert info.cluster is not None
                return 1 + len(info.cluster.replicas or [])
            except (nats.js.errors.Error, nats.errors.TimeoutError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
    finally:
        await nc.close()


async def test_three_nodes_form_a_cluster_over_authenticated_tls_routes(
    cluster: tuple[NatsSetup, dict[str, ConfiguredNats]], tmp_path: Path
) -> None:
    setup, servers = cluster
    # the configuration is a cluster's, with TLS verified both ways and a route password
    config = setup.config_file.read_text()
    assert "verify: true" in config and "$CBCM_NATSD_ROUTE_PASSWORD" in config
    # an R3 stream is held by all three nodes: the routes carry JetStream's replication
    assert await r3_stream_when_clustered(setup) == 3
    # the relay publishes through one node and an agency's account reads its own events
    # through another (per-agency accounts on every node)
    first, *_, last = (s.url.replace("nats://", "tls://") for s in servers.values())
    relay = await connect(setup, "relay", first)
    try:
        ack = await relay.jetstream().publish(
            "cbcm.v1.evt.unicef.case.received", b"{}", stream="CBCM_EVENTS"
        )
        assert ack.seq == 1
    finally:
        await relay.close()
    # the inbox projector, connected to another node, reads it back from the replicated stream
    projector = await connect(setup, "project-inbox", last)
    try:
        stored = await projector.jetstream().get_msg("CBCM_EVENTS", 1)
        assert stored.subject == "cbcm.v1.evt.unicef.case.received"
    finally:
        await projector.close()
    # and an agency's account, on any node, has no JetStream API of its own to ask
    agency = await connect(setup, "agency-wfp", last)
    try:
        with pytest.raises((nats.errors.NoRespondersError, nats.errors.TimeoutError)):
            await agency.request("$JS.API.STREAM.INFO.CBCM_EVENTS", b"", timeout=2)
    finally:
        await agency.close()


async def test_a_server_without_the_route_password_does_not_join(
    cluster: tuple[NatsSetup, dict[str, ConfiguredNats]], tmp_path: Path
) -> None:
    setup, _ = cluster
    assert await r3_stream_when_clustered(setup) == 3
    # given a fourth server with the network's certificate but a made-up route password
    n1 = read_env(setup.directory / "nodes" / "n1.env")
    client, route = ports(2)
    rogue_env = {
        **n1,
        "CBCM_NATSD_SERVER_NAME": "rogue",
        "CBCM_NATSD_PORT": str(client),
        "CBCM_NATSD_CLUSTER_PORT": str(route),
        "CBCM_NATSD_STORE_DIR": str(tmp_path / "rogue-js"),
        "CBCM_NATSD_ROUTE_PASSWORD": '"guessed"',
    }
    for name in ("CBCM_NATSD_ROUTE_1", "CBCM_NATSD_ROUTE_2", "CBCM_NATSD_ROUTE_3"):
        rogue_env[name] = n1[name].replace(n1["CBCM_NATSD_ROUTE_PASSWORD"].strip('"'), "guessed")
    (tmp_path / "rogue").mkdir()
    rogue = ConfiguredNats(
        store_dir=tmp_path / "rogue",
        port=client,
        config_file=setup.config_file,
        environment=rogue_env,
    )
    await asyncio.to_thread(rogue.start)
    try:
        # then it never sees the cluster's stream, whose peers stay the three genuine nodes
        nc = await connect(setup, "relay", f"tls://127.0.0.1:{client}")
        try:
            js = nc.jetstream()
            for _ in range(10):
                with pytest.raises((nats.js.errors.Error, nats.errors.TimeoutError)):
                    await js.stream_info("CBCM_EVENTS")
                await asyncio.sleep(0.3)
        finally:
            await nc.close()
        assert await r3_stream_when_clustered(setup) == 3
    finally:
        await asyncio.to_thread(rogue.stop)
    logs = await asyncio.to_thread(
        lambda: "".join(p.read_text(errors="replace") for p in tmp_path.glob("logs/*/*.log"))
    )
    assert "authorization" in logs.lower() or "authentication" in logs.lower(), logs[-2000:]
