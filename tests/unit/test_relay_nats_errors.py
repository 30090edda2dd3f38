"""What the relay logs of its NATS connection (issue #12): an on-call person can trust a
warning. The server closing the connection (a restart, or the stack stopping with nats-server
a moment first) is one info line; only reconnections failing past a short grace are an outage
worth a warning; nothing is a warning once the relay is stopping."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import nats.errors
import pytest
import structlog

from services.nats.server import free_port
from services.relay import relay as relay_module
from services.relay.relay import _NatsErrors, connect_nats


def levels(logs: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    return [(entry["event"], entry["log_level"]) for entry in logs]


async def test_a_closed_connection_is_no_warning_until_reconnecting_fails_past_the_grace() -> None:
    now = [100.0]
    callbacks = _NatsErrors(asyncio.Event(), clock=lambda: now[0])
    with structlog.testing.capture_logs() as logs:
        await callbacks.error(nats.errors.UnexpectedEOF())
        now[0] += relay_module.NATS_QUIET_SECONDS / 2
        await callbacks.error(ConnectionRefusedError())
        now[0] += relay_module.NATS_QUIET_SECONDS
        await callbacks.error(ConnectionRefusedError())
        await callbacks.reconnected()
    assert levels(logs) == [
        ("relay.nats_disconnected", "info"),
        ("relay.nats_reconnecting", "debug"),
        ("relay.nats_unreachable", "warning"),
        ("relay.nats_reconnected", "info"),
    ]


async def test_nothing_is_a_warning_once_the_relay_is_stopping() -> None:
    stop = asyncio.Event()
    stop.set()
    callbacks = _NatsErrors(stop)
    with structlog.testing.capture_logs() as logs:
        await callbacks.error(nats.errors.UnexpectedEOF())
        await callbacks.error(ConnectionRefusedError())
    assert [level for _, level in levels(logs)] == ["debug", "debug"]


async def test_an_unreachable_server_at_start_is_still_a_warning() -> None:
    callbacks = _NatsErrors(asyncio.Event())
    with structlog.testing.capture_logs() as logs:
        await callbacks.error(ConnectionRefusedError())
    assert levels(logs) == [("relay.nats_unreachable", "warning")]


async def test_a_relay_waiting_for_an_unreachable_nats_stops_when_asked() -> None:
    # given a relay connecting to a port where no NATS listens (nats-py retries for ever)
    stop = asyncio.Event()
    connecting = asyncio.ensure_future(connect_nats(f"nats://127.0.0.1:{free_port()}", stop))
    await asyncio.sleep(1.0)
    assert not connecting.done()
    # when it is asked to stop (SIGTERM sets this event)
    stop.set()
    # then it gives up within seconds instead of waiting for a server
    with pytest.raises(nats.errors.ConnectionClosedError):
        await asyncio.wait_for(connecting, timeout=5)
