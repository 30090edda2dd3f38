"""The risk map never reveals a suppressed count (issue #22).

Cases with incident areas (in the network's listed areas, outside them, or unknown) go through
the real release machinery of issue #14, protected against the LP attacker; the risk map then
joins each release. Its allegation column must show, for each area, exactly the release's own
row total: the true count where the release shows it, null where the release withholds it,
and no figure that the release did not print (so an attacker holding the risk map holds
nothing the release did not already give, and ``tests/unit/test_statistics_attacker.py``
already attacks the release, area table included).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from uuid import uuid4

from hypothesis import HealthCheck, given, settings

from contracts.actors import ActorRef
from contracts.envelope import CloudEvent
from contracts.network import NetworkServiceProviderRegisteredV1
from contracts.statistics import decode_release
from projections.prevention import PreventionView
from projections.stats import StatisticsProjection
from projections.stats.reports import OTHER_AREA, UNKNOWN, area_rows, areas
from services.statistics.releases import ReleasePolicy, open_ledger, release_due
from tests.statistics_attacker import count, meaning
from tests.statistics_cases import LISTED_AREAS, Case, model, networks, store

NOW = datetime(2026, 10, 20, tzinfo=UTC)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(cases=networks(max_cases=60))
def test_the_risk_map_shows_released_area_counts_only(cases: list[Case], tmp_path: Path) -> None:
    db = model(threshold=3)
    for case in cases:
        case.arrives = 0
        case.duplicate_found = None
    store(db, cases, 0)
    policy = ReleasePolicy(period="quarter", embargo=timedelta(days=15))
    # a new ledger per example: tmp_path is the same for all of them, and an id() is reused
    # once its object is freed (a ledger of an earlier example then held the release)
    ledger = tmp_path / f"ledger-{uuid4().hex}.sqlite"
    with open_ledger(ledger) as led:
        made = release_due(db, led, policy, NOW)
    assert made, "the cases' quarters are closed: a release is due"
    view = PreventionView()
    # no prevention work needed for the join; the view lists the areas the release names
    for version in made:
        release = decode_release(json.dumps(version.document).encode())
        table = release.reports["sea_by_area_by_quarter"]
        assert table.rows == [*LISTED_AREAS, OTHER_AREA, UNKNOWN]
        released = dict(zip(table.rows, table.row_totals, strict=True))
        known = [c.facts(0) for c in cases if c.month in release.release.months]
        for row in view.risk_map(date(2026, 10, 20), release):
            cell = released[row["area"]]
            # the release's cell, as it is: withheld stays withheld
            assert row["allegations_suppressed"] is cell.suppressed
            assert row["released_allegations"] == cell.value
            if not cell.suppressed:
                truth = count(known, meaning("sea_by_area_by_quarter", row["area"], "TOTAL"))
                assert row["released_allegations"] == truth
        shown = {r["area"] for r in view.risk_map(date(2026, 10, 20), release)}
        assert shown == set(table.rows)


def _release(db: sqlite3.Connection, ledger: Path, now: datetime) -> list[str]:
    with open_ledger(ledger) as led:
        return [v.id for v in release_due(db, led, ReleasePolicy(period="quarter"), now)]


def test_a_newly_listed_area_alone_makes_no_new_version_of_a_release(tmp_path: Path) -> None:
    """Attack review of #22 (F1): a focal point recording a training in a new area changed
    the area table's rows, which made a new version of every open release; its suppression,
    drawn afresh for tables that had not changed, gave withheld counts away when set beside
    the first version. A layout change alone now makes no revision; a real one still does."""
    cases = [c for c in _fixed_cases() if c.month.startswith("2026-0") and c.month < "2026-04"]
    db = model(threshold=3)
    store(db, cases, 0)
    ledger = tmp_path / "ledger.sqlite"
    first = _release(db, ledger, datetime(2026, 5, 20, tzinfo=UTC))
    assert first == ["2026-q1-v1"]
    db.execute("INSERT INTO stats_area (code) VALUES ('ZZ01')")
    assert _release(db, ledger, datetime(2026, 6, 25, tzinfo=UTC)) == []
    late = replace(cases[0], id="late-1", arrives=1)
    store(db, [*cases, late], 1)
    assert _release(db, ledger, datetime(2026, 7, 30, tzinfo=UTC)) == ["2026-q1-v2"]


def test_area_codes_spelled_like_the_table_s_labels_are_never_rows(tmp_path: Path) -> None:
    """Attack review of #22 (F2): an area coded ``unknown`` or ``other_area`` listed the label
    twice, the two rows of one meaning broke every release for good."""
    db = model(threshold=3)
    projection = StatisticsProjection()
    message = CloudEvent(
        id="p:1",
        source="test",
        type="org.psea.cbcm.network.service_provider_registered.v1",
        time=datetime(2026, 1, 2, tzinfo=UTC),
        subject="p",
        data=NetworkServiceProviderRegisteredV1(
            network_id=uuid4(),
            version=9,
            actor=ActorRef(user="coord-1", agency="ocha", role="coordinator"),
            code="clinic-9",
            name="Clinic",
            service_types=("medical",),
            areas=("unknown", "OTHER_AREA", "Total", "SO22", "-x"),
        ),
    )
    projection.apply(db, message)
    store(db, [c for c in _fixed_cases() if c.month < "2026-04"], 0)
    assert area_rows(areas(db)) == ["SO22", "SO23", "other_area", "unknown"]
    assert _release(db, tmp_path / "ledger.sqlite", datetime(2026, 5, 20, tzinfo=UTC))


def _fixed_cases() -> list[Case]:
    base = Case(
        id="c0",
        month="2026-02",
        category="sea_allegation",
        allegation_type="sexual_exploitation",
        subtype="unspecified",
        channel="hotline",
        implicated_agency="unicef",
        personnel_category="un_staff",
        victim_category="women",
        child=False,
        time_to_report="0-3_days",
        progress=(0, 0, None, 0),
        arrives=0,
        duplicate_found=None,
        area="SO22",
    )
    areas_ = ["SO22", "SO23", "XX99", None, "unknown"]
    return [replace(base, id=f"c{i}", area=areas_[i % len(areas_)]) for i in range(14)]
