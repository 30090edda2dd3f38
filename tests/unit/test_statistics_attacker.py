"""The attacker is a test (issue #14): releases hold against linear programming over
everything ever published, and against differencing of consecutive versions; the live
reports, protected table by table, do not.

The attacker (``tests.statistics_attacker``) is written apart from the protector: it reads
the published documents only and writes its own equations from a hand-made table of what
each report means.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from projections.stats import reports
from projections.stats.reports import report_document
from services.statistics.releases import (
    ReleasePolicy,
    list_releases,
    open_ledger,
    release_due,
    unpublished,
)
from tests.statistics_attacker import (
    Position,
    attack,
    attack_differences,
    count,
    meaning,
)
from tests.statistics_cases import AGENCIES, PROGRESS, Case, model, networks, store

RUNS = (
    datetime(2026, 8, 20, tzinfo=UTC),
    datetime(2026, 9, 20, tzinfo=UTC),
    datetime(2026, 10, 20, tzinfo=UTC),
)


def _truth(cases: Sequence[Case], run: int, months: Sequence[str]) -> Callable[[Position], int]:
    known = [c.facts(run) for c in cases if c.arrives <= run and c.month in months]

    def truth(position: Position) -> int:
        return count(known, meaning(position.report, position.row, position.column))

    return truth


def _release_all(
    cases: Sequence[Case], ledger: Path, policy: ReleasePolicy, threshold: int
) -> list[tuple[int, dict[str, Any]]]:
    """Run the releases as the statistics service would at each of ``RUNS``; every version
    made, with the run it was made at, as published (the stored payload, bytes for bytes)."""
    db = model(threshold)
    made: list[tuple[int, dict[str, Any]]] = []
    with open_ledger(ledger) as led:
        for run, now in enumerate(RUNS):
            store(db, cases, run)
            for version in release_due(db, led, policy, now):
                made.append((run, version.document))
        payloads = {json.loads(p)["release"]["id"]: json.loads(p) for _, _, p in unpublished(led)}
        assert len(payloads) == len(made) == len(list_releases(led))
        for _, document in made:
            assert payloads[document["release"]["id"]] == document
    # the attacker holds what goes out on NATS: the stored payloads, as the publisher sends them
    return [(run, payloads[document["release"]["id"]]) for run, document in made]


def _check_releases(cases: list[Case], period: str, threshold: int, tmp: Path) -> int:
    policy = ReleasePolicy(period=period, embargo=timedelta(days=15))  # type: ignore[arg-type]
    made = _release_all(cases, tmp / f"ledger-{period}-{threshold}.sqlite", policy, threshold)
    by_period: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for run, document in made:
        by_period.setdefault(document["release"]["period"], []).append((run, document))
    attacked = 0
    for versions in by_period.values():
        months = versions[0][1]["release"]["months"]
        documents = [d for _, d in versions]
        truths = [_truth(cases, run, months) for run, _ in versions]
        findings = attack(
            documents,
            lambda p, truths=truths: truths[p.document](p),
            upper=threshold,
            lower=threshold,
        )
        assert not findings.exact and not findings.too_narrow, (str(findings), findings)
        attacked += findings.withheld
        # every pair of versions, not only consecutive ones: v1 against v3 too
        for (run0, before), (run1, after) in itertools.combinations(versions, 2):
            differences = attack_differences(
                before,
                after,
                _truth(cases, run0, months),
                _truth(cases, run1, months),
                threshold=threshold,
                upper=threshold,
                lower=threshold,
            )
            assert not differences.exact and not differences.too_narrow, (
                str(differences),
                differences,
            )
    return attacked


_SETTINGS = settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@_SETTINGS
@given(
    networks(),
    st.sampled_from(["month", "quarter"]),
    st.sampled_from([3, 5]),
)
def test_no_withheld_value_of_any_release_falls_to_the_lp_attacker(
    tmp_path: Path, cases: list[Case], period: str, threshold: int
) -> None:
    """Random small networks (5 to 80 cases, skewed categories, several months, late cases,
    duplicates found late): every withheld value of every release and revision keeps an
    interval of at least the protection level against an attacker holding every version, and
    no change between consecutive versions below the threshold can be read."""
    _check_releases(cases, period, threshold, tmp_path / uuid4().hex)


@pytest.mark.soak
@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(networks(), st.sampled_from(["month", "quarter", "year"]), st.integers(2, 6))
def test_a_long_run_of_releases_never_falls_to_the_lp_attacker(
    tmp_path: Path, cases: list[Case], period: str, threshold: int
) -> None:
    _check_releases(cases, period, threshold, tmp_path / uuid4().hex)


def _live(cases: Sequence[Case], threshold: int, run: int) -> dict[str, Any]:
    """The live reports (per-table protection, every month and quarter so far), as
    ``cbcm stats export --format json`` and GET /v1/stats give them to the coordinator."""
    db = model(threshold)
    store(db, cases, run)
    live = reports(db, k=threshold)
    return {"reports": {name: report_document(r) for name, r in live.items()}}


def _fixed_network() -> list[Case]:
    """A small network of one half-year, by hand: 36 cases, no late ones."""
    cases = []
    plan = [
        ("2026-01", "sexual_exploitation", "hotline", "women"),
        ("2026-02", "sexual_abuse", "sms_messaging", "girls"),
        ("2026-03", "sexual_exploitation", "hotline", "women"),
        ("2026-04", "other", "in_person", "women"),
        ("2026-05", "sexual_exploitation", "hotline", "boys"),
        ("2026-06", "sexual_exploitation", "hotline", "women"),
    ]
    for i in range(36):
        month, kind, channel, victim = plan[i % 6] if i % 5 else plan[(i * 7) % 6]
        cases.append(
            Case(
                id=f"c{i}",
                month=month,
                category="sea_allegation" if i % 4 else "other_sensitive",
                allegation_type=kind if i % 9 else "sexual_abuse",
                subtype="unspecified",
                channel=channel,
                implicated_agency=AGENCIES[i % 3],
                personnel_category="un_staff",
                victim_category=victim,
                child=victim in ("girls", "boys"),
                time_to_report="0-3_days",
                progress=PROGRESS[i % len(PROGRESS)],
                arrives=0,
                duplicate_found=None,
            )
        )
    return cases


def test_the_live_reports_protected_table_by_table_fall_to_the_same_attacker() -> None:
    """Why releases exist: the reports as every reader got them before issue #14 (now the
    coordinator's live view) give withheld values back to the same attacker, and one more
    case between two publications gives all its attributes away."""
    cases = _fixed_network()
    threshold = 5
    live = _live(cases, threshold, 0)
    months = sorted({c.month for c in cases})
    findings = attack([live], _truth(cases, 0, months), upper=threshold, lower=threshold)
    print(f"live reports, per-table protection: {findings}")
    assert findings.exact or findings.too_narrow

    late = Case(**{**cases[1].__dict__, "id": "late", "arrives": 1, "channel": "email"})
    with_late = [*cases, late]
    after = _live(with_late, threshold, 1)
    differences = attack_differences(
        live,
        after,
        _truth(cases, 0, months),
        _truth(with_late, 1, months),
        threshold=threshold,
        upper=threshold,
        lower=threshold,
    )
    print(f"one late case between two live publications: {differences}")
    assert differences.exact
