"""``cbcm stats release list|show|export`` (issue #14), run as a user runs them."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path

from openpyxl import load_workbook

from services.statistics.releases import ledger_path, open_ledger, release_due
from tests.e2e.test_cli import cbcm
from tests.statistics_cases import model, store
from tests.unit.test_statistics_releases import CASES, POLICY


def test_no_release_yet_is_said_with_exit_3(tmp_path: Path) -> None:
    done = cbcm(tmp_path, "stats", "release", "list")
    assert done.returncode == 3
    assert "no statistics releases" in done.stderr


def test_releases_are_listed_shown_and_exported(tmp_path: Path) -> None:
    # given the releases of two closed quarters, as the statistics service made them
    db = model(5)
    store(db, CASES, 0)
    with open_ledger(ledger_path(tmp_path)) as ledger:
        release_due(db, ledger, POLICY, datetime(2026, 8, 15, tzinfo=UTC))
    listed = cbcm(tmp_path, "stats", "release", "list")
    assert listed.returncode == 0, listed.stderr
    assert [line.split("\t")[0] for line in listed.stdout.splitlines()] == [
        "2026-q1-v1",
        "2026-q2-v1",
    ]
    shown = cbcm(tmp_path, "stats", "release", "show", "2026-Q1")
    assert shown.returncode == 0, shown.stderr
    document = json.loads(shown.stdout)  # nothing but the JSON on standard output
    assert document["release"]["id"] == "2026-q1-v1"
    assert "sea_by_month" in document["reports"]
    as_csv = cbcm(tmp_path, "stats", "release", "export", "2026-q2-v1", "--format", "csv")
    rows = list(csv.reader(io.StringIO(as_csv.stdout)))
    assert rows[1][0] == "#meta+id" and {r[0] for r in rows[2:]} == {"2026-q2-v1"}
    out = tmp_path / "q2.xlsx"
    as_xlsx = cbcm(
        tmp_path, "stats", "release", "export", "2026-q2", "--format", "xlsx", "--out", str(out)
    )
    assert as_xlsx.returncode == 0, as_xlsx.stderr
    assert load_workbook(out)["data"]["A2"].value == "#meta+id"
    missing = cbcm(tmp_path, "stats", "release", "show", "2031-q1-v1")
    assert missing.returncode == 1
    assert "no statistics release" in missing.stderr
