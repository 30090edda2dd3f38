"""``cbcm audit verify`` end to end (issue #5): a real nats-server, the checkpoint publisher,
a witness keeping what it sees, then the command line over an intact store, a store whose
tail was cut off and one whose tail was rewritten with every link recomputed."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from services.application.mechanism import ComplaintMechanism
from services.audit.checkpoints import checkpoint_once
from services.audit.keys import load_log_origin, load_signing_key
from services.audit.witness import WitnessBook, run_witness, witness_book_path
from services.bootstrap import complaint_mechanism
from services.demo.walk import build_demo_network, walk_cases
from services.nats.server import EmbeddedNats
from services.settings import Settings
from tests.integration.test_audit_chain import Dba, positions

CBCM = str(Path(sys.executable).parent / "cbcm")
START = datetime(2025, 9, 1, tzinfo=UTC)


async def witnessed_store(settings: Settings, nats_url: str) -> ComplaintMechanism:
    """A store with cases whose head a witness holds, signed by the network's key."""
    app = complaint_mechanism(settings)
    await asyncio.to_thread(build_demo_network, app, START)
    await asyncio.to_thread(walk_cases, app, 10, random.Random(3), START)
    signed = await checkpoint_once(
        app, load_signing_key(settings), nats_url, origin=load_log_origin(settings)
    )
    assert signed is not None
    stop = asyncio.Event()
    witness = asyncio.create_task(run_witness(settings, stop, nats_url))
    book = witness_book_path(settings)
    deadline = time.monotonic() + 20
    while True:
        if book.exists():
            with WitnessBook.open(book, readonly=True) as held:
                if any(c.position == signed.position for c in held.checkpoints()):
                    break
        assert time.monotonic() < deadline, "the witness never kept the checkpoint"
        await asyncio.sleep(0.05)
    stop.set()
    await witness
    return app


def audit_verify(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "CBCM_DATA_DIR": str(settings.data_dir),
        "CBCM_WITNESS_DIR": str(settings.witness_dir),
    }
    env.pop("CBCM_EVENT_STORE", None)
    return subprocess.run(
        [CBCM, "audit", "verify", *args],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_verify_passes_an_intact_store_and_names_a_cut_off_tail(
    tmp_path: Path, nats_server: EmbeddedNats
) -> None:
    settings = Settings(data_dir=tmp_path / "data", witness_dir=tmp_path / "witness")
    app = await witnessed_store(settings, nats_server.url)
    try:
        intact = audit_verify(settings)
        assert intact.returncode == 0, intact.stderr
        assert intact.stdout.startswith("intact:")
        assert "1 signed checkpoint" in intact.stdout
        # when a database administrator cuts off the last events (links too)
        dba = Dba(app)
        all_positions = positions(app)
        dba.drop_triggers()
        for position in all_positions[-3:]:
            dba.delete(position, link_too=True)
    finally:
        app.close()
    damaged = audit_verify(settings)
    assert damaged.returncode == 4
    assert f"first bad position {all_positions[-3]}: truncated" in damaged.stderr
    assert "Traceback" not in damaged.stderr


async def test_verify_names_a_tail_rewritten_with_every_link_recomputed(
    tmp_path: Path, nats_server: EmbeddedNats
) -> None:
    settings = Settings(data_dir=tmp_path / "data", witness_dir=tmp_path / "witness")
    app = await witnessed_store(settings, nats_server.url)
    try:
        dba = Dba(app)
        target = positions(app)[-4]
        oid, version, topic, state = dba.row(target)
        dba.drop_triggers()
        dba.set_row(target, oid, version, topic, state.replace(b"a", b"o", 1))
        dba.relink_from(target)
    finally:
        app.close()
    damaged = audit_verify(settings)
    assert damaged.returncode == 4
    assert "changed" in damaged.stderr
    assert "rewritten" in damaged.stderr


async def test_verify_names_a_rewritten_first_event_and_an_emptied_store(
    tmp_path: Path, nats_server: EmbeddedNats
) -> None:
    # given a witnessed store whose first event (from which the store's id comes) is changed
    # and every link recomputed, as a careful forger would
    settings = Settings(data_dir=tmp_path / "data", witness_dir=tmp_path / "witness")
    app = await witnessed_store(settings, nats_server.url)
    try:
        dba = Dba(app)
        first = positions(app)[0]
        oid, version, topic, state = dba.row(first)
        dba.drop_triggers()
        dba.set_row(first, oid, version, topic, state.replace(b"a", b"o", 1))
        dba.relink_from(first)
    finally:
        app.close()
    # then the witness's checkpoints still count: they are another store's now
    damaged = audit_verify(settings)
    assert damaged.returncode == 4
    assert "first bad position 1: changed" in damaged.stderr


def test_without_a_witness_verify_says_it_cannot_vouch_unless_asked_for_the_chain_alone(
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=tmp_path / "data", witness_dir=tmp_path / "witness")
    app = complaint_mechanism(settings)
    try:
        build_demo_network(app, START)
    finally:
        app.close()
    unvouched = audit_verify(settings)
    assert unvouched.returncode == 5
    assert "no signed checkpoint" in unvouched.stderr
    alone = audit_verify(settings, "--no-checkpoints")
    assert alone.returncode == 0, alone.stderr
    assert alone.stdout.startswith("intact:")
