"""SHA-256 over many pieces of one buffer, for ``cbcm audit verify`` (issue #15, ADR 33).

Verify hashes three short inputs an event: the chain link (the previous link and the event,
about 430 bytes), the Merkle leaf (33 bytes) and, on average, one tree node (65 bytes).
``hashlib`` costs about 0.3 µs a call whatever the length, so in Python verify spends more
time calling than hashing. The C module ``services.audit._hashing`` (built by ``pip install``
where a compiler and OpenSSL's headers are found; OpenSSL is the library ``hashlib`` uses)
does a whole batch in one call. Where it could not be built, the pure-Python twins below do
the same, byte for byte, only slower; ``ACCELERATED`` says which one runs, and ``cbcm audit
verify --json`` reports it.

- :func:`sha256_segments`: the digests of ``prefix + data[bounds[i]:bounds[i + 1]]``, joined
  (32 bytes each);
- :func:`rfc6962_roots`: for each group of ``width`` leaf hashes (``width`` a power of two),
  the RFC 6962 tree hash of the group, joined.

``bounds`` is a buffer of signed 64-bit integers (``array('q')``), non-decreasing, within
the data. Both implementations refuse a bad value with ``ValueError``, a buffer that is
not one contiguous block with ``BufferError``, and what is no buffer with ``TypeError``,
before hashing anything; their arguments are positional only.
"""

from __future__ import annotations

import hashlib
from array import array
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import TypeAlias

    Buffer: TypeAlias = bytes | bytearray | memoryview | array[int]

__all__ = [
    "ACCELERATED",
    "python_rfc6962_roots",
    "python_sha256_segments",
    "rfc6962_roots",
    "sha256_segments",
]

_WIDTH_LIMIT = 1 << 20


def _view(data: Buffer) -> memoryview:
    view = memoryview(data)
    if not view.contiguous:
        raise BufferError("a buffer that is not one contiguous block")
    return view.cast("B")


def _bounds(bounds: Buffer, size: int) -> list[int]:
    raw = _view(bounds)
    if len(raw) % 8:
        raise ValueError("bounds: a whole number of 64-bit integers")
    values = array("q", raw.tobytes()).tolist()
    previous = 0
    for i, at in enumerate(values):
        if at < 0 or at > size or (i and at < previous):
            raise ValueError(f"bounds[{i}] = {at}: bounds must be non-decreasing, within 0..{size}")
        previous = at
    return values


def python_sha256_segments(data: Buffer, bounds: Buffer, prefix: Buffer = b"", /) -> bytes:
    """:func:`sha256_segments` in Python (the reference the C module is tested against)."""
    view = _view(data)
    values = _bounds(bounds, len(view))
    head = bytes(_view(prefix))
    sha256 = hashlib.sha256
    return b"".join(
        sha256(head + view[values[i] : values[i + 1]]).digest() for i in range(len(values) - 1)
    )


def python_rfc6962_roots(leaves: Buffer, width: int, /) -> bytes:
    """:func:`rfc6962_roots` in Python."""
    if not isinstance(width, int):
        raise TypeError("width: an int")
    view = _view(leaves)
    if width < 1 or width & (width - 1) or width > _WIDTH_LIMIT:
        raise ValueError("width: a power of two, at most 2**20")
    if len(view) % (32 * width):
        raise ValueError("leaves: whole groups of width 32-byte hashes")
    sha256 = hashlib.sha256
    roots = []
    for group in range(0, len(view), 32 * width):
        level = [bytes(view[at : at + 32]) for at in range(group, group + 32 * width, 32)]
        while len(level) > 1:
            level = [
                sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level), 2)
            ]
        roots.append(level[0])
    return b"".join(roots)


try:
    from services.audit._hashing import rfc6962_roots, sha256_segments
except ImportError:  # no compiler or no OpenSSL headers where cbcm was installed
    ACCELERATED = False
    sha256_segments = python_sha256_segments
    rfc6962_roots = python_rfc6962_roots
else:
    ACCELERATED = True
