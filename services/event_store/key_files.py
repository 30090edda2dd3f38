"""A new key file appears whole or not at all, and the first process to make it wins.

Made in place (``O_EXCL``, then written), a key file exists empty for a moment: a process
starting beside the one making it (``cbcm serve`` forks its children at once, ADR 34) read
it empty, refused its configuration (exit 2) and stopped the whole stack. Here the key is
written to a file of its own, then hard-linked to its name, which fails when the name
exists: the processes that lost the race read the winner's key.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
from pathlib import Path


def create_random_key(path: Path, size: int = 32) -> None:
    """Make ``path`` (0600) hold ``size`` random bytes in base64 on one line, unless it exists
    (made meanwhile by another process: that one stays). ``OSError`` if it cannot be made."""
    staged = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(8)}.tmp")
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            os.write(fd, base64.b64encode(secrets.token_bytes(size)) + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        with contextlib.suppress(FileExistsError):  # another process was first: its key
            os.link(staged, path)
    finally:
        staged.unlink(missing_ok=True)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
