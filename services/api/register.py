"""The case register's service side (ADR 25): who may list what, the filters people give,
paging cursors, exports as files, and the trace every export leaves.

- ``register_reader``: the reader's roles as the register's need-to-know grants, mirroring
  ``domain.need_to_know.case_access`` (focal point: the cases its agency holds; coordinator
  and auditor: every case; investigating entity: the cases referred to its agency; service
  providers, intake and statistics readers: none). The grants become the query's WHERE
  clause (``projections.register``): nothing is filtered after the query.
- ``parse_filter``: the list's and the export's filters from query parameters, one parser
  for the API and the console, refusing what it cannot read (``BadFilter``).
- ``trace_export``: before an export is handed out, every case in it is checked once more
  against the event store (a read model may lag a transfer by moments: a case no longer
  visible is left out) and the export is recorded in each case's read log, the custody
  trail's record of reads, all in one transaction. If that fails, nothing is handed out.
- ``to_csv`` / ``to_xlsx``: the file, every text cell neutralised against formula injection.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode
from uuid import UUID

from openpyxl import Workbook

from domain.actors import Actor, Role
from domain.errors import NotFound
from domain.need_to_know import best_case_access
from projections.register import (
    CATEGORIES,
    PAGE_MAX,
    STATUSES,
    Cursor,
    RegisterFilter,
    RegisterReader,
    RegisterRow,
)
from services.api import paging
from services.api.paging import BadFilter, encode_key, one, parse_key
from services.application.mechanism import ComplaintMechanism
from services.identity.tokens import Principal

EXPORT_FIELDS = ("case_register",)
"""What the read log names as shown by an export: the case's register row (no personal data
is in it; the record says who took which cases out of the system, when, in which export)."""

EXPORT_PURPOSE = "register export"
"""The purpose of an export's read records: ``register export <export id> (<format>)``."""

FORMATS = ("csv", "xlsx")

MEDIA_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}


def register_reader(principal: Principal) -> RegisterReader:
    """The register's grants for the principal's roles (``domain.need_to_know``)."""
    roles = principal.roles
    return RegisterReader(
        agency=principal.agency,
        every_case=Role.COORDINATOR in roles or Role.AUDITOR in roles,
        held_by_agency=Role.FOCAL_POINT in roles,
        investigated_by_agency=Role.INVESTIGATING_ENTITY in roles,
    )


# ------------------------------------------------------------------------------- filters


FILTER_FIELDS = (
    "status",
    "agency",
    "category",
    "received_from",
    "received_to",
    "overdue",
    "open",
    "cursor",
    "limit",
)

_AGENCY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-")


def _day(params: Mapping[str, Sequence[str]], name: str) -> date | None:
    value = one(params, name)
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise BadFilter(name, f"{name} must be a date, YYYY-MM-DD") from None


def _yes_no(params: Mapping[str, Sequence[str]], name: str, yes: str, no: str) -> bool | None:
    value = one(params, name)
    if value is None:
        return None
    if value not in (yes, no):
        raise BadFilter(name, f"{name} must be {yes!r} or {no!r}")
    return value == yes


def parse_filter(params: Mapping[str, Sequence[str]]) -> RegisterFilter:
    """The filters of a list or an export, from query or form parameters (each a list of
    values); unknown parameters are ignored, unreadable values refused (``BadFilter``)."""
    statuses = tuple(dict.fromkeys(v for v in params.get("status", ()) if v))
    for value in statuses:
        if value not in STATUSES:
            raise BadFilter("status", "status must be one of " + ", ".join(STATUSES))
    categories = tuple(dict.fromkeys(v for v in params.get("category", ()) if v))
    for value in categories:
        if value not in CATEGORIES:
            raise BadFilter("category", "category must be one of " + ", ".join(CATEGORIES))
    agency = one(params, "agency")
    if agency is not None and (
        not 1 <= len(agency) <= 32 or not set(agency) <= _AGENCY_CHARS or agency[0] in "_-"
    ):
        raise BadFilter("agency", "agency must be an agency code")
    start, end = _day(params, "received_from"), _day(params, "received_to")
    if start is not None and end is not None and end < start:
        raise BadFilter("received_to", "received_to is before received_from")
    try:
        before = None if end is None else _midnight(end) + timedelta(days=1)
    except OverflowError:
        before = None
    return RegisterFilter(
        statuses=statuses,
        agency=agency,
        categories=categories,
        received_from=None if start is None else _midnight(start),
        received_before=before,
        overdue=_yes_no(params, "overdue", "true", "false"),
        open=_yes_no(params, "open", "open", "closed"),
    )


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


def parse_limit(params: Mapping[str, Sequence[str]], default: int = 50) -> int:
    return paging.parse_limit(params, default, PAGE_MAX)


def encode_cursor(cursor: Cursor) -> str:
    return encode_key([cursor.received_at, cursor.case_id])


def parse_cursor(params: Mapping[str, Sequence[str]]) -> Cursor | None:
    """The cursor a page's link carries (``BadFilter`` if it is not one)."""
    key = parse_key(params, "cursor", (paging.utc_time, paging.case_id))
    if key is None:
        return None
    received_at, case = key
    assert received_at is not None and case is not None
    return Cursor(received_at, case)


def filter_query(flt_params: Mapping[str, Sequence[str]], **changes: str | None) -> str:
    """The filters as a query string (for paging and export links), with ``changes``."""
    pairs: list[tuple[str, str]] = []
    for name in FILTER_FIELDS:
        if name in changes:
            continue
        pairs += [(name, v) for v in flt_params.get(name, ()) if v]
    pairs += [(k, v) for k, v in changes.items() if v]
    return urlencode(pairs)


# ------------------------------------------------------------------------------- export


@dataclass(frozen=True)
class Export:
    """An export made: its id, the rows handed out, and when."""

    id: UUID
    rows: tuple[RegisterRow, ...]
    at: datetime
    format: str

    @property
    def filename(self) -> str:
        return f"case-register-{self.at:%Y%m%dT%H%M%SZ}-{str(self.id)[:8]}.{self.format}"


def trace_export(
    app: ComplaintMechanism,
    principal: Principal,
    rows: Iterable[RegisterRow],
    *,
    format: str,
    at: datetime,
) -> Export:
    """Check each case against the event store and record the export in the read log of
    every case it holds (one transaction), then answer what may be handed out. Raises what
    the recording raises: then nothing is handed out."""
    if format not in FORMATS:
        raise ValueError(f"no export format {format!r}")
    export_id = uuid.uuid4()
    try:
        policy = app.network().policy
    except NotFound:
        return Export(export_id, (), at, format)
    kept: list[RegisterRow] = []
    readers: dict[UUID, Actor] = {}
    for row in rows:
        # A row at the case's current version is the case as it is: the query's grants
        # hold. A case that moved on since the read model saw it is loaded and asked again.
        actor = row_reader(principal, row) if app.case_version(row.case_id) == row.version else None
        if actor is None:
            try:
                case = app.get_case(row.case_id)
            except NotFound:
                continue
            access = best_case_access(
                principal.user, principal.agency, principal.roles, case, policy
            )
            if access is None:  # the read model had not yet applied a transfer away
                continue
            actor = access.reader
        readers[row.case_id] = actor
        kept.append(row)
    if readers:
        app.record_export(
            readers,
            fields=EXPORT_FIELDS,
            purpose=f"{EXPORT_PURPOSE} {export_id} ({format})",
            at=at,
        )
    return Export(export_id, tuple(kept), at, format)


def row_reader(principal: Principal, row: RegisterRow) -> Actor | None:
    """The principal acting in the first role (``domain.need_to_know.READ_PRIORITY``) whose
    grant shows ``row``, as the case stood when the row was written."""
    roles = principal.roles
    for role, sees in (
        (Role.FOCAL_POINT, row.agency == principal.agency),
        (Role.COORDINATOR, True),
        (Role.INVESTIGATING_ENTITY, row.investigation_agency == principal.agency),
        (Role.AUDITOR, True),
    ):
        if role in roles and sees:
            return Actor(principal.user, principal.agency, role)
    return None


COLUMNS = (
    "case_id",
    "status",
    "agency",
    "receiving_agency",
    "received_at",
    "recorded_at",
    "channel",
    "complainant_role",
    "immediate_safety_risk",
    "category",
    "allegation_type",
    "child_involved",
    "implicated_agency",
    "personnel_category",
    "investigation_agency",
    "open",
    "closed_at",
    "closure_reason",
    "duplicate_of",
    "reopened_count",
    "next_action",
    "due_at",
    "overdue",
)

_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n")


def neutralise(value: str) -> str:
    """A text cell a spreadsheet will never take for a formula (OWASP's advice: a leading
    ``'`` before ``=``, ``+``, ``-``, ``@``, tab or carriage return)."""
    return f"'{value}" if value.startswith(_FORMULA_STARTS) else value


def _cell(value: Any) -> str | int:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    return neutralise(str(value))


def _values(row: RegisterRow) -> list[str | int]:
    named = {
        "open": row.is_open,
        "due_at": row.due_at,
    }
    return [_cell(named[c] if c in named else getattr(row, c)) for c in COLUMNS]


def to_csv(rows: Iterable[RegisterRow]) -> bytes:
    """The rows as CSV (UTF-8 with a byte-order mark, so spreadsheets read accents)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow(_values(row))
    return ("\ufeff" + out.getvalue()).encode()


def to_xlsx(export: Export, principal: Principal, filters: Mapping[str, Sequence[str]]) -> bytes:
    """The rows as an XLSX workbook: ``cases`` (one row per case) and ``export`` (who made
    it, when, with which filters, its id: the id its trace in each case names)."""
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "cases"
    sheet.append(list(COLUMNS))
    for row in export.rows:
        sheet.append(_values(row))
    about = book.create_sheet("export")
    about.append(["export", str(export.id)])
    about.append(["exported_at", export.at.isoformat()])
    about.append(["exported_by", neutralise(principal.user)])
    about.append(["agency", neutralise(principal.agency)])
    about.append(["cases", len(export.rows)])
    for name in FILTER_FIELDS:
        for value in filters.get(name, ()):
            if value and name not in ("cursor", "limit"):
                about.append([name, neutralise(value)])
    for ws in (sheet, about):
        for line in ws.iter_rows():
            for cell in line:
                if isinstance(cell.value, str):
                    cell.data_type = "s"  # text, whatever it looks like
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()
