"""Issue #14: protecting one statistics release of a country-year.

About 5,000 cases over 12 months (``CBCM_BENCH_RELEASE_CASES``; 1,500 with ``--quick``), a
yearly release policy, and two earlier versions of the release (late cases and duplicates
found late after each): the time of making the third version, every report protected
together with the two before it, target under 10 s. Baseline, same run, same tables: the
per-table suppression the live reports use (``projections.stats.suppression``), which is
what releases replace. The information cost of the guarantee is the share of values
withheld, linked protection against per-table protection on the same data.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from projections.stats.periods import period_tables
from projections.stats.suppression import suppress
from services.statistics.releases import ReleasePolicy, get_release, open_ledger, release_due
from tests.bench.results import Figure, Target, quick, record
from tests.statistics_cases import (
    BANDS,
    CHANNELS,
    PERSONNEL,
    PROGRESS,
    SKEWED_CATEGORY,
    SKEWED_TYPE,
    SUBTYPES,
    VICTIMS,
    Case,
    model,
    store,
)

pytestmark = pytest.mark.bench

BENCH = "statistics release (#14)"
AGENCIES = [f"agency{i:02d}" for i in range(12)]
POLICY = ReleasePolicy(period="year", embargo=timedelta(days=30))
THRESHOLD = 5


def _cases(n: int, rng: random.Random) -> list[Case]:
    months = [f"2025-{m:02d}" for m in range(1, 13)]
    cases = []
    for i in range(n):
        cases.append(
            Case(
                id=f"case-{i}",
                month=rng.choice(months),
                category=rng.choice(SKEWED_CATEGORY),
                allegation_type=rng.choice(SKEWED_TYPE),
                subtype=rng.choice(SUBTYPES),
                channel=rng.choice(CHANNELS),
                implicated_agency=rng.choices(AGENCIES, weights=range(12, 0, -1))[0],
                personnel_category=rng.choice(PERSONNEL),
                victim_category=rng.choice(VICTIMS),
                child=rng.random() < 0.3,
                time_to_report=rng.choice(BANDS),
                progress=rng.choice(PROGRESS),
                arrives=0,
                duplicate_found=None,
            )
        )
    # two rounds of late facts: 2% late cases, 1% duplicates found, after each release
    for run in (1, 2):
        for i in rng.sample(range(n), n // 50):
            cases[i] = replace(cases[i], arrives=run)
        for i in rng.sample(range(n), n // 100):
            if cases[i].arrives == 0 and cases[i].duplicate_found is None:
                cases[i] = replace(cases[i], duplicate_found=run)
    return cases


def _cells(document: dict[str, object]) -> tuple[int, int]:
    withheld = total = 0
    for report in document["reports"].values():  # type: ignore[attr-defined]
        grid = [*report["cells"], [*report["column_totals"], report["total"]]]
        values = [c for row in grid for c in row] + list(report["row_totals"])
        total += len(values)
        withheld += sum(1 for c in values if c["suppressed"])
    return withheld, total


def test_protecting_a_country_year_release(tmp_path: Path) -> None:
    n = int(os.environ.get("CBCM_BENCH_RELEASE_CASES", "1500" if quick() else "5000"))
    cases = _cases(n, random.Random(14))
    db = model(THRESHOLD)
    for agency in AGENCIES:
        db.execute("INSERT OR IGNORE INTO stats_agency (code) VALUES (?)", (agency,))
    now = datetime(2026, 3, 1, tzinfo=UTC)
    made: list[tuple[str, float]] = []
    with open_ledger(tmp_path / "releases.sqlite") as ledger:
        for run in (0, 1, 2):
            store(db, cases, run)
            started = time.perf_counter()
            versions = release_due(db, ledger, POLICY, now + timedelta(days=31 * run))
            made.append((versions[0].id, time.perf_counter() - started))
        last = get_release(ledger, made[-1][0])
        first = get_release(ledger, made[0][0])
    assert first is not None
    first_withheld, _ = _cells(first.document)
    assert [m[0] for m in made] == ["2025-v1", "2025-v2", "2025-v3"]
    assert last is not None
    linked_withheld, linked_total = _cells(last.document)
    # the baseline: the same tables, each protected on its own (as the live reports are)
    tables = period_tables(db, "2025")
    started = time.perf_counter()
    per_table_withheld = per_table_total = 0
    for table in tables:
        protected = suppress([list(r) for r in table.counts], THRESHOLD, len(table.columns))
        per_table_withheld += sum(sum(row) for row in protected.suppressed)
        per_table_total += sum(len(row) for row in protected.suppressed)
    per_table_seconds = time.perf_counter() - started
    assert per_table_total == linked_total
    seconds = made[-1][1]
    linked_share = linked_withheld / linked_total
    per_table_share = per_table_withheld / per_table_total
    print(
        f"\n{n} cases, 12 months, {len(tables)} reports, {linked_total} values per version:"
        f"\n  versions made in {', '.join(f'{s:.2f} s' for _, s in made)} (v3 with v1, v2)"
        f"\n  per-table suppression of the same tables: {per_table_seconds:.3f} s"
        f"\n  withheld in v1 (no revision yet): {first_withheld}"
        f" ({first_withheld / linked_total:.1%})"
        f"\n  withheld in v3: linked {linked_withheld} ({linked_share:.1%}), per table"
        f" {per_table_withheld} ({per_table_share:.1%}); held back:"
        f" {last.document['release']['held_back'] or 'none'}"
    )
    record(
        Figure(
            BENCH,
            "s to protect v3 of a year (with v1, v2)",
            "-",
            seconds,
            "s",
            baseline=per_table_seconds,
            baseline_name="per-table suppression of the same tables (live reports)",
            target=Target("value", "<", 10.0),
            better="lower",
        )
    )
    record(
        Figure(
            BENCH,
            "% values withheld in v1 (linked)",
            "-",
            100 * first_withheld / linked_total,
            "%",
            baseline=100 * per_table_share,
            baseline_name="% withheld by per-table suppression, same data",
            better="lower",
        )
    )
    record(
        Figure(
            BENCH,
            "% values withheld in v3 (linked)",
            "-",
            100 * linked_share,
            "%",
            baseline=100 * per_table_share,
            baseline_name="% withheld by per-table suppression, same data",
            better="lower",
        )
    )
