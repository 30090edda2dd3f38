"""Files kept beside the keys, in the erasure ledger's directory (``CBCM_ERASURE_LEDGER_DIR``,
``/var/lib/cbcm/keys`` under systemd): the erasure ledger, the high-water mark, the start seal
and their lock files (ADR 23, ADR 26).

The services write them as their own user; the key ceremony's commands (a writer-key
rotation, a host's catch-up, ``cbcm audit acknowledge-restore``) are run as root and write
them too, by replacing a file whole or making a lock file. A file root made there would be
``root:root 0600``, and the services could then neither read nor lock it. So a file opened
here by root takes the owner and group of the directory it lies in (the services' user:
systemd's ``StateDirectory=`` makes it theirs); anyone else's files are theirs already.
"""

from __future__ import annotations

import os
from pathlib import Path


def open_beside_keys(path: Path, flags: int) -> int:
    """``os.open(path, flags, 0o600)``, the file given to the directory's owner when root
    opens it."""
    fd = os.open(path, flags, 0o600)
    if os.geteuid() == 0:
        try:
            folder = os.stat(path.parent)
            os.fchown(fd, folder.st_uid, folder.st_gid)
        except BaseException:
            os.close(fd)
            raise
    return fd
