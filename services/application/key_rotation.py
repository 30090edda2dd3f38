"""Rotation of the key-encryption key: a new KEK wraps every data key, events stay as they are;
and rotation of the writer key (``rotate_writer_key``, ADR 26).

``rotate``: a local ring gets a new active KEK (a KMS rotates its own and this rewraps to its
active version); every live data key is unwrapped and wrapped again under the active KEK. The
old KEK can then be retired (destroyed): from then on, copies of the data-key table in old
backups cannot be unwrapped either.
"""

from __future__ import annotations

import fcntl
import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from domain.custody import WriterKeyRotation
from services.application.mechanism import ComplaintMechanism
from services.event_store.chain import head
from services.event_store.custody import (
    WriterKey,
    WriterKeyError,
    install_key,
    stage_key,
    staged_key_path,
    unmarked,
    writer_started,
)
from services.event_store.personal_data.erasure_log import ErasureLog
from services.event_store.personal_data.kek import KeyRingError, LocalKeyRing
from services.event_store.writer_keys import move_beside_keys


@dataclass(frozen=True)
class Rotation:
    active: str
    rewrapped: int


def _keys(app: ComplaintMechanism):  # type: ignore[no-untyped-def]
    if app.data_keys is None:
        raise KeyRingError("this store keeps no personal data at rest")
    return app.data_keys


def rotate(app: ComplaintMechanism, *, new_key: bool = True) -> Rotation:
    """Make a new KEK active (local ring; ``new_key=False`` only rewraps) and rewrap every
    live data key under the active one."""
    keys = _keys(app)
    if new_key and isinstance(keys.kek, LocalKeyRing):
        keys.kek.rotate()
    return Rotation(active=keys.kek.active_id, rewrapped=keys.rewrap_all())


def retire(
    app: ComplaintMechanism,
    kek_id: str,
    *,
    after_seconds: float = LocalKeyRing.RETIRE_AFTER_SECONDS,
) -> None:
    """Destroy a KEK of the local ring, once no live data key is wrapped under it and the
    rotation is ``after_seconds`` old."""
    keys = _keys(app)
    if not isinstance(keys.kek, LocalKeyRing):
        raise KeyRingError("KEKs of a KMS are retired in the KMS")
    still = keys.table.counts().get(kek_id, 0)
    if still:
        raise KeyRingError(
            f"{still} data key(s) are still wrapped under {kek_id!r}: run `cbcm keys rotate` first"
        )
    keys.kek.retire(kek_id, after_seconds=after_seconds)


def status(app: ComplaintMechanism) -> dict[str, int]:
    """Live data keys per KEK id, and erased ones under ``"erased"``."""
    counts = _keys(app).table.counts()
    erased = counts.pop("", 0)
    return {**counts, "erased": erased}


# ------------------------------------------------------------------------- the writer key


@dataclass(frozen=True)
class WriterRotation:
    retired: str
    active: str
    position: int
    """The rotation event's position: the new key marks every commit from it."""


class WriterRotationError(RuntimeError):
    """The writer key cannot be rotated now (safe to show: names positions and key ids)."""


def rotate_writer_key(app: ComplaintMechanism, *, at: datetime, key_file: Path) -> WriterRotation:
    """Replace the writer key (ADR 26, docs/key-ceremony.md), one ceremony at a time on this
    host (a lock beside the key file); a ceremony elsewhere at the same moment is refused by
    the store (the rotation's commit must retire the key the log names last)."""
    key_file.parent.mkdir(parents=True, exist_ok=True)
    with open(key_file.with_name(key_file.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _rotate_writer_key(app, at=at, key_file=key_file)


def _rotate_writer_key(app: ComplaintMechanism, *, at: datetime, key_file: Path) -> WriterRotation:
    """Replace the writer key (ADR 26, docs/key-ceremony.md).

    1. Every commit since the current key's start must carry a valid mark: the old key
       vouches for the history it hands over, or nothing is rotated.
    2. A new key is drawn and staged beside the key file (``<key file>.next``).
    3. One commit records the rotation event (the old key's handover MAC inside), marked
       with the new key, and the new key's sealed start at the event's position.
    4. The erasure ledger and the high-water mark beside the keys are moved to the new key.
    5. The old key goes to ``writer-retired/<key id>.key`` (read-only; it still checks the
       marks before the rotation), the new one into the key file.

    From the rotation on, a mark made with the old key is *forged* to ``audit verify``, and
    a process still holding it (or started with a restored copy of it) writes nothing."""
    recorder: Any = app.recorder
    old: WriterKey | None = getattr(recorder, "writer", None)
    store: str | None = getattr(recorder, "store", None)
    if old is None or store is None or head(recorder) is None:
        raise WriterRotationError(
            "this store has no writer key, or no event yet: nothing to rotate"
        )
    if recorder.writer_problem is not None:
        raise WriterRotationError(
            f"the writer key cannot be trusted now: {recorder.writer_problem}"
        )
    started = writer_started(recorder, old)
    assert started is not None
    for unmarked_at, why, _mark in unmarked(recorder, old, started):
        raise WriterRotationError(
            f"position {unmarked_at}: {why}; the key hands over only a log whose every commit "
            "it marked (run `cbcm audit verify` and settle the damage first)"
        )
    new = WriterKey(secrets.token_bytes(32))
    stage_key(key_file, new)
    rotation = WriterKeyRotation.rotate(
        retired=old.key_id, active=new.key_id, handover=old.handover(new.key_id, store), at=at
    )
    recorder.rotating = new
    try:
        app.save(rotation)
    except WriterKeyError as e:
        # refused before anything was written: another ceremony rotated the key meanwhile
        staged_key_path(key_file).unlink(missing_ok=True)
        raise WriterRotationError(
            f"the writer key was rotated meanwhile, by another ceremony: {e}; nothing was "
            "changed by this one"
        ) from None
    finally:
        recorder.rotating = None
    position = writer_started(recorder, new)
    assert position is not None
    recorder.writer, recorder.writer_start = new, position
    keys = app.data_keys
    if recorder.keys_dir is not None:
        move_beside_keys(recorder.keys_dir, store, old, new)
        if keys is not None and isinstance(keys.log, ErasureLog):
            keys.log.ledger = None  # reopened under the new key
    install_key(key_file, new, old)
    return WriterRotation(retired=old.key_id, active=new.key_id, position=position)
