"""The quarterly report to the Humanitarian Coordinator (issue #22): the statistics release of
the quarter, training compliance, focal points' readiness, awareness coverage, the risk map and
the work plan's status, as an XLSX workbook and as a printable HTML page.

Everything in it is a count, a code or a released cell: the allegation figures are the
release's own (withheld cells print as "suppressed"), focal points appear as counts per
agency, never by account.
"""

from __future__ import annotations

import html
import io
from dataclasses import dataclass
from datetime import date
from typing import Any

from openpyxl import Workbook
from openpyxl.chart import BarChart, Reference
from openpyxl.styles import Font
from openpyxl.worksheet.worksheet import Worksheet

from contracts.statistics import StatisticsCellV1, StatisticsReleaseV1
from projections.prevention import PreventionView

SUPPRESSED = "suppressed"


@dataclass(frozen=True)
class QuarterlyReport:
    """What the report shows, gathered once for both formats."""

    year: int
    quarter: int
    today: date
    release: StatisticsReleaseV1 | None
    compliance: list[dict[str, Any]]
    readiness: list[dict[str, Any]]
    coverage: list[dict[str, Any]]
    risk_map: list[dict[str, Any]]
    work_plan: list[dict[str, Any]]

    @property
    def title(self) -> str:
        return f"PSEA network quarterly report, {self.year} Q{self.quarter}"


def gather(
    view: PreventionView,
    *,
    year: int,
    quarter: int,
    today: date,
    release: StatisticsReleaseV1 | None,
) -> QuarterlyReport:
    if not 1 <= quarter <= 4:
        raise ValueError("quarter must be 1 to 4")
    return QuarterlyReport(
        year=year,
        quarter=quarter,
        today=today,
        release=release,
        compliance=view.training_compliance(year),
        readiness=view.readiness(today),
        coverage=view.coverage(),
        risk_map=view.risk_map(today, release),
        work_plan=view.work_plan(year, today),
    )


def _cell(cell: StatisticsCellV1) -> int | str:
    return SUPPRESSED if cell.suppressed or cell.value is None else cell.value


def _fmt(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items())
    return value


COMPLIANCE_COLUMNS = ("agency", "personnel_trained", "target", "met", "by_audience")
READINESS_COLUMNS = ("agency", "focal_points", "alternates", "trained_and_current", "refresher_due")
COVERAGE_COLUMNS = (
    "area",
    "awareness_activities",
    "people_reached",
    "trainings",
    "people_trained",
    "preferred_channels",
)
RISK_COLUMNS = (
    "area",
    "highest_score",
    "level",
    "sectors_at_high_risk",
    "open_mitigation",
    "overdue_mitigation",
    "people_trained",
    "people_reached",
    "released_allegations",
    "high_risk_low_coverage",
)
PLAN_COLUMNS = (
    "activity",
    "kind",
    "owner_agency",
    "area",
    "target",
    "achieved",
    "due_on",
    "status",
    "overdue",
)


def _risk_row(row: dict[str, Any]) -> dict[str, Any]:
    shown = dict(row)
    if row["allegations_suppressed"]:
        shown["released_allegations"] = SUPPRESSED
    return shown


# ------------------------------------------------------------------------------ XLSX


def _sheet(
    book: Workbook, title: str, columns: tuple[str, ...], rows: list[dict[str, Any]]
) -> Worksheet:
    sheet = book.create_sheet(title)
    sheet.append([c.replace("_", " ") for c in columns])
    for cell in sheet[1]:
        cell.font = Font(bold=True)
    for row in rows:
        sheet.append([_fmt(row.get(c)) for c in columns])
    for i, column in enumerate(columns, start=1):
        width = max([len(column)] + [len(str(_fmt(r.get(column)))) for r in rows])
        sheet.column_dimensions[sheet.cell(row=1, column=i).column_letter].width = min(
            width + 2, 60
        )
    return sheet


def to_xlsx(report: QuarterlyReport) -> bytes:
    """The report as an XLSX workbook (one sheet per part, a chart of risk by area)."""
    book = Workbook()
    summary = book.active
    assert summary is not None
    summary.title = "Summary"
    summary.append([report.title])
    summary["A1"].font = Font(bold=True, size=14)
    summary.append(["prepared on", report.today.isoformat()])
    summary.append(
        [
            "statistics release",
            report.release.release.id if report.release else "none published for the period",
        ]
    )
    summary.append(["agencies", len(report.compliance)])
    summary.append(
        [
            "areas at high or very high risk",
            sum(1 for r in report.risk_map if (r["highest_score"] or 0) >= 3),
        ]
    )
    summary.append(
        [
            "of which with no training or awareness",
            sum(1 for r in report.risk_map if r["high_risk_low_coverage"]),
        ]
    )
    summary.column_dimensions["A"].width = 42
    summary.column_dimensions["B"].width = 30

    if report.release is not None:
        sheet = book.create_sheet("Statistics release")
        sheet.append(
            [
                f"release {report.release.release.id}",
                f"threshold {report.release.release.suppression_threshold}",
            ]
        )
        for name, table in report.release.reports.items():
            sheet.append([])
            sheet.append([name, table.description])
            sheet.append([table.rows_are, *table.columns, "total"])
            for row, cells, total in zip(table.rows, table.cells, table.row_totals, strict=True):
                sheet.append([row, *(_cell(c) for c in cells), _cell(total)])
            sheet.append(["total", *(_cell(c) for c in table.column_totals), _cell(table.total)])

    _sheet(book, "Training compliance", COMPLIANCE_COLUMNS, report.compliance)
    _sheet(book, "Focal points", READINESS_COLUMNS, report.readiness)
    _sheet(book, "Coverage", COVERAGE_COLUMNS, report.coverage)
    risk = _sheet(book, "Risk map", RISK_COLUMNS, [_risk_row(r) for r in report.risk_map])
    scored = [r for r in report.risk_map if r["highest_score"] is not None]
    if scored:
        chart = BarChart()
        chart.type = "bar"
        chart.title = "Highest assessed SEA risk by area (1-5)"
        chart.y_axis.title = "mean rating"
        data = Reference(risk, min_col=2, min_row=1, max_row=1 + len(scored))
        labels = Reference(risk, min_col=1, min_row=2, max_row=1 + len(scored))
        chart.add_data(data, titles_from_data=True)
        chart.set_categories(labels)
        chart.height, chart.width = 8, 16
        risk.add_chart(chart, f"A{len(report.risk_map) + 4}")
    _sheet(book, "Work plan", PLAN_COLUMNS, report.work_plan)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


# ------------------------------------------------------------------------------ HTML

_STYLE = """
body{font-family:sans-serif;margin:1.5rem;color:#111;max-width:60rem}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:1.6rem}
table{border-collapse:collapse;margin:.5rem 0;font-size:.85rem}
th,td{border:1px solid #777;padding:.2rem .4rem;text-align:left}
th{background:#eee}.s{font-style:italic}
@media print{body{margin:0}h2{break-before:auto}table{break-inside:avoid}}
"""


def _table(columns: tuple[str, ...], rows: list[dict[str, Any]]) -> str:
    head = "".join(f'<th scope="col">{html.escape(c.replace("_", " "))}</th>' for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(_fmt(r.get(c))))}</td>" for c in columns) + "</tr>"
        for r in rows
    )
    if not rows:
        body = f'<tr><td colspan="{len(columns)}">none recorded</td></tr>'
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def risk_chart_svg(risk_map: list[dict[str, Any]]) -> str:
    """A horizontal bar chart of the highest risk score per area, drawn on the server."""
    scored = [r for r in risk_map if r["highest_score"] is not None]
    if not scored:
        return "<p>No risk assessment recorded.</p>"
    bar, gap, label, scale = 18, 6, 110, 80
    height = len(scored) * (bar + gap) + 30
    parts = [
        f'<svg role="img" aria-labelledby="risk-chart-title" width="{label + 5 * scale + 60}" '
        f'height="{height}" xmlns="http://www.w3.org/2000/svg">',
        '<title id="risk-chart-title">Highest assessed SEA risk by area, 1 (low) to 5 '
        "(very high)</title>",
    ]
    for i, row in enumerate(scored):
        y = i * (bar + gap) + 4
        width = round(float(row["highest_score"]) * scale)
        colour = {"very_high": "#8b0000", "high": "#c0392b", "medium": "#e67e22"}.get(
            str(row["level"]), "#7f8c8d"
        )
        parts.append(
            f'<text x="0" y="{y + 13}" font-size="12">{html.escape(str(row["area"]))}</text>'
            f'<rect x="{label}" y="{y}" width="{width}" height="{bar}" fill="{colour}"/>'
            f'<text x="{label + width + 4}" y="{y + 13}" font-size="12">'
            f"{row['highest_score']} ({html.escape(str(row['level']).replace('_', ' '))})</text>"
        )
    axis_y = len(scored) * (bar + gap) + 18
    parts.extend(
        f'<text x="{label + n * scale - 3}" y="{axis_y}" font-size="10">{n}</text>'
        for n in range(1, 6)
    )
    parts.append("</svg>")
    return "".join(parts)


def to_html(report: QuarterlyReport) -> str:
    """The report as one printable page: tables, and the risk chart as inline SVG (no
    script, no third-party asset)."""
    sections = [
        f"<h1>{html.escape(report.title)}</h1>",
        f"<p>Prepared on {report.today.isoformat()}.</p>",
    ]
    sections.append("<h2>Statistics release</h2>")
    if report.release is None:
        sections.append("<p>No statistics release has been published for the period.</p>")
    else:
        sections.append(
            f"<p>Release {html.escape(report.release.release.id)}; counts below "
            f"{report.release.release.suppression_threshold} and those that would reveal "
            'them are shown as <span class="s">suppressed</span>.</p>'
        )
        for table in report.release.reports.values():
            columns = (table.rows_are, *table.columns, "total")
            rows = [
                dict(zip(columns, [row, *(_cell(c) for c in cells), _cell(total)], strict=True))
                for row, cells, total in zip(table.rows, table.cells, table.row_totals, strict=True)
            ]
            rows.append(
                dict(
                    zip(
                        columns,
                        ["total", *(_cell(c) for c in table.column_totals), _cell(table.total)],
                        strict=True,
                    )
                )
            )
            sections.append(f"<h3>{html.escape(table.description)}</h3>")
            sections.append(_table(columns, rows))
    sections.append(f"<h2>Training compliance {report.year}</h2>")
    sections.append(_table(COMPLIANCE_COLUMNS, report.compliance))
    sections.append("<h2>Focal points</h2>")
    sections.append(_table(READINESS_COLUMNS, report.readiness))
    sections.append("<h2>Awareness and training coverage by area</h2>")
    sections.append(_table(COVERAGE_COLUMNS, report.coverage))
    sections.append("<h2>Risk map</h2>")
    sections.append(risk_chart_svg(report.risk_map))
    sections.append(_table(RISK_COLUMNS, [_risk_row(r) for r in report.risk_map]))
    sections.append(f"<h2>Work plan {report.year}</h2>")
    sections.append(_table(PLAN_COLUMNS, report.work_plan))
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(report.title)}</title><style>{_STYLE}</style></head>"
        f"<body><main>{''.join(sections)}</main></body></html>"
    )
