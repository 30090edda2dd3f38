"""A worker's stall, told to every other process on the host (ADR 10).

A projector or the relay that cannot handle a message stops at that position rather than
restarting into the same error. It records the stall here, once: which worker, the position it
stopped at, the message's type and the error's type (never the payload, never its text, which
could quote personal data). The API reads these records for ``/status`` and answers a read
waiting on a stalled read model with a problem that says so. The worker clears its record when
it goes past the position (after the operator deployed a fix and restarted it).

A record is one small JSON file, ``<data dir>/status/<worker>.json``, replaced atomically.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import msgspec

STATUS_DIR = "status"


class Stall(msgspec.Struct, frozen=True, kw_only=True):
    """Where a worker stopped and why, in words safe to log and show (also the record's
    JSON layout)."""

    worker: str
    position: int
    message_type: str
    error: str
    since: str

    def describe(self) -> str:
        return (
            f"{self.worker} stopped at position {self.position} ({self.message_type}): "
            f"{self.error}; it goes on from there once a fix is deployed and it is restarted"
        )


def status_dir(data_dir: Path) -> Path:
    return data_dir / STATUS_DIR


def _path(data_dir: Path, worker: str) -> Path:
    if not worker or "/" in worker or worker.startswith("."):
        raise ValueError(f"not a worker name: {worker!r}")
    return status_dir(data_dir) / f"{worker}.json"


def record_stall(
    data_dir: Path, worker: str, *, position: int, message_type: str, error: str
) -> Stall:
    """Record that ``worker`` stopped at ``position`` (replacing an earlier record)."""
    stall = Stall(
        worker=worker,
        position=position,
        message_type=message_type,
        error=error,
        since=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    path = _path(data_dir, worker)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{worker}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(msgspec.json.encode(stall))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return stall


def clear_stall(data_dir: Path, worker: str) -> bool:
    """Forget ``worker``'s stall; whether there was one."""
    try:
        _path(data_dir, worker).unlink()
    except FileNotFoundError:
        return False
    return True


def stall_of(data_dir: Path, worker: str) -> Stall | None:
    """``worker``'s recorded stall, if any (an unreadable record counts as none)."""
    try:
        raw = _path(data_dir, worker).read_bytes()
        return msgspec.json.decode(raw, type=Stall)
    except (FileNotFoundError, msgspec.DecodeError, msgspec.ValidationError):
        return None


def stalls(data_dir: Path) -> list[Stall]:
    """Every recorded stall, by worker name."""
    folder = status_dir(data_dir)
    if not folder.is_dir():
        return []
    found = (stall_of(data_dir, p.stem) for p in sorted(folder.glob("*.json")))
    return [s for s in found if s is not None]
