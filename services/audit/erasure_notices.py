"""Erasures told on the audit stream, and learnt back (ADR 23).

The erasure ledger is kept beside the keys of each host. A host whose database is restored
from a copy taken before an erasure, and whose keys directory is older too (or new), would
not know it. So the checkpoint publisher, which holds the writer key, tells every erasure it
signs over on ``cbcm.v1.audit.erasure`` (ids only, an HMAC under the writer key over the
store id and the ledger's line), into the kept stream ``CBCM_AUDIT``; ``cbcm audit
learn-erasures`` reads them back into the host's ledger. A notice made without the writer
key, or for another store, is ignored.

Notices outlive writer keys (ADR 26), but only the current key's are learnt. A notice MACed
under a retired key cannot be told apart from one a thief made with a kept copy of that key
and a position before its retirement (an attack review did exactly that and erased a live
case's data): the position is the notice's own word. So the checkpoint publisher tells again,
under the current key, every erasure of the ledger that no notice under the current key has
told yet: after a rotation its first run tells them all again (each key's notice of an
erasure has a message id of its own, ``message_id``), and ``learn-erasures`` reads the
current key's notices only. Notices under a retired key held here are passed over (an info
line); a notice under no key held is forged (an error line). What is left to tell is every
erasure of the ledger the current key has no notice of, one by one, never "after the last
position told" (a telling stopped between two subjects of one erasure lost the second for
good) nor after the last message on the subject (a junk notice for a far position stopped
every later telling).
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
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
from services.event_store.custody import (
    WriterKey,
)
from services.event_store.personal_data.erasure_ledger import LedgerEntry

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


def judge(
    notice: AuditErasureNoticeV1, key: WriterKey, retired: dict[str, WriterKey], store: str
) -> tuple[LedgerEntry | None, str]:
    """The ledger line a notice tells if the current writer key made it for this store; else
    None and why (never a value: ids and positions). The why is empty for a notice of another
    store, and begins with "retired" for one a retired key held here made."""
    if notice.store != store:
        return None, ""
    entry = _line(notice)
    if entry is None:
        return None, "not a notice"
    if hmac.compare_digest(notice.mac, _mac(key, store, entry)):
        return entry, ""
    for key_id, old in retired.items():
        if hmac.compare_digest(notice.mac, _mac(old, store, entry)):
            return None, f"retired writer key {key_id}: told again under the current key"
    return None, "a notice on the audit stream no writer key held here made"


async def _notices(js: JetStreamContext) -> AsyncIterator[AuditErasureNoticeV1]:
    """Every notice on the audit stream, oldest first (what cannot be decoded is passed
    over)."""
    sequence, read = 1, 0
    while True:
        try:
            msg = await js.get_msg(AUDIT_STREAM, sequence, ERASURE_NOTICE_SUBJECT, next=True)
        except nats.js.errors.NotFoundError:
            return
        if read == MAX_NOTICES:
            # never silently: the notices after are not read (a flood on the audit stream)
            log.error("audit.erasure_notices_cut", read=read, next_sequence=sequence)
            return
        read += 1
        sequence = (msg.seq or sequence) + 1
        try:
            yield decode_erasure_notice(msg.data or b"")
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue


async def noticed(
    js: JetStreamContext, store: str, key: WriterKey
) -> set[tuple[int, UUID, str, bytes]]:
    """The erasures (``LedgerEntry.key``) that ``key`` told for ``store`` (empty: none; then
    every erasure is told again under it, as after a rotation).

    A set, not the last position told: one erasure event erases several subjects at one
    position, and a telling stopped between two of them (a publish timing out) must resume
    with the one left, not after the position."""
    seen: set[tuple[int, UUID, str, bytes]] = set()
    async for notice in _notices(js):
        entry, _ = judge(notice, key, {}, store)
        if entry is not None:
            seen.add(entry.key)
    return seen


def message_id(store: str, notice: AuditErasureNoticeV1) -> str:
    """A notice's ``Nats-Msg-Id``: the store and the first half of its MAC. Each key's
    notice of each erasure has its own (a notice told again under a new key is not dropped
    as a duplicate of the old key's), and nobody without the key can take one before it is
    told. (Until December 2026 it was the store, position, record and subject, which anyone
    reading the stream could work out: one old notice replayed under its id after a rotation,
    once per duplicate window, held back every telling for good, an attack review found.)"""
    return f"{store}:erasure:{notice.mac[:32]}"


async def tell(
    js: JetStreamContext, entries: list[LedgerEntry], key: WriterKey, store: str
) -> tuple[list[LedgerEntry], list[LedgerEntry]]:
    """Publish a notice of each entry, in order: (those told, those whose message id the
    stream holds for another message: none, unless someone had the key's MAC before it was
    told). A notice dropped as a duplicate is told if the message kept under its id is the
    same notice (told within JetStream's duplicate window before: a publish whose answer was
    lost)."""
    done: list[LedgerEntry] = []
    taken: list[LedgerEntry] = []
    for entry in sorted(entries):
        notice = notice_of(entry, key, store)
        ack = await js.publish(
            ERASURE_NOTICE_SUBJECT,
            encode_erasure_notice(notice),
            stream=AUDIT_STREAM,
            headers={"Nats-Msg-Id": message_id(store, notice)},
        )
        if ack.duplicate:
            kept = await js.get_msg(AUDIT_STREAM, ack.seq)
            try:
                first = decode_erasure_notice(kept.data or b"")
            except (msgspec.DecodeError, msgspec.ValidationError):
                first = None
            if first is None or judge(first, key, {}, store)[0] != entry:
                taken.append(entry)
                continue
        done.append(entry)
    return done, taken


async def told(
    url: str,
    options: dict[str, Any],
    js_options: dict[str, Any],
    key: WriterKey,
    store: str,
    *,
    retired: dict[str, WriterKey] | None = None,
) -> list[LedgerEntry]:
    """Every erasure the current writer key told for ``store``, oldest first. Notices under a
    key in ``retired`` are passed over (told again under ``key``), others are forged."""
    nc = await nats.connect(url, **options)
    try:
        entries: list[LedgerEntry] = []
        async for notice in _notices(nc.jetstream(**js_options)):
            entry, why = judge(notice, key, retired or {}, store)
            if entry is not None:
                entries.append(entry)
            elif why.startswith("retired"):
                log.info("audit.erasure_notice_passed_over", position=notice.position, detail=why)
            elif why:
                log.error(
                    "audit.erasure_notice_forged",
                    position=notice.position,
                    detail=f"{why}: ignored",
                )
        return entries
    finally:
        await nc.close()
