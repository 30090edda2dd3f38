"""Node packages the tests run (the AsyncAPI parser, the Node consumer example), installed with
``npm ci`` from their committed ``package-lock.json`` into a cache in the user's cache directory
(``$XDG_CACHE_HOME/cbcm/test-node-cache``, by default ``~/.cache/cbcm/test-node-cache``).

The cache is keyed by the hash of ``package.json`` and ``package-lock.json``: a changed lock
gets a fresh install, an unchanged one is installed once per machine (not once per clone or
worktree: the three installs cost about 12 s of CPU and 20 s of wall). The package's own files
(its scripts) are copied in each time, since Node resolves ``import`` from a script's
directory. Node and npm are required: without them the tests fail, never skip.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE_VARIABLE = "CBCM_TEST_NODE_CACHE"
DEFAULT_CACHE = (
    Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cbcm" / "test-node-cache"
)
"""Outside the clone, so that every clone and worktree of the machine shares one install."""

_MANIFESTS = ("package.json", "package-lock.json")


def node_and_npm() -> tuple[str, str]:
    """The ``node`` and ``npm`` executables, or ``AssertionError`` saying what is missing."""
    node, npm = shutil.which("node"), shutil.which("npm")
    missing = [name for name, found in (("node", node), ("npm", npm)) if found is None]
    if node is None or npm is None:
        raise AssertionError(
            f"{' and '.join(missing)} not on PATH: the contract checks run the official "
            "AsyncAPI parser and a Node.js consumer (Node 20 or later; Debian: "
            "apt-get install -y nodejs npm)"
        )
    return node, npm


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def installed(package: Path) -> Path:
    """``package`` (a directory with ``package.json`` and ``package-lock.json``) installed
    with ``npm ci`` in the cache, its other files copied beside; the directory to run in."""
    _, npm = node_and_npm()
    digest = hashlib.sha256()
    for name in _MANIFESTS:
        digest.update((package / name).read_bytes())
    cache = Path(os.environ.get(CACHE_VARIABLE) or DEFAULT_CACHE)
    target = cache / f"{package.name}-{digest.hexdigest()[:16]}"
    with _locked(cache / f"{target.name}.lock"):
        if not (target / "node_modules" / ".package-lock.json").exists():
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
            for name in _MANIFESTS:
                shutil.copy2(package / name, target / name)
            done = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"],
                cwd=target,
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            if done.returncode != 0:
                shutil.rmtree(target, ignore_errors=True)
                raise AssertionError(f"npm ci in {package} failed: {done.stderr[-3000:]}")
        for source in package.iterdir():
            if source.is_file() and source.name not in _MANIFESTS:
                # replaced, not rewritten: another worker may be running the old copy
                staged = target / f".{source.name}.{os.getpid()}"
                shutil.copy2(source, staged)
                staged.replace(target / source.name)
    return target
