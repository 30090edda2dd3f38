"""The anonymised statistics read model (issue #3): facts per case and per feedback item,
two-way reports with small counts suppressed, and their CSV and JSON exports."""

from projections.stats.projection import (
    DEFAULT_THRESHOLD,
    StatisticsProjection,
    UnknownCase,
    threshold,
)
from projections.stats.reports import Cell, Report, report_document, reports, to_csv, to_json
from projections.stats.suppression import SuppressedTable, extend, suppress, suppression_mask

__all__ = [
    "DEFAULT_THRESHOLD",
    "Cell",
    "Report",
    "StatisticsProjection",
    "SuppressedTable",
    "UnknownCase",
    "extend",
    "report_document",
    "reports",
    "suppress",
    "suppression_mask",
    "threshold",
    "to_csv",
    "to_json",
]
