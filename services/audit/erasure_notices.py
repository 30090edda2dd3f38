"""Erasures told on the audit stream, and learnt back (ADR 23).

The erasure ledger is kept beside the keys of each host. A host whose database is restored
from a copy taken before an erasure, and whose keys directory is older too (or new), would
not know it. So the checkpoint publisher, which holds the writer key, tells every erasure it
signs over on ``cbcm.v1.audit.erasure`` (ids only, an HMAC under the writer key over the
store id and the ledger's line), into the kept stream ``CBCM_AUDIT``; ``cbcm audit
learn-erasures`` reads them back into the host's ledger. A notice made without the writer
key, or for another store, is ignored.
"""

from __future__ import annotations

import hmac
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
from services.event_store.custody import WriterKey
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


def entry_of(notice: AuditErasureNoticeV1, key: WriterKey, store: str) -> LedgerEntry | None:
    """The ledger line a notice tells, if the writer key made it for this store."""
    if notice.store != store:
        return None
    try:
        entry = LedgerEntry(
            notice.position,
            UUID(notice.record),
            notice.subject,
            notice.through,
            bytes.fromhex(notice.link),
        )
    except ValueError:
        return None
    return entry if hmac.compare_digest(notice.mac, _mac(key, store, entry)) else None


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
    url: str, options: dict[str, Any], js_options: dict[str, Any], key: WriterKey, store: str
) -> list[LedgerEntry]:
    """Every erasure told for ``store`` that the writer key vouches for, oldest first."""
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
            entry = entry_of(notice, key, store)
            if entry is None:
                if notice.store == store:
                    log.error(
                        "audit.erasure_notice_forged",
                        position=notice.position,
                        detail="a notice on the audit stream the writer key did not make: ignored",
                    )
                continue
            entries.append(entry)
        return entries
    finally:
        await nc.close()
