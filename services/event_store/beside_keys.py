"""Files kept beside the keys, in the erasure ledger's directory (``CBCM_ERASURE_LEDGER_DIR``,
``/var/lib/cbcm/keys`` under systemd): the erasure ledger, the high-water mark, the start seal
and their lock files (ADR 23, ADR 26).

The services write them as their own user; the key ceremony's commands (a writer-key
rotation, a host's catch-up, ``cbcm audit acknowledge-restore``) are run as root and write
them too, by replacing a file whole or making a lock file. A file root made there would be
``root:root 0600``, and the services could then neither read nor lock it. So a file opened
here by root takes the owner and group of the directory it lies in (the services' user:
systemd's ``StateDirectory=`` makes it theirs); anyone else's files are theirs already.

The services' user owns that directory, so it could plant a link there where root will
write (an attack review made root hand ``/etc/shadow`` to the services' user that way): a
link is never followed (``O_NOFOLLOW``), and root gives away, truncates or writes only a
regular file with no other name (one link), checked on what it opened, before truncating.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path


def open_beside_keys(path: Path, flags: int) -> int:
    """``os.open(path, flags, 0o600)`` without following a link, the file given to the
    directory's owner when root opens it (and only a regular file of one link)."""
    as_root = os.geteuid() == 0
    truncate = as_root and bool(flags & os.O_TRUNC)
    if truncate:  # truncated once known to be this directory's own file
        flags &= ~os.O_TRUNC
    fd = os.open(path, flags | os.O_NOFOLLOW, 0o600)
    if not as_root:
        return fd
    try:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode) or opened.st_nlink != 1:
            raise OSError(
                errno.EPERM,
                f"{path.name} beside the keys is not a file of its own (another name links "
                "to it, or it is not a regular file): not written; remove it and run again",
            )
        folder = os.stat(path.parent)
        os.fchown(fd, folder.st_uid, folder.st_gid)
        if truncate:
            os.ftruncate(fd, 0)
    except BaseException:
        os.close(fd)
        raise
    return fd
