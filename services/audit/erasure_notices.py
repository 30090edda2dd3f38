"""Erasures told on the audit stream, and learnt back (ADR 23).

The erasure ledger is kept beside the keys of each host. A host whose database is restored
from a copy taken before an erasure, and whose keys directory is older too (or new), would
not know it. So the checkpoint publisher, which holds the writer key, tells every erasure it
signs over on ``cbcm.v1.audit.erasure`` (ids only, an HMAC under the writer key over the
store id and the ledger's line), into the kept stream ``CBCM_AUDIT``; ``cbcm audit
learn-erasures`` reads them back into the host's ledger. A notice made without the writer
key, or for another store, is ignored.

Notices outlive writer keys (ADR 26): those told before a rotation are MACed under a key now
retired. ``NoticeKeys`` holds every writer key this host has (the current one and those in
``writer-retired/``), each with the position from which the log says it no longer writes:
the start of the key after it, taken only where the rotation event stands there, names both
keys and carries the retired key's handover, and where the commit holding it is marked by the
key it hands over to (when that key is held). A notice is learnt when one of these keys made
it for a position before that key's retirement. A retired key whose retirement the log does
not show (a database restored from before the rotation) vouches up to the log's head, which
it wrote. A notice under no key held, or under a key for a position at or after the rotation
that retired it (a thief's, with a copy of an old key), is forged: ignored and said.
"""

from __future__ import annotations

import hmac
import itertools
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import msgspec
import nats
import nats.js.errors
import structlog
from nats.js import JetStreamContext

from contracts.audit import (
    AUDIT_STREAM,
    ERASURE_NOTICE_SUBJECT,
    AuditErasureNoticeV1,
    decode_erasure_notice,
    encode_erasure_notice,
)
from services.event_store.chain import head
from services.event_store.custody import (
    WriterKey,
    mark_covering,
    mark_valid,
    writer_records,
)
from services.event_store.personal_data.erasure_ledger import LedgerEntry
from services.event_store.store_id import store_id_of

NOTICE_DOMAIN = b"cbcm/erasure-notice/v1\0"
MAX_NOTICES = 1_000_000

log = structlog.get_logger()


def _mac(key: WriterKey, store: str, entry: LedgerEntry) -> str:
    return hmac.digest(key.secret, NOTICE_DOMAIN + entry.message(store, b""), "sha256").hex()


def notice_of(entry: LedgerEntry, key: WriterKey, store: str) -> AuditErasureNoticeV1:
    return AuditErasureNoticeV1(
        store=store,
        position=entry.position,
        link=entry.link.hex(),
        record=str(entry.scope),
        subject=entry.subject,
        through=entry.through,
        mac=_mac(key, store, entry),
    )


def _line(notice: AuditErasureNoticeV1) -> LedgerEntry | None:
    try:
        return LedgerEntry(
            notice.position,
            UUID(notice.record),
            notice.subject,
            notice.through,
            bytes.fromhex(notice.link),
        )
    except ValueError:
        return None


def entry_of(notice: AuditErasureNoticeV1, key: WriterKey, store: str) -> LedgerEntry | None:
    """The ledger line a notice tells, if the writer key made it for this store."""
    if notice.store != store:
        return None
    entry = _line(notice)
    if entry is None:
        return None
    return entry if hmac.compare_digest(notice.mac, _mac(key, store, entry)) else None


@dataclass(frozen=True)
class NoticeKeys:
    """The writer keys whose notices are learnt: key id -> (key, the first position it no
    longer vouches for; None: none, the key writes on)."""

    keys: dict[str, tuple[WriterKey, int | None]] = field(default_factory=dict)

    @classmethod
    def only(cls, key: WriterKey) -> NoticeKeys:
        return cls({key.key_id: (key, None)})

    def judge(self, notice: AuditErasureNoticeV1, store: str) -> tuple[LedgerEntry | None, str]:
        """The ledger line a notice tells if a key held made it for a position it vouched
        for; else None and why (never a value: ids and positions)."""
        if notice.store != store:
            return None, "another store"
        entry = _line(notice)
        if entry is None:
            return None, "not a notice"
        for key_id, (key, retired_at) in self.keys.items():
            if not hmac.compare_digest(notice.mac, _mac(key, store, entry)):
                continue
            if retired_at is not None and entry.position >= retired_at:
                return None, (
                    f"made with writer key {key_id}, for position {entry.position}, at or "
                    f"after the rotation that retired that key (position {retired_at}): "
                    "whoever kept a copy of the old key made it"
                )
            return entry, ""
        return None, "a notice on the audit stream no writer key held here made"


def notice_keys(recorder: Any, current: WriterKey, retired: dict[str, WriterKey]) -> NoticeKeys:
    """Every writer key held (``current``, and ``retired`` from ``writer-retired/``) with the
    position the log retired it at (module docstring)."""
    from services.audit.custody import Custody  # noqa: PLC0415 - custody imports much

    held = {**retired, current.key_id: current}
    records = writer_records(recorder)
    store = store_id_of(recorder)
    checker = Custody(recorder, current, None, None, retired=retired)
    top = head(recorder)
    found: dict[str, tuple[WriterKey, int | None]] = {}
    following = dict(itertools.pairwise(records))
    for record in records:
        key = held.get(record.key_id)
        if key is None:
            continue
        after = following.get(record)
        if after is None:  # the last key the log names
            # the current key writes on; a retired one the log does not show retired (a
            # database restored from before its rotation) vouches up to the head it wrote
            end = None if key == current else (1 if top is None else top.position + 1)
            found[record.key_id] = (key, end)
            continue
        if checker._rotation_problem(record, after, store) is not None:
            log.error(
                "audit.erasure_notice_key_unvouched",
                key=record.key_id,
                position=after.start,
                detail="no rotation the network made retires this key there: its notices "
                "are not learnt",
            )
            continue
        successor = held.get(after.key_id)
        if successor is not None:
            mark = mark_covering(recorder, after.start)
            if (
                mark is None
                or mark.link is None
                or not mark_valid(recorder, successor, mark, mark.link)
            ):
                log.error(
                    "audit.erasure_notice_key_unvouched",
                    key=record.key_id,
                    position=after.start,
                    detail="the rotation's commit is not marked by the key it hands over to",
                )
                continue
        found[record.key_id] = (key, after.start)
    if current.key_id not in found and current.key_id not in {r.key_id for r in records}:
        found[current.key_id] = (current, None)  # a log restored from before its rotation
    return NoticeKeys(found)


async def last_noticed(js: JetStreamContext, store: str) -> int:
    """The position of the last erasure told for ``store`` (0: none, or another store's)."""
    try:
        raw = await js.get_last_msg(AUDIT_STREAM, ERASURE_NOTICE_SUBJECT)
    except nats.js.errors.NotFoundError:
        return 0
    try:
        notice = decode_erasure_notice(raw.data or b"")
    except (msgspec.DecodeError, msgspec.ValidationError):
        return 0
    return notice.position if notice.store == store else 0


async def tell(js: JetStreamContext, entries: list[LedgerEntry], key: WriterKey, store: str) -> int:
    """Publish a notice of each entry, in order; how many."""
    for entry in sorted(entries):
        msg_id = f"{store}:erasure:{entry.position}:{entry.scope}:{entry.subject}"
        await js.publish(
            ERASURE_NOTICE_SUBJECT,
            encode_erasure_notice(notice_of(entry, key, store)),
            stream=AUDIT_STREAM,
            headers={"Nats-Msg-Id": msg_id},
        )
    return len(entries)


async def told(
    url: str,
    options: dict[str, Any],
    js_options: dict[str, Any],
    key: WriterKey | NoticeKeys,
    store: str,
) -> list[LedgerEntry]:
    """Every erasure told for ``store`` that a writer key held vouches for, oldest first."""
    keys = NoticeKeys.only(key) if isinstance(key, WriterKey) else key
    nc = await nats.connect(url, **options)
    try:
        jsm = nc.jetstream(**js_options)
        entries: list[LedgerEntry] = []
        sequence, read = 1, 0
        while read < MAX_NOTICES:
            try:
                msg = await jsm.get_msg(AUDIT_STREAM, sequence, ERASURE_NOTICE_SUBJECT, next=True)
            except nats.js.errors.NotFoundError:
                break
            read += 1
            sequence = (msg.seq or sequence) + 1
            try:
                notice = decode_erasure_notice(msg.data or b"")
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue
            entry, why = keys.judge(notice, store)
            if entry is None:
                if notice.store == store:
                    log.error(
                        "audit.erasure_notice_forged",
                        position=notice.position,
                        detail=f"{why}: ignored",
                    )
                continue
            entries.append(entry)
        return entries
    finally:
        await nc.close()
