"""Key-encryption keys: they wrap the data keys, and never leave configuration or the KMS.

A ring has one *active* key (new data keys are wrapped with it) and may hold older ones (data
keys wrapped with them can still be unwrapped until rotation rewraps them). Two kinds:

- ``LocalKeyRing``: 256-bit keys in files of a directory (``CBCM_KEK_DIR``, by default
  ``<data dir>/keys/kek``), one file per key named by its id, and a file ``active`` naming the
  active one. Files are created 0600.
- a KMS hook (``CBCM_KMS_HOOK=package.module:factory``): ``factory()`` returns any object with
  ``active_id``, ``wrap(key, context) -> (kek_id, wrapped)`` and
  ``unwrap(kek_id, wrapped, context) -> key`` (AWS KMS, Vault transit, an HSM...).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import importlib
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from services.event_store.key_files import create_whole, fsync_dir

KEK_ID_BYTES = 6
NONCE_BYTES = 12


class KeyRingError(RuntimeError):
    """The key-encryption keys are missing, malformed or cannot unwrap a data key."""


class KeyEncryptionKeys(Protocol):
    """What the data keys need of a KEK provider."""

    @property
    def active_id(self) -> str: ...

    def wrap(self, key: bytes, context: bytes) -> tuple[str, bytes]:
        """``key`` encrypted under the active KEK, bound to ``context``: (kek id, wrapped)."""
        ...

    def unwrap(self, kek_id: str, wrapped: bytes, context: bytes) -> bytes:
        """The key ``wrap`` was given, or ``KeyRingError``."""
        ...


def _write_private(path: Path, text: str) -> None:
    """Create ``path`` holding ``text``, whole or not at all (``create_whole``:
    ``FileExistsError`` if it exists). A process listing or reading the ring never sees a key
    or an ``active`` file half written, and a key that data keys are wrapped under survives a
    crash.

    In a ring directory its group may read (``/etc/cbcm/keys/kek``, 2750 root:cbcm: the
    services' group reads the ring in place, only root rotates it), the file is 0640, so
    that a rotation run as root is read by the services at once (issue #17); else 0600."""
    create_whole(path, text, 0o640 if path.parent.stat().st_mode & 0o040 else 0o600)


@contextlib.contextmanager
def _exclusive(directory: Path) -> Iterator[None]:
    """Hold the ring directory's lock (``.lock``, an flock the kernel releases if the holder
    dies): one process at a time creates the ring."""
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


class LocalKeyRing:
    """KEKs in files of one directory (see the module's docstring)."""

    ACTIVE = "active"
    RING = "ring"
    RETIRE_AFTER_SECONDS = 120.0
    """How long after a rotation the old KEK may be retired: every process re-reads the ring
    before it wraps a key, but one that read it just before the rotation may still be
    committing a key wrapped under the old one."""

    def __init__(self, directory: Path, *, create: bool = True) -> None:
        self.directory = directory
        self._keys: dict[str, AESGCM] = {}
        self._seen: int | None = None
        if create and not (directory / self.ACTIVE).exists():
            # Every service of a fresh stack gets here at once: one creates the ring while
            # the others wait on the lock, then all read the ring that won.
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            with _exclusive(directory):
                if not (directory / self.ACTIVE).exists():
                    if not (directory / self.RING).exists():
                        _write_private(directory / self.RING, secrets.token_hex(8) + "\n")
                    self._activate(self._new_key())
        self.reload()

    @property
    def ring_id(self) -> str:
        """The ring's identity, the same across rotations (the store records it: a process
        given another ring is refused before it writes anything)."""
        path = self.directory / self.RING
        if not path.exists():  # a ring made before rings had an identity
            with contextlib.suppress(FileExistsError):
                _write_private(path, secrets.token_hex(8) + "\n")
        return path.read_text().strip()

    def _active_changed(self) -> bool:
        try:
            return (self.directory / self.ACTIVE).stat().st_mtime_ns != self._seen
        except OSError:
            return True

    def reload(self) -> None:
        """Read the ring again (after a rotation by another process)."""
        try:
            self._seen = (self.directory / self.ACTIVE).stat().st_mtime_ns
            active = (self.directory / self.ACTIVE).read_text().strip()
        except OSError as e:
            raise KeyRingError(
                f"no active key-encryption key in {self.directory}: {e.strerror}"
            ) from None
        keys: dict[str, AESGCM] = {}
        for path in self.directory.glob("*.key"):
            try:
                raw = base64.b64decode(path.read_text().strip(), validate=True)
            except (OSError, ValueError) as e:
                raise KeyRingError(f"key-encryption key {path.name} is unreadable: {e}") from None
            if len(raw) != 32:
                raise KeyRingError(f"key-encryption key {path.name} is not 256 bits")
            keys[path.stem] = AESGCM(raw)
        if active not in keys:
            raise KeyRingError(f"the active key-encryption key {active!r} is not in the ring")
        self._active, self._keys = active, keys

    @property
    def active_id(self) -> str:
        return self._active

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(sorted(self._keys))

    def wrap(self, key: bytes, context: bytes) -> tuple[str, bytes]:
        if self._active_changed():  # rotated by another process: wrap under the new KEK
            self.reload()
        nonce = secrets.token_bytes(NONCE_BYTES)
        return self._active, nonce + self._keys[self._active].encrypt(nonce, key, context)

    def unwrap(self, kek_id: str, wrapped: bytes, context: bytes) -> bytes:
        kek = self._keys.get(kek_id)
        if kek is None:
            self.reload()  # rotated by another process since this one read the ring
            kek = self._keys.get(kek_id)
        if kek is None:
            raise KeyRingError(f"key-encryption key {kek_id!r} is not in the ring")
        try:
            return kek.decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], context)
        except InvalidTag:
            raise KeyRingError(
                f"a data key does not unwrap under key-encryption key {kek_id!r}"
            ) from None

    def rotate(self) -> str:
        """Make a new KEK the active one (older ones stay until retired); its id."""
        new = self._new_key()
        self._activate(new, replace=True)
        self.reload()
        return new

    def retire(self, kek_id: str, *, after_seconds: float = RETIRE_AFTER_SECONDS) -> None:
        """Destroy an inactive KEK (every data key must have been rewrapped first), no sooner
        than ``after_seconds`` after the last rotation."""
        self.reload()
        if kek_id == self._active:
            raise KeyRingError(f"{kek_id!r} is the active key-encryption key")
        since = time.time() - (self.directory / self.ACTIVE).stat().st_mtime
        if since < after_seconds:
            raise KeyRingError(
                f"the ring was rotated {since:.0f} s ago: a process may still be writing a key "
                f"wrapped under {kek_id!r}; retire it after {after_seconds:.0f} s, then run "
                "`cbcm keys rotate --rewrap-only` first if anything is still wrapped under it"
            )
        path = self.directory / f"{kek_id}.key"
        if not path.exists():
            raise KeyRingError(f"no key-encryption key {kek_id!r} in {self.directory}")
        # Overwrite before unlinking: the file's blocks should not keep the key.
        size = path.stat().st_size
        with path.open("r+b") as f:
            f.write(b"\0" * size)
            f.flush()
            os.fsync(f.fileno())
        path.unlink()
        self.reload()

    def _new_key(self) -> str:
        kek_id = secrets.token_hex(KEK_ID_BYTES)
        _write_private(
            self.directory / f"{kek_id}.key",
            base64.b64encode(AESGCM.generate_key(bit_length=256)).decode() + "\n",
        )
        return kek_id

    def _activate(self, kek_id: str, *, replace: bool = False) -> None:
        target = self.directory / self.ACTIVE
        if not replace:
            _write_private(target, kek_id + "\n")
            return
        staged = self.directory / f".{self.ACTIVE}.{kek_id}"
        _write_private(staged, kek_id + "\n")
        staged.replace(target)  # atomic: readers see the old or the new id, never half
        fsync_dir(self.directory)


def kms_hook(spec: str) -> KeyEncryptionKeys:
    """The KEK provider that ``package.module:factory`` makes."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise KeyRingError("CBCM_KMS_HOOK must look like package.module:factory")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as e:
        raise KeyRingError(f"CBCM_KMS_HOOK {spec!r} cannot be loaded: {e}") from None
    provider: KeyEncryptionKeys = factory()
    for needed in ("active_id", "wrap", "unwrap"):
        if not hasattr(provider, needed):
            raise KeyRingError(f"CBCM_KMS_HOOK {spec!r} gives no {needed}")
    return provider
