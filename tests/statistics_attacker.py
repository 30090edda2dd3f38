"""The attacker of published statistics (issue #14), written apart from the protector.

It holds published documents only (``{"reports": {name: report document}}``, with or
without release metadata) and knows what every report means from the table below, written
here by hand from the report descriptions, not taken from ``services.statistics``. From
those it writes every equation a reader of the documents can write:

- inside each table: cells add up to their row and column totals, those to the grand total;
- across the tables of one document: two values that count the same cases are equal (the
  SEA row of the complaint categories and every SEA table's grand total, a month column of
  ``sea_by_month`` and nothing else, a quarter column of every SEA table, ...);
- months add up to their quarter;
- and, as inequalities, the rules of the domain an attacker can read in the published
  vocabulary (``RULES``): an allegation type counts at least its subtypes; a report involving
  a child counts at least its child victims, and at least its sexual activity with a child.

Then, for every withheld value, it asks HiGHS for the minimum and the maximum that the
published values, these equations and non-negativity allow (integrality not required), in
one linear program per document set (all versions of a release together; versions are not
linked by equations, their differences are attacked separately).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import highspy
import numpy as np

TOTAL = "TOTAL"

# report -> (population, attribute of its rows, attribute of its columns or None when the
# columns are periods)
REPORTS: dict[str, tuple[str, str, str | None]] = {
    "complaint_category_by_quarter": ("incidents", "category", None),
    "allegation_type_by_quarter": ("sea", "allegation_type", None),
    "allegation_subtype_by_quarter": ("sea", "subtype", None),
    "personnel_category_by_quarter": ("sea", "personnel_category", None),
    "implicated_agency_by_quarter": ("sea", "implicated_agency", None),
    "victim_category_by_quarter": ("sea", "victim_category", None),
    "child_involved_by_quarter": ("sea", "child_involved", None),
    "channel_by_quarter": ("sea", "channel", None),
    "status_by_quarter": ("sea", "status", None),
    "time_to_report_by_quarter": ("sea", "time_to_report", None),
    "sea_by_area_by_quarter": ("sea", "incident_area", None),
    "sea_by_month": ("sea", "allegation_type", None),
    "feedback_by_category_and_sector": ("feedback", "feedback_category", "sector"),
    "feedback_by_agency": ("feedback", "concerned_agency", "feedback_category"),
}
# (whole, attribute, parts): the count with the fact ``whole`` is at least the sum of the
# counts with each part value of ``attribute``, the rest of their meaning equal
RULES: list[tuple[tuple[str, str], str, list[str]]] = [
    (
        ("allegation_type", "sexual_abuse"),
        "subtype",
        ["rape", "sexual_assault", "sexual_activity_with_child"],
    ),
    (
        ("allegation_type", "sexual_exploitation"),
        "subtype",
        ["transactional_sex", "exploitative_relationship", "solicitation"],
    ),
    (("child_involved", "child_involved"), "victim_category", ["girls", "boys", "unknown_child"]),
    (("child_involved", "child_involved"), "subtype", ["sexual_activity_with_child"]),
]
_MONTH = re.compile(r"^\d{4}-\d{2}$")
_QUARTER = re.compile(r"^\d{4}-Q[1-4]$")

Meaning = frozenset[tuple[str, str]]


def _population(name: str) -> set[tuple[str, str]]:
    if name == "sea":
        return {("population", "incidents"), ("category", "sea_allegation")}
    return {("population", name)}


def meaning(report: str, row: str, column: str) -> Meaning:
    """What the value at (row, column) of ``report`` counts (TOTAL: no condition)."""
    population, row_attribute, column_attribute = REPORTS[report]
    facts = _population(population)
    if row != TOTAL:
        facts.add((row_attribute, row))
    if column != TOTAL:
        if column_attribute is not None:
            facts.add((column_attribute, column))
        elif _MONTH.match(column):
            facts.add(("month", column))
        elif _QUARTER.match(column):
            facts.add(("quarter", column))
        else:
            raise ValueError(f"{report}: a column {column!r} the attacker cannot read")
    return frozenset(facts)


def months_of_quarter(quarter: str) -> list[str]:
    year, number = quarter.split("-Q")
    first = (int(number) - 1) * 3 + 1
    return [f"{year}-{m:02d}" for m in range(first, first + 3)]


@dataclass(frozen=True)
class Position:
    """One published value: the document (version), the report, row and column labels."""

    document: int
    report: str
    row: str
    column: str


@dataclass
class Published:
    """What a set of documents publishes, as the attacker's variables."""

    positions: list[Position] = field(default_factory=list)
    shown: list[float | None] = field(default_factory=list)
    rows: list[dict[int, float]] = field(default_factory=list)  # each: sum coef * x = 0
    at_least: list[dict[int, float]] = field(default_factory=list)  # each: sum coef * x >= 0

    def variable(self, position: Position, value: int | None) -> int:
        self.positions.append(position)
        self.shown.append(None if value is None else float(value))
        return len(self.positions) - 1


def read(documents: Sequence[Mapping[str, Any]]) -> Published:
    """The attacker's variables and equations for ``documents``."""
    published = Published()
    for d, document in enumerate(documents):
        by_meaning: dict[Meaning, int] = {}
        for name, report in document["reports"].items():
            rows = [*report["rows"], TOTAL]
            columns = [*report["columns"], TOTAL]
            grid = [
                [*report["cells"][i], report["row_totals"][i]] for i in range(len(report["rows"]))
            ] + [[*report["column_totals"], report["total"]]]
            index = [
                [
                    published.variable(Position(d, name, rows[i], columns[j]), cell["value"])
                    for j, cell in enumerate(line)
                ]
                for i, line in enumerate(grid)
            ]
            last_row, last_col = len(rows) - 1, len(columns) - 1
            for i in range(len(rows)):
                equation = {index[i][last_col]: 1.0}
                for j in range(last_col):
                    equation[index[i][j]] = equation.get(index[i][j], 0.0) - 1.0
                published.rows.append(equation)
            for j in range(len(columns)):
                equation = {index[last_row][j]: 1.0}
                for i in range(last_row):
                    equation[index[i][j]] = equation.get(index[i][j], 0.0) - 1.0
                published.rows.append(equation)
            for i in range(len(rows)):
                for j in range(len(columns)):
                    key = meaning(name, rows[i], columns[j])
                    if key in by_meaning:
                        published.rows.append({index[i][j]: 1.0, by_meaning[key]: -1.0})
                    else:
                        by_meaning[key] = index[i][j]
        for key, whole in by_meaning.items():
            for fact, attribute, values in RULES:
                if fact not in key:
                    continue
                rest = key - {fact}
                parts = [by_meaning.get(rest | {(attribute, v)}) for v in values]
                if all(p is not None for p in parts):
                    rule = {whole: 1.0}
                    for p in parts:
                        assert p is not None
                        rule[p] = rule.get(p, 0.0) - 1.0
                    published.at_least.append(rule)
        for key, total in list(by_meaning.items()):
            quarters = [v for a, v in key if a == "quarter"]
            if not quarters:
                continue
            rest = key - {("quarter", quarters[0])}
            parts = [by_meaning.get(rest | {("month", m)}) for m in months_of_quarter(quarters[0])]
            if all(p is not None for p in parts):
                equation = {total: 1.0}
                for p in parts:
                    assert p is not None
                    equation[p] = equation.get(p, 0.0) - 1.0
                published.rows.append(equation)
    return published


class Attacker:
    """Minimum and maximum of linear expressions over a ``Published`` set."""

    def __init__(self, published: Published) -> None:
        self.published = published
        n = len(published.positions)
        self.highs = highspy.Highs()
        self.highs.setOptionValue("output_flag", False)
        inf = highspy.kHighsInf
        lower = np.array([0.0 if v is None else v for v in published.shown])
        upper = np.array([inf if v is None else v for v in published.shown])
        self.highs.addCols(n, np.zeros(n), lower, upper, 0, [], [], [])
        for equation in published.rows:
            columns = np.array(list(equation), dtype=np.int32)
            self.highs.addRow(0.0, 0.0, len(columns), columns, np.array(list(equation.values())))
        for rule in published.at_least:
            columns = np.array(list(rule), dtype=np.int32)
            values = np.array(list(rule.values()))
            self.highs.addRow(0.0, highspy.kHighsInf, len(columns), columns, values)
        self.n = n

    def bounds(self, expression: Mapping[int, float]) -> tuple[float, float]:
        """(min, max) of ``sum(c * x_j)``; ``inf`` when unbounded above."""
        cost = np.zeros(self.n)
        for j, c in expression.items():
            cost[j] = c
        self.highs.changeColsCost(self.n, np.arange(self.n, dtype=np.int32), cost)
        result = []
        for sense in (highspy.ObjSense.kMinimize, highspy.ObjSense.kMaximize):
            self.highs.changeObjectiveSense(sense)
            self.highs.run()
            status = self.highs.getModelStatus()
            if status == highspy.HighsModelStatus.kUnknown:
                # a warm start gone astray after many solves: solve again from scratch
                self.highs.clearSolver()
                self.highs.run()
                status = self.highs.getModelStatus()
            if status in (
                highspy.HighsModelStatus.kUnbounded,
                highspy.HighsModelStatus.kUnboundedOrInfeasible,  # feasible: the true counts
            ):
                result.append(float("inf") if sense == highspy.ObjSense.kMaximize else -np.inf)
                continue
            assert status == highspy.HighsModelStatus.kOptimal, status
            result.append(self.highs.getInfo().objective_function_value)
        return result[0], result[1]


@dataclass
class Findings:
    """What the attacker got out: values recovered exactly, values pinned too tightly."""

    withheld: int = 0
    exact: list[tuple[Position, float]] = field(default_factory=list)
    too_narrow: list[tuple[Position, float, float, float]] = field(default_factory=list)

    def __str__(self) -> str:
        return (
            f"{len(self.exact)} of {self.withheld} withheld values recovered exactly, "
            f"{len(self.too_narrow)} more bounded too tightly"
        )


def attack(
    documents: Sequence[Mapping[str, Any]],
    truth: Callable[[Position], int],
    *,
    upper: int,
    lower: int,
) -> Findings:
    """Attack every withheld value: the criterion of issue #14 is that the maximum is at
    least ``a + upper`` and the minimum at most ``a - min(lower, a)`` for its true value
    ``a`` (given by ``truth``)."""
    published = read(documents)
    attacker = Attacker(published)
    findings = Findings()
    for j, value in enumerate(published.shown):
        if value is not None:
            continue
        findings.withheld += 1
        position = published.positions[j]
        a = truth(position)
        low, high = attacker.bounds({j: 1.0})
        if high - low < 1e-6:
            findings.exact.append((position, low))
        elif high < a + upper - 1e-6 or low > a - min(lower, a) + 1e-6:
            findings.too_narrow.append((position, float(a), low, high))
    return findings


def attack_differences(
    before: Mapping[str, Any],
    after: Mapping[str, Any],
    truth_before: Callable[[Position], int],
    truth_after: Callable[[Position], int],
    *,
    threshold: int,
    upper: int,
    lower: int,
) -> Findings:
    """The differencing attack on two consecutive versions: for every value published in
    both whose true change ``d`` is not zero and below the threshold, the change must be
    neither recovered nor pinned into an interval narrower than ``upper``."""
    published = read([before, after])
    attacker = Attacker(published)
    where = {p: j for j, p in enumerate(published.positions)}
    findings = Findings()
    for j, position in enumerate(published.positions):
        if position.document != 1:
            continue
        earlier = Position(0, position.report, position.row, position.column)
        if earlier not in where:
            continue
        a = truth_after(position)
        d = a - truth_before(earlier)
        if d == 0 or abs(d) >= threshold:
            continue
        findings.withheld += 1
        low, high = attacker.bounds({j: 1.0, where[earlier]: -1.0})
        if high - low < 1e-6:
            findings.exact.append((position, low))
        elif high - low < upper - 1e-6:
            findings.too_narrow.append((position, float(d), low, high))
    return findings


def count(cases: Iterable[Mapping[str, str]], key: Meaning) -> int:
    """How many of ``cases`` (each a mapping of attribute to value) the meaning counts."""
    return sum(1 for case in cases if all(case.get(a) == v for a, v in key))
