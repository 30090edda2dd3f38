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
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, settings

from contracts.statistics import decode_release
from projections.prevention import PreventionView
from projections.stats.reports import OTHER_AREA, UNKNOWN
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
    ledger = tmp_path / f"ledger-{id(cases)}.sqlite"
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
