"""What the writer key MACs outside the database, moved to a new key when it rotates
(ADR 26): the erasure ledger and the high-water mark beside the keys (ADR 23).

The rotation moves them on the host that rotates. Every other host keeps its own ledger
(ADR 23) under the key it had: its first process holding the new key, with the retired key
beside it (``writer-retired/``, as the key ceremony copies it), moves them at start. A file
that verifies under neither is left as it is, and named as damaged by the checks that read
it.
"""

from __future__ import annotations

from pathlib import Path

import structlog

from services.event_store.custody import WriterKey
from services.event_store.high_water import high_water_key, high_water_path, rekey_high_water
from services.event_store.personal_data.erasure_ledger import (
    ledger_key,
    ledger_path,
    rekey_ledger,
)

log = structlog.get_logger()


def move_beside_keys(keys_dir: Path, store: str, old: WriterKey, new: WriterKey) -> None:
    """MAC the erasure ledger and the high-water mark of ``store`` under ``new`` instead of
    ``old`` (raises, changing nothing more, if one does not verify under ``old``)."""
    rekey_ledger(ledger_path(keys_dir, store), old, new, store)
    rekey_high_water(high_water_path(keys_dir, store), old, new, store)


def catch_up(keys_dir: Path, store: str, key: WriterKey, retired: dict[str, WriterKey]) -> None:
    """At a process's start: files beside the keys still MACed under a retired key that
    this host holds are moved to ``key`` (the host missed the rotation)."""
    if not retired:
        return
    candidates = [key, *retired.values()]
    ledger = ledger_path(keys_dir, store)
    found = ledger_key(ledger, candidates, store)
    if found is not None and found is not key:
        count = rekey_ledger(ledger, found, key, store)
        log.info("audit.writer_key_caught_up", file=ledger.name, lines=count, key=key.key_id)
    mark = high_water_path(keys_dir, store)
    found = high_water_key(mark, candidates, store)
    if found is not None and found is not key:
        rekey_high_water(mark, found, key, store)
        log.info("audit.writer_key_caught_up", file=mark.name, key=key.key_id)
