"""C2SP signed notes, tlog checkpoints and Ed25519 cosignatures (issue #15).

Written from the specifications (c2sp.org/signed-note@v1.0.0, c2sp.org/tlog-checkpoint@v1.0.0,
c2sp.org/tlog-cosignature@v1.0.0), so that existing tools (golang.org/x/mod/sumdb/note, the
transparency-dev witnesses) read what we write:

- a note is text ending in a newline, a blank line, then signature lines
  ``— <key name> base64(key ID (4 bytes, big-endian) || signature)``;
- Ed25519 note signatures (type 0x01) sign the text; key ID = SHA-256(name || "\\n" || 0x01 ||
  public key)[:4]; the verifier key ("vkey") is ``<name>+<hex key ID>+base64(0x01 || key)``;
- a checkpoint's text is the origin, the tree size in decimal and the base64 root hash, one
  per line (no extension lines here);
- a cosignature (type 0x04) signs ``cosignature/v1\\ntime <t>\\n`` followed by the checkpoint
  text, and is ``base64(key ID || u64 timestamp || Ed25519 signature)``.

Pure: no I/O.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

__all__ = [
    "COSIGNATURE_TYPE",
    "ED25519_TYPE",
    "Checkpoint",
    "Cosignature",
    "NoteError",
    "Signature",
    "Verifier",
    "checkpoint_text",
    "cosign",
    "parse_checkpoint",
    "parse_note",
    "sign_note",
    "verifier_key",
]

ED25519_TYPE: Final = 0x01
COSIGNATURE_TYPE: Final = 0x04
DASH: Final = "\u2014"
MAX_SIGNATURES: Final = 64
MAX_NOTE_BYTES: Final = 65536
_NAME = re.compile(r"^[^\s+]+$")
_SIZE = re.compile(r"^(0|[1-9][0-9]{0,18})$")


class NoteError(ValueError):
    """A note, checkpoint or key that is malformed or does not verify (safe to show)."""


def _raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise NoteError(f"a key name must be non-empty, without spaces or '+': {name!r}")
    return name


def key_hash(name: str, kind: int, key: Ed25519PublicKey) -> int:
    """The 32-bit key ID: SHA-256(name || "\\n" || type || public key)[:4], big-endian."""
    digest = hashlib.sha256(name.encode() + b"\n" + bytes([kind]) + _raw(key)).digest()
    return int.from_bytes(digest[:4], "big")


@dataclass(frozen=True)
class Verifier:
    """A known key: a name, its type (0x01 note signer, 0x04 cosigner) and public key."""

    name: str
    kind: int
    key: Ed25519PublicKey

    @property
    def key_id(self) -> int:
        return key_hash(self.name, self.kind, self.key)

    @property
    def vkey(self) -> str:
        return verifier_key(self.name, self.key, self.kind)

    @classmethod
    def parse(cls, vkey: str) -> Verifier:
        """A verifier key ``<name>+<hex id>+<base64(type || key)>`` (``NoteError``)."""
        parts = vkey.strip().split("+", 2)
        if len(parts) != 3:
            raise NoteError("a verifier key is <name>+<key id>+<key>")
        name, hex_id, encoded = parts
        _check_name(name)
        try:
            raw = base64.b64decode(encoded, validate=True)
            wanted = int(hex_id, 16)
        except (binascii.Error, ValueError) as e:
            raise NoteError("a verifier key's id or key does not decode") from e
        if len(hex_id) != 8 or len(raw) != 33 or raw[0] not in (ED25519_TYPE, COSIGNATURE_TYPE):
            raise NoteError("only Ed25519 (0x01) and Ed25519 cosignature (0x04) keys are known")
        verifier = cls(name, raw[0], Ed25519PublicKey.from_public_bytes(raw[1:]))
        if verifier.key_id != wanted:
            raise NoteError(f"the verifier key {name} names the wrong key id")
        return verifier


def verifier_key(name: str, key: Ed25519PublicKey, kind: int = ED25519_TYPE) -> str:
    _check_name(name)
    raw = bytes([kind]) + _raw(key)
    return f"{name}+{key_hash(name, kind, key):08x}+{base64.b64encode(raw).decode()}"


@dataclass(frozen=True)
class Signature:
    """One signature line of a note."""

    name: str
    key_id: int
    blob: bytes
    """What follows the key ID: the signature (0x01), or timestamp and signature (0x04)."""

    def line(self) -> str:
        encoded = base64.b64encode(self.key_id.to_bytes(4, "big") + self.blob).decode()
        return f"{DASH} {self.name} {encoded}\n"


def _ensure_text(text: str) -> None:
    if not text.endswith("\n"):
        raise NoteError("a note's text ends with a newline")
    if any(ord(c) < 0x20 and c != "\n" for c in text):
        raise NoteError("a note holds no control characters but newlines")


def sign_note(text: str, name: str, key: Ed25519PrivateKey) -> Signature:
    """An Ed25519 (0x01) signature line over ``text`` by key ``name``."""
    _ensure_text(text)
    kid = key_hash(_check_name(name), ED25519_TYPE, key.public_key())
    return Signature(name, kid, key.sign(text.encode()))


def parse_note(note: str) -> tuple[str, list[Signature]]:
    """The text of a signed note and its signature lines (none checked yet)."""
    if len(note.encode()) > MAX_NOTE_BYTES:
        raise NoteError("the note is too large")
    if any(ord(c) < 0x20 and c != "\n" for c in note):
        raise NoteError("a note holds no control characters but newlines")
    split = note.rfind("\n\n")
    if split < 0 or not note.endswith("\n"):
        raise NoteError("a signed note is text, a blank line, then signature lines")
    text, lines = note[: split + 1], note[split + 2 :].split("\n")[:-1]
    if not lines or len(lines) > MAX_SIGNATURES:
        raise NoteError("a signed note has 1 to 64 signature lines")
    signatures = []
    for line in lines:
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != DASH:
            raise NoteError("a signature line is '— <name> <base64>'")
        try:
            raw = base64.b64decode(parts[2], validate=True)
        except binascii.Error as e:
            raise NoteError("a signature does not decode") from e
        if len(raw) < 5:
            raise NoteError("a signature is too short")
        signatures.append(Signature(_check_name(parts[1]), int.from_bytes(raw[:4], "big"), raw[4:]))
    return text, signatures


def format_note(text: str, signatures: list[Signature]) -> str:
    _ensure_text(text)
    return text + "\n" + "".join(s.line() for s in signatures)


# ----------------------------------------------------------------------------- checkpoints


@dataclass(frozen=True)
class Checkpoint:
    """The three lines of a tlog checkpoint."""

    origin: str
    size: int
    root: bytes

    def text(self) -> str:
        return checkpoint_text(self.origin, self.size, self.root)


def checkpoint_text(origin: str, size: int, root: bytes) -> str:
    if not origin or any(c.isspace() for c in origin) or "+" in origin:
        raise NoteError("an origin is non-empty, without spaces or '+'")
    if size < 0 or len(root) != 32:
        raise NoteError("a checkpoint has a size >= 0 and a 32-byte root")
    return f"{origin}\n{size}\n{base64.b64encode(root).decode()}\n"


def parse_checkpoint(text: str) -> Checkpoint:
    lines = text.split("\n")
    if len(lines) < 4 or lines[-1] != "" or any(not line for line in lines[:-1]):
        raise NoteError("a checkpoint is origin, size and root hash, one per line")
    origin, size, root = lines[:3]
    if not _SIZE.fullmatch(size):
        raise NoteError("a checkpoint's size is a decimal number without leading zeroes")
    try:
        raw = base64.b64decode(root, validate=True)
    except binascii.Error as e:
        raise NoteError("a checkpoint's root hash does not decode") from e
    if len(raw) != 32:
        raise NoteError("a checkpoint's root hash is 32 bytes")
    return Checkpoint(origin, int(size), raw)


def open_checkpoint(note: str, log: Verifier) -> tuple[Checkpoint, list[Signature]]:
    """The checkpoint in ``note`` if the log's key signed it and it names the log's origin
    (the key's name); every signature line is returned (cosignatures to be checked by the
    caller's policy). ``NoteError`` otherwise."""
    text, signatures = parse_note(note)
    checkpoint = parse_checkpoint(text)
    if checkpoint.origin != log.name:
        raise NoteError(f"the checkpoint is of log {checkpoint.origin!r}, not {log.name!r}")
    mine = [s for s in signatures if s.name == log.name and s.key_id == log.key_id]
    if not mine:
        raise NoteError(f"the checkpoint is not signed by the log's key {log.name}")
    for signature in mine:
        try:
            log.key.verify(signature.blob, text.encode())
        except InvalidSignature as e:
            raise NoteError("the log's signature on the checkpoint does not verify") from e
    return checkpoint, signatures


# ----------------------------------------------------------------------------- cosignatures

_TIMESTAMP = struct.Struct(">Q")


def cosigned_message(text: str, timestamp: int) -> bytes:
    return f"cosignature/v1\ntime {timestamp}\n{text}".encode()


def cosign(text: str, name: str, key: Ed25519PrivateKey, timestamp: int) -> Signature:
    """A tlog-cosignature/v1 (0x04) signature line over the checkpoint ``text``."""
    _ensure_text(text)
    if not 0 <= timestamp < 2**63:
        raise NoteError("a cosignature's time is 0 to 2^63-1")
    kid = key_hash(_check_name(name), COSIGNATURE_TYPE, key.public_key())
    blob = _TIMESTAMP.pack(timestamp) + key.sign(cosigned_message(text, timestamp))
    return Signature(name, kid, blob)


@dataclass(frozen=True)
class Cosignature:
    name: str
    timestamp: int


def check_cosignature(text: str, signature: Signature, witness: Verifier) -> Cosignature | None:
    """The cosignature if ``signature`` is ``witness``'s and verifies; None if it is another
    key's; ``NoteError`` if it is the witness's and does not verify."""
    if witness.kind != COSIGNATURE_TYPE:
        raise NoteError(f"{witness.name} is not a cosigner key (type 0x04)")
    if signature.name != witness.name or signature.key_id != witness.key_id:
        return None
    if len(signature.blob) != 8 + 64:
        raise NoteError(f"the cosignature of {witness.name} has the wrong length")
    (timestamp,) = _TIMESTAMP.unpack(signature.blob[:8])
    try:
        witness.key.verify(signature.blob[8:], cosigned_message(text, timestamp))
    except InvalidSignature as e:
        raise NoteError(f"the cosignature of {witness.name} does not verify") from e
    return Cosignature(witness.name, timestamp)
