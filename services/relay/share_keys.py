"""An agency's share keys, and the opening of a share sealed to one (issue #6, ADR 7).

What a recipient needs (``cbcm agency keygen``, ``cbcm share open``) apart from what the relay
needs to build shares (``services.relay.sharing``): this module imports neither the
application nor the domain's aggregates, so those commands start in a fraction of the time.
Keys are X25519 (libsodium's ``crypto_box_seal``, PyNaCl ``SealedBox``), kept as PEM PKCS#8
(the format ``openssl pkey`` reads). Nothing here logs a value.
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox

from contracts.shares import NotAShare, decode_share, decode_shared_fields
from domain.network import share_key_bytes, share_key_id


class ShareError(ValueError):
    """A share or a key that cannot be used; the message names no value of a field."""


class ShareNotForThisKey(ShareError):
    """The share was sealed to another key than the one given."""


class ShareCannotBeOpened(ShareError):
    """The sealed box does not open with the key: altered, or sealed to another key."""


def seal(public_key: str, plaintext: bytes) -> bytes:
    """``crypto_box_seal`` of ``plaintext`` to ``public_key`` (standard base64 of 32 bytes)."""
    return bytes(SealedBox(PublicKey(share_key_bytes(public_key))).encrypt(plaintext))


def open_sealed(private_key: PrivateKey, sealed: bytes) -> bytes:
    """The plaintext of a sealed box, or ``ShareCannotBeOpened``."""
    try:
        return bytes(SealedBox(private_key).decrypt(sealed))
    except CryptoError:
        raise ShareCannotBeOpened(
            "the sealed box does not open with this key: it was altered, or sealed to another key"
        ) from None


def public_key_of(private_key: PrivateKey) -> str:
    """The standard base64 of the key's public half (what the registry takes)."""
    return base64.b64encode(bytes(private_key.public_key)).decode("ascii")


def key_id_of(private_key: PrivateKey) -> str:
    """The fingerprint of the key's public half (``domain.network.share_key_id``)."""
    return share_key_id(bytes(private_key.public_key))


@dataclass(frozen=True)
class OpenedShare:
    """A share opened with its recipient's private key."""

    case_id: UUID
    version: int
    event_type: str
    recipient: str
    key_id: str
    position: int | None
    values: dict[str, str]
    erased: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """The opened share as a JSON-ready dict."""
        return {
            "case_id": str(self.case_id),
            "version": self.version,
            "event_type": self.event_type,
            "recipient": self.recipient,
            "key_id": self.key_id,
            "position": self.position,
            "fields": dict(sorted(self.values.items())),
            "erased": list(self.erased),
        }


def open_share(raw: bytes, private_key: PrivateKey) -> OpenedShare:
    """Open one share message (its JSON body) with the recipient's private key.

    Raises ``ShareError``: ``NotAShare``'s message for what is not a share,
    ``ShareNotForThisKey`` when it names another key, ``ShareCannotBeOpened`` when the box
    does not open (altered) or its content contradicts its envelope.
    """
    try:
        message = decode_share(raw)
    except NotAShare as e:
        raise ShareError(str(e)) from None
    data = message.data
    mine = key_id_of(private_key)
    if data.key_id != mine:
        raise ShareNotForThisKey(f"the share is sealed to key {data.key_id}, this key is {mine}")
    try:
        sealed = base64.b64decode(data.sealed, validate=True)
    except (binascii.Error, ValueError):
        raise ShareCannotBeOpened("the sealed box is not base64") from None
    try:
        content = decode_shared_fields(open_sealed(private_key, sealed))
    except NotAShare:
        raise ShareCannotBeOpened("the sealed box does not hold a share's fields") from None
    told = (data.case_id, data.version, data.event_type, data.recipient)
    held = (content.case_id, content.version, content.event_type, content.recipient)
    if told != held or set(content.values) != set(data.fields):
        raise ShareCannotBeOpened(
            "the sealed box does not belong to this envelope (another case, version, step, "
            "recipient or other fields)"
        )
    position = message.position if isinstance(message.position, int) else None
    return OpenedShare(
        case_id=data.case_id,
        version=data.version,
        event_type=data.event_type,
        recipient=data.recipient,
        key_id=data.key_id,
        position=position,
        values=dict(content.values),
        erased=tuple(data.erased),
    )


def new_private_key() -> PrivateKey:
    """A fresh X25519 key pair for an agency's shares."""
    return PrivateKey.generate()


def write_private_key(path: Path, private_key: PrivateKey) -> None:
    """Write the key as PEM PKCS#8 to a new file readable by its owner only (0600).

    Refuses an existing file (``FileExistsError``): overwriting a key would lose every share
    sealed to it.
    """
    pem = X25519PrivateKey.from_private_bytes(bytes(private_key)).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(descriptor, 0o600)  # whatever the umask
        os.write(descriptor, pem)
    finally:
        os.close(descriptor)


def read_private_key(path: Path) -> PrivateKey:
    """An agency's private share key from its PEM file, or ``ShareError``."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ShareError(f"cannot read the key file {path}: {e.strerror or e}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise ShareError(f"{path} is not an unencrypted PEM private key") from None
    if not isinstance(key, X25519PrivateKey):
        raise ShareError(f"{path} holds no X25519 key (make one with `cbcm agency keygen`)")
    raw = key.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    return PrivateKey(raw)
