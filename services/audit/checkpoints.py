"""Signed checkpoints of the event log (issue #5): the chain's head, signed and published.

By policy, every ``CBCM_CHECKPOINT_EVENTS`` positions (default 1000) or every
``CBCM_CHECKPOINT_SECONDS`` (default 30) when the head moved, the publisher reads the head of
the hash chain (``services.event_store.chain.head``), signs (store id, position, link) with the
network's Ed25519 checkpoint key and publishes an ``AuditCheckpointV1`` on
``cbcm.v1.audit.checkpoint`` into the JetStream stream ``CBCM_AUDIT`` (file storage, no delete,
no purge), where witnesses that were offline find it later.

Issue #15: the same head is also signed as a C2SP tlog-checkpoint note of the log's Merkle
tree (origin, tree size, root; ``services.audit.note``), after the tree's tiles are stored
(``services.audit.tree.extend``), with the RFC 6962 consistency proof from the log's previous
checkpoint in the stream, whatever store that one named. A store that is not the log (a
replacement, a fork) gets no valid proof: the witnesses alarm.

Each message carries ``Nats-Msg-Id: <store>:<position>:<16 hex of link>:<16 hex of the
signature's SHA-256>`` (``contracts.audit.checkpoint_msg_id``): re-publishing
the same head (after a restart) is dropped by JetStream, but a checkpoint that contradicts one
already published (same position, another link) is not, so witnesses see it.

After a restart the policy counts from the last checkpoint of this store in the stream, and
proves the next one from the log's last checkpoint there. A head
that moved backwards (a truncated store) is checkpointed at once and logged as an error: the
witnesses then hold a later signature at a lower position.

The event store library is synchronous: every call to it runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import msgspec
import nats
import nats.errors
import nats.js.errors
import structlog
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import StreamConfig, StreamInfo

from contracts.audit import (
    AUDIT_STREAM,
    AUDIT_SUBJECTS,
    CHECKPOINT_SUBJECT,
    AuditCheckpointV1,
    checkpoint_msg_id,
    decode_checkpoint,
    encode_checkpoint,
    signing_payload,
)
from services.application.mechanism import ComplaintMechanism
from services.audit import tree as merkle_tree
from services.audit.custody import signable_head
from services.audit.erasure_notices import noticed, tell
from services.audit.keys import configured_origin, key_id, load_log_origin, load_signing_key
from services.audit.metrics import checkpoint_metrics
from services.audit.note import (
    Checkpoint,
    NoteError,
    Verifier,
    checkpoint_text,
    format_note,
    open_checkpoint,
    parse_checkpoint,
    parse_note,
    sign_note,
)
from services.bootstrap import complaint_mechanism
from services.event_store.chain import ChainRow
from services.event_store.errors import EventStoreUnavailable
from services.event_store.high_water import HighWater, high_water_path, raise_high_water
from services.event_store.personal_data.erasure_ledger import LedgerEntry
from services.event_store.personal_data.erasure_log import ErasureLog
from services.event_store.store_id import store_id_of
from services.nats.client import (
    DUPLICATE_WINDOW,
    TRANSIENT,
    ensure_kept_stream,
    kept_stream,
    nats_connect_options,
    nats_replicas,
    nats_servers,
    quiet_errors,
    wait_for_stop,
)
from services.runtime.backoff import Backoff
from services.settings import Settings

__all__ = [
    "DUPLICATE_WINDOW",
    "CheckpointPublisher",
    "TreeHead",
    "audit_stream_config",
    "checkpoint_once",
    "ensure_audit_stream",
    "publish_checkpoint",
    "run_checkpoint_publisher",
    "sign_checkpoint",
    "tree_head",
    "verify_checkpoint",
]

log = structlog.get_logger()

"""Seconds JetStream remembers checkpoint message ids."""

MSG_ID_HEADER = "Nats-Msg-Id"
MAX_BACKOFF = 5.0


# ------------------------------------------------------------------------ signing


@dataclass(frozen=True)
class TreeHead:
    """The log's Merkle tree at a checkpoint: its size and root, and the consistency proof
    from the log's previous checkpoint (``proof_from`` leaves) to it."""

    origin: str
    size: int
    root: bytes
    proof_from: int = 0
    consistency: tuple[bytes, ...] = ()


def sign_checkpoint(
    key: Ed25519PrivateKey, store: str, head: ChainRow, at: datetime, tree: TreeHead | None = None
) -> AuditCheckpointV1:
    """The checkpoint of ``head`` (the chain's last row) of store ``store``, signed at ``at``;
    with ``tree``, also as a C2SP signed note naming the log (``tree.origin``) with the
    consistency proof from its previous checkpoint.

    ``ValueError`` for a naive ``at`` or a store id that is not 16 lowercase hex chars.
    """
    link = head.link.hex()
    payload = signing_payload(store, head.position, link, at)
    note = proof_from = consistency = None
    if tree is not None:
        text = checkpoint_text(tree.origin, tree.size, tree.root)
        note = format_note(text, [sign_note(text, tree.origin, key)])
        proof_from = tree.proof_from
        consistency = [base64.b64encode(h).decode() for h in tree.consistency]
    return AuditCheckpointV1(
        store=store,
        position=head.position,
        link=link,
        signed_at=at.astimezone(UTC),
        key_id=key_id(key),
        signature=base64.b64encode(key.sign(payload)).decode("ascii"),
        note=note,
        proof_from=proof_from,
        consistency=consistency,
    )


def tree_head(
    recorder: Any, origin: str, row: ChainRow, previous: Checkpoint | None = None
) -> TreeHead:
    """The log's tree at the chain row ``row`` (its tiles stored first), with the consistency
    proof from ``previous`` (the log's last checkpoint). A head that moved back, or a store
    that is not the log, gets no valid proof: the witnesses raise the alarm."""
    merkle_tree.extend(recorder)
    tree = merkle_tree.StoredTree(recorder)
    size = tree.size_at(row.position)
    root = tree.root(size)
    if previous is None or previous.size == 0:
        return TreeHead(origin, size, root)
    if previous.size > size:
        return TreeHead(origin, size, root, previous.size, ())
    return TreeHead(origin, size, root, previous.size, tuple(tree.consistency(previous.size, size)))


def tree_head_of(checkpoint: AuditCheckpointV1, log: Verifier) -> Checkpoint:
    """The tree head a checkpoint's note signs (``NoteError``: none, or not the log's)."""
    if checkpoint.note is None:
        raise NoteError("the checkpoint carries no signed note of the log's tree")
    head, _ = open_checkpoint(checkpoint.note, log)
    return head


def verify_checkpoint(public_key: Ed25519PublicKey, checkpoint: AuditCheckpointV1) -> bool:
    """True if ``checkpoint`` names ``public_key`` and its signature over its fields is valid."""
    if checkpoint.key_id != key_id(public_key):
        return False
    try:
        payload = signing_payload(
            checkpoint.store, checkpoint.position, checkpoint.link, checkpoint.signed_at
        )
        signature = base64.b64decode(checkpoint.signature, validate=True)
        public_key.verify(signature, payload)
    except (ValueError, binascii.Error, InvalidSignature):
        return False
    return True


# ------------------------------------------------------------------------ the stream


def audit_stream_config(replicas: int = 1) -> StreamConfig:
    """The ``CBCM_AUDIT`` stream: every checkpoint, kept (no delete, no purge)."""
    return kept_stream(
        AUDIT_STREAM,
        "Signed checkpoints of the cbcm event log's hash chain",
        AUDIT_SUBJECTS,
        replicas,
    )


async def ensure_audit_stream(js: JetStreamContext, replicas: int = 1) -> StreamInfo:
    """Create the stream, or bring an existing one to the fixed configuration (idempotent)."""
    return await ensure_kept_stream(js, audit_stream_config(replicas))


async def publish_checkpoint(
    js: JetStreamContext, checkpoint: AuditCheckpointV1, ack_wait: float = 5.0
) -> bool:
    """Publish ``checkpoint`` into ``CBCM_AUDIT``; False if JetStream dropped it as a duplicate
    (the same head was published within the duplicate window)."""
    ack = await js.publish(
        CHECKPOINT_SUBJECT,
        encode_checkpoint(checkpoint),
        timeout=ack_wait,
        stream=AUDIT_STREAM,
        headers={
            MSG_ID_HEADER: checkpoint_msg_id(
                checkpoint.store, checkpoint.position, checkpoint.link, checkpoint.signature
            )
        },
    )
    return not ack.duplicate


# ------------------------------------------------------------------------ the publisher


def _raise_high_water(recorder: Any, store: str, row: ChainRow) -> None:
    """The signed head is the furthest the network has seen its log go: kept beside the
    writer key, outside the database, so that a process started on a store rolled back
    behind it says so (ADR 23)."""
    keys_dir = getattr(recorder, "keys_dir", None)
    key = getattr(recorder, "writer", None)
    if keys_dir is None or key is None:
        return
    try:
        raise_high_water(
            high_water_path(keys_dir, store), key, store, HighWater(row.position, row.link)
        )
    except OSError as e:  # the checkpoint stands; the next one raises the mark
        log.error("audit.high_water_unwritten", error=type(e).__name__, position=row.position)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class CheckpointPublisher:
    """Signs and publishes the chain's head of one store, by policy.

    :meth:`step` is one look at the head (publish if due); :meth:`run` repeats it until
    stopped; :meth:`publish_head` publishes the head now, whatever the policy says.
    ``clock`` gives ``signed_at``; ``monotonic`` measures the policy's seconds (both can be
    replaced to drive the policy step by step).
    """

    def __init__(
        self,
        app: ComplaintMechanism,
        js: JetStreamContext,
        key: Ed25519PrivateKey,
        *,
        every_events: int = 1000,
        every_seconds: float = 30.0,
        clock: Callable[[], datetime] = _utcnow,
        monotonic: Callable[[], float] = time.monotonic,
        origin: str | None = None,
    ) -> None:
        if every_events < 1 or every_seconds <= 0:
            raise ValueError("every_events must be >= 1 and every_seconds > 0")
        self._app = app
        self._js = js
        self._key = key
        self.origin = origin if origin is not None else configured_origin(key.public_key())
        self._previous: Checkpoint | None = None
        """The log's last checkpoint (published, or found in the stream on start)."""
        self._every_events = every_events
        self._every_seconds = every_seconds
        self._clock = clock
        self._monotonic = monotonic
        self._store: str | None = None
        self._last_position = 0
        """Position of the last checkpoint of this store (published or found in the stream)."""
        self._last_time = monotonic()
        self.last: AuditCheckpointV1 | None = None
        """The last checkpoint this publisher published."""
        self.published = 0
        self._metrics = checkpoint_metrics()
        self._told: set[tuple[int, UUID, str, bytes]] | None = None
        """The erasures the current writer key told on the audit stream (None: not read)."""

    @property
    def store(self) -> str | None:
        """The store's id (None until the store holds an event)."""
        return self._store

    @property
    def last_position(self) -> int:
        return self._last_position

    async def _head(self) -> tuple[str, ChainRow] | None:
        # no further than the last entry the writer marked (issue 15)
        row = await asyncio.to_thread(signable_head, self._app)
        if row is None:
            return None
        self._metrics.head.set(row.position)
        if self._store is None:
            self._store = await asyncio.to_thread(store_id_of, self._app.recorder)
            assert self._store is not None
            await self._resume(self._store)
        return self._store, row

    async def _resume(self, store: str) -> None:
        """Count the policy from the last checkpoint of ``store`` already in the stream, and
        prove the next one from the log's last checkpoint there, whatever store it named."""
        try:
            raw = await self._js.get_last_msg(AUDIT_STREAM, CHECKPOINT_SUBJECT)
        except nats.js.errors.NotFoundError:
            return
        try:
            last = decode_checkpoint(raw.data or b"")
        except (msgspec.DecodeError, msgspec.ValidationError):
            return
        if last.note is not None:
            with contextlib.suppress(NoteError):
                text, _ = parse_note(last.note)
                previous = parse_checkpoint(text)
                if previous.origin == self.origin and verify_checkpoint(
                    self._key.public_key(), last
                ):
                    self._previous = previous
        if last.store == store:
            self._last_position = last.position
            self._metrics.checkpointed(last.position, last.signed_at.timestamp())
            log.info("audit.checkpoint_resuming", store=store, after_position=last.position)

    def _tree(self, row: ChainRow) -> TreeHead:
        return tree_head(self._app.recorder, self.origin, row, self._previous)

    def due(self, position: int) -> bool:
        """Whether a head at ``position`` is to be checkpointed now."""
        if position == self._last_position:
            return False
        if position < self._last_position:
            return True  # the head went backwards: say so at once
        return (
            position - self._last_position >= self._every_events
            or self._monotonic() - self._last_time >= self._every_seconds
        )

    async def _publish(self, store: str, row: ChainRow) -> AuditCheckpointV1:
        tree = await asyncio.to_thread(self._tree, row)
        checkpoint = sign_checkpoint(self._key, store, row, self._clock(), tree)
        if row.position < self._last_position:
            log.error(
                "audit.head_moved_back",
                store=store,
                position=row.position,
                checkpointed_position=self._last_position,
            )
        fresh = await publish_checkpoint(self._js, checkpoint)
        await asyncio.to_thread(_raise_high_water, self._app.recorder, store, row)
        await self._tell_erasures(store, row.position)
        self._previous = Checkpoint(tree.origin, tree.size, tree.root)
        self._last_position = row.position
        self._last_time = self._monotonic()
        self.last = checkpoint
        self.published += 1
        self._metrics.published.inc()
        self._metrics.checkpointed(row.position, checkpoint.signed_at.timestamp())
        log.info(
            "audit.checkpoint_published",
            store=store,
            position=row.position,
            link=checkpoint.link[:16],
            key_id=checkpoint.key_id,
            tree_size=tree.size,
            duplicate=not fresh,
        )
        return checkpoint

    async def _tell_erasures(self, store: str, position: int) -> None:
        """Tell, on the audit stream, each erasure up to ``position`` not told yet (ADR 23):
        a host restored without them learns them back from there."""
        recorder = self._app.recorder
        key = getattr(recorder, "writer", None)
        keys = self._app.data_keys
        erasure_log = None if keys is None else keys.log
        if key is None or not isinstance(erasure_log, ErasureLog):
            return
        if self._told is None:
            self._told = await noticed(self._js, store, key)
        told = self._told

        def untold() -> list[LedgerEntry]:
            erasure_log.invalidate()
            erasure_log.refresh()
            ledger = erasure_log.ledger_now()
            if ledger is None:
                return []
            return [e for e in ledger.entries if e.position <= position and e.key not in told]

        entries = await asyncio.to_thread(untold)
        if not entries:
            return
        try:
            done, taken = await tell(self._js, entries, key, store)
        except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as e:
            # some may have gone out before the failure: read back at the next step
            log.error("audit.erasures_not_told", error=type(e).__name__, position=position)
            self._told = None
            return
        told.update(e.key for e in done)
        for entry in taken:
            # its message id holds another message: only someone who had this key's MAC of
            # it before it was told could have put one there (ids and positions only)
            log.error("audit.erasure_notice_id_taken", position=entry.position)

    async def step(self) -> AuditCheckpointV1 | None:
        """Look at the head once; sign and publish it if the policy says so."""
        found = await self._head()
        if found is None:
            return None
        store, row = found
        if not self.due(row.position):
            return None
        return await self._publish(store, row)

    async def publish_head(self) -> AuditCheckpointV1 | None:
        """Sign and publish the head now (None: the store is empty)."""
        found = await self._head()
        if found is None:
            return None
        return await self._publish(*found)

    async def run(
        self, stop: asyncio.Event, *, replicas: int = 1, poll_interval: float | None = None
    ) -> None:
        """Follow the head until ``stop`` is set; NATS or store failures pause and retry."""
        interval = poll_interval or min(1.0, self._every_seconds)
        backoff = Backoff(0.1, MAX_BACKOFF)
        need_stream = True
        while not stop.is_set():
            try:
                if need_stream:
                    await ensure_audit_stream(self._js, replicas)
                    need_stream = False
                await self.step()
                backoff.reset()
                await wait_for_stop(stop, interval)
            except nats.js.errors.APIError as e:
                if need_stream and not isinstance(e, nats.js.errors.ServiceUnavailableError):
                    log.error("audit.stream_refused", error=type(e).__name__, code=e.err_code)
                    raise
                await self._pause(stop, e, backoff)
            except TRANSIENT as e:
                need_stream = True  # the stream may have been removed (no responders)
                await self._pause(stop, e, backoff)
        log.info("audit.checkpoint_stopped", store=self._store, position=self._last_position)

    async def _pause(self, stop: asyncio.Event, error: BaseException, backoff: Backoff) -> None:
        log.warning(
            "audit.checkpoint_paused",
            error=type(error).__name__,
            retry_in=round(backoff.delay, 2),
        )
        await backoff.wait(stop)


# ------------------------------------------------------------------------ processes


async def _connect(
    url: str, stop: asyncio.Event, name: str, options: dict[str, Any]
) -> NatsClient | None:
    """Connect, waiting (with backoff) while the server is unreachable; None if stopped."""
    backoff = Backoff(0.1, MAX_BACKOFF)
    while not stop.is_set():
        try:
            return await nats.connect(
                nats_servers(url),
                name=name,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                connect_timeout=2,
                error_cb=quiet_errors("audit.checkpoint_nats_unreachable"),
                **options,
            )
        except (nats.errors.Error, OSError, TimeoutError) as e:
            log.warning(
                "audit.checkpoint_nats_unreachable",
                error=type(e).__name__,
                retry_in=backoff.delay,
            )
            await backoff.wait(stop)
    return None


async def _open_store(settings: Settings, stop: asyncio.Event) -> ComplaintMechanism | None:
    backoff = Backoff(0.1, MAX_BACKOFF)
    while not stop.is_set():
        try:
            return await asyncio.to_thread(complaint_mechanism, settings)
        except EventStoreUnavailable as e:
            log.warning("audit.store_unavailable", error=type(e).__name__, retry_in=backoff.delay)
            await backoff.wait(stop)
    return None


async def run_checkpoint_publisher(settings: Settings, stop: asyncio.Event, nats_url: str) -> None:
    """``cbcm audit checkpoint``: publish checkpoints by policy until ``stop`` is set.

    Raises ``AuditKeyError`` if the signing key cannot be used (before anything else).
    """
    key = load_signing_key(settings)
    app = await _open_store(settings, stop)
    if app is None:
        return
    nc: NatsClient | None = None
    try:
        options = nats_connect_options(settings, "audit-checkpoint")
        nc = await _connect(nats_url, stop, "cbcm-audit-checkpoint", options)
        if nc is None:
            return
        publisher = CheckpointPublisher(
            app,
            nc.jetstream(),
            key,
            every_events=settings.checkpoint_events,
            every_seconds=settings.checkpoint_seconds,
            origin=load_log_origin(settings),
        )
        log.info(
            "audit.checkpoint_started",
            key_id=key_id(key),
            every_events=settings.checkpoint_events,
            every_seconds=settings.checkpoint_seconds,
        )
        await publisher.run(stop, replicas=nats_replicas(settings))
    finally:
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.close()
        await asyncio.to_thread(app.close)


async def checkpoint_once(
    app: ComplaintMechanism,
    key: Ed25519PrivateKey,
    nats_url: str,
    *,
    replicas: int = 1,
    wait: float = 5.0,
    nats_options: dict[str, Any] | None = None,
    origin: str | None = None,
) -> AuditCheckpointV1 | None:
    """``cbcm audit checkpoint --once``: sign and publish the head now (None: empty store).

    Fails (a NATS error, ``OSError`` or ``TimeoutError``) rather than retry when NATS cannot
    be reached within ``wait`` seconds. ``nats_options``: credentials and TLS (default:
    ``CBCM_NATS_*``, user ``audit-checkpoint``).
    """
    if nats_options is None:
        nats_options = nats_connect_options(Settings(), "audit-checkpoint")
    # nats-py retries a refused first connection forever unless attempts are bounded (0
    # means unbounded there): one retry, and a deadline over both.
    nc = await asyncio.wait_for(
        nats.connect(
            nats_servers(nats_url),
            name="cbcm-audit-checkpoint",
            allow_reconnect=False,
            max_reconnect_attempts=1,
            reconnect_time_wait=0.2,
            connect_timeout=wait,
            error_cb=quiet_errors("audit.nats_unreachable"),
            **nats_options,
        ),
        2 * wait + 1,
    )
    try:
        js = nc.jetstream(timeout=wait)
        await ensure_audit_stream(js, replicas)
        return await CheckpointPublisher(app, js, key, origin=origin).publish_head()
    finally:
        with contextlib.suppress(Exception):
            await nc.close()


def describe(checkpoint: AuditCheckpointV1) -> dict[str, Any]:
    """A checkpoint as a JSON-ready dict (for the CLI)."""
    return msgspec.to_builtins(checkpoint)  # type: ignore[no-any-return]
