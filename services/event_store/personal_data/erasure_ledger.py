"""The erasure ledger: every erasure a process has seen in the log, kept beside the keys,
outside the database (issue 15, ADR 23).

The log decides what is erased (``erasure_log``), but the log is in the database, and its
owner can take an erasure out of it: cut the log's tail holding it, delete it in the middle
and recompute the links, or restore the whole database from a backup taken before it, and
put the wrapped key rows back as the copy has them. The writer marks show such a change to
``cbcm audit verify``, but a process started afterwards reads the log as it is and would
unwrap the keys again. So every erasure a process learns from the log (its own, or one
another process recorded) is also appended here, and a key the ledger erased is never
unwrapped, whatever the log and the key table hold now.

- **Where.** ``erasures-<store id>.ledger`` beside the writer key (``CBCM_WRITER_KEY_FILE``,
  default ``<data dir>/keys/``): backed up with the keys, never with the database, so a
  restore of an older database keeps every erasure made since (the operator guide says to
  back the keys directory up after erasures, or keep it on replicated storage).
- **What.** One line per (erasure, scope, subject): the erasure's position and chain link,
  the record, the subject, and the highest generation of its data keys the erasure
  destroyed (later generations hold data recorded after it). Generations, not positions,
  decide: after a restore, new events take positions the lost tail held.
- **Bound to the writer key and the store.** Each line carries an HMAC-SHA256 under the
  writer key over the store id, the previous line's MAC and the line: a line made without
  the key, moved from another store's ledger or reordered is named (``personal_data.
  erasure_ledger_damaged``) and counts for nothing. Only appended, under an exclusive lock,
  synced to disk before it counts.
- **Held to the log.** A process that starts, and ``cbcm audit verify``, hold each line to
  the log: an erasure the ledger holds and the log no longer does is an alarm
  (``personal_data.erasure_not_in_log``, naming its position, the record and the subject,
  never a value), and verify names it *truncated* (the store now ends before it) or
  *erasure*.
"""

from __future__ import annotations

import contextlib
import fcntl
import hmac
import json
import os
import struct
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

import structlog

from services.event_store.beside_keys import open_beside_keys
from services.event_store.custody import WriterKey

LEDGER_DOMAIN = b"cbcm/erasure-ledger/v1\0"
ACK_DOMAIN = b"cbcm/erasure-ledger/acknowledged/v1\0"
_FIXED = struct.Struct(">qi")

log = structlog.get_logger()


def ledger_path(keys_dir: Path, store: str) -> Path:
    """Where the erasure ledger of the store ``store`` is kept: in the directory of the
    writer key."""
    return keys_dir / f"erasures-{store}.ledger"


@dataclass(frozen=True, order=True)
class LedgerEntry:
    """One erasure of one subject's data in one record, as the log held it."""

    position: int
    scope: UUID
    subject: str
    through: int
    """Every data key generation of (scope, subject) up to this one is erased."""
    link: bytes
    """The chain's link at ``position`` when the erasure was seen."""

    @property
    def seen(self) -> tuple[int, UUID, str]:
        return (self.position, self.scope, self.subject)

    @property
    def key(self) -> tuple[int, UUID, str, bytes]:
        """What tells two erasures apart (after a rollback, another event may take the
        position of one the ledger holds)."""
        return (self.position, self.scope, self.subject, self.link)

    def message(self, store: str, previous: bytes) -> bytes:
        return (
            LEDGER_DOMAIN
            + store.encode()
            + b"\0"
            + previous
            + _FIXED.pack(self.position, self.through)
            + self.scope.bytes
            + self.subject.encode()
            + b"\0"
            + self.link
        )


class ErasureLedger:
    """The erasure ledger of one store in one keys directory (read, held, appended to)."""

    def __init__(self, path: Path, key: WriterKey, store: str) -> None:
        self.path = path
        self.key = key
        self.store = store
        self._lock = threading.Lock()
        self._entries: list[LedgerEntry] = []
        self._seen: set[tuple[int, UUID, str, bytes]] = set()
        self._through: dict[tuple[UUID, str], int] = {}
        self._acknowledged: set[tuple[int, UUID, str, bytes]] = set()
        self._last = b""
        self._size = 0
        self.damaged: list[str] = []
        """Why lines of the file count for nothing (each told once)."""

    @property
    def entries(self) -> list[LedgerEntry]:
        with self._lock:
            return list(self._entries)

    def load(self) -> ErasureLedger:
        """Read what the file holds beyond what was read already."""
        with self._lock:
            self._read_new()
        return self

    def acknowledged(self, entry: LedgerEntry) -> bool:
        """Whether the operator acknowledged that the log lacks this erasure (a restore)."""
        return entry.key in self._acknowledged

    def acknowledge(self, entries: Iterable[LedgerEntry]) -> int:
        """Record the operator's acknowledgement that the log lacks these erasures (the
        database was restored from a copy taken before them): they stay in force, and are
        no longer alarms. How many were acknowledged now."""
        wanted = sorted(set(entries))
        with self._lock, self._exclusive():
            self._read_new()
            lines = []
            last = self._last
            for entry in wanted:
                if entry.key in self._acknowledged:
                    continue
                mac = hmac.digest(
                    self.key.secret, ACK_DOMAIN + entry.message(self.store, last), "sha256"
                )
                lines.append(_line(entry, mac, acknowledged=True))
                last = mac
                self._acknowledged.add(entry.key)
            if lines:
                fd = open_beside_keys(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
                try:
                    os.write(fd, "".join(lines).encode())
                    os.fsync(fd)
                finally:
                    os.close(fd)
                self._last = last
                self._size = self.path.stat().st_size
            return len(lines)

    def erases(self, scope: UUID, subject: str, generation: int) -> bool:
        """Whether an erasure in the ledger destroyed this data key."""
        return generation <= self._through.get((scope, subject), 0)

    def holds(self, position: int, scope: UUID, subject: str, link: bytes) -> bool:
        return (position, scope, subject, link) in self._seen

    def append(self, entries: Iterable[LedgerEntry]) -> int:
        """Append the entries not held yet (under the file's lock, synced); how many."""
        wanted = sorted(set(entries))
        if not wanted:
            return 0
        with self._lock, self._exclusive():
            self._read_new()  # another process may have appended meanwhile
            lines = []
            last = self._last
            added = []
            for entry in wanted:
                if entry.key in self._seen:
                    continue
                mac = hmac.digest(self.key.secret, entry.message(self.store, last), "sha256")
                lines.append(_line(entry, mac))
                last = mac
                added.append((entry, mac))
            if not lines:
                return 0
            fd = open_beside_keys(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            try:
                os.write(fd, "".join(lines).encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            for entry, mac in added:
                self._take(entry, mac)
            self._size = self.path.stat().st_size
            return len(added)

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = open_beside_keys(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _read_new(self) -> None:
        try:
            with self.path.open("rb") as f:
                f.seek(self._size)
                data = f.read()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n") + 1  # a line being written is read when it is whole
        for number, raw in enumerate(data[:end].splitlines(), start=len(self._entries) + 1):
            parsed = _parse(raw)
            if parsed is None:
                self._damage(f"line {number} does not parse")
                continue
            entry, mac, acknowledged = parsed
            message = entry.message(self.store, self._last)
            expected = hmac.digest(
                self.key.secret, ACK_DOMAIN + message if acknowledged else message, "sha256"
            )
            if not hmac.compare_digest(expected, mac):
                self._damage(
                    f"line {number} (position {entry.position}) does not verify under writer "
                    f"key {self.key.key_id} for store {self.store}"
                )
                # the lines after it chain to the MAC it carries: a line edited (or one
                # removed) costs that line (or the next), not every line after it
                self._last = mac
                continue
            if acknowledged:
                self._acknowledged.add(entry.key)
                self._last = mac
            else:
                self._take(entry, mac)
        self._size += end

    def _take(self, entry: LedgerEntry, mac: bytes) -> None:
        self._entries.append(entry)
        self._seen.add(entry.key)
        key = (entry.scope, entry.subject)
        self._through[key] = max(self._through.get(key, 0), entry.through)
        self._last = mac

    def _damage(self, why: str) -> None:
        self.damaged.append(why)
        log.error(
            "personal_data.erasure_ledger_damaged",
            ledger=str(self.path),
            detail=f"{why}: it counts for nothing (changed, or made without the writer key)",
        )


def _line(entry: LedgerEntry, mac: bytes, *, acknowledged: bool = False) -> str:
    fields: dict[str, object] = {
        "position": entry.position,
        "record": str(entry.scope),
        "subject": entry.subject,
        "through": entry.through,
        "link": entry.link.hex(),
        "mac": mac.hex(),
    }
    if acknowledged:
        fields["acknowledged"] = True
    return json.dumps(fields, separators=(",", ":")) + "\n"


def _parse(raw: bytes) -> tuple[LedgerEntry, bytes, bool] | None:
    try:
        fields = json.loads(raw)
        entry = LedgerEntry(
            position=int(fields["position"]),
            scope=UUID(str(fields["record"])),
            subject=str(fields["subject"]),
            through=int(fields["through"]),
            link=bytes.fromhex(str(fields["link"])),
        )
        return entry, bytes.fromhex(str(fields["mac"])), fields.get("acknowledged") is True
    except (ValueError, KeyError, TypeError):
        return None


class LedgerRekeyError(RuntimeError):
    """The ledger does not verify under the key it is to be moved from."""


def _verified_lines(raw: bytes, key: WriterKey, store: str) -> list[tuple[LedgerEntry, bool]]:
    """Every line of a ledger, if each verifies under ``key`` (else ``LedgerRekeyError``)."""
    last = b""
    lines = []
    for number, line in enumerate(raw.splitlines(), start=1):
        parsed = _parse(line)
        if parsed is None:
            raise LedgerRekeyError(f"line {number} does not parse")
        entry, mac, acknowledged = parsed
        message = entry.message(store, last)
        expected = hmac.digest(
            key.secret, ACK_DOMAIN + message if acknowledged else message, "sha256"
        )
        if not hmac.compare_digest(expected, mac):
            raise LedgerRekeyError(
                f"line {number} (position {entry.position}) does not verify under writer key "
                f"{key.key_id}"
            )
        lines.append((entry, acknowledged))
        last = mac
    return lines


def ledger_key(path: Path, keys: Iterable[WriterKey], store: str) -> WriterKey | None:
    """Which of ``keys`` every line of the ledger verifies under (None: none, or no file)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    for key in keys:
        try:
            _verified_lines(raw, key, store)
        except LedgerRekeyError:
            continue
        return key
    return None


def rekey_ledger(path: Path, old: WriterKey, new: WriterKey, store: str) -> int:
    """Move the ledger from the writer key ``old`` to ``new`` (a rotation, ADR 26): every
    line checked under ``old`` and MACed again under ``new``, in the same order, the file
    replaced whole under its lock. ``LedgerRekeyError`` (nothing changed) if a line does not
    verify under ``old``. How many lines."""
    ledger = ErasureLedger(path, new, store)
    with ledger._exclusive():
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return 0
        raw = raw[: raw.rfind(b"\n") + 1]
        last = b""
        out = []
        for entry, acknowledged in _verified_lines(raw, old, store):
            message = entry.message(store, last)
            mac = hmac.digest(
                new.secret, ACK_DOMAIN + message if acknowledged else message, "sha256"
            )
            out.append(_line(entry, mac, acknowledged=acknowledged))
            last = mac
        staged = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = open_beside_keys(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        with os.fdopen(fd, "w") as f:
            f.write("".join(out))
            f.flush()
            os.fsync(f.fileno())
        os.replace(staged, path)
        return len(out)
