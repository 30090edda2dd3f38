"""Write the bytecode that `make test`'s workers read, before they start.

Each pytest-xdist worker imports every module at collection; without bytecode on disk each
compiles them again, and rewrites the asserts of every test module again (about 7 s of CPU
per worker on a fresh clone, the plain compile about 4 s). This writes both once: the
modules' bytecode (``compileall``, timestamped as Python checks it) and pytest's rewritten
test modules (``conftest.py`` and ``test_*.py``: what pytest itself writes in
``__pycache__``, a pyc checked against the source's hash, so a stale or foreign one is only
rewritten again). It is a cache: pytest works the same without it, and if pytest's private
rewriting functions ever move, only the test modules are left for the workers to rewrite.
"""

from __future__ import annotations

import compileall
import sys
from pathlib import Path
from types import SimpleNamespace

PACKAGES = ("domain", "contracts", "projections", "services", "tests")


def main() -> int:
    root = Path(__file__).resolve().parents[2]
    ok = all(compileall.compile_dir(root / name, quiet=1, workers=0) for name in PACKAGES)
    try:
        from _pytest.assertion.rewrite import (  # noqa: PLC0415
            PYC_TAIL,
            _read_pyc,
            _rewrite_test,
            _write_pyc,
        )
    except ImportError:
        return 0 if ok else 1
    state = SimpleNamespace(trace=lambda _message: None)  # all _write_pyc uses
    tests = root / "tests"
    for fn in [*tests.rglob("conftest.py"), *tests.rglob("test_*.py")]:
        if "node_modules" in fn.parts:
            continue
        pyc = fn.parent / "__pycache__" / (fn.name[:-3] + PYC_TAIL)
        if _read_pyc(fn, pyc) is not None:
            continue
        pyc.parent.mkdir(exist_ok=True)
        source_hash, co = _rewrite_test(fn, None)  # type: ignore[arg-type]
        _write_pyc(state, co, source_hash, pyc)  # type: ignore[arg-type]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
