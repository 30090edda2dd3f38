"""Signed audit checkpoints and witnesses (issue #5, item 2).

Real nats-server (temp dir, free port), real stores (``store_url``: SQLite and PostgreSQL).
Nothing sleeps and hopes: every wait is on a condition, with a deadline.
"""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import nats
import pytest
import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from contracts.audit import (
    AUDIT_STREAM,
    CHECKPOINT_SUBJECT,
    AuditCheckpointV1,
    decode_checkpoint,
    encode_checkpoint,
    signing_payload,
)
from domain.vocabulary import AgencyType
from services.application.mechanism import ComplaintMechanism
from services.audit.checkpoints import (
    CheckpointPublisher,
    audit_stream_config,
    checkpoint_once,
    ensure_audit_stream,
    publish_checkpoint,
    sign_checkpoint,
    tree_head,
    verify_checkpoint,
)
from services.audit.keys import (
    audit_signing_key_path,
    key_id,
    load_public_key,
    load_signing_key,
)
from services.audit.witness import Witness, WitnessBook, durable_name
from services.bootstrap import complaint_mechanism
from services.demo.walk import COORDINATOR, build_demo_network
from services.event_store import chain
from services.event_store.chain import ChainRow
from services.event_store.store_id import store_id_of
from services.settings import Settings

START = datetime(2025, 9, 1, tzinfo=UTC)
SIGNED = datetime(2026, 3, 2, 8, 0, 0, 123456, tzinfo=UTC)
CBCM = Path(sys.executable).parent / "cbcm"
ORIGIN = "cbcm.test/log/checkpoints"
"""The log's identity (issue #15) in these tests: the publisher's and the witness's."""


# ---------------------------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def log_origin(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("CBCM_AUDIT_LOG_ORIGIN", ORIGIN)
    return ORIGIN


@pytest.fixture
async def js(nc: NatsClient) -> JetStreamContext:
    context = nc.jetstream()
    await ensure_audit_stream(context)
    return context


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def book_path(tmp_path: Path) -> Path:
    return tmp_path / "witness" / "checkpoints.sqlite3"


@pytest.fixture
def reader(book_path: Path) -> Iterator[WitnessBook]:
    """The book as ``cbcm audit verify`` reads it: its own connection, beside the witness."""
    book = WitnessBook.open(book_path)
    yield book
    book.close()


# ---------------------------------------------------------------------------------- helpers


async def until(condition: Callable[[], bool], what: str, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@asynccontextmanager
async def witnessing(
    js: JetStreamContext, book_path: Path, public_key: Ed25519PublicKey, name: str = "local"
) -> AsyncIterator[Witness]:
    """A witness running in this process until the block ends (then stopped cleanly)."""
    book = WitnessBook.open(book_path)
    witness = Witness(book, js, public_key, name=name, fetch_timeout=0.2)
    stop = asyncio.Event()
    task = asyncio.create_task(witness.run(stop))
    try:
        yield witness
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        book.close()


def handled(reader: WitnessBook, seq: int) -> Callable[[], bool]:
    """The witness has committed everything up to stream sequence ``seq``."""
    return lambda: reader.last_sequence() >= seq


async def publish_raw(js: JetStreamContext, payload: bytes) -> int:
    """Publish bytes on the checkpoint subject without a message id; the stream sequence."""
    ack = await js.publish(CHECKPOINT_SUBJECT, payload, stream=AUDIT_STREAM)
    return int(ack.seq)


def store_of(app: ComplaintMechanism) -> str:
    found = store_id_of(app.recorder)
    assert found is not None
    return found


def signed(
    app: ComplaintMechanism, key: Ed25519PrivateKey, store: str, head: ChainRow, at: datetime
) -> AuditCheckpointV1:
    """A checkpoint of ``head`` as the publisher signs it: with the log's tree head."""
    return sign_checkpoint(key, store, head, at, tree_head(app.recorder, ORIGIN, head))


def head_of(app: ComplaintMechanism) -> ChainRow:
    row = chain.head(app.recorder)
    assert row is not None
    return row


# ------------------------------------------------------------------------- signing (pure)


def test_a_signed_checkpoint_verifies_and_altering_any_field_breaks_it(
    key: Ed25519PrivateKey,
) -> None:
    head = ChainRow(position=42, previous_position=41, link=bytes(range(32)))
    checkpoint = sign_checkpoint(key, "0123456789abcdef", head, SIGNED)

    assert checkpoint.position == 42
    assert checkpoint.link == bytes(range(32)).hex()
    assert checkpoint.key_id == key_id(key.public_key())
    assert verify_checkpoint(key.public_key(), checkpoint)
    # The signed bytes are documented lines, rebuildable by any implementation.
    payload = signing_payload("0123456789abcdef", 42, checkpoint.link, SIGNED)
    assert payload == (
        b"cbcm.audit.checkpoint.v1\n0123456789abcdef\n42\n"
        + checkpoint.link.encode()
        + b"\n2026-03-02T08:00:00.123456Z"
    )
    key.public_key().verify(base64.b64decode(checkpoint.signature), payload)
    # It survives the wire.
    assert verify_checkpoint(key.public_key(), decode_checkpoint(encode_checkpoint(checkpoint)))
    # The same instant in another zone is the same checkpoint.
    elsewhere = SIGNED.astimezone(ZoneInfo("Africa/Nairobi"))
    assert verify_checkpoint(key.public_key(), replace_cp(checkpoint, signed_at=elsewhere))

    other_signature = base64.b64encode(key.sign(b"something else")).decode()
    altered = {
        "store": "fedcba9876543210",
        "position": 43,
        "link": "f" * 64,
        "signed_at": SIGNED + timedelta(microseconds=1),
        "key_id": "0" * 16,
        "signature": other_signature,
    }
    for field, value in altered.items():
        assert not verify_checkpoint(key.public_key(), replace_cp(checkpoint, **{field: value})), (
            field
        )
    # Signed by another key, under its own key id or claiming ours: refused.
    stranger = Ed25519PrivateKey.generate()
    forged = sign_checkpoint(stranger, "0123456789abcdef", head, SIGNED)
    assert not verify_checkpoint(key.public_key(), forged)
    assert not verify_checkpoint(key.public_key(), replace_cp(forged, key_id=checkpoint.key_id))


def chain_part(checkpoint: AuditCheckpointV1) -> AuditCheckpointV1:
    """What a witness's book keeps of a checkpoint as a chain checkpoint (the tree head, with
    its cosignature, is kept apart: ``WitnessBook.tree_heads``)."""
    return replace_cp(checkpoint, note=None, proof_from=None, consistency=None)


def replace_cp(checkpoint: AuditCheckpointV1, **changes: Any) -> AuditCheckpointV1:
    return msgspec.structs.replace(checkpoint, **changes)


def test_signing_refuses_values_that_could_smuggle_a_line() -> None:
    link = "a" * 64
    with pytest.raises(ValueError):
        signing_payload("0123456789abcde\n", 1, link, SIGNED)
    with pytest.raises(ValueError):
        signing_payload("0123456789abcdef", 0, link, SIGNED)
    with pytest.raises(ValueError):
        signing_payload("0123456789abcdef", 1, link + "\n", SIGNED)
    with pytest.raises(ValueError):
        signing_payload("0123456789abcdef", 1, link, SIGNED.replace(tzinfo=None))
    with pytest.raises(msgspec.ValidationError):
        decode_checkpoint(
            b'{"store":"0123456789abcdef","position":1,"link":"' + link.encode() + b'",'
            b'"signed_at":"2026-03-02T08:00:00","key_id":"0123456789abcdef",'
            b'"signature":"' + b"A" * 86 + b'=="}'
        )  # a naive time names no instant


# ------------------------------------------------------------------------------ the stream


async def test_the_audit_stream_keeps_everything(js: JetStreamContext) -> None:
    info = await js.stream_info(AUDIT_STREAM)
    assert info.config.subjects == ["cbcm.v1.audit.>"]
    assert info.config.deny_delete and info.config.deny_purge
    assert info.config.storage == audit_stream_config().storage
    with pytest.raises(nats.js.errors.APIError):
        await js.purge_stream(AUDIT_STREAM)
    assert (await ensure_audit_stream(js)).config.name == AUDIT_STREAM  # idempotent


# ------------------------------------------------------------------------------ the witness


async def test_the_witness_refuses_forged_and_malformed_checkpoints(
    store_url: str, app: ComplaintMechanism, js: JetStreamContext, key, book_path, reader
) -> None:
    await asyncio.to_thread(build_demo_network, app, START)
    store, head = store_of(app), head_of(app)
    stranger = Ed25519PrivateKey.generate()
    forged = signed(app, stranger, store, head, SIGNED)
    impostor = replace_cp(forged, key_id=key_id(key.public_key()))  # claims the network's key
    genuine = signed(app, key, store, head, SIGNED)

    with structlog.testing.capture_logs() as logs:
        async with witnessing(js, book_path, key.public_key()) as witness:
            await publish_checkpoint(js, forged)
            # (raw: its message id would be the forged one's, and JetStream drops it)
            await publish_raw(js, encode_checkpoint(impostor))
            await publish_raw(js, b'{"not": "a checkpoint"}')
            seq = await publish_raw(js, encode_checkpoint(genuine))
            await until(handled(reader, seq), "the witness to handle every message")

    assert reader.checkpoints() == [chain_part(genuine)]
    assert (witness.refused, witness.recorded) == (3, 1)
    refusals = [e for e in logs if e["event"] == "audit.checkpoint_forged"]
    assert len(refusals) == 2
    assert all(e["log_level"] == "error" and e["position"] == head.position for e in refusals)
    assert [e["key_id"] for e in refusals] == [key_id(stranger), key_id(key)]
    assert [e["event"] for e in logs if e["event"] == "audit.checkpoint_malformed"] == [
        "audit.checkpoint_malformed"
    ]


async def test_checkpoint_once_publishes_the_head_and_the_witness_keeps_it(
    store_url: str, settings: Settings, app: ComplaintMechanism, js, nats_server, reader, book_path
) -> None:
    await asyncio.to_thread(build_demo_network, app, START)
    head = head_of(app)
    # The operator's command, as a process: the embedded key is created on first use.
    env = {k: v for k, v in os.environ.items() if not k.startswith("CBCM_")}
    env |= {
        "CBCM_DATA_DIR": str(settings.data_dir),
        "CBCM_EVENT_STORE": store_url,
        "CBCM_NATS_URL": nats_server.url,
        "CBCM_AUDIT_LOG_ORIGIN": ORIGIN,
    }
    done = await asyncio.to_thread(
        subprocess.run,
        [str(CBCM), "audit", "checkpoint", "--once"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    store = store_of(app)
    assert f"store {store} position {head.position} link {head.link.hex()}" in done.stdout
    # ... and the same head as a C2SP checkpoint: origin, tree size, root, the log's signature
    assert f"{ORIGIN}\n{head.position}\n" in done.stdout
    assert f"\u2014 {ORIGIN} " in done.stdout

    key_file = audit_signing_key_path(settings.data_dir)
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert key_file.parent.stat().st_mode & 0o777 == 0o700
    public_key = load_public_key(settings)

    async with witnessing(js, book_path, public_key) as witness:
        await until(lambda: len(reader.checkpoints()) == 1, "the checkpoint to be witnessed")
        held = reader.checkpoints(store)[0]
        assert (held.store, held.position, held.link) == (store, head.position, head.link.hex())
        assert verify_checkpoint(public_key, held)

        # The same head signed again later (a restarted publisher): a new signature, so a
        # new message id (nobody can take a genuine checkpoint's id first), and idempotent
        # at the witness: no contradiction, the first one kept.
        key = load_signing_key(settings)
        again = await checkpoint_once(app, key, nats_server.url)
        assert again is not None and again.signed_at > held.signed_at
        seq = await publish_raw(js, encode_checkpoint(again))
        await until(handled(reader, seq), "the repeat to be handled")
        assert witness.repeated == 2

    assert reader.checkpoints() == [held]
    assert reader.contradictions() == []


async def test_a_rewritten_history_raises_the_alarm_and_the_first_checkpoint_is_kept(
    store_url: str,
    app: ComplaintMechanism,
    js: JetStreamContext,
    key: Ed25519PrivateKey,
    tmp_path: Path,
    book_path: Path,
    reader: WitnessBook,
) -> None:
    await asyncio.to_thread(build_demo_network, app, START)
    publisher = CheckpointPublisher(app, js, key)
    honest = await publisher.publish_head()
    assert honest is not None

    # The same history rewritten (other times, every hash recomputed): a second store with the
    # same events in number, whose head the network's key signs under the first store's id.
    rewritten = complaint_mechanism(
        Settings(data_dir=tmp_path / "other", event_store=f"sqlite:///{tmp_path / 'rw.sqlite3'}")
    )
    try:
        await asyncio.to_thread(build_demo_network, rewritten, START + timedelta(days=1))
        other_head = head_of(rewritten)
        rewritten_recorder = rewritten.recorder
        contradicting = sign_checkpoint(
            key,
            honest.store,
            other_head,
            datetime.now(UTC),
            tree_head(rewritten_recorder, ORIGIN, other_head),
        )
    finally:
        rewritten.close()
    assert other_head.position == honest.position and other_head.link.hex() != honest.link

    with structlog.testing.capture_logs() as logs:
        async with witnessing(js, book_path, key.public_key()) as witness:
            await until(
                lambda: reader.checkpoints() == [chain_part(honest)], "the honest checkpoint"
            )
            # Published the ordinary way, within the duplicate window: still delivered.
            assert await publish_checkpoint(js, contradicting)
            await until(lambda: witness.contradictions == 1, "the alarm")
            # Seen again (a redelivery): one record, the alarm repeated.
            seq = await publish_raw(js, encode_checkpoint(contradicting))
            await until(handled(reader, seq), "the redelivery")

    alarms = [e for e in logs if e["event"] == "audit.checkpoint_contradiction"]
    assert len(alarms) == 2
    assert alarms[0]["log_level"] == "error"
    assert alarms[0]["store"] == honest.store and alarms[0]["position"] == honest.position
    assert alarms[0]["held_link"] == honest.link[:16]
    assert alarms[0]["seen_link"] == contradicting.link[:16]
    assert reader.checkpoints() == [chain_part(honest)]  # never overwritten
    [recorded] = reader.contradictions()
    assert (recorded.store, recorded.position) == (honest.store, honest.position)
    assert (recorded.held, recorded.seen) == (chain_part(honest), chain_part(contradicting))
    assert verify_checkpoint(key.public_key(), recorded.seen)  # evidence that stands alone
    # The book itself refuses to forget.
    with pytest.raises(Exception, match="never changes or forgets"):
        reader._db.execute("DELETE FROM checkpoints")


async def test_a_witness_started_late_catches_up_and_resumes_where_it_stopped(
    store_url: str,
    app: ComplaintMechanism,
    js: JetStreamContext,
    key: Ed25519PrivateKey,
    tmp_path: Path,
    book_path: Path,
    reader: WitnessBook,
) -> None:
    publisher = CheckpointPublisher(app, js, key)
    await asyncio.to_thread(app.establish_network, actor=COORDINATOR, name="N", at=START)
    published = []
    for index in range(3):
        await asyncio.to_thread(register_agency, app, index)
        checkpoint = await publisher.publish_head()
        assert checkpoint is not None
        published.append(checkpoint)

    async with witnessing(js, book_path, key.public_key(), name="unicef"):
        await until(lambda: len(reader.checkpoints()) == 3, "the catch-up")
        # the book is written before the ack: wait for the server to have the third ack
        deadline = time.monotonic() + 10.0
        while True:
            consumer = await js.consumer_info(AUDIT_STREAM, durable_name("unicef"))
            if consumer.ack_floor is not None and consumer.ack_floor.stream_seq >= 3:
                break
            assert time.monotonic() < deadline, f"no ack of the third: {consumer.ack_floor}"
            await asyncio.sleep(0.02)
    assert reader.checkpoints(published[0].store) == [chain_part(p) for p in published]
    assert [cp.position for cp in reader.checkpoints()] == [2, 3, 4]
    assert consumer.ack_floor.stream_seq == 3

    # Stopped, it misses nothing: started again, it takes what came meanwhile, once.
    await asyncio.to_thread(register_agency, app, 3)
    fourth = await publisher.publish_head()
    async with witnessing(js, book_path, key.public_key(), name="unicef") as witness:
        await until(lambda: len(reader.checkpoints()) == 4, "the fourth checkpoint")
        await until(handled(reader, 4), "the fourth to be committed")
    assert reader.checkpoints()[-1] == chain_part(fourth)
    assert (witness.recorded, witness.repeated) == (1, 0)

    # A fresh book under the same name (a lost or replaced file): the consumer does not
    # stand where the book does, so it is re-created and the whole stream comes again.
    fresh = tmp_path / "fresh.sqlite3"
    async with witnessing(js, fresh, key.public_key(), name="unicef"):
        with WitnessBook.open(fresh) as second:
            await until(lambda: len(second.checkpoints()) == 4, "the replay into a fresh book")
            assert second.checkpoints() == reader.checkpoints()


def register_agency(app: ComplaintMechanism, index: int) -> int:
    written = app.register_agency(
        actor=COORDINATOR,
        code=f"agency-{index:02d}",
        name=f"Agency {index}",
        agency_type=AgencyType.NATIONAL_NGO,
        at=START + timedelta(minutes=index + 1),
    )
    return written.position


# ------------------------------------------------------------------------------ the policy


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_the_publisher_policy_checkpoints_every_n_positions_or_t_seconds(
    store_url: str, app: ComplaintMechanism, js: JetStreamContext, key: Ed25519PrivateKey
) -> None:
    clock = FakeMonotonic()
    publisher = CheckpointPublisher(
        app, js, key, every_events=5, every_seconds=30.0, monotonic=clock
    )
    assert await publisher.step() is None  # an empty store: nothing to sign

    written = [
        (
            await asyncio.to_thread(app.establish_network, actor=COORDINATOR, name="N", at=START)
        ).position
    ]
    heads: list[int | None] = []
    last_at = clock.now
    for index in range(11):
        step = await publisher.step()
        heads.append(None if step is None else step.position)
        last_at = clock.now if step is not None else last_at
        written.append(await asyncio.to_thread(register_agency, app, index))
        clock.now += 1.0  # time passes, but far less than 30 s in all
    step = await publisher.step()
    heads.append(None if step is None else step.position)

    assert written == list(range(1, 13))
    # After each write (positions 1..12), a checkpoint when 5 positions passed since the last.
    assert heads == [None, None, None, None, 5, None, None, None, None, 10, None, None]

    assert await publisher.step() is None  # nothing new, no time: nothing
    clock.now = last_at + 29.9
    assert await publisher.step() is None  # the head moved (12), but 30 s have not passed
    clock.now = last_at + 30.0
    timed = await publisher.step()
    assert timed is not None and timed.position == 12
    clock.now += 600.0
    assert await publisher.step() is None  # time passes, the head stays: nothing

    in_stream = [
        decode_checkpoint((await js.get_msg(AUDIT_STREAM, seq)).data or b"") for seq in range(1, 4)
    ]
    assert [cp.position for cp in in_stream] == [5, 10, 12]
    assert all(verify_checkpoint(key.public_key(), cp) for cp in in_stream)
    assert (
        in_stream[1].link == (await asyncio.to_thread(chain.link_at, app.recorder, 10)).link.hex()
    )
    assert (await js.stream_info(AUDIT_STREAM)).state.messages == 3

    # A restarted publisher counts from the last checkpoint in the stream, not from zero.
    restarted = CheckpointPublisher(app, js, key, every_events=5, monotonic=clock)
    assert await restarted.step() is None
    assert restarted.last_position == 12
    for index in range(11, 15):
        await asyncio.to_thread(register_agency, app, index)
        assert await restarted.step() is None  # 13..16
    await asyncio.to_thread(register_agency, app, 15)
    due = await restarted.step()
    assert due is not None and due.position == 17


async def test_a_head_that_moves_back_raises_the_alarm(
    app: ComplaintMechanism,
    js: JetStreamContext,
    key: Ed25519PrivateKey,
    book_path: Path,
    reader: WitnessBook,
) -> None:
    # given a witness holding the head of a store
    await asyncio.to_thread(build_demo_network, app, START)
    publisher = CheckpointPublisher(app, js, key)
    honest = await publisher.publish_head()
    assert honest is not None
    # when a checkpoint signed later names an earlier position (the tail was cut off)
    shorter = head_of(app)
    earlier = chain.link_at(app.recorder, shorter.position - 3)
    assert earlier is not None
    cut = signed(app, key, honest.store, earlier, datetime.now(UTC))
    with structlog.testing.capture_logs() as logs:
        async with witnessing(js, book_path, key.public_key()) as witness:
            await until(
                lambda: reader.checkpoints() == [chain_part(honest)], "the honest checkpoint"
            )
            assert await publish_checkpoint(js, cut)
            await until(lambda: witness.contradictions == 1, "the alarm")
    # then the alarm names both positions (and tree sizes); the cut checkpoint is refused
    # (never cosigned) and recorded as an alarm
    [alarm] = [e for e in logs if e["event"] == "audit.checkpoint_head_moved_back"]
    assert alarm["log_level"] == "error"
    assert (alarm["position"], alarm["held_size"]) == (earlier.position, honest.position)
    assert [c.position for c in reader.checkpoints()] == [honest.position]
    [recorded] = reader.alarms()
    assert (recorded["kind"], recorded["size"], recorded["held_size"]) == (
        "moved_back",
        earlier.position,
        honest.position,
    )
