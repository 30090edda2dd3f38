"""The data keys of an application, from its environment (set by
``services.event_store.config``)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from eventsourcing.cryptography import AESCipher
from eventsourcing.utils import Environment

from services.event_store.chain import (
    ChainedPostgresRecorder,
    ChainedSQLiteRecorder,
    ledger_dir,
)
from services.event_store.personal_data.data_keys import DataKeys
from services.event_store.personal_data.erasure_log import ErasureLog
from services.event_store.personal_data.kek import (
    KeyEncryptionKeys,
    KeyRingError,
    LocalKeyRing,
    kms_hook,
)
from services.event_store.personal_data.tables import PostgresKeyTable, SQLiteKeyTable


def key_encryption_keys(env: Mapping[str, str]) -> KeyEncryptionKeys:
    """The KEK provider the environment names (a KMS hook, or a local key ring)."""
    hook = env.get("CBCM_KMS_HOOK")
    if hook:
        return kms_hook(hook)
    directory = env.get("CBCM_KEK_DIR")
    if not directory:
        raise KeyRingError(
            "personal data is sealed at rest: configure CBCM_KEK_DIR or CBCM_KMS_HOOK"
        )
    return LocalKeyRing(Path(directory), create=env.get("CBCM_KEK_CREATE") == "y")


def personal_data_keys(env: Mapping[str, str], recorder: Any) -> DataKeys | None:
    """The data keys of the store ``recorder`` writes to; ``None`` for a store that keeps
    nothing at rest (the library's in-memory one, in tests of the domain's wiring)."""
    if isinstance(recorder, ChainedSQLiteRecorder):
        table: SQLiteKeyTable | PostgresKeyTable = SQLiteKeyTable(recorder)
    elif isinstance(recorder, ChainedPostgresRecorder):
        table = PostgresKeyTable(recorder)
    elif type(recorder).__module__.startswith("eventsourcing.popo"):
        return None
    else:
        raise KeyRingError(f"{type(recorder).__name__} cannot keep data keys with its events")
    kek = key_encryption_keys(env)
    cipher = AESCipher(Environment(env=dict(env))) if env.get("CIPHER_KEY") else None
    keys = DataKeys(
        table,
        kek,
        cache_seconds=float(env.get("CBCM_DATA_KEY_CACHE_SECONDS", "10")),
        log=ErasureLog(recorder, cipher, table=table, keys_dir=_keys_dir(env)),
    )
    _check_ring_fits(keys, kek)
    _register(table, kek, env)
    return keys


def _keys_dir(env: Mapping[str, str]) -> Path | None:
    """Where the erasure ledger is kept: ``CBCM_ERASURE_LEDGER_DIR``, by default beside the
    writer key (ADR 23)."""
    return ledger_dir(env)


def _register(
    table: SQLiteKeyTable | PostgresKeyTable, kek: KeyEncryptionKeys, env: Mapping[str, str]
) -> None:
    """The first process records the store's key ring and whole-event cipher key; any later
    one with another is refused before it writes anything (two hosts that each made their
    own would each write data the other cannot read)."""
    ring = str(getattr(kek, "ring_id", None) or env.get("CBCM_KMS_HOOK") or "")
    cipher_key = env.get("CIPHER_KEY") or ""
    cipher = (
        hashlib.sha256(b"cbcm event cipher\0" + cipher_key.encode()).hexdigest()[:16]
        if cipher_key
        else "off"
    )
    recorded_ring, recorded_cipher = table.register_ring(ring, cipher)
    if recorded_ring != ring:
        raise KeyRingError(
            f"this store's data keys belong to key ring {recorded_ring}, not this process's "
            f"{ring}: point CBCM_KEK_DIR (or CBCM_KMS_HOOK) at the network's ring"
        )
    if recorded_cipher != cipher:
        raise KeyRingError(
            "this store's events were written with another whole-event cipher setting or key: "
            "give every process the same CBCM_EVENT_CIPHER and CBCM_EVENT_CIPHER_KEY_FILE"
        )


def _check_ring_fits(keys: DataKeys, kek: KeyEncryptionKeys) -> None:
    """Refuse a ring that holds none of the KEKs the store's data keys are wrapped with (a
    process given a fresh ring by mistake would make data other processes cannot read)."""
    ids = getattr(kek, "ids", None)
    if ids is None:
        return
    live, under = keys.table.wrapped_under_any(tuple(ids))
    if live and not under:
        raise KeyRingError(
            "this store's data keys are wrapped by key-encryption keys none of which is in "
            "the configured ring: point CBCM_KEK_DIR at the network's ring"
        )
