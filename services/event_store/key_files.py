"""Key files that appear whole or not at all, and the first process to make one wins.

Made in place (``O_EXCL``, then written), a key file exists empty for a moment: a process
starting beside the one making it (``cbcm serve`` forks its children at once, ADR 34) read
it empty, refused its configuration (exit 2) and stopped the whole stack. Here a file is
written and synced under a name of its own, then hard-linked to its name, which fails when
the name exists: the processes that lost the race read the winner's file.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
from pathlib import Path


def create_whole(path: Path, text: str, mode: int = 0o600) -> None:
    """Create ``path`` (``mode``) holding ``text``, whole or not at all: written and synced
    under another name, then linked into place (``FileExistsError`` if it exists). A process
    reading it never sees it half written, and it survives a crash once this returns."""
    staged = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(8)}.tmp")
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            os.write(fd, text.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.link(staged, path)
    finally:
        staged.unlink(missing_ok=True)
    fsync_dir(path.parent)


def create_random_key(path: Path, size: int = 32) -> None:
    """Make ``path`` (0600) hold ``size`` random bytes in base64 on one line, unless it exists
    (made meanwhile by another process: that one stays). ``OSError`` if it cannot be made."""
    with contextlib.suppress(FileExistsError):  # another process was first: its key
        create_whole(path, base64.b64encode(secrets.token_bytes(size)).decode() + "\n")


def fsync_dir(directory: Path) -> None:
    """Make the names in ``directory`` (a file linked, renamed or removed) survive a crash."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
