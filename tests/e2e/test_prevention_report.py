"""The quarterly report for a demo country-year (issue #22), run as an operator runs it:
``cbcm demo``, the statistics read model built from the store's messages and its due releases
made as the statistics service makes them, then ``cbcm prevention report``; LibreOffice
converts the workbook to PDF.
"""

from __future__ import annotations

import io
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from openpyxl import load_workbook

from projections.base import open_read_model
from projections.stats import StatisticsProjection
from services.bootstrap import complaint_mechanism
from services.relay.translation import to_cloud_event
from services.settings import Settings
from services.statistics.releases import (
    ReleasePolicy,
    ledger_path,
    list_releases,
    open_ledger,
    release_due,
)
from tests.e2e.test_cli import cbcm
from tests.office import pdf_of


def _statistics_read_model(data_dir: Path) -> sqlite3.Connection:
    """The statistics read model of the store, applied in log order from the messages the
    relay would publish (the projector does the same from NATS)."""
    app = complaint_mechanism(Settings(data_dir=data_dir))
    db = open_read_model(data_dir / "stats-test.sqlite3")
    projection = StatisticsProjection()
    try:
        db.execute("BEGIN IMMEDIATE")
        projection.create_tables(db)
        for n in app.recorder.select_notifications(start=1, limit=100_000):
            event = app.mapper.to_domain_event(n)
            projection.apply(db, to_cloud_event(event, source="test", position=n.id))
        db.execute("COMMIT")
    finally:
        app.close()
    return db


def test_the_quarterly_report_of_a_demo_year_opens_in_libreoffice(tmp_path: Path) -> None:
    # given a demo network's year: cases, prevention work, and the releases that are due
    assert cbcm(tmp_path, "demo", "--cases", "40", "--seed", "22").returncode == 0
    db = _statistics_read_model(tmp_path)
    try:
        with open_ledger(ledger_path(tmp_path)) as ledger:
            release_due(db, ledger, ReleasePolicy(), datetime.now(UTC))
            releases = list_releases(ledger)
    finally:
        db.close()
    assert releases, "the demo's closed quarters are released"
    latest = releases[-1]
    assert "-Q" in latest.period, latest.period
    year, quarter = int(latest.period[:4]), int(latest.period[-1])

    # when the coordinator writes the quarterly report of the released quarter
    out = tmp_path / "report.xlsx"
    done = cbcm(
        tmp_path,
        "prevention",
        "report",
        "--year",
        str(year),
        "--quarter",
        str(quarter),
        "--out",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    assert latest.id in done.stdout

    # then it holds the release (its area table, withheld cells as "suppressed"), the
    # prevention parts and the risk map, and LibreOffice opens it
    book = load_workbook(io.BytesIO(out.read_bytes()))
    assert "Statistics release" in book.sheetnames and "Risk map" in book.sheetnames
    released = [c.value for row in book["Statistics release"].iter_rows() for c in row]
    assert "sea_by_area_by_quarter" in released
    compliance = list(book["Training compliance"].iter_rows(values_only=True))
    assert len(compliance) == 1 + 7  # a header and the seven demo agencies
    pdf_of(out)
