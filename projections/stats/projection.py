"""The anonymised statistics read model: reporting facts per case and per feedback item.

One row per case holds only coded facts that UN system-wide SEA reporting uses (month of
receipt, channel, allegation type, victim category, the administrative area of the incident,
...), never free text, names or exact places: the messages carry none, and the model keeps
less than they carry (the incident date is reduced to a time-to-report band, the receipt time
to a day). Areas are reported only against the list of areas the network works in
(``stats_area``, from its registry and its prevention work); an allegation elsewhere counts as
``other_area``.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Final

from contracts.case import (
    AllegationV1,
    CaseAssessedV1,
    CaseClosedV1,
    CaseInvestigationAcknowledgedV1,
    CaseInvestigationOutcomeRecordedV1,
    CaseMarkedAsDuplicateV1,
    CaseReceivedV1,
    CaseReferredForInvestigationV1,
    CaseReopenedV1,
)
from contracts.envelope import CloudEvent
from contracts.feedback import FeedbackReceivedV1
from contracts.network import (
    NetworkAgencyRegisteredV1,
    NetworkEstablishedV1,
    NetworkPolicySetV1,
    NetworkServiceProviderRegisteredV1,
)
from contracts.prevention import (
    AwarenessActivityRecordedV1,
    RiskAssessmentAssessedV1,
    TrainingSessionRecordedV1,
)
from projections.base import ReadModelDb, replace_row

DEFAULT_THRESHOLD: Final = 5
"""Suppression threshold until the network's policy says otherwise (the policy default)."""

TIME_TO_REPORT_BANDS: Final = (
    "0-3_days",
    "4-5_days",
    "6-14_days",
    "2_weeks-1_month",
    "over_1_month",
    "unknown",
)
"""Time from incident to report, as UN system-wide SEA reporting bands it."""

_SCHEMA: Final = (
    """
    CREATE TABLE IF NOT EXISTS stats_case (
        case_id TEXT PRIMARY KEY,
        received_on TEXT NOT NULL,
        received_month TEXT NOT NULL,
        channel TEXT NOT NULL,
        category TEXT,
        allegation_type TEXT,
        subtype TEXT,
        child_involved INTEGER,
        implicated_agency TEXT,
        personnel_category TEXT,
        victim_category TEXT,
        time_to_report TEXT,
        incident_area TEXT,
        is_duplicate INTEGER NOT NULL DEFAULT 0,
        referred INTEGER NOT NULL DEFAULT 0,
        acknowledged INTEGER NOT NULL DEFAULT 0,
        outcome TEXT,
        closed INTEGER NOT NULL DEFAULT 0
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS stats_feedback (
        feedback_id TEXT PRIMARY KEY,
        received_month TEXT NOT NULL,
        category TEXT NOT NULL,
        sector TEXT NOT NULL,
        concerned_agency TEXT NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS stats_agency (code TEXT PRIMARY KEY)
    """,
    """
    CREATE TABLE IF NOT EXISTS stats_area (code TEXT PRIMARY KEY)
    """,
    """
    CREATE TABLE IF NOT EXISTS stats_policy (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        suppression_threshold INTEGER NOT NULL
    )
    """,
)

_TABLES: Final = ("stats_case", "stats_feedback", "stats_agency", "stats_area", "stats_policy")


class UnknownCase(LookupError):
    """A case message arrived for a case whose receipt was never applied.

    The stream has no gaps, so this means a bug or a stream that is not the store's; the
    projector must stop rather than drop the fact from the statistics.
    """


def time_to_report_band(incident_date: date | None, received_on: date) -> str:
    """The reporting band of the days between the incident and the complaint's receipt.

    A month is taken as 30 days. An incident dated after its receipt contradicts itself, so
    it is counted as unknown rather than guessed into a band.
    """
    if incident_date is None:
        return "unknown"
    days = (received_on - incident_date).days
    if days < 0:
        return "unknown"
    if days <= 3:
        return "0-3_days"
    if days <= 5:
        return "4-5_days"
    if days <= 14:
        return "6-14_days"
    if days <= 30:
        return "2_weeks-1_month"
    return "over_1_month"


def month_of(moment: datetime) -> str:
    """``YYYY-MM`` of a moment, in the offset it was recorded with (the local calendar of
    the place where the complaint was received)."""
    return f"{moment.year:04d}-{moment.month:02d}"


def quarter_of(month: str) -> str:
    """``YYYY-Qn`` of a ``YYYY-MM`` month."""
    year, number = month.split("-")
    return f"{year}-Q{(int(number) - 1) // 3 + 1}"


class StatisticsProjection:
    """Keeps the reporting facts of every case and feedback item, and the network's
    suppression threshold, for ``projections.stats.reports``."""

    name = "stats"
    schema_version = 3
    """2: cases keep their incident area and the network's areas have a table (issue #22);
    a read model made before is replayed (ADR 16). 3: 64-bit integers on PostgreSQL
    (``pg_sql``)."""

    def create_tables(self, db: ReadModelDb) -> None:
        """Create the model's tables (idempotent)."""
        # One statement at a time: executescript would commit the runner's transaction.
        for statement in _SCHEMA:
            db.execute(statement)

    def drop_tables(self, db: ReadModelDb) -> None:
        """Drop the model's tables (for a rebuild)."""
        for table in _TABLES:
            db.execute(f"DROP TABLE IF EXISTS {table}")

    def end_batch(self, db: ReadModelDb) -> None:
        """Nothing is deferred: every message updates its facts at once."""

    def apply(self, db: ReadModelDb, message: CloudEvent[Any]) -> None:
        """Record what ``message`` changes in the statistics; other messages are ignored.

        Changes rows through ``db`` only; the runner commits.
        """
        data = message.data
        if isinstance(data, CaseReceivedV1):
            month = month_of(data.received_at)
            replace_row(
                db,
                "stats_case",
                ("case_id",),
                {
                    "case_id": str(data.case_id),
                    "received_on": data.received_at.date().isoformat(),
                    "received_month": month,
                    "channel": data.channel,
                },
            )
        elif isinstance(data, CaseAssessedV1):
            self._assessed(db, str(data.case_id), data.category, data.allegation)
        elif isinstance(data, CaseMarkedAsDuplicateV1):
            self._update(db, str(data.case_id), "is_duplicate = 1")
        elif isinstance(data, CaseReferredForInvestigationV1):
            self._update(db, str(data.case_id), "referred = 1")
        elif isinstance(data, CaseInvestigationAcknowledgedV1):
            self._update(db, str(data.case_id), "acknowledged = 1")
        elif isinstance(data, CaseInvestigationOutcomeRecordedV1):
            # An outcome implies the referral was received, as the domain records it.
            self._update(db, str(data.case_id), "acknowledged = 1, outcome = ?", (data.outcome,))
        elif isinstance(data, CaseClosedV1):
            self._update(db, str(data.case_id), "closed = 1")
        elif isinstance(data, CaseReopenedV1):
            self._update(db, str(data.case_id), "closed = 0")
        elif isinstance(data, FeedbackReceivedV1):
            replace_row(
                db,
                "stats_feedback",
                ("feedback_id",),
                {
                    "feedback_id": str(data.feedback_id),
                    "received_month": month_of(message.time),
                    "category": data.category,
                    "sector": data.sector,
                    "concerned_agency": data.concerned_agency,
                },
            )
        elif isinstance(data, NetworkEstablishedV1 | NetworkPolicySetV1):
            replace_row(
                db,
                "stats_policy",
                ("id",),
                {"id": 1, "suppression_threshold": data.policy.suppression_threshold},
            )
        elif isinstance(data, NetworkAgencyRegisteredV1):
            db.execute(
                "INSERT INTO stats_agency (code) VALUES (?) ON CONFLICT DO NOTHING", (data.code,)
            )
        elif isinstance(data, NetworkServiceProviderRegisteredV1):
            for area in data.areas:
                _list_area(db, area)
        elif isinstance(
            data, TrainingSessionRecordedV1 | AwarenessActivityRecordedV1 | RiskAssessmentAssessedV1
        ):
            # The areas where the network works, known from its registry and its prevention
            # work, never from complaints: a row of the area table then says nothing about
            # whether an allegation was made there (issue #22).
            _list_area(db, data.area)

    def _assessed(
        self,
        db: ReadModelDb,
        case_id: str,
        category: str,
        allegation: AllegationV1 | None,
    ) -> None:
        row = db.execute(
            "SELECT received_on FROM stats_case WHERE case_id = ?", (case_id,)
        ).fetchone()
        if row is None:
            raise UnknownCase(f"case {case_id} was assessed but its receipt was never applied")
        # A later assessment (after a reopening) replaces the earlier one entirely.
        if allegation is None:
            facts: tuple[object, ...] = (None,) * 8
        else:
            facts = (
                allegation.allegation_type,
                allegation.subtype,
                int(allegation.child_involved),
                allegation.implicated_agency,
                allegation.personnel_category,
                allegation.victim_category,
                time_to_report_band(allegation.incident_date, date.fromisoformat(row[0])),
                allegation.incident_area,
            )
        db.execute(
            "UPDATE stats_case SET category = ?, allegation_type = ?, subtype = ?, "
            "child_involved = ?, implicated_agency = ?, personnel_category = ?, "
            "victim_category = ?, time_to_report = ?, incident_area = ? WHERE case_id = ?",
            (category, *facts, case_id),
        )

    def _update(
        self,
        db: ReadModelDb,
        case_id: str,
        assignment: str,
        parameters: tuple[object, ...] = (),
    ) -> None:
        cursor = db.execute(
            f"UPDATE stats_case SET {assignment} WHERE case_id = ?",  # noqa: S608 - fixed text
            (*parameters, case_id),
        )
        if cursor.rowcount == 0:
            raise UnknownCase(f"case {case_id} has a fact but its receipt was never applied")


RESERVED_AREA_LABELS: Final = frozenset({"unknown", "other_area", "total"})
"""Row labels of the area table: an area code spelled like one is never listed (its cases
count as ``other_area``), so no label appears twice."""


def _list_area(db: ReadModelDb, area: str) -> None:
    if area.lower() not in RESERVED_AREA_LABELS and not area.startswith(("-", ".")):
        db.execute("INSERT INTO stats_area (code) VALUES (?) ON CONFLICT DO NOTHING", (area,))


def threshold(db: ReadModelDb) -> int:
    """The network's current suppression threshold (``DEFAULT_THRESHOLD`` before any
    policy was applied)."""
    row = db.execute("SELECT suppression_threshold FROM stats_policy WHERE id = 1").fetchone()
    return DEFAULT_THRESHOLD if row is None else int(row[0])
