"""The network's Ed25519 checkpoint key.

Embedded (``cbcm serve``, tests): the key is created on first use at
``<data dir>/keys/audit-signing-key.pem`` (file 0600, directory 0700, race-safe: when
processes race, the first one's key wins).

Production: the publisher signs with ``CBCM_AUDIT_SIGNING_KEY_FILE`` (a PEM private key, never
created by cbcm), witnesses and ``cbcm audit verify`` check with ``CBCM_AUDIT_PUBLIC_KEY_FILE``
(a PEM public key; default: the public half of the signing key).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from services.identity.tokens import load_or_create_ed25519_key
from services.settings import Settings

__all__ = [
    "AuditKeyError",
    "audit_signing_key_path",
    "key_id",
    "load_public_key",
    "load_signing_key",
    "read_private_key",
    "read_public_key",
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
