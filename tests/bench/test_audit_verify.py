"""Verification speed (issues #5 and #7): ``verify`` over a whole store, next to SHA-256 alone
over the same bytes, measured in the same run.

The baseline, *SHA-256 alone*, reads nothing from the database and formats nothing: the
stored rows are read into memory first (not timed) and each event's bytes, exactly as a link
hashes them (position, originator id, version, topic length, topic, state), are put together
beforehand (not timed); timed is one ``hashlib.sha256(previous link + those bytes)`` per event,
the chain over them. That is the least any verifier in Python has to do. ``verify`` also
reads every row from the store and checks each against the link stored before it.

Printed for context, not in ``cbcm bench``'s table: the same chain computed field by field
in memory (the baseline before issue #7, which also times the integers' encoding), and the
careful path alone (``verify`` with its fast path off: how every row was checked before
issue #7), on the same store.

Each side runs ``ROUNDS`` times, alternating, and the best of each is reported. Figures are
printed, not asserted; the only check is that every side computed the store's head.
``CBCM_BENCH_CASES`` overrides the number of cases; ``CBCM_BENCH_PROFILE=1`` also prints a
cProfile of ``verify``.
"""

from __future__ import annotations

import cProfile
import hashlib
import io
import os
import pstats
import random
import struct
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from services.application.mechanism import ComplaintMechanism
from services.audit import verify as verify_module
from services.audit.verify import verify
from services.demo.walk import build_demo_network, walk_cases
from services.event_store.chain import GENESIS, head, read_log
from tests.bench.results import Figure, Target, quick, record, store_kind

START = datetime(2025, 9, 1, tzinfo=UTC)
ROUNDS = 5

Row = tuple[int, bytes, int, bytes, bytes]


def preimages(rows: list[Row]) -> list[bytes]:
    """Each event's bytes as its link hashes them (see ``services.event_store.chain.link_hash``)."""
    fixed = struct.Struct(">q16sqI")
    return [fixed.pack(p, oid, v, len(t)) + t + s for p, oid, v, t, s in rows]


def sha256_alone(events: list[bytes]) -> bytes:
    link = GENESIS
    sha256 = hashlib.sha256
    for event in events:
        link = sha256(link + event).digest()
    return link


def sha256_field_by_field(rows: list[Row]) -> bytes:
    link = GENESIS
    for position, oid, version, topic, state in rows:
        digest = hashlib.sha256(link)
        digest.update(position.to_bytes(8, "big", signed=True))
        digest.update(oid)
        digest.update(version.to_bytes(8, "big", signed=True))
        digest.update(len(topic).to_bytes(4, "big"))
        digest.update(topic)
        digest.update(state)
        link = digest.digest()
    return link


def careful_alone(recorder: Any) -> bytes:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(verify_module, "log_batches", lambda *a, **k: None)
        report = verify(recorder)
    assert report.intact
    top = head(recorder)
    assert top is not None
    return top.link


def fast(recorder: Any) -> bytes:
    report = verify(recorder)
    assert report.intact
    top = head(recorder)
    assert top is not None
    return top.link


@pytest.mark.bench
def test_verify_rate_against_sha256_alone(app: ComplaintMechanism, store_url: str) -> None:
    cases = int(os.environ.get("CBCM_BENCH_CASES", "300" if quick() else "800"))
    build_demo_network(app, START)
    walk_cases(app, cases, random.Random(11), START)
    rows: list[Row] = [
        (
            r.position,
            r.originator_id.bytes,  # type: ignore[union-attr]
            int(r.version or 0),
            (r.topic or "").encode(),
            r.state or b"",
        )
        for r in read_log(app.recorder)
    ]
    events = preimages(rows)
    size = sum(len(e) + 32 for e in events)
    top = head(app.recorder)
    assert top is not None

    sides: dict[str, Callable[[], bytes]] = {
        "SHA-256 alone": lambda: sha256_alone(events),
        "cbcm audit verify": lambda: fast(app.recorder),
        "chain field by field, in memory": lambda: sha256_field_by_field(rows),
        "careful path alone": lambda: careful_alone(app.recorder),
    }
    best = dict.fromkeys(sides, float("inf"))
    for _ in range(ROUNDS):
        for name, side in sides.items():
            started = time.perf_counter()
            link = side()
            best[name] = min(best[name], time.perf_counter() - started)
            assert link == top.link, name

    kind = store_kind(store_url)
    baseline = best["SHA-256 alone"]
    print(
        f"\nverify on {kind}: {len(rows)} events, {size / 1e6:.1f} MB hashed, best of {ROUNDS} "
        "alternating rounds"
    )
    for name, seconds in best.items():
        print(
            f"  {name:34}{len(rows) / seconds:10.0f} events/s  ({seconds * 1000:7.1f} ms)"
            f"  {baseline / seconds:5.2f} of SHA-256 alone"
        )
    record(
        Figure(
            bench="audit verify (#5)",
            figure="events verified/s",
            store=kind,
            value=len(rows) / best["cbcm audit verify"],
            unit="events/s",
            baseline=len(rows) / baseline,
            baseline_name="SHA-256 alone, same bytes, in memory",
            target=Target("ratio", ">=", 0.5),
        )
    )
    if os.environ.get("CBCM_BENCH_PROFILE"):
        profiler = cProfile.Profile()
        profiler.enable()
        verify(app.recorder)
        profiler.disable()
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(20)
        print(out.getvalue())
