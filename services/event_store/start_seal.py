"""The writer key's start, sealed beside the keys, for stores upgraded before the custody
record was sealed (issue 15, ADR 23).

A store upgraded to writer marks before the record was sealed (ADR 14) keeps an unsealed
record (``writer:<key id>`` holding the key id alone): its owner could move it past events
and delete the marks before it, and nothing in the database would tell. The first process
that opens such a store with the writer key writes, beside the key, the start it found with
an HMAC under the key over the store id and the start (``writer-start-<store id>``, written
once). From then on every process, the checkpoint publisher and ``cbcm audit verify`` hold the
record to it: a record naming another start was moved (trust on first use, like a witness's
first checkpoint).
"""

from __future__ import annotations

import hmac
import json
import os
import struct
from pathlib import Path
from typing import Any

from services.event_store import custody
from services.event_store.beside_keys import open_beside_keys
from services.event_store.custody import WriterKey

START_SEAL_DOMAIN = b"cbcm/writer-start-kept/v1\0"
_POSITION = struct.Struct(">q")


def start_seal_path(keys_dir: Path, store: str) -> Path:
    return keys_dir / f"writer-start-{store}"


def _mac(key: WriterKey, store: str, start: int) -> str:
    message = (
        START_SEAL_DOMAIN + key.key_id.encode() + b"\0" + store.encode() + _POSITION.pack(start)
    )
    return hmac.digest(key.secret, message, "sha256").hex()


def _unsealed_start(recorder: Any, key: WriterKey) -> int | None:
    """The start an unsealed record of ``key`` names (None: no record, or a sealed one)."""
    found = custody.custody_rows(recorder).get(custody.WRITER_PREFIX + key.key_id)
    if found is None or ":" in found[0]:
        return None
    return found[1]


def keep_start(recorder: Any) -> None:
    """At a process's start: seal an unsealed record's start beside the keys, once."""
    keys_dir: Path | None = getattr(recorder, "keys_dir", None)
    key: WriterKey | None = getattr(recorder, "writer", None)
    store: str | None = getattr(recorder, "store", None)
    if keys_dir is None or key is None or store is None:
        return
    path = start_seal_path(keys_dir, store)
    if path.exists():
        return
    start = _unsealed_start(recorder, key)
    if start is None:
        return
    document = json.dumps({"key": key.key_id, "start": start, "mac": _mac(key, store, start)})
    try:
        fd = open_beside_keys(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    except FileExistsError:  # another process sealed it first
        return
    except OSError:  # a reader without write access to the keys: a writer keeps it
        return
    with os.fdopen(fd, "w") as f:
        f.write(document + "\n")
        f.flush()
        os.fsync(f.fileno())


def start_seal_problem(recorder: Any) -> str | None:
    """Why the unsealed record of the writer key contradicts its start sealed beside the
    keys (None: it does not, or nothing is sealed there)."""
    keys_dir: Path | None = getattr(recorder, "keys_dir", None)
    key: WriterKey | None = getattr(recorder, "writer", None)
    store: str | None = getattr(recorder, "store", None)
    if keys_dir is None or key is None or store is None:
        return None
    record = custody.custody_rows(recorder).get(custody.WRITER_PREFIX + key.key_id)
    if record is not None and ":" in record[0]:
        return None  # a sealed record (a key rotated to, ADR 26): its seal holds its start
    path = start_seal_path(keys_dir, store)
    try:
        kept = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return f"the writer key's start sealed beside the keys ({path.name}) is unreadable"
    try:
        start, mac = int(kept["start"]), str(kept["mac"])
    except (KeyError, TypeError, ValueError):
        return f"the writer key's start sealed beside the keys ({path.name}) does not parse"
    if not hmac.compare_digest(mac, _mac(key, store, start)):
        return (
            f"the writer key's start sealed beside the keys ({path.name}) does not verify "
            f"under writer key {key.key_id}"
        )
    found = custody.custody_rows(recorder).get(custody.WRITER_PREFIX + key.key_id)
    if found is None or found[1] != start:
        named = "no start" if found is None else f"position {found[1]}"
        return (
            f"the record of writer key {key.key_id} names {named}, but the start sealed "
            f"beside the keys when this store was first opened is {start}: the custody "
            "record was moved"
        )
    return None
