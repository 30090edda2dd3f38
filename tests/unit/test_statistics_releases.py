"""Statistics releases (issue #14): one per closed period after its embargo, numbered and
immutable, revised by a new version when the period's facts change, kept across restarts and
rebuilds, bounded to the policy's window, exported as JSON, CSV and XLSX with HXL."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jsonschema_rs
import pytest
from openpyxl import load_workbook

from contracts.statistics import decode_release, release_json_schema
from domain.vocabulary import AgeBand, AllegationSubtype, Sex, VictimCategory
from projections.stats import reports
from projections.stats.periods import NESTED
from projections.stats.reports import report_document
from services.statistics import exports
from services.statistics.protection import LinkedProtection
from services.statistics.releases import (
    ReleasePolicy,
    due_periods,
    get_release,
    list_releases,
    open_ledger,
    release_due,
    unpublished,
)
from tests.statistics_cases import PROGRESS, Case, model, store

POLICY = ReleasePolicy(period="quarter", embargo=timedelta(days=30))


def _case(i: int, month: str, **changes: object) -> Case:
    case = Case(
        id=f"c{i}",
        month=month,
        category="sea_allegation",
        allegation_type="sexual_exploitation" if i % 3 else "sexual_abuse",
        subtype="unspecified",
        channel="hotline" if i % 4 else "sms_messaging",
        implicated_agency="unhcr" if i % 2 else "wfp",
        personnel_category="un_staff",
        victim_category="women",
        child=False,
        time_to_report="0-3_days",
        progress=PROGRESS[i % len(PROGRESS)],
        arrives=0,
        duplicate_found=None,
    )
    return replace(case, **changes)  # type: ignore[arg-type]


CASES = [_case(i, ["2026-01", "2026-02", "2026-03", "2026-04"][i % 4]) for i in range(40)]


def _released(db: sqlite3.Connection, ledger: Path, now: datetime) -> list[str]:
    with open_ledger(ledger) as led:
        return [v.id for v in release_due(db, led, POLICY, now)]


def test_a_period_is_released_once_closed_and_past_its_embargo(tmp_path: Path) -> None:
    db = model(5)
    store(db, CASES, 0)
    ledger = tmp_path / "releases.sqlite"
    # the first quarter closed on 1 April; its embargo runs 30 days
    assert _released(db, ledger, datetime(2026, 4, 30, tzinfo=UTC)) == []
    assert _released(db, ledger, datetime(2026, 5, 2, tzinfo=UTC)) == ["2026-q1-v1"]
    # the second quarter is still open: nothing more
    assert _released(db, ledger, datetime(2026, 6, 30, tzinfo=UTC)) == []
    with open_ledger(ledger, readonly=True) as led:
        release = get_release(led, "2026-q1")
    assert release is not None
    meta = release.document["release"]
    assert meta["period"] == "2026-Q1" and meta["version"] == 1 and meta["supersedes"] is None
    assert meta["months"] == ["2026-01", "2026-02", "2026-03"]
    assert meta["suppression_threshold"] == 5
    assert meta["protection"]["upper"] == meta["protection"]["lower"] == 5
    # bounded: no report has more columns than the period has months
    by_period = [r for n, r in release.document["reports"].items() if not n.startswith("feedback")]
    assert all(len(r["columns"]) <= 3 for r in by_period)
    assert release.document["reports"]["sea_by_month"]["columns"] == meta["months"]


def test_the_same_facts_make_nothing_new_after_a_restart_or_a_rebuild(tmp_path: Path) -> None:
    db = model(5)
    store(db, CASES, 0)
    ledger = tmp_path / "releases.sqlite"
    now = datetime(2026, 8, 15, tzinfo=UTC)
    first = _released(db, ledger, now)
    assert first == ["2026-q1-v1", "2026-q2-v1"]
    with open_ledger(ledger, readonly=True) as led:
        before = [(v.id, json.dumps(v.document)) for v in list_releases(led)]
        payloads = unpublished(led)
    # a restart (a new connection), later, and a rebuilt read model with the same facts
    rebuilt = model(5)
    store(rebuilt, list(reversed(CASES)), 0)
    assert _released(rebuilt, ledger, now + timedelta(days=20)) == []
    with open_ledger(ledger, readonly=True) as led:
        assert [(v.id, json.dumps(v.document)) for v in list_releases(led)] == before
        # what a restarted publisher would publish is the same bytes
        assert unpublished(led) == payloads


def test_a_late_case_makes_a_revision_and_leaves_the_first_version_as_it_was(
    tmp_path: Path,
) -> None:
    db = model(5)
    cases = [*CASES, _case(99, "2026-02", arrives=1, channel="email")]
    store(db, cases, 0)
    ledger = tmp_path / "releases.sqlite"
    assert _released(db, ledger, datetime(2026, 5, 2, tzinfo=UTC)) == ["2026-q1-v1"]
    with open_ledger(ledger, readonly=True) as led:
        first = get_release(led, "2026-q1-v1")
    store(db, cases, 1)  # the late complaint is recorded
    # revisions gather late facts: none within a month of the last version
    assert _released(db, ledger, datetime(2026, 5, 3, tzinfo=UTC)) == []
    assert _released(db, ledger, datetime(2026, 6, 2, tzinfo=UTC)) == ["2026-q1-v2"]
    with open_ledger(ledger, readonly=True) as led:
        assert get_release(led, "2026-q1-v1") == first
        latest = get_release(led, "2026-q1")
    assert latest is not None and latest.id == "2026-q1-v2"
    assert latest.document["release"]["supersedes"] == "2026-q1-v1"
    # the email channel's count went from 0 to 1: never shown as such
    channel = latest.document["reports"]["channel_by_quarter"]
    email = channel["rows"].index("email")
    assert channel["cells"][email][0] == {"value": None, "suppressed": True}


def test_a_duplicate_found_late_makes_a_revision(tmp_path: Path) -> None:
    db = model(5)
    cases = [*CASES[:-1], replace(CASES[-1], duplicate_found=1)]
    store(db, cases, 0)
    ledger = tmp_path / "releases.sqlite"
    _released(db, ledger, datetime(2026, 8, 15, tzinfo=UTC))
    store(db, cases, 1)
    assert _released(db, ledger, datetime(2026, 9, 15, tzinfo=UTC)) == ["2026-q2-v2"]


def test_a_status_moving_on_alone_makes_no_revision(tmp_path: Path) -> None:
    db = model(5)
    store(db, CASES, 0)
    ledger = tmp_path / "releases.sqlite"
    _released(db, ledger, datetime(2026, 5, 2, tzinfo=UTC))
    db.execute("UPDATE stats_case SET referred = 1, acknowledged = 1, outcome = 'substantiated'")
    assert _released(db, ledger, datetime(2026, 9, 2, tzinfo=UTC)) == ["2026-q2-v1"]


def test_a_release_is_never_changed_nor_deleted(tmp_path: Path) -> None:
    db = model(5)
    store(db, CASES, 0)
    ledger = tmp_path / "releases.sqlite"
    _released(db, ledger, datetime(2026, 5, 2, tzinfo=UTC))
    with open_ledger(ledger) as led:
        with pytest.raises(sqlite3.IntegrityError, match="never changed"):
            led.execute("UPDATE stats_release SET document = '{}'")
        with pytest.raises(sqlite3.IntegrityError, match="never deleted"):
            led.execute("DELETE FROM stats_release")


def test_only_periods_within_the_window_are_released() -> None:
    policy = ReleasePolicy(period="quarter", embargo=timedelta(days=30), window_months=12)
    due = due_periods("2019-01", datetime(2026, 8, 15, tzinfo=UTC), policy)
    assert due == ["2025-Q3", "2025-Q4", "2026-Q1", "2026-Q2"]
    monthly = ReleasePolicy(period="month", embargo=timedelta(days=0), window_months=2)
    assert due_periods("2026-01", datetime(2026, 8, 15, tzinfo=UTC), monthly) == [
        "2026-06",
        "2026-07",
    ]


def _a_release(tmp_path: Path) -> dict[str, object]:
    db = model(5)
    store(db, CASES, 0)
    ledger = tmp_path / "releases.sqlite"
    _released(db, ledger, datetime(2026, 5, 2, tzinfo=UTC))
    with open_ledger(ledger, readonly=True) as led:
        found = get_release(led, "2026-q1-v1")
    assert found is not None
    return found.document


def test_a_release_keeps_the_shape_of_the_json_export_and_fits_its_schema(
    tmp_path: Path,
) -> None:
    document = _a_release(tmp_path)
    db = model(5)
    store(db, CASES, 0)
    live = {name: report_document(r) for name, r in reports(db, k=5).items()}
    assert set(document) == {"release", "reports"}
    assert set(document["reports"]) == set(live)  # type: ignore[arg-type]
    for name, report in document["reports"].items():  # type: ignore[attr-defined]
        assert set(report) == set(live[name])
    raw = exports.to_json(document).encode()  # type: ignore[arg-type]
    assert decode_release(raw).release.id == "2026-q1-v1"
    jsonschema_rs.validator_for(release_json_schema()).validate(json.loads(raw))


def test_csv_and_xlsx_carry_an_hxl_hashtag_row(tmp_path: Path) -> None:
    document = _a_release(tmp_path)
    rows = list(csv.reader(io.StringIO(exports.to_csv(document))))  # type: ignore[arg-type]
    assert rows[0][:4] == ["release", "period", "version", "report"]
    assert all(tag.startswith("#") for tag in rows[1])
    values = {(r[3], r[4], r[5]): r[6] for r in rows[2:]}
    assert values[("sea_by_month", "TOTAL", "TOTAL")] != ""
    withheld = [r for r in rows[2:] if r[7] == "true"]
    assert withheld and all(r[6] == "" for r in withheld)
    book = load_workbook(io.BytesIO(exports.to_xlsx(document)))  # type: ignore[arg-type]
    data = list(book["data"].iter_rows(values_only=True))
    assert list(data[1]) == rows[1]
    assert len(data) == len(rows)
    assert "sea_by_month" in book.sheetnames and "release" in book.sheetnames


def test_when_no_protection_is_found_the_release_holds_its_reports_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a solver that finds no deviation (it should always find one; a solver may fail)
    monkeypatch.setattr(LinkedProtection, "_deviation", lambda *_args, **_kwargs: None)
    document = _a_release(tmp_path)
    # then every non-zero count is withheld, and the release says which reports and why
    held = document["release"]["held_back"]  # type: ignore[index]
    assert {h["report"] for h in held} == set(document["reports"])  # type: ignore[arg-type]
    assert all("withheld" in h["reason"] for h in held)
    for report in document["reports"].values():  # type: ignore[attr-defined]
        grid = [*report["cells"], report["row_totals"], report["column_totals"], [report["total"]]]
        assert all(c["value"] in (None, 0) for row in grid for c in row)


def test_a_changed_period_never_releases_months_again_under_another_period(
    tmp_path: Path,
) -> None:
    """Releases of different periods never overlap: only versions of one release do, and
    those are protected together."""
    db = model(5)
    store(db, CASES, 0)
    ledger = tmp_path / "releases.sqlite"
    monthly = ReleasePolicy(period="month", embargo=timedelta(days=0))
    with open_ledger(ledger) as led:
        made = [v.id for v in release_due(db, led, monthly, datetime(2026, 2, 15, tzinfo=UTC))]
        assert made == ["2026-01-v1"]
        # the network moves to quarters: the first quarter holds January, so it is skipped
        later = release_due(db, led, POLICY, datetime(2026, 8, 15, tzinfo=UTC))
    assert [v.id for v in later] == ["2026-q2-v1"]


def test_the_nesting_rules_the_protection_knows_are_the_domains() -> None:
    """An attacker knows the domain's rules (subtype within type; a child victim or sexual
    activity with a child means a child is involved): the protection must know the same."""
    subtypes = {
        whole[1]: set(values) for whole, attribute, values in NESTED if attribute == "subtype"
    }
    for subtype in AllegationSubtype:
        assert subtype.value in subtypes[subtype.allegation_type.value]
    children = {
        VictimCategory.of(sex, band).value for sex in Sex for band in AgeBand if band.is_child
    }
    child_rules = [set(v) for w, a, v in NESTED if w == ("child_involved", "child_involved")]
    assert children in child_rules
    assert {"sexual_activity_with_child"} in child_rules
