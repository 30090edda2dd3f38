"""Issue #15's attacks on the audit log, as a database administrator who also holds the data
dir would make them, on SQLite and PostgreSQL, each with a real nats-server, the network's
checkpoint publisher and an independent witness (consuming ``CBCM_AUDIT`` in this process):

1. a whole replacement store (another store id), checkpointed by the network's own publisher;
5. the default witness book beside the log's signing key, pruned and re-signed;
- a fork at a *new* position, signed with the network's key;
- ``audit verify --json`` on a range that no checkpoint covers.

Each failed on the code before issue #15 (the failures are quoted in the issue's note). The
checkpoint an attacker signs is built in the format of the code under test (with the tree head
where the checkpoint carries one): the attack is the same, only the wire format differs.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from contracts.audit import AUDIT_STREAM, AuditCheckpointV1
from services.application.mechanism import ComplaintMechanism
from services.audit import checkpoints as checkpoints_module
from services.audit.checkpoints import checkpoint_once, ensure_audit_stream, publish_checkpoint
from services.audit.keys import load_signing_key
from services.audit.witness import Witness, WitnessBook
from services.bootstrap import complaint_mechanism
from services.demo.walk import build_demo_network, walk_cases
from services.event_store import chain
from services.event_store.chain import ChainRow, read_log
from services.event_store.store_id import store_id
from services.nats.server import EmbeddedNats
from services.settings import Settings
from tests.conftest import init_store
from tests.integration.cli_runs import run_cbcm

START = datetime(2025, 9, 1, tzinfo=UTC)
ORIGIN = "cbcm.test/log/attacks"


# ---------------------------------------------------------------------------------- set-up


@pytest.fixture(autouse=True)
def log_origin(monkeypatch: pytest.MonkeyPatch) -> None:
    """The network's log identity, for the publisher and the witness (ignored before #15)."""
    monkeypatch.setenv("CBCM_AUDIT_LOG_ORIGIN", ORIGIN)


@pytest.fixture
async def js(nc: NatsClient) -> JetStreamContext:
    context = nc.jetstream()
    await ensure_audit_stream(context)
    return context


@pytest.fixture
def other_store_url(store_url: str, tmp_path: Path) -> Iterator[str]:
    """A second, empty store of the same kind: what the administrator swaps in."""
    if store_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'replacement.sqlite3'}"
        return
    base, _, _ = store_url.rpartition("schema=")
    schema = f"r_{uuid.uuid4().hex[:12]}"
    server = base.rstrip("?&")
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    yield init_store(f"{base}schema={schema}")  # `cbcm db init`, as the administrator would
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


class IndependentWitness:
    """An agency's witness: its own book (and, where witnesses cosign, its own key)."""

    def __init__(self, directory: Path, public_key: Any) -> None:
        self.directory = directory
        self.book_path = directory / "checkpoints.sqlite3"
        self.public_key = public_key
        self.key = Ed25519PrivateKey.generate()
        self.name = "unicef.witness.cbcm.invalid"

    def extra(self) -> dict[str, Any]:
        parameters = inspect.signature(Witness).parameters
        if "cosigner" not in parameters:
            return {}  # before #15 witnesses did not cosign
        from services.audit.witness import Cosigner  # noqa: PLC0415

        return {"cosigner": Cosigner(self.name, self.key)}

    def vkey(self) -> str:
        from services.audit.keys import witness_vkey  # noqa: PLC0415

        return witness_vkey(self.name, self.key)

    async def catch_up(self, js: JetStreamContext) -> list[dict[str, Any]]:
        """Run until every message in the stream is handled; the log lines it wrote."""
        last = (await js.stream_info(AUDIT_STREAM)).state.last_seq
        book = WitnessBook.open(self.book_path)
        witness = Witness(
            book, js, self.public_key, name="unicef", fetch_timeout=0.2, **self.extra()
        )
        stop = asyncio.Event()
        with structlog.testing.capture_logs() as logs:
            task = asyncio.create_task(witness.run(stop))
            deadline = asyncio.get_running_loop().time() + 20
            while book.last_sequence() < last:
                assert asyncio.get_running_loop().time() < deadline, "the witness fell behind"
                await asyncio.sleep(0.02)
            stop.set()
            await asyncio.wait_for(task, 10)
        book.close()
        return logs


def cli_env(settings: Settings, store: str, witness_dir: Path | None = None) -> dict[str, str]:
    env = {
        "CBCM_DATA_DIR": str(settings.data_dir),
        "CBCM_EVENT_STORE": store,
        "CBCM_AUDIT_LOG_ORIGIN": ORIGIN,
    }
    if witness_dir is not None:
        env["CBCM_WITNESS_DIR"] = str(witness_dir)
    return env


def audit(env: dict[str, str], *args: str) -> Any:
    return run_cbcm(["audit", *args], env=env)


def alarms(logs: list[dict[str, Any]]) -> list[str]:
    return [
        e["event"]
        for e in logs
        if e.get("log_level") == "error"
        and e["event"]
        in (
            "audit.checkpoint_inconsistent",
            "audit.checkpoint_head_moved_back",
            "audit.checkpoint_contradiction",
        )
    ]


def signed_like_the_publisher(
    key: Ed25519PrivateKey, store: str, head: ChainRow, tree: Any | None
) -> AuditCheckpointV1:
    """``sign_checkpoint`` of the code under test, with a tree head if its checkpoints carry
    one (issue #15) and ``tree`` is given."""
    sign = checkpoints_module.sign_checkpoint
    if tree is not None and "tree" in inspect.signature(sign).parameters:
        return sign(key, store, head, datetime.now(UTC), tree)
    return sign(key, store, head, datetime.now(UTC))


def tree_of(recorder: Any, head: ChainRow) -> Any | None:
    """The tree head the publisher would sign for ``head`` (None before issue #15)."""
    builder = getattr(checkpoints_module, "tree_head", None)
    return None if builder is None else builder(recorder, ORIGIN, head)


def store_of(app: ComplaintMechanism) -> str:
    """The store's id as the code under test derives it (a nonce since issue #15B)."""
    from services.event_store import store_id as ids  # noqa: PLC0415

    of = getattr(ids, "store_id_of", None)
    return (
        str(of(app.recorder))
        if of is not None
        else store_id(app.recorder.select_notifications(1, 1)[0])
    )


# ---------------------------------------------------------------------------------- attack 1


async def test_a_whole_replacement_store_fails_against_a_witness_that_pinned_the_log(
    store_url: str,
    settings: Settings,
    app: ComplaintMechanism,
    other_store_url: str,
    nats_server: EmbeddedNats,
    js: JetStreamContext,
    tmp_path: Path,
) -> None:
    # given the genuine log, checkpointed by the network's publisher and witnessed by an agency
    await asyncio.to_thread(build_demo_network, app, START)
    await asyncio.to_thread(walk_cases, app, 3, random.Random(1), START)
    key = load_signing_key(settings)
    genuine = await checkpoint_once(app, key, nats_server.url)
    assert genuine is not None
    witness = IndependentWitness(tmp_path / "unicef", key.public_key())
    assert alarms(await witness.catch_up(js)) == []

    # when the administrator swaps in a whole other store (another store id), and the
    # network's own publisher checkpoints it (as `cbcm serve` does within 30 s of a restart)
    replacement = complaint_mechanism(
        Settings(data_dir=settings.data_dir, event_store=other_store_url)
    )
    try:
        later = START + timedelta(days=1)
        await asyncio.to_thread(build_demo_network, replacement, later)
        await asyncio.to_thread(walk_cases, replacement, 6, random.Random(2), later)
        swapped = await checkpoint_once(replacement, key, nats_server.url)
    finally:
        replacement.close()
    assert swapped is not None and swapped.store != genuine.store
    logs = await witness.catch_up(js)

    # then the witness raises the alarm (no consistency proof from the log it holds) ...
    assert alarms(logs), "the witness took the replacement's checkpoint as a normal one"
    # ... and verify against the witness's book calls the replacement damaged
    done = audit(
        cli_env(settings, other_store_url), "verify", "--witness-db", str(witness.book_path)
    )
    assert done.exit_code == 4, done.output
    assert "DAMAGED" in done.output
    # while the genuine store still verifies
    done = audit(cli_env(settings, store_url), "verify", "--witness-db", str(witness.book_path))
    assert done.exit_code == 0, done.output


# ---------------------------------------------------------------------------------- a fork


async def test_a_fork_at_a_new_position_raises_the_alarm_and_leaves_the_log_verifiable(
    store_url: str,
    settings: Settings,
    app: ComplaintMechanism,
    nats_server: EmbeddedNats,
    js: JetStreamContext,
    tmp_path: Path,
) -> None:
    # given a log checkpointed twice, both held by an agency's witness
    await asyncio.to_thread(build_demo_network, app, START)
    key = load_signing_key(settings)
    first = await checkpoint_once(app, key, nats_server.url)
    await asyncio.to_thread(walk_cases, app, 2, random.Random(3), START)
    second = await checkpoint_once(app, key, nats_server.url)
    assert first is not None and second is not None and second.position > first.position
    witness = IndependentWitness(tmp_path / "unicef", key.public_key())
    assert alarms(await witness.catch_up(js)) == []

    # when someone holding the network's key signs a rival history that agrees with the log up
    # to the first checkpoint, differs after it, and ends at a position no checkpoint named
    links = [r.chain.link for r in read_log(app.recorder) if r.chain is not None]
    at_first = sum(1 for r in read_log(app.recorder) if r.chain and r.position <= first.position)
    held = len(links)  # the witness holds the tree at the second checkpoint, the head
    position = second.position + 5
    forged_head = ChainRow(position, position - 1, bytes(range(32)))
    tree = None
    if getattr(checkpoints_module, "tree_head", None) is not None:  # checkpoints sign trees
        from services.audit.checkpoints import TreeHead  # noqa: PLC0415
        from services.audit.merkle import MemoryTree, consistency_proof, leaf_hash  # noqa: PLC0415

        kept = [leaf_hash(link) for link in links[:at_first]]
        fork = MemoryTree(kept + [leaf_hash(bytes([i]) * 32) for i in range(held + 5 - at_first)])
        # the rival's own consistency proof from the size the witness holds (it cannot be
        # one from the genuine tree: the rival differs there)
        proof = tuple(consistency_proof(held, held + 5, fork))
        tree = TreeHead(ORIGIN, held + 5, fork.root(), held, proof)
    forged = signed_like_the_publisher(key, second.store, forged_head, tree)
    assert await publish_checkpoint(js, forged)
    logs = await witness.catch_up(js)

    # then the witness alarms and does not hold the rival checkpoint
    assert alarms(logs), "the witness took a fork at a new position as a normal checkpoint"
    with WitnessBook.open(witness.book_path, readonly=True) as book:
        assert position not in [c.position for c in book.checkpoints()]
    # and the genuine log still verifies against that witness's book
    done = audit(cli_env(settings, store_url), "verify", "--witness-db", str(witness.book_path))
    assert done.exit_code == 0, done.output


# ---------------------------------------------------------------------------------- attack 5


async def test_a_book_beside_the_key_pruned_and_re_signed_vouches_for_nothing(
    store_url: str,
    settings: Settings,
    app: ComplaintMechanism,
    other_store_url: str,
    nats_server: EmbeddedNats,
    js: JetStreamContext,
    tmp_path: Path,
) -> None:
    # given the genuine log witnessed by the witness the operator runs (its default book)
    await asyncio.to_thread(build_demo_network, app, START)
    key = load_signing_key(settings)
    assert await checkpoint_once(app, key, nats_server.url) is not None
    witness = IndependentWitness(tmp_path / "witness", key.public_key())
    await witness.catch_up(js)

    # when whoever holds the data dir (the store and the log's key) rewrites the store and
    # writes a fresh book, re-signed, where the witness book used to sit: beside the key
    rewritten = complaint_mechanism(
        Settings(data_dir=settings.data_dir, event_store=other_store_url)
    )
    try:
        await asyncio.to_thread(build_demo_network, rewritten, START + timedelta(hours=1))
        head = chain.head(rewritten.recorder)
        assert head is not None
        resigned = signed_like_the_publisher(
            key, store_of(rewritten), head, tree_of(rewritten.recorder, head)
        )
    finally:
        rewritten.close()
    beside_the_key = settings.data_dir / "witness" / "checkpoints.sqlite3"
    with WitnessBook.open(beside_the_key) as forged:
        forged.record([resigned])

    # then verify with its defaults does not read the book beside the key: it holds the
    # rewritten store to the witness's own book, and finds it damaged
    env = cli_env(settings, other_store_url, witness_dir=witness.directory)
    done = audit(env, "verify")
    assert done.exit_code == 4, done.output
    # and the re-signed book, named explicitly, vouches for nothing under a policy that asks
    # for the witness's cosignature (which no key in the data dir can make)
    done = audit(env, "verify", "--witness-db", str(beside_the_key), "--witness", witness.vkey())
    assert done.exit_code == 5, done.output
    assert "cosigned by 1 of unicef.witness.cbcm.invalid" in done.output


# ---------------------------------------------------------------------------------- --json


async def test_verify_json_is_not_verified_for_a_range_no_checkpoint_covers(
    store_url: str,
    settings: Settings,
    app: ComplaintMechanism,
    nats_server: EmbeddedNats,
    js: JetStreamContext,
    tmp_path: Path,
) -> None:
    # given a checkpoint, then events after it
    await asyncio.to_thread(build_demo_network, app, START)
    key = load_signing_key(settings)
    signed = await checkpoint_once(app, key, nats_server.url)
    assert signed is not None
    await asyncio.to_thread(walk_cases, app, 1, random.Random(4), START)
    head = chain.head(app.recorder)
    assert head is not None and head.position > signed.position
    witness = IndependentWitness(tmp_path / "unicef", key.public_key())
    await witness.catch_up(js)
    env = cli_env(settings, store_url)

    # when verify is asked for JSON
    done = audit(env, "verify", "--json", "--witness-db", str(witness.book_path))
    # then the links recompute, but the range after the checkpoint is not called verified
    assert done.exit_code == 0, done.output
    report = json.loads(done.output)
    assert report["verified"] is False and report["intact"] is True
    assert report["uncovered"] == {"from": signed.position + 1, "to": head.position}

    # and once a checkpoint covers the head, it is
    assert await checkpoint_once(app, key, nats_server.url) is not None
    await witness.catch_up(js)
    report = json.loads(
        audit(env, "verify", "--json", "--witness-db", str(witness.book_path)).output
    )
    assert report["verified"] is True and report["uncovered"] is None
    # read as buffers where the store is a SQLite file, hashed by the C module (ADR 33)
    assert report["hashing"] == "c"
    sqlite_file = store_url.startswith("sqlite")
    assert report["read_as_buffers"] == (report["checked"] if sqlite_file else 0)

    # and the witness published its cosignature of that checkpoint for anyone to fetch
    from contracts.audit import COSIGNATURE_SUBJECT, decode_cosignature  # noqa: PLC0415
    from services.audit.note import (  # noqa: PLC0415
        COSIGNATURE_TYPE,
        Verifier,
        check_cosignature,
        parse_note,
    )

    raw = await js.get_last_msg(AUDIT_STREAM, COSIGNATURE_SUBJECT)
    published = decode_cosignature(raw.data or b"")
    assert (published.witness, published.origin) == (witness.name, ORIGIN)
    text, lines = parse_note(published.note)
    mine = Verifier(witness.name, COSIGNATURE_TYPE, witness.key.public_key())
    assert any(check_cosignature(text, line, mine) for line in lines)
