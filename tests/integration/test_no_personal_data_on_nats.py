"""Nothing personal crosses the bus in clear: every message of a workflow run, scanned on the
wire, sealed shares included (their boxes open, with the recipient's key only, to the data)."""

from __future__ import annotations

import asyncio
import base64
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nats
import pytest
from nats.aio.msg import Msg

from contracts.shares import decode_share
from projections.assistance import AssistanceProjection
from projections.inbox import InboxProjection
from projections.stats import StatisticsProjection
from services.application.mechanism import ComplaintMechanism
from services.application.store import is_published
from services.nats.server import EmbeddedNats
from services.projector.publication import StatisticsPublisher
from services.projector.runner import read_model_path, read_position, run_projector
from services.relay.relay import Relay, ensure_shares_stream, ensure_stream
from services.relay.share_keys import open_share
from tests.canary import SHARE_KEYS, new_canaries, walk_every_event_type


async def eventually(condition, bound: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + bound
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {bound}s waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.mark.postgres
async def test_no_personal_data_reaches_any_message_on_nats(
    app: ComplaintMechanism, tmp_path: Path
) -> None:
    # given a store where every personal field of every event class holds a unique canary
    canaries = new_canaries()
    await asyncio.to_thread(walk_every_event_type, app, canaries)
    last = app.recorder.max_notification_id() or 0

    captured: list[tuple[str, bytes, dict[str, str]]] = []

    async def capture(msg: Msg) -> None:
        captured.append((msg.subject, msg.data, dict(msg.headers or {})))

    with EmbeddedNats(tmp_path / "nats") as server:
        spy = await nats.connect(server.url)
        await spy.subscribe(">", cb=capture)
        await spy.flush()
        publisher_nc = await nats.connect(server.url)
        try:
            # when the relay publishes it and the three projectors consume it
            js = publisher_nc.jetstream()
            await ensure_stream(js)
            await ensure_shares_stream(js)
            published = await Relay(app, js).publish_pending()
            stop = asyncio.Event()
            # a clock a year on: the periods of the walk are closed, their releases due
            publisher = StatisticsPublisher(
                server.url, every=0.0, clock=lambda: datetime.now(UTC) + timedelta(days=400)
            )
            paths = {}
            tasks = []
            for projection in (InboxProjection(), AssistanceProjection(), StatisticsProjection()):
                paths[projection.name] = read_model_path(tmp_path / "data", projection.name)
                hook = publisher if projection.name == "stats" else None
                tasks.append(
                    asyncio.create_task(
                        run_projector(
                            projection, paths[projection.name], server.url, stop, on_commit=hook
                        )
                    )
                )
            await eventually(
                lambda: all(read_position(p) == last for p in paths.values()),
                30,
                "every read model at the last position",
            )
            await eventually(
                lambda: any(s.startswith("cbcm.v1.stats.") for s, _, _ in captured),
                10,
                "statistics on the bus",
            )
            stop.set()
            await asyncio.gather(*tasks)
            await publisher.close()
            await spy.flush()
        finally:
            await publisher_nc.close()
            await spy.close()

    # then every event went out, statistics too, and no canary is anywhere on the wire
    # (the spy also sees each consumer's deliveries, so count distinct message ids)
    event_ids = {h["Nats-Msg-Id"] for s, _, h in captured if s.startswith("cbcm.v1.evt.") and h}
    # the mechanism's own records (a case's index of notices, webhook secrets) never travel
    internal = sum(
        1
        for n in app.recorder.select_notifications(1, last)
        if not is_published(app.mapper.to_domain_event(n))
    )
    assert published == len(event_ids) == last - internal
    assert any(s.startswith("cbcm.v1.stats.") for s, _, _ in captured)
    wire = b"\n".join(
        s.encode() + b" " + data + b" " + repr(headers).encode() for s, data, headers in captured
    )
    leaked = [
        field
        for field, canary in canaries.items()
        if canary.encode() in wire or canary.removeprefix("CANARY-").encode() in wire
    ]
    assert leaked == []
    # ... not even in the sealed boxes' bytes: the shares on the wire hold the data sealed
    shares = [(s, data) for s, data, _ in captured if s.startswith("cbcm.v1.share.")]
    assert {s.rsplit(".", 1)[0] for s, _ in shares} == {
        "cbcm.v1.share.ngo-b.case.transferred",
        "cbcm.v1.share.ngo-b.case.referred_for_investigation",
    }
    boxes = b"\n".join(base64.b64decode(decode_share(data).data.sealed) for _, data in shares)
    assert [f for f, c in canaries.items() if c.encode() in boxes] == []
    opened = {
        value
        for _, data in shares
        for value in open_share(data, SHARE_KEYS["ngo-b"]).values.values()
    }
    assert opened == {canaries["transfer_note"], canaries["survivor.name"]}
