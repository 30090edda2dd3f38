"""The tables of one closed reporting period, unsuppressed, with what each count means.

A statistics release (issue #14) covers one period: a month or a quarter. Its tables are the
reports of ``projections.stats.reports`` restricted to the cases and feedback received in that
period, so a table never has more columns than the period has months.

Every count is returned with its *meaning*: the set of facts that define the cases it counts
(the population, and one value per attribute that the count fixes). Two counts with the same
meaning are the same number, whichever table shows them (the SEA row of the complaint-category
table and the grand total of every SEA table, a row of ``sea_by_month`` and the same row of
``allegation_type_by_quarter``, ...). The protection of a release (``services.statistics``)
derives every equation that links its tables from these meanings, so no link is forgotten
because it was not written down by hand.

Nothing here is suppressed: these tables are for the protection only, never published as
they are.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, get_args

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
from projections.stats.projection import TIME_TO_REPORT_BANDS, quarter_of
from projections.stats.reports import (
    NOT_YET_ASSESSED,
    UNKNOWN,
    UNSPECIFIED,
    _Case,
    _cases,
    _Feedback,
    _feedback,
    area_rows,
    areas,
)

Fact = tuple[str, str]
"""One defining fact of a count: (attribute, value)."""
Meaning = frozenset[Fact]
"""The facts that define the cases (or feedback items) a count counts."""

MONTH: Final = "month"
"""The attribute of the month of receipt."""
QUARTER: Final = "quarter"
"""The attribute of the quarter of receipt (its months add up to it)."""
POPULATION: Final = "population"
INCIDENTS: Final = "incidents"
FEEDBACK: Final = "feedback"
SEA: Final = frozenset({(POPULATION, INCIDENTS), ("category", "sea_allegation")})
"""The meaning shared by every SEA count: incidents (duplicates left out) assessed as SEA."""


_EXPLOITATION: Final = ("transactional_sex", "exploitative_relationship", "solicitation")
_ABUSE: Final = ("rape", "sexual_assault", "sexual_activity_with_child")
NESTED: Final = (
    (("allegation_type", "sexual_exploitation"), "subtype", _EXPLOITATION),
    (("allegation_type", "sexual_abuse"), "subtype", _ABUSE),
    (("child_involved", "child_involved"), "victim_category", ("girls", "boys", "unknown_child")),
    (("child_involved", "child_involved"), "subtype", ("sexual_activity_with_child",)),
)
"""Rules of the domain the counts obey, as (whole, attribute, parts): the count with the fact
``whole`` is at least the sum of the counts with each part value of ``attribute`` (the rest of
their meaning equal). A subtype belongs to one allegation type; a child victim, or sexual
activity with a child, means a child is involved (``domain.case.Allegation.check``). An
attacker who knows the rules can use them; so does the protection."""


@dataclass(frozen=True)
class PeriodTable:
    """One two-way table of a period with its totals, unsuppressed."""

    name: str
    description: str
    rows_are: str
    columns_are: str
    row_attribute: str
    column_attribute: str
    base: Meaning
    rows: tuple[str, ...]
    columns: tuple[str, ...]
    counts: tuple[tuple[int, ...], ...]

    def extended(self) -> list[list[int]]:
        """Cells with each row's total last, then the column totals and the grand total."""
        rows = [[*row, sum(row)] for row in self.counts]
        width = len(self.columns) + 1
        return [*rows, [sum(r[j] for r in rows) for j in range(width)]]

    def meaning(self, i: int, j: int) -> Meaning:
        """What the value at ``(i, j)`` of the extended table counts."""
        facts = set(self.base)
        if i < len(self.rows):
            facts.add((self.row_attribute, self.rows[i]))
        if j < len(self.columns):
            facts.add((self.column_attribute, self.columns[j]))
        return frozenset(facts)


def months_of(period: str) -> tuple[str, ...]:
    """The months of a period: ``YYYY-MM`` itself, the three of ``YYYY-Qn``, the twelve of
    ``YYYY``."""
    if len(period) == 4:
        return tuple(f"{int(period):04d}-{m:02d}" for m in range(1, 13))
    if "-Q" in period:
        year, quarter = period.split("-Q")
        first = (int(quarter) - 1) * 3 + 1
        return tuple(f"{int(year):04d}-{m:02d}" for m in range(first, first + 3))
    return (period,)


def period_of(month: str, kind: str) -> str:
    """The period of kind ``month``, ``quarter`` or ``year`` a ``YYYY-MM`` month belongs to."""
    if kind == "year":
        return month[:4]
    return quarter_of(month) if kind == "quarter" else month


def _columns(period: str) -> tuple[str, tuple[str, ...], str]:
    """The column attribute, columns and their title of the by-period tables of ``period``:
    the month of a monthly period, the quarter of a quarterly one, the four quarters of a
    year (whose months then add up to their quarter)."""
    months = months_of(period)
    if len(months) == 1:
        return MONTH, months, "month of receipt"
    return QUARTER, tuple(dict.fromkeys(quarter_of(m) for m in months)), "quarter of receipt"


def period_tables(
    db: ReadModelDb, period: str, agencies: Sequence[str] | None = None
) -> list[PeriodTable]:
    """Every table of ``period`` (``YYYY-MM`` or ``YYYY-Qn``) from the model in ``db``.

    ``agencies``: the rows of the agency tables (default: every agency registered, and any
    other named by a count of the period), so that the shape of a period's tables does not
    depend on what happened in it.
    """
    months = months_of(period)
    cases, feedback, registered = facts(db)
    return tables_of(
        period,
        [c for c in cases if c.month in months],
        [f for f in feedback if f.month in months],
        registered if agencies is None else agencies,
        listed_areas=areas(db),
    )


def facts(db: ReadModelDb) -> tuple[list[_Case], list[_Feedback], list[str]]:
    """Every case's and feedback item's reporting facts, and the registered agencies."""
    registered = sorted({r[0] for r in db.execute("SELECT code FROM stats_agency")})
    return _cases(db), _feedback(db), registered


def tables_of(
    period: str,
    cases: Sequence[_Case],
    feedback: Sequence[_Feedback],
    agencies: Sequence[str],
    *,
    listed_areas: Sequence[str] = (),
) -> list[PeriodTable]:
    """The tables of ``period`` over the given facts (all of them in the period);
    ``listed_areas``: the areas the network works in (the rows of the area table)."""
    months = months_of(period)
    incidents = [c for c in cases if not c.is_duplicate]
    sea = [c for c in incidents if c.category == "sea_allegation"]
    case_agencies = sorted(
        set(agencies) | {c.implicated_agency for c in sea if c.implicated_agency}
    )
    feedback_agencies = sorted(set(agencies) | {f.concerned_agency for f in feedback})
    column_attribute, columns, columns_are = _columns(period)
    column_of: Callable[[_Case], str] = (
        (lambda c: c.month) if column_attribute == MONTH else (lambda c: c.quarter)
    )

    def table(  # noqa: PLR0917 - each table reads as one call of six plain values
        name: str,
        description: str,
        rows_are: str,
        attribute: str,
        rows: Sequence[str],
        of: Callable[[_Case], str],
        *,
        among: Sequence[_Case] = sea,
        base: Meaning = SEA,
    ) -> PeriodTable:
        counts = Counter((of(c), column_of(c)) for c in among)
        _check(name, Counter(key[0] for key in counts), rows)
        return PeriodTable(
            name=name,
            description=description,
            rows_are=rows_are,
            columns_are=columns_are,
            row_attribute=attribute,
            column_attribute=column_attribute,
            base=base,
            rows=tuple(rows),
            columns=columns,
            counts=tuple(tuple(counts[(r, q)] for q in columns) for r in rows),
        )

    by_month = Counter((c.allegation_type or UNKNOWN, c.month) for c in sea)
    types = get_args(AllegationType)
    _check("sea_by_month", Counter(k[0] for k in by_month), types)
    feedback_by_sector = Counter((f.category, f.sector) for f in feedback)
    feedback_by_agency = Counter((f.concerned_agency, f.category) for f in feedback)
    categories = get_args(FeedbackCategory)
    sectors = get_args(Sector)
    feedback_base = frozenset({(POPULATION, FEEDBACK)})
    return [
        table(
            "complaint_category_by_quarter",
            "Complaints received, by how they were assessed; duplicates counted once",
            "assessed category",
            "category",
            [*get_args(ComplaintCategory), NOT_YET_ASSESSED],
            lambda c: c.category or NOT_YET_ASSESSED,
            among=incidents,
            base=frozenset({(POPULATION, INCIDENTS)}),
        ),
        table(
            "allegation_type_by_quarter",
            "SEA allegations by type",
            "allegation type",
            "allegation_type",
            types,
            lambda c: c.allegation_type or UNKNOWN,
        ),
        table(
            "allegation_subtype_by_quarter",
            "SEA allegations by finer type",
            "allegation subtype",
            "subtype",
            [*get_args(AllegationSubtype), UNSPECIFIED],
            lambda c: c.subtype or UNSPECIFIED,
        ),
        table(
            "personnel_category_by_quarter",
            "SEA allegations by personnel category of the alleged perpetrator",
            "personnel category",
            "personnel_category",
            get_args(PersonnelCategory),
            lambda c: c.personnel_category or "other",
        ),
        table(
            "implicated_agency_by_quarter",
            "SEA allegations by the agency the alleged perpetrator works for",
            "implicated agency",
            "implicated_agency",
            [*case_agencies, UNKNOWN],
            lambda c: c.implicated_agency or UNKNOWN,
        ),
        table(
            "victim_category_by_quarter",
            "SEA allegations by victim category (sex and age)",
            "victim category",
            "victim_category",
            get_args(VictimCategory),
            lambda c: c.victim_category or UNKNOWN,
        ),
        table(
            "child_involved_by_quarter",
            "SEA allegations involving a child",
            "child involved",
            "child_involved",
            ["child_involved", "no_child_involved"],
            lambda c: "child_involved" if c.child_involved else "no_child_involved",
        ),
        table(
            "channel_by_quarter",
            "SEA allegations by the entry point they came through",
            "channel",
            "channel",
            get_args(Channel),
            lambda c: c.channel,
        ),
        table(
            "status_by_quarter",
            "SEA allegations by current status",
            "status",
            "status",
            get_args(CaseStatus),
            lambda c: c.status,
        ),
        table(
            "time_to_report_by_quarter",
            "SEA allegations by time from incident to report",
            "time from incident to report",
            "time_to_report",
            TIME_TO_REPORT_BANDS,
            lambda c: c.time_to_report or UNKNOWN,
        ),
        table(
            "sea_by_area_by_quarter",
            "SEA allegations by administrative area of the incident",
            "incident area",
            "incident_area",
            area_rows(listed_areas),
            lambda c: c.area,
        ),
        PeriodTable(
            name="sea_by_month",
            description="SEA allegations by type and month of receipt",
            rows_are="allegation type",
            columns_are="month of receipt",
            row_attribute="allegation_type",
            column_attribute=MONTH,
            base=SEA,
            rows=types,
            columns=months,
            counts=tuple(tuple(by_month[(t, m)] for m in months) for t in types),
        ),
        PeriodTable(
            name="feedback_by_category_and_sector",
            description="Non-sensitive feedback by type and sector",
            rows_are="feedback type",
            columns_are="sector",
            row_attribute="feedback_category",
            column_attribute="sector",
            base=feedback_base,
            rows=categories,
            columns=sectors,
            counts=tuple(tuple(feedback_by_sector[(c, s)] for s in sectors) for c in categories),
        ),
        PeriodTable(
            name="feedback_by_agency",
            description="Non-sensitive feedback by concerned agency and type",
            rows_are="concerned agency",
            columns_are="feedback type",
            row_attribute="concerned_agency",
            column_attribute="feedback_category",
            base=feedback_base,
            rows=tuple(feedback_agencies),
            columns=categories,
            counts=tuple(
                tuple(feedback_by_agency[(a, c)] for c in categories) for a in feedback_agencies
            ),
        ),
    ]


def _check(name: str, counts: Counter[str], rows: Sequence[str]) -> None:
    outside = [key for key in counts if key not in rows]
    if outside:
        # A count outside the table's labels would vanish from it; never silently.
        raise ValueError(f"table {name}: counts outside its rows: {outside[:3]}")
