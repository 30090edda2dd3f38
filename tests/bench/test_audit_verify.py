"""Verification speed (issue #5): ``verify`` over a whole store, next to SHA-256 alone over the
same bytes, measured in the same run.

The baseline reads nothing from the database: the stored rows are read into memory first (not
timed) and the same chain is computed with ``hashlib`` over the same bytes, so the ratio says
what reading the log and checking each row cost on top of hashing. Figures are printed, not
asserted; the only check is that both sides computed the same head.
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from datetime import UTC, datetime

import pytest

from services.audit.chain import GENESIS, head, read_log
from services.audit.verify import verify
from services.demo import build_demo_network, walk_cases
from services.mechanism import ComplaintMechanism

START = datetime(2025, 9, 1, tzinfo=UTC)


def sha256_chain(rows: list[tuple[int, bytes, int, bytes, bytes]]) -> bytes:
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


@pytest.mark.bench
def test_verify_rate_against_sha256_alone(app: ComplaintMechanism, store_url: str) -> None:
    cases = int(os.environ.get("CBCM_BENCH_CASES", "800"))
    build_demo_network(app, START)
    walk_cases(app, cases, random.Random(11), START)
    rows = [
        (
            r.position,
            r.originator_id.bytes,  # type: ignore[union-attr]
            int(r.version or 0),
            (r.topic or "").encode(),
            r.state or b"",
        )
        for r in read_log(app.recorder)
    ]
    size = sum(len(r[4]) + len(r[3]) + 32 for r in rows)

    started = time.perf_counter()
    baseline_head = sha256_chain(rows)
    baseline = time.perf_counter() - started

    started = time.perf_counter()
    report = verify(app.recorder)
    measured = time.perf_counter() - started

    top = head(app.recorder)
    assert report.intact and top is not None and top.link == baseline_head
    kind = "sqlite" if store_url.startswith("sqlite") else "postgres"
    print(
        f"\nverify on {kind}: {len(rows)} events, {size / 1e6:.1f} MB hashed\n"
        f"  cbcm audit verify   {len(rows) / measured:10.0f} events/s  ({measured:.2f} s)\n"
        f"  SHA-256 alone       {len(rows) / baseline:10.0f} events/s  ({baseline:.2f} s)\n"
        f"  ratio verify/sha256 {baseline / measured:10.2f}"
    )
