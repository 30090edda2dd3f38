"""The high-water mark: the furthest the network has seen its log go, kept beside the keys,
outside the database (ADR 23).

The checkpoint publisher raises it each time it signs a head: the position and chain link
it signed, with an HMAC under the writer key over the store id, the position and the link.
A process that starts, and ``cbcm audit verify``, hold the store to it: a store that ends
before the mark, or holds another link at its position, was rolled back (restored from an
older copy) or had its tail cut or rewritten, whatever the database says now. A process
names it (``audit.store_behind_high_water``, error) and goes on (erasures stay in force
through the erasure ledger; a restore from a backup is an operator's legitimate act), verify
names it *truncated* or *changed* at the mark's position.

The file ``high-water-<store id>`` is replaced whole (written beside, synced, renamed), never
lowered.
"""

from __future__ import annotations

import contextlib
import fcntl
import hmac
import json
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.event_store.beside_keys import open_beside_keys
from services.event_store.custody import WriterKey

HIGH_WATER_DOMAIN = b"cbcm/high-water/v1\0"
_POSITION = struct.Struct(">q")


def high_water_path(keys_dir: Path, store: str) -> Path:
    return keys_dir / f"high-water-{store}"


@dataclass(frozen=True)
class HighWater:
    position: int
    link: bytes


class HighWaterError(RuntimeError):
    """The high-water file does not verify under the writer key (changed, or another
    store's)."""


def _mac(key: WriterKey, store: str, mark: HighWater) -> bytes:
    message = HIGH_WATER_DOMAIN + store.encode() + b"\0" + _POSITION.pack(mark.position)
    return hmac.digest(key.secret, message + mark.link, "sha256")


def read_high_water(path: Path, key: WriterKey, store: str) -> HighWater | None:
    """The mark the file holds (None: there is none yet); ``HighWaterError`` if it does
    not verify."""
    try:
        fields = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise HighWaterError(f"{path.name} is unreadable ({type(e).__name__})") from None
    try:
        mark = HighWater(int(fields["position"]), bytes.fromhex(str(fields["link"])))
        mac = bytes.fromhex(str(fields["mac"]))
    except (KeyError, TypeError, ValueError):
        raise HighWaterError(f"{path.name} does not parse") from None
    if not hmac.compare_digest(mac, _mac(key, store, mark)):
        raise HighWaterError(
            f"{path.name} does not verify under writer key {key.key_id} for store {store}"
        )
    return mark


def raise_high_water(path: Path, key: WriterKey, store: str, mark: HighWater) -> bool:
    """Raise the file's mark to ``mark`` (never lower it); whether it was raised."""
    with _exclusive(path):
        try:
            current = read_high_water(path, key, store)
        except HighWaterError:
            current = None  # a damaged file is replaced; verify named it meanwhile
        if current is not None and current.position >= mark.position:
            return False
        document = {
            "position": mark.position,
            "link": mark.link.hex(),
            "mac": _mac(key, store, mark).hex(),
        }
        staged = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = open_beside_keys(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(document) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(staged, path)
        return True


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = open_beside_keys(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Behind:
    """How the store falls short of its high-water mark."""

    position: int
    truncated: bool
    """True: the store ends before the mark; False: it holds another link there."""
    detail: str


def behind_high_water(recorder: Any) -> Behind | None:
    """Whether the store ``recorder`` writes to is behind the high-water mark kept beside
    its writer key (None: it is not, or there is no mark yet)."""
    from services.event_store.chain import head, link_at  # noqa: PLC0415 (it imports us)

    keys_dir: Path | None = getattr(recorder, "keys_dir", None)
    key: WriterKey | None = getattr(recorder, "writer", None)
    store: str | None = getattr(recorder, "store", None)
    if keys_dir is None or key is None or store is None:
        return None
    path = high_water_path(keys_dir, store)
    try:
        mark = read_high_water(path, key, store)
    except HighWaterError as e:
        return Behind(1, False, f"the high-water mark beside the keys: {e}")
    if mark is None:
        return None
    top = head(recorder)
    end = 0 if top is None else top.position
    if end < mark.position:
        return Behind(
            mark.position,
            True,
            f"the network signed this store's log up to position {mark.position} (the "
            f"high-water mark beside the keys), but the store ends at {end}: it was rolled "
            "back (restored from an older copy) or its tail cut",
        )
    found = link_at(recorder, mark.position)
    if found is None or found.link != mark.link:
        return Behind(
            mark.position,
            False,
            f"the network signed another link at position {mark.position} (the high-water "
            "mark beside the keys) than the store holds: the log up to it was rewritten, or "
            "rolled back and written on since",
        )
    return None


def reset_high_water(path: Path, key: WriterKey, store: str, mark: HighWater) -> None:
    """Set the mark to ``mark``, lower or not: the operator's acknowledgement of a restore
    (``cbcm audit acknowledge-restore``), never done by a running process."""
    with _exclusive(path):
        document = {
            "position": mark.position,
            "link": mark.link.hex(),
            "mac": _mac(key, store, mark).hex(),
        }
        staged = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = open_beside_keys(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(document) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(staged, path)


def high_water_key(path: Path, keys: list[WriterKey], store: str) -> WriterKey | None:
    """Which of ``keys`` the high-water file verifies under (None: none, or no file)."""
    for key in keys:
        try:
            if read_high_water(path, key, store) is not None:
                return key
        except HighWaterError:
            continue
    return None


def rekey_high_water(path: Path, old: WriterKey, new: WriterKey, store: str) -> bool:
    """Move the high-water mark from the writer key ``old`` to ``new`` (a rotation, ADR
    26), the mark unchanged; ``HighWaterError`` if it does not verify under ``old``. False:
    there is no mark."""
    mark = read_high_water(path, old, store)
    if mark is None:
        return False
    reset_high_water(path, new, store, mark)
    return True
