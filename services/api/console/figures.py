"""What the statistics and prevention pages draw: each release report and each prevention
read as a table and a chart of the same numbers.

Only what was published goes in: a statistics release's cells as the release holds them
(a withheld cell has no value to draw, only its flag), and the prevention reads as the
``/v1/prevention`` routes give them (the risk map's allegation column is the release's own
cell). Nothing here counts cases.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from services.api.console.charts import Bar, bar_chart


@dataclass(frozen=True)
class Cell:
    value: int | None
    suppressed: bool


@dataclass(frozen=True)
class ReportTable:
    """One report of a release: its grid with totals, and its chart of the row totals."""

    name: str
    description: str
    rows_are: str
    columns_are: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, tuple[Cell, ...], Cell], ...]
    """(row label, its cells, its total)"""
    column_totals: tuple[Cell, ...]
    total: Cell
    chart: str


def _cell(raw: dict[str, Any]) -> Cell:
    suppressed = bool(raw.get("suppressed"))
    value = raw.get("value")
    # a suppressed cell is never drawn with a value, whatever the document says
    return Cell(None if suppressed or value is None else int(value), suppressed)


def release_tables(document: dict[str, Any], gettext: Callable[[str], str]) -> list[ReportTable]:
    """Every report of a release document (as ``/v1/stats/releases/{id}`` answers it), by
    name, as a table and a chart of its row totals."""
    release = document["release"]
    tables: list[ReportTable] = []
    for name in sorted(document["reports"]):
        report = document["reports"][name]
        totals = [_cell(c) for c in report["row_totals"]]
        rows = tuple(
            (str(label), tuple(_cell(c) for c in report["cells"][i]), totals[i])
            for i, label in enumerate(report["rows"])
        )
        chart = bar_chart(
            chart_id=f"chart-{name}",
            title=gettext("%(report)s: totals by %(rows)s, release %(release)s")
            % {"report": name, "rows": report["rows_are"], "release": release["id"]},
            description=_describe(rows, gettext),
            bars=[Bar(label, total.value) for label, _, total in rows],
            withheld=gettext("withheld"),
        )
        tables.append(
            ReportTable(
                name=name,
                description=str(report["description"]),
                rows_are=str(report["rows_are"]),
                columns_are=str(report["columns_are"]),
                columns=tuple(str(c) for c in report["columns"]),
                rows=rows,
                column_totals=tuple(_cell(c) for c in report["column_totals"]),
                total=_cell(report["total"]),
                chart=chart,
            )
        )
    return tables


def _describe(
    rows: Sequence[tuple[str, tuple[Cell, ...], Cell]], gettext: Callable[[str], str]
) -> str:
    withheld = sum(1 for _, _, total in rows if total.value is None)
    text = gettext("A bar per row, its published total written beside it.")
    if withheld:
        text += " " + gettext("%(n)d totals are withheld and have no bar.") % {"n": withheld}
    text += " " + gettext("The table below holds every published value.")
    return text


def numbers_chart(
    chart_id: str,
    title: str,
    description: str,
    rows: Sequence[tuple[str, float | None, float | None]],
    gettext: Callable[[str], str],
) -> str:
    """A chart of (label, value, target) rows (a prevention read)."""
    return bar_chart(
        chart_id=chart_id,
        title=title,
        description=description,
        bars=[Bar(label, value, target) for label, value, target in rows],
        withheld=gettext("withheld"),
        target_word=gettext("target"),
    )
