"""Anonymised statistics reports: two-way tables of counts, small counts suppressed.

SEA figures count cases assessed as SEA allegations, each incident once: a case marked as a
duplicate of another is left out (its original is counted). Non-sensitive feedback has its
own reports. Each report is a table with row totals, column totals and a grand total, where
every count below the network's threshold, and whatever would let it be computed back, is
published as null with a flag (``projections.stats.suppression``).
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, get_args

from contracts.vocabulary import (
    AllegationSubtype,
    AllegationType,
    CaseStatus,
    Channel,
    ComplaintCategory,
    FeedbackCategory,
    PersonnelCategory,
    Sector,
    VictimCategory,
)
from projections.base import ReadModelDb
from projections.stats.projection import RESERVED_AREA_LABELS, TIME_TO_REPORT_BANDS, quarter_of
from projections.stats.suppression import suppress

TOTAL: Final = "TOTAL"
"""Row and column label of totals in CSV. Upper case, so it never collides with a code
(agency codes and vocabulary values are lower case)."""

UNKNOWN: Final = "unknown"
UNSPECIFIED: Final = "unspecified"
NOT_YET_ASSESSED: Final = "not_yet_assessed"
OTHER_AREA: Final = "other_area"
"""The row of allegations in an area the network does not list (``stats_area``)."""


@dataclass(frozen=True)
class Cell:
    """One published count: ``value`` is ``None`` exactly when ``suppressed``."""

    value: int | None
    suppressed: bool


@dataclass(frozen=True)
class Report:
    """One published two-way table.

    Suppressed values are not held at all (only ``None`` and the flag), so a report can be
    handed to any exporter or publisher without risk of leaking a small count.
    """

    name: str
    description: str
    rows_are: str
    columns_are: str
    rows: tuple[str, ...]
    columns: tuple[str, ...]
    cells: tuple[tuple[Cell, ...], ...]
    row_totals: tuple[Cell, ...]
    column_totals: tuple[Cell, ...]
    total: Cell
    threshold: int


@dataclass(frozen=True)
class _Case:
    month: str
    quarter: str
    channel: str
    category: str | None
    allegation_type: str | None
    subtype: str | None
    child_involved: bool
    implicated_agency: str | None
    personnel_category: str | None
    victim_category: str | None
    time_to_report: str | None
    is_duplicate: bool
    status: str
    area: str = UNKNOWN


@dataclass(frozen=True)
class _Feedback:
    month: str
    quarter: str
    category: str
    sector: str
    concerned_agency: str


def case_status(*, referred: bool, acknowledged: bool, outcome: str | None, closed: bool) -> str:
    """The reporting status of a case (DOMAIN.md), as the domain's ``Case.status`` derives
    it: an outcome wins, then closure, then where the investigation referral stands."""
    if outcome is not None:
        return outcome  # the three outcomes are spelled as the statuses they lead to
    if closed:
        return "closed_other_reasons"
    if referred:
        return "under_investigation" if acknowledged else "referred_pending_investigation"
    return "under_preliminary_assessment"


def _cases(db: ReadModelDb) -> list[_Case]:
    rows = db.execute(
        "SELECT received_month, channel, category, allegation_type, subtype, child_involved, "
        "implicated_agency, personnel_category, victim_category, time_to_report, "
        "is_duplicate, referred, acknowledged, outcome, closed, incident_area FROM stats_case"
    ).fetchall()
    listed = set(area_rows(areas(db))) - {OTHER_AREA, UNKNOWN}
    return [
        _Case(
            month=r[0],
            quarter=quarter_of(r[0]),
            channel=r[1],
            category=r[2],
            allegation_type=r[3],
            subtype=r[4],
            child_involved=bool(r[5]),
            implicated_agency=r[6],
            personnel_category=r[7],
            victim_category=r[8],
            time_to_report=r[9],
            is_duplicate=bool(r[10]),
            status=case_status(
                referred=bool(r[11]), acknowledged=bool(r[12]), outcome=r[13], closed=bool(r[14])
            ),
            area=UNKNOWN if r[15] is None else r[15] if r[15] in listed else OTHER_AREA,
        )
        for r in rows
    ]


def areas(db: ReadModelDb) -> list[str]:
    """The areas the network works in, in order: the rows of the area table."""
    return sorted(r[0] for r in db.execute("SELECT code FROM stats_area"))


def area_rows(listed: Sequence[str]) -> list[str]:
    """The rows of the area table: each listed area once, then ``other_area`` and
    ``unknown`` (a listed code spelled like a label is left out: its cases are other_area)."""
    areas = [a for a in dict.fromkeys(listed) if a.lower() not in RESERVED_AREA_LABELS]
    return [*areas, OTHER_AREA, UNKNOWN]


def _feedback(db: ReadModelDb) -> list[_Feedback]:
    rows = db.execute(
        "SELECT received_month, category, sector, concerned_agency FROM stats_feedback"
    ).fetchall()
    return [_Feedback(r[0], quarter_of(r[0]), r[1], r[2], r[3]) for r in rows]


def _month_span(months: Iterable[str]) -> tuple[str, ...]:
    """Every month from the first to the last given, gaps included: an empty month is a
    fact too, and a fixed shape keeps reports comparable."""
    known = sorted(set(months))
    if not known:
        return ()
    year, month = map(int, known[0].split("-"))
    span: list[str] = []
    while True:
        label = f"{year:04d}-{month:02d}"
        span.append(label)
        if label == known[-1]:
            return tuple(span)
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)


def _quarter_span(months: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(quarter_of(m) for m in months))


def _table(
    name: str,
    *,
    description: str,
    rows_are: str,
    columns_are: str,
    rows: Sequence[str],
    columns: Sequence[str],
    counts: Counter[tuple[str, str]],
    k: int,
) -> Report:
    """A report of ``counts`` keyed by (row, column), suppressed for threshold ``k``."""
    outside = [key for key in counts if key[0] not in rows or key[1] not in columns]
    if outside:
        # A count outside the table's labels would vanish from it; never silently.
        raise ValueError(f"report {name}: counts outside its rows and columns: {outside[:3]}")
    matrix = [[counts[(row, column)] for column in columns] for row in rows]
    published = suppress(matrix, k, columns=len(columns))

    def cell(i: int, j: int) -> Cell:
        return Cell(published.values[i][j], published.suppressed[i][j])

    n_rows, n_cols = len(rows), len(columns)
    return Report(
        name=name,
        description=description,
        rows_are=rows_are,
        columns_are=columns_are,
        rows=tuple(rows),
        columns=tuple(columns),
        cells=tuple(tuple(cell(i, j) for j in range(n_cols)) for i in range(n_rows)),
        row_totals=tuple(cell(i, n_cols) for i in range(n_rows)),
        column_totals=tuple(cell(n_rows, j) for j in range(n_cols)),
        total=cell(n_rows, n_cols),
        threshold=k,
    )


def reports(db: ReadModelDb, *, k: int) -> dict[str, Report]:
    """Every statistics report of the model in ``db``, suppressed for threshold ``k``
    (normally ``projections.stats.threshold(db)``), by report name."""
    cases = _cases(db)
    feedback = _feedback(db)
    months = _month_span([c.month for c in cases] + [f.month for f in feedback])
    quarters = _quarter_span(months)
    incidents = [c for c in cases if not c.is_duplicate]
    # Only cases assessed as SEA allegations enter the SEA figures.
    sea = [c for c in incidents if c.category == "sea_allegation"]
    registered = {r[0] for r in db.execute("SELECT code FROM stats_agency")}
    case_agencies = sorted(registered | {c.implicated_agency for c in sea if c.implicated_agency})
    feedback_agencies = sorted(registered | {f.concerned_agency for f in feedback})

    def by_quarter(
        name: str,
        *,
        description: str,
        rows_are: str,
        rows: Sequence[str],
        of: Callable[[_Case], str],
        among: Sequence[_Case] = sea,
    ) -> Report:
        counts = Counter((of(c), c.quarter) for c in among)
        return _table(
            name,
            description=description,
            rows_are=rows_are,
            columns_are="quarter of receipt",
            rows=rows,
            columns=quarters,
            counts=counts,
            k=k,
        )

    made = [
        by_quarter(
            "complaint_category_by_quarter",
            description="Complaints received, by how they were assessed; duplicates counted once",
            rows_are="assessed category",
            rows=[*get_args(ComplaintCategory), NOT_YET_ASSESSED],
            of=lambda c: c.category or NOT_YET_ASSESSED,
            among=incidents,
        ),
        by_quarter(
            "allegation_type_by_quarter",
            description="SEA allegations by type",
            rows_are="allegation type",
            rows=get_args(AllegationType),
            of=lambda c: c.allegation_type or UNKNOWN,
        ),
        by_quarter(
            "allegation_subtype_by_quarter",
            description="SEA allegations by finer type",
            rows_are="allegation subtype",
            rows=[*get_args(AllegationSubtype), UNSPECIFIED],
            of=lambda c: c.subtype or UNSPECIFIED,
        ),
        by_quarter(
            "personnel_category_by_quarter",
            description="SEA allegations by personnel category of the alleged perpetrator",
            rows_are="personnel category",
            rows=get_args(PersonnelCategory),
            of=lambda c: c.personnel_category or "other",
        ),
        by_quarter(
            "implicated_agency_by_quarter",
            description="SEA allegations by the agency the alleged perpetrator works for",
            rows_are="implicated agency",
            rows=[*case_agencies, UNKNOWN],
            of=lambda c: c.implicated_agency or UNKNOWN,
        ),
        by_quarter(
            "victim_category_by_quarter",
            description="SEA allegations by victim category (sex and age)",
            rows_are="victim category",
            rows=get_args(VictimCategory),
            of=lambda c: c.victim_category or UNKNOWN,
        ),
        by_quarter(
            "child_involved_by_quarter",
            description="SEA allegations involving a child",
            rows_are="child involved",
            rows=["child_involved", "no_child_involved"],
            of=lambda c: "child_involved" if c.child_involved else "no_child_involved",
        ),
        by_quarter(
            "channel_by_quarter",
            description="SEA allegations by the entry point they came through",
            rows_are="channel",
            rows=get_args(Channel),
            of=lambda c: c.channel,
        ),
        by_quarter(
            "status_by_quarter",
            description="SEA allegations by current status",
            rows_are="status",
            rows=get_args(CaseStatus),
            of=lambda c: c.status,
        ),
        by_quarter(
            "time_to_report_by_quarter",
            description="SEA allegations by time from incident to report",
            rows_are="time from incident to report",
            rows=TIME_TO_REPORT_BANDS,
            of=lambda c: c.time_to_report or UNKNOWN,
        ),
        by_quarter(
            "sea_by_area_by_quarter",
            description="SEA allegations by administrative area of the incident",
            rows_are="incident area",
            rows=area_rows(areas(db)),
            of=lambda c: c.area,
        ),
        _table(
            "sea_by_month",
            description="SEA allegations by type and month of receipt",
            rows_are="allegation type",
            columns_are="month of receipt",
            rows=get_args(AllegationType),
            columns=months,
            counts=Counter((c.allegation_type or UNKNOWN, c.month) for c in sea),
            k=k,
        ),
        _table(
            "feedback_by_category_and_sector",
            description="Non-sensitive feedback by type and sector",
            rows_are="feedback type",
            columns_are="sector",
            rows=get_args(FeedbackCategory),
            columns=get_args(Sector),
            counts=Counter((f.category, f.sector) for f in feedback),
            k=k,
        ),
        _table(
            "feedback_by_agency",
            description="Non-sensitive feedback by concerned agency and type",
            rows_are="concerned agency",
            columns_are="feedback type",
            rows=feedback_agencies,
            columns=get_args(FeedbackCategory),
            counts=Counter((f.concerned_agency, f.category) for f in feedback),
            k=k,
        ),
    ]
    return {report.name: report for report in made}


# ----------------------------------------------------------------------------- export


def _cell(cell: Cell) -> dict[str, Any]:
    return {"value": cell.value, "suppressed": cell.suppressed}


def report_document(report: Report) -> dict[str, Any]:
    """One report as a JSON-ready document (what ``cbcm.v1.stats.<report>`` carries)."""
    return {
        "report": report.name,
        "description": report.description,
        "rows_are": report.rows_are,
        "columns_are": report.columns_are,
        "suppression_threshold": report.threshold,
        "rows": list(report.rows),
        "columns": list(report.columns),
        "cells": [[_cell(c) for c in row] for row in report.cells],
        "row_totals": [_cell(c) for c in report.row_totals],
        "column_totals": [_cell(c) for c in report.column_totals],
        "total": _cell(report.total),
    }


def to_json(reports: dict[str, Report]) -> str:
    """All reports as one JSON document (deterministic: reports by name, two-space indent)."""
    documents = {name: report_document(reports[name]) for name in sorted(reports)}
    return json.dumps({"reports": documents}, indent=2, ensure_ascii=False) + "\n"


def to_csv(reports: dict[str, Report]) -> str:
    """All reports as one long CSV: ``report,row,column,value,suppressed``; totals have
    ``TOTAL`` as row or column, a suppressed value is empty with ``suppressed`` true."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["report", "row", "column", "value", "suppressed"])
    for name in sorted(reports):
        report = reports[name]
        rows = [*report.rows, TOTAL]
        columns = [*report.columns, TOTAL]
        grid = [[*report.cells[i], report.row_totals[i]] for i in range(len(report.rows))] + [
            [*report.column_totals, report.total]
        ]
        for i, row in enumerate(rows):
            for j, column in enumerate(columns):
                cell = grid[i][j]
                value = "" if cell.value is None else str(cell.value)
                writer.writerow([name, row, column, value, "true" if cell.suppressed else "false"])
    return out.getvalue()
