"""Sealing a stored event's personal fields, and opening them again.

Every field the domain marks personal (``domain.personal_data``) is taken out of the stored
state and put, encrypted, under ``_pd``: ``{path: [subject, generation, nonce|ciphertext]}``,
the field itself left null. AES-256-GCM under the data key of that person in that record, with
the record's id, the event's version and topic, the field's path and the subject as associated
data: a ciphertext copied to another record, event or field does not open. Opening a field
whose data key was erased gives ``ERASED``.

The paths are read from the state itself when opening (not from the class), so events stored
before an upcast open as they were sealed.
"""

from __future__ import annotations

import base64
import dataclasses
import secrets
from typing import Any
from uuid import UUID

import msgspec
from cryptography.exceptions import InvalidTag

from domain.case import Case
from domain.feedback import Feedback
from domain.notification import StaffContact
from domain.personal_data import ERASED, DataSubject, personal_data_fields
from domain.webhooks import WebhookSecret
from services.event_store.personal_data.data_keys import DataKeys, KeyRef

SEALED = "_pd"
"""The key of a stored state's sealed personal fields."""

NONCE = 12

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


class SealBroken(ValueError):
    """A sealed field does not open under its key: it was altered or moved."""


def _aad(ref: KeyRef, version: int, topic: str, path: str) -> bytes:
    return b"\0".join(
        (
            b"cbcm/pd/v1",
            ref.scope.bytes + version.to_bytes(8, "big", signed=True),
            topic.encode(),
            path.encode(),
            ref.subject.encode(),
            ref.generation.to_bytes(4, "big"),
        )
    )


def _get(value: Any, parts: list[str]) -> Any:
    for part in parts:
        if value is None:
            return None
        value = value[part] if isinstance(value, dict) else getattr(value, part)
    return value


def _with(value: Any, parts: list[str], new: Any) -> Any:
    head, rest = parts[0], parts[1:]
    if isinstance(value, dict):
        child = value.get(head)
        return {**value, head: new if not rest else _with(child, rest, new)}
    child = getattr(value, head)
    return dataclasses.replace(value, **{head: new if not rest else _with(child, rest, new)})


def seal(
    state: dict[str, Any],
    event_class: type[Any],
    *,
    scope: UUID,
    version: int,
    topic: str,
    keys: DataKeys,
) -> dict[str, Any]:
    """``state`` (an event's fields) with its personal fields sealed under ``_pd``."""
    fields = personal_data_fields(event_class)
    if not fields:
        return state
    sealed: dict[str, list[Any]] = {}
    for path, subject in fields:
        parts = path.split(".")
        value = _get(state, parts)
        if value is None:
            continue
        ref, aes = keys.for_write(scope, subject.value, new_scope=version == 1)
        nonce = secrets.token_bytes(NONCE)
        blob = nonce + aes.encrypt(nonce, _encode(value), _aad(ref, version, topic, path))
        sealed[path] = [subject.value, ref.generation, blob]
        state = _with(state, parts, None)
    if sealed:
        state = {**state, SEALED: sealed}
    return state


def open_sealed(
    state: dict[str, Any], *, scope: UUID, version: int, topic: str, keys: DataKeys | None
) -> dict[str, Any]:
    """A decoded stored state with its sealed fields opened (``ERASED`` where the key is
    gone), in place."""
    sealed = state.pop(SEALED, None)
    if not sealed:
        return state
    if keys is None:
        raise SealBroken("this store seals personal data but no data keys are configured")
    for path, (subject, generation, blob) in sealed.items():
        ref = KeyRef(scope, subject, int(generation))
        aes = keys.for_read(ref)
        if aes is None:
            value: Any = ERASED
        else:
            raw = base64.b64decode(blob)
            try:
                value = _decode(
                    aes.decrypt(raw[:NONCE], raw[NONCE:], _aad(ref, version, topic, path))
                )
            except InvalidTag:
                raise SealBroken(f"sealed field {path} does not open under its key") from None
        parts = path.split(".")
        target = state
        for part in parts[:-1]:
            target = target[part]
        target[parts[-1]] = value
    return state


def leave_sealed(state: dict[str, Any], placeholder: str) -> dict[str, Any]:
    """A decoded stored state with its sealed fields left unopened: each holds
    ``placeholder`` instead of its value (nothing is decrypted, no key is read), in place;
    for a reader that never looks at personal fields."""
    sealed = state.pop(SEALED, None)
    if not sealed:
        return state
    for path in sealed:
        parts = path.split(".")
        target = state
        for part in parts[:-1]:
            target = target[part]
        target[parts[-1]] = placeholder
    return state


def sealed_refs(state: Any, scope: UUID) -> list[KeyRef]:
    """The data keys a decoded stored state's sealed fields are opened with (none: a state
    that seals nothing, or is not a mapping)."""
    sealed = state.get(SEALED) if isinstance(state, dict) else None
    if not isinstance(sealed, dict):
        return []
    refs = []
    for entry in sealed.values():
        if isinstance(entry, list) and len(entry) == 3:
            subject, generation = entry[0], entry[1]
            if isinstance(subject, str) and isinstance(generation, int):
                refs.append(KeyRef(scope, subject, generation))
    return refs


def erasures_of(event: object) -> list[tuple[UUID, str]]:
    """The data keys (scope, subject) an erasure event destroys (none for other events)."""
    if isinstance(event, Case.PersonalDataErased):
        scopes = (UUID(str(event.originator_id)), *event.records)
        return [(scope, subject.value) for scope in scopes for subject in event.subjects]
    if isinstance(
        event,
        Feedback.PersonalDataErased | StaffContact.PersonalDataErased | WebhookSecret.Erased,
    ):
        return [(UUID(str(event.originator_id)), subject.value) for subject in DataSubject]
    return []
