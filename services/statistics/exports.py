"""A release version as the files people use: JSON, CSV and XLSX, with HXL hashtags.

The CSV and the XLSX ``data`` sheet are one long table, a row per published value, with a
Humanitarian Exchange Language (HXL) hashtag row under the header, so that HDX tools (HXL
Proxy, Quick Charts) read them as they are. The XLSX has, besides, the release metadata and
one sheet per report laid out as the report is (rows, columns, totals).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any, Final

from openpyxl import Workbook

TOTAL: Final = "TOTAL"

COLUMNS: Final = (
    ("release", "#meta+id"),
    ("period", "#date+period"),
    ("version", "#meta+version+num"),
    ("report", "#indicator+code"),
    ("row", "#indicator+row"),
    ("column", "#indicator+column"),
    ("value", "#indicator+value+num"),
    ("suppressed", "#status+suppressed"),
)
"""The long table's header and its HXL hashtag row."""


def to_json(document: dict[str, Any]) -> str:
    """The release as published: ``{"release": {...}, "reports": {...}}``."""
    return json.dumps(document, indent=2, ensure_ascii=False, sort_keys=True) + "\n"


def _grid(report: dict[str, Any]) -> list[list[dict[str, Any]]]:
    rows: list[list[dict[str, Any]]] = [
        [*report["cells"][i], report["row_totals"][i]] for i in range(len(report["rows"]))
    ]
    return [*rows, [*report["column_totals"], report["total"]]]


def records(document: dict[str, Any]) -> Iterator[tuple[Any, ...]]:
    """Every published value of the release as one row of the long table."""
    release = document["release"]
    for name in sorted(document["reports"]):
        report = document["reports"][name]
        rows = [*report["rows"], TOTAL]
        columns = [*report["columns"], TOTAL]
        for i, line in enumerate(_grid(report)):
            for j, cell in enumerate(line):
                yield (
                    release["id"],
                    release["period"],
                    release["version"],
                    name,
                    rows[i],
                    columns[j],
                    cell["value"],
                    "true" if cell["suppressed"] else "false",
                )


def to_csv(document: dict[str, Any]) -> str:
    """The long table as CSV: header, HXL hashtag row, a row per value (empty when
    withheld)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([name for name, _ in COLUMNS])
    writer.writerow([tag for _, tag in COLUMNS])
    for record in records(document):
        writer.writerow(["" if v is None else v for v in record])
    return out.getvalue()


def to_xlsx(document: dict[str, Any]) -> bytes:
    """The release as an XLSX workbook: ``data`` (the long table with its HXL row),
    ``release`` (metadata, held-back reports) and one sheet per report."""
    release = document["release"]
    book = Workbook()
    data = book.active
    assert data is not None
    data.title = "data"
    data.append([name for name, _ in COLUMNS])
    data.append([tag for _, tag in COLUMNS])
    for record in records(document):
        data.append(list(record))
    meta = book.create_sheet("release")
    for key in ("id", "period", "version", "supersedes", "released_at", "suppression_threshold"):
        meta.append([key, release[key]])
    meta.append(["months", ", ".join(release["months"])])
    meta.append(["upper protection", release["protection"]["upper"]])
    meta.append(["lower protection", release["protection"]["lower"]])
    meta.append(["method", release["protection"]["method"]])
    for held in release["held_back"]:
        meta.append(["held back", held["report"], held["reason"]])
    for name in sorted(document["reports"]):
        report = document["reports"][name]
        sheet = book.create_sheet(name[:31])
        sheet.append([report["description"]])
        sheet.append(
            [f"{report['rows_are']} \\ {report['columns_are']}", *report["columns"], TOTAL]
        )
        for label, line in zip([*report["rows"], TOTAL], _grid(report), strict=True):
            sheet.append([label, *(cell["value"] for cell in line)])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()
