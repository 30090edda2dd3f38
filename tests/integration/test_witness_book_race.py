"""A witness's book read before the witness made its tables (issue #12).

``tests/e2e/test_audit_verify.py`` failed on a loaded machine: the witness's SQLite file
exists from the moment it is opened, its tables a moment later, and a reader in between
(``cbcm audit verify``, the test waiting for the witness) got "no such table". A reader must
see "no checkpoints yet"; and a new book now appears with its tables already in it.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.audit import witness
from services.audit.witness import WitnessBook
from services.bootstrap import complaint_mechanism
from services.demo.walk import build_demo_network
from services.settings import Settings

CBCM = str(Path(sys.executable).parent / "cbcm")


def book_without_tables(path: Path) -> Path:
    """The file as a witness leaves it between opening it and making its tables."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.close()
    return path


def test_a_book_read_before_its_tables_exist_holds_no_checkpoints_yet(tmp_path: Path) -> None:
    path = book_without_tables(tmp_path / "witness" / "checkpoints.sqlite3")
    with WitnessBook.open(path, readonly=True) as book:
        assert book.checkpoints() == []
        assert book.checkpoints("some-store") == []
        assert book.checkpoint("some-store", 1) is None
        assert book.stores() == []
        assert book.contradictions() == []
        assert book.last_sequence() == 0
        assert book.count() == (0, 0)
    # and the witness, opening it afterwards, makes its tables in it
    with WitnessBook.open(path) as book:
        assert book.checkpoints() == []
    with WitnessBook.open(path, readonly=True) as book:
        assert book.count() == (0, 0)


def test_audit_verify_reading_a_book_without_tables_says_no_checkpoint(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    app = complaint_mechanism(settings)
    try:
        build_demo_network(app, datetime(2025, 9, 1, tzinfo=UTC))
    finally:
        app.close()
    book = book_without_tables(tmp_path / "witness" / "checkpoints.sqlite3")
    env = {
        **os.environ,
        "CBCM_DATA_DIR": str(settings.data_dir),
        "CBCM_WITNESS_DIR": str(book.parent),
    }
    env.pop("CBCM_EVENT_STORE", None)
    done = subprocess.run(
        [CBCM, "audit", "verify"], check=False, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 5, done.stderr
    assert "no signed checkpoint" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_new_book_appears_with_its_tables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "witness" / "checkpoints.sqlite3"
    seen: list[bool] = []
    make_tables = witness._apply_schema

    def watched(db: sqlite3.Connection) -> None:
        seen.append(path.exists())  # is the book visible while its tables are being made?
        make_tables(db)

    monkeypatch.setattr(witness, "_apply_schema", watched)
    WitnessBook.open(path).close()
    assert seen[0] is False
    with WitnessBook.open(path, readonly=True) as book:
        assert book.count() == (0, 0)
    assert [p.name for p in path.parent.iterdir() if ".tmp" in p.name] == []
