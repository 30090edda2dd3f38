"""The network's Ed25519 checkpoint key.

Embedded (``cbcm serve``, tests): the key is created on first use at
``<data dir>/keys/audit-signing-key.pem`` (file 0600, directory 0700, race-safe: when
processes race, the first one's key wins).

Production: the publisher signs with ``CBCM_AUDIT_SIGNING_KEY_FILE`` (a PEM private key, never
created by cbcm), witnesses and ``cbcm audit verify`` check with ``CBCM_AUDIT_PUBLIC_KEY_FILE``
(a PEM public key; default: the public half of the signing key).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
import secrets
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from services.audit.note import COSIGNATURE_TYPE, ED25519_TYPE, NoteError, Verifier
from services.event_store.key_files import create_whole
from services.identity.tokens import load_or_create_ed25519_key
from services.settings import Settings

__all__ = [
    "AuditKeyError",
    "LogIdentity",
    "audit_signing_key_path",
    "key_id",
    "load_log_identity",
    "load_log_origin",
    "load_public_key",
    "load_signing_key",
    "load_witness_key",
    "read_private_key",
    "read_public_key",
    "witness_dir",
    "witness_policy",
]

EMBEDDED_KEY_NAME: Final = "audit-signing-key.pem"


class AuditKeyError(ValueError):
    """A configured key file is missing, unreadable or not an Ed25519 key (safe to show)."""


def audit_signing_key_path(data_dir: Path) -> Path:
    """Where the embedded mode's checkpoint signing key lives."""
    return Path(data_dir) / "keys" / EMBEDDED_KEY_NAME


def key_id(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """16 hex chars of SHA-256 over the raw 32-byte public key."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _read(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise AuditKeyError(f"cannot read the {what} {path}: {e.strerror or e}") from e


def read_private_key(path: Path) -> Ed25519PrivateKey:
    """The Ed25519 private key of an unencrypted PEM file (``AuditKeyError`` otherwise)."""
    data = _read(path, "audit signing key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise AuditKeyError(f"{path} is not an unencrypted PEM private key") from e
    if not isinstance(key, Ed25519PrivateKey):
        raise AuditKeyError(f"{path} is not an Ed25519 private key")
    return key


def read_public_key(path: Path) -> Ed25519PublicKey:
    """The Ed25519 public key of a PEM file (``AuditKeyError`` otherwise)."""
    data = _read(path, "audit public key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as e:
        raise AuditKeyError(f"{path} is not a PEM public key") from e
    if not isinstance(key, Ed25519PublicKey):
        raise AuditKeyError(f"{path} is not an Ed25519 public key")
    return key


def load_signing_key(settings: Settings) -> Ed25519PrivateKey:
    """The key checkpoints are signed with: ``CBCM_AUDIT_SIGNING_KEY_FILE``, or the embedded
    key (created on first use). ``AuditKeyError`` for an unusable file."""
    if settings.audit_signing_key_file is not None:
        return read_private_key(settings.audit_signing_key_file)
    path = audit_signing_key_path(settings.data_dir)
    try:
        return load_or_create_ed25519_key(path)
    except ValueError as e:
        raise AuditKeyError(f"{path} is not an Ed25519 private key") from e
    except OSError as e:
        raise AuditKeyError(f"cannot create the audit signing key {path}: {e}") from e


def load_public_key(settings: Settings) -> Ed25519PublicKey:
    """The key checkpoints are checked with: ``CBCM_AUDIT_PUBLIC_KEY_FILE``, else the public
    half of the signing key (:func:`load_signing_key`)."""
    if settings.audit_public_key_file is not None:
        return read_public_key(settings.audit_public_key_file)
    return load_signing_key(settings).public_key()


# ------------------------------------------------------------------ the log's identity (#15)

ORIGIN_FILE: Final = "audit-log-origin"
ORIGIN_PATTERN: Final = re.compile(r"^[A-Za-z0-9._/:-]{1,200}$")
ORIGIN_PREFIX: Final = "cbcm.psea.invalid/log/"


def _random_origin() -> str:
    token = base64.b32encode(secrets.token_bytes(15)).decode().lower()
    return f"{ORIGIN_PREFIX}{token}"


def _check_origin(origin: str, where: str) -> str:
    if not ORIGIN_PATTERN.fullmatch(origin):
        raise AuditKeyError(
            f"{where}: a log origin is 1-200 of letters, digits and . _ / : - (no spaces, no +)"
        )
    return origin


def load_log_origin(settings: Settings, *, create: bool = True) -> str:
    """The network's log identity: ``CBCM_AUDIT_LOG_ORIGIN``, or the one created once, at
    random, beside the embedded signing key (``<data dir>/keys/audit-log-origin``) the first
    time the network's log is signed. Race-safe: the first process's origin wins."""
    if settings.audit_log_origin is not None:
        return _check_origin(settings.audit_log_origin, "CBCM_AUDIT_LOG_ORIGIN")
    path = audit_signing_key_path(settings.data_dir).with_name(ORIGIN_FILE)
    with contextlib.suppress(FileNotFoundError):
        return _check_origin(path.read_text().strip(), str(path))
    if not create:
        raise AuditKeyError(
            "which log? set CBCM_AUDIT_LOG_ORIGIN (and CBCM_AUDIT_PUBLIC_KEY_FILE), or pass "
            "the log's key (--log origin+id+key), as the network's operator gives them"
        )
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):  # another process was first: its origin
            create_whole(path, _random_origin() + "\n", 0o666)  # public: the umask's mode
        return _check_origin(path.read_text().strip(), str(path))
    except OSError as e:
        raise AuditKeyError(f"cannot create the log origin {path}: {e}") from e


def configured_origin(public_key: Ed25519PublicKey) -> str:
    """The origin for a caller that names none (a library call, a test): the environment's
    (``CBCM_AUDIT_LOG_ORIGIN``, or an origin file already created beside the embedded key of
    ``CBCM_DATA_DIR``), else one derived from the log's key. Creates nothing: only the
    publisher and the network's own witness create the origin, with the settings they run
    with."""
    settings = Settings()
    with contextlib.suppress(AuditKeyError):
        return load_log_origin(settings, create=False)
    return f"{ORIGIN_PREFIX}key-{key_id(public_key)}"


class LogIdentity:
    """The log's origin and the network's checkpoint key: what a witness pins."""

    def __init__(self, origin: str, public_key: Ed25519PublicKey) -> None:
        self.origin = origin
        self.public_key = public_key
        try:
            self.verifier = Verifier(origin, ED25519_TYPE, public_key)
            self.vkey = self.verifier.vkey
        except NoteError as e:
            raise AuditKeyError(str(e)) from e


def load_log_identity(settings: Settings) -> LogIdentity:
    return LogIdentity(load_log_origin(settings), load_public_key(settings))


# ------------------------------------------------------------------ witnesses (#15)

WITNESS_KEY_NAME: Final = "witness-cosigning-key.pem"


def witness_dir(settings: Settings, origin: str | None = None) -> Path:
    """Where a witness keeps its book and cosigning key: ``CBCM_WITNESS_DIR``, else the
    user's state directory, a directory per log origin. Never the data dir: whoever can
    edit the store and holds the log's key must not also be able to prune the book or
    re-sign one (issue #15, attack 5)."""
    if settings.witness_dir is not None:
        return Path(settings.witness_dir)
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    origin = load_log_origin(settings, create=False) if origin is None else origin
    # one directory per log: two networks on one machine never share a book
    return Path(state) / "cbcm" / "witness" / hashlib.sha256(origin.encode()).hexdigest()[:16]


def load_witness_key(directory: Path) -> Ed25519PrivateKey:
    """The witness's own cosigning key, created on first use in its directory."""
    path = Path(directory) / WITNESS_KEY_NAME
    try:
        return load_or_create_ed25519_key(path)
    except ValueError as e:
        raise AuditKeyError(f"{path} is not an Ed25519 private key") from e
    except OSError as e:
        raise AuditKeyError(f"cannot create the witness key {path}: {e}") from e


def witness_vkey(name: str, key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return Verifier(name, COSIGNATURE_TYPE, public).vkey


def witness_policy(
    settings: Settings, extra: list[str] | None = None
) -> tuple[list[Verifier], int]:
    """The witnesses whose cosignatures ``audit verify`` asks for, and how many it needs."""
    texts = [t for t in re.split(r"[\s,]+", settings.audit_witnesses) if t] + list(extra or [])
    witnesses = []
    for text in texts:
        try:
            witness = Verifier.parse(text)
        except NoteError as e:
            raise AuditKeyError(f"witness key {text[:40]!r}: {e}") from e
        if witness.kind != COSIGNATURE_TYPE:
            raise AuditKeyError(f"witness key {witness.name}: not a cosigner key (type 0x04)")
        witnesses.append(witness)
    quorum = len(witnesses) if settings.audit_quorum is None else settings.audit_quorum
    if quorum > len(witnesses):
        raise AuditKeyError(f"a quorum of {quorum} needs as many witnesses, not {len(witnesses)}")
    return witnesses, quorum
