"""The survivor-assistance tracker: per case, the survivor's consents, every service referral
with the time of each status, and the gaps a coordinator must close.

Tables: ``assistance_cases`` (custody, area, open or closed), ``assistance_consents`` (every
consent given or withdrawn, in case-version order), ``assistance_referrals`` (one row per
referral, its current status), ``assistance_referral_statuses`` (each status with its time),
``assistance_pathway`` (provider, service type, area: the referral pathway of the network) and
``assistance_policy`` (the network's deadlines; DOMAIN.md defaults until a policy message).

A case's area is the incident area of its latest assessment, else the area of its latest
referral; a case with no known area gets no pathway gap (nothing to compare).

Gaps (``gaps(db, now=...)``):

``no_provider``
    an open case whose survivor's assistance consent currently stands, and a service type
    for which no provider on the pathway serves the case's area.
``not_accepted``
    a referral still waiting for the provider's answer (status ``referred``) longer than
    the policy's ``assistance_acceptance_within``.
"""

# Table and column names in SQL text are constants of this module, never input.
# ruff: noqa: S608

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, TypeAlias, get_args
from uuid import UUID

from contracts.assistance_referral import (
    AssistanceReferralAcceptedV1,
    AssistanceReferralDeclinedByProviderV1,
    AssistanceReferralDeclinedBySurvivorV1,
    AssistanceReferralDeliveredV1,
    AssistanceReferralFollowedUpV1,
    AssistanceReferralMadeV1,
)
from contracts.case import (
    CaseAssessedV1,
    CaseClosedV1,
    CaseConsentGivenV1,
    CaseConsentWithdrawnV1,
    CaseReceivedV1,
    CaseReopenedV1,
    CaseTransferredV1,
)
from contracts.envelope import CloudEvent
from contracts.network import (
    NetworkEstablishedV1,
    NetworkPolicySetV1,
    NetworkServiceProviderRegisteredV1,
)
from contracts.vocabulary import ServiceType
from projections.base import (
    ReadModelDb,
    Row,
    create_policy_table,
    load_deadlines,
    parse_ts,
    replace_row,
    store_policy,
    ts,
)

log = logging.getLogger(__name__)

SERVICE_TYPES: tuple[ServiceType, ...] = get_args(ServiceType)
POLICY_TABLE = "assistance_policy"
GapKind: TypeAlias = Literal["no_provider", "not_accepted"]

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS assistance_cases ("
    " case_id TEXT PRIMARY KEY, agency TEXT NOT NULL, received_at TEXT NOT NULL,"
    " incident_area TEXT, is_sea INTEGER NOT NULL DEFAULT 0, closed_at TEXT)",
    "CREATE TABLE IF NOT EXISTS assistance_consents ("
    " case_id TEXT NOT NULL, version INTEGER NOT NULL, kind TEXT NOT NULL,"
    " given INTEGER NOT NULL, given_by TEXT, at TEXT NOT NULL, PRIMARY KEY (case_id, version))",
    "CREATE TABLE IF NOT EXISTS assistance_referrals ("
    " referral_id TEXT PRIMARY KEY, case_id TEXT NOT NULL, service_type TEXT NOT NULL,"
    " provider TEXT NOT NULL, area TEXT NOT NULL, contact_shared INTEGER NOT NULL,"
    " referring_agency TEXT NOT NULL, status TEXT NOT NULL, referred_at TEXT NOT NULL,"
    " status_at TEXT NOT NULL, made_position BIGINT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS assistance_referrals_case ON assistance_referrals (case_id)",
    "CREATE TABLE IF NOT EXISTS assistance_referral_statuses ("
    " referral_id TEXT NOT NULL, version INTEGER NOT NULL, status TEXT NOT NULL,"
    " at TEXT NOT NULL, PRIMARY KEY (referral_id, version))",
    "CREATE TABLE IF NOT EXISTS assistance_pathway ("
    " provider TEXT NOT NULL, service_type TEXT NOT NULL, area TEXT NOT NULL,"
    " PRIMARY KEY (provider, service_type, area))",
    "CREATE INDEX IF NOT EXISTS assistance_pathway_area ON assistance_pathway (area, service_type)",
)
_TABLES = (
    "assistance_cases",
    "assistance_consents",
    "assistance_referrals",
    "assistance_referral_statuses",
    "assistance_pathway",
    POLICY_TABLE,
)

_STATUS_OF: dict[type[Any], str] = {
    AssistanceReferralAcceptedV1: "accepted",
    AssistanceReferralDeclinedByProviderV1: "declined_by_provider",
    AssistanceReferralDeclinedBySurvivorV1: "declined_by_survivor",
    AssistanceReferralDeliveredV1: "delivered",
    AssistanceReferralFollowedUpV1: "followed_up",
}


# ------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class ConsentRecord:
    """A consent given (``given``) or withdrawn, and when."""

    kind: str
    given: bool
    given_by: str | None
    at: datetime


@dataclass(frozen=True)
class StatusTime:
    status: str
    at: datetime


@dataclass(frozen=True)
class ReferralView:
    """One service referral: where it stands, each status with its time."""

    referral_id: UUID
    service_type: str
    provider: str
    area: str
    contact_shared: bool
    status: str
    referred_at: datetime
    status_at: datetime
    history: tuple[StatusTime, ...]
    since_referral: timedelta
    """From referral to ``now``."""
    acceptance_overdue: bool
    """Still waiting for the provider beyond ``assistance_acceptance_within``."""


@dataclass(frozen=True)
class Gap:
    """Something missing in a survivor's assistance."""

    case_id: UUID
    kind: GapKind
    service_type: str
    area: str | None
    referral_id: UUID | None = None
    provider: str | None = None
    waiting: timedelta | None = None
    """For ``not_accepted``: how long the referral has waited."""


@dataclass(frozen=True)
class CaseAssistance:
    """A case's assistance: consents, referrals and gaps."""

    case_id: UUID
    agency: str
    area: str | None
    is_open: bool
    consents: tuple[ConsentRecord, ...]
    """Every consent given or withdrawn, oldest first."""
    current_consents: dict[str, bool]
    """By kind: whether the consent stands now."""
    referrals: tuple[ReferralView, ...]
    gaps: tuple[Gap, ...]

    @property
    def assistance_consented(self) -> bool:
        return self.current_consents.get("assistance_referral", False)


# ------------------------------------------------------------------------------- projection


class AssistanceProjection:
    """Contract messages -> the survivor-assistance tracker tables."""

    name = "assistance"
    schema_version = 3
    """2: referrals keep the stream position they were made at (``made_position``), which
    orders referrals made at the same time on either database (1 used SQLite's rowid).
    3: 64-bit integers on PostgreSQL (``pg_sql``); a read model made before is replayed."""

    def create_tables(self, db: ReadModelDb) -> None:
        for statement in _SCHEMA:
            db.execute(statement)
        create_policy_table(db, POLICY_TABLE)

    def drop_tables(self, db: ReadModelDb) -> None:
        for table in _TABLES:
            db.execute(f"DROP TABLE IF EXISTS {table}")

    def end_batch(self, db: ReadModelDb) -> None:
        """Nothing is deferred: every message updates its rows at once."""

    def apply(self, db: ReadModelDb, message: CloudEvent[Any]) -> None:
        data = message.data
        when = ts(message.time)
        if isinstance(data, NetworkEstablishedV1 | NetworkPolicySetV1):
            store_policy(db, POLICY_TABLE, data.policy)
        elif isinstance(data, NetworkServiceProviderRegisteredV1):
            db.executemany(
                "INSERT INTO assistance_pathway (provider, service_type, area)"
                " VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                [(data.code, s, a) for s in data.service_types for a in data.areas],
            )
        elif isinstance(data, CaseReceivedV1):
            replace_row(
                db,
                "assistance_cases",
                ("case_id",),
                {
                    "case_id": str(data.case_id),
                    "agency": data.actor.agency,
                    "received_at": ts(data.received_at),
                },
            )
        elif isinstance(data, CaseAssessedV1):
            allegation = data.allegation
            db.execute(
                "UPDATE assistance_cases SET is_sea = ?, incident_area = ? WHERE case_id = ?",
                (
                    int(data.category == "sea_allegation"),
                    None if allegation is None else allegation.incident_area,
                    str(data.case_id),
                ),
            )
        elif isinstance(data, CaseTransferredV1):
            db.execute(
                "UPDATE assistance_cases SET agency = ? WHERE case_id = ?",
                (data.to_agency, str(data.case_id)),
            )
        elif isinstance(data, CaseClosedV1):
            db.execute(
                "UPDATE assistance_cases SET closed_at = ? WHERE case_id = ?",
                (when, str(data.case_id)),
            )
        elif isinstance(data, CaseReopenedV1):
            db.execute(
                "UPDATE assistance_cases SET closed_at = NULL WHERE case_id = ?",
                (str(data.case_id),),
            )
        elif isinstance(data, CaseConsentGivenV1 | CaseConsentWithdrawnV1):
            given = isinstance(data, CaseConsentGivenV1)
            replace_row(
                db,
                "assistance_consents",
                ("case_id", "version"),
                {
                    "case_id": str(data.case_id),
                    "version": data.version,
                    "kind": data.kind,
                    "given": int(given),
                    "given_by": data.given_by if isinstance(data, CaseConsentGivenV1) else None,
                    "at": when,
                },
            )
        elif isinstance(data, AssistanceReferralMadeV1):
            referral_id = str(data.referral_id)
            replace_row(
                db,
                "assistance_referrals",
                ("referral_id",),
                {
                    "referral_id": referral_id,
                    "case_id": str(data.case_id),
                    "service_type": data.service_type,
                    "provider": data.provider,
                    "area": data.area,
                    "contact_shared": int(data.contact_shared),
                    "referring_agency": data.actor.agency,
                    "status": "referred",
                    "referred_at": when,
                    "status_at": when,
                    # the order of referrals made at the same time (the runner applies
                    # only messages with a position; 0 for one applied by hand)
                    "made_position": message.position if isinstance(message.position, int) else 0,
                },
            )
            self._status(db, referral_id, data.version, "referred", when)
        elif type(data) in _STATUS_OF:
            referral_id = str(data.referral_id)
            status = _STATUS_OF[type(data)]
            updated = db.execute(
                "UPDATE assistance_referrals SET status = ?, status_at = ? WHERE referral_id = ?",
                (status, when, referral_id),
            )
            if updated.rowcount == 0:
                log.warning("assistance: %s for unknown referral ignored", message.type)
                return
            self._status(db, referral_id, data.version, status, when)

    @staticmethod
    def _status(db: ReadModelDb, referral_id: str, version: int, status: str, when: str) -> None:
        replace_row(
            db,
            "assistance_referral_statuses",
            ("referral_id", "version"),
            {"referral_id": referral_id, "version": version, "status": status, "at": when},
        )


# ------------------------------------------------------------------------------- queries


def _area(db: ReadModelDb, case: Row) -> str | None:
    if case["incident_area"] is not None:
        return str(case["incident_area"])
    row = db.execute(
        "SELECT area FROM assistance_referrals WHERE case_id = ?"
        " ORDER BY referred_at DESC, made_position DESC, referral_id DESC LIMIT 1",
        (case["case_id"],),
    ).fetchone()
    return None if row is None else str(row[0])


def _current_consents(db: ReadModelDb, case_id: str) -> dict[str, bool]:
    current: dict[str, bool] = {}
    for row in db.execute(
        "SELECT kind, given FROM assistance_consents WHERE case_id = ? ORDER BY version",
        (case_id,),
    ):
        current[row["kind"]] = bool(row["given"])
    return current


def _pathway_gaps(db: ReadModelDb, case: Row, consents: dict[str, bool]) -> list[Gap]:
    if case["closed_at"] is not None or not consents.get("assistance_referral", False):
        return []
    area = _area(db, case)
    if area is None:
        return []
    served = {
        r[0]
        for r in db.execute(
            "SELECT DISTINCT service_type FROM assistance_pathway WHERE area = ?", (area,)
        )
    }
    return [
        Gap(case_id=UUID(case["case_id"]), kind="no_provider", service_type=s, area=area)
        for s in SERVICE_TYPES
        if s not in served
    ]


def _referral_view(db: ReadModelDb, row: Row, now: datetime, within: timedelta) -> ReferralView:
    history = tuple(
        StatusTime(r["status"], parse_ts(r["at"]))
        for r in db.execute(
            "SELECT status, at FROM assistance_referral_statuses WHERE referral_id = ?"
            " ORDER BY version",
            (row["referral_id"],),
        )
    )
    referred_at = parse_ts(row["referred_at"])
    waiting = now - referred_at
    return ReferralView(
        referral_id=UUID(row["referral_id"]),
        service_type=row["service_type"],
        provider=row["provider"],
        area=row["area"],
        contact_shared=bool(row["contact_shared"]),
        status=row["status"],
        referred_at=referred_at,
        status_at=parse_ts(row["status_at"]),
        history=history,
        since_referral=waiting,
        acceptance_overdue=row["status"] == "referred" and waiting > within,
    )


def _not_accepted(view: ReferralView, case_id: UUID) -> Gap:
    return Gap(
        case_id=case_id,
        kind="not_accepted",
        service_type=view.service_type,
        area=view.area,
        referral_id=view.referral_id,
        provider=view.provider,
        waiting=view.since_referral,
    )


def tracker(db: ReadModelDb, case_id: UUID | str, *, now: datetime) -> CaseAssistance | None:
    """A case's consents, referrals and gaps as of ``now`` (``None`` for an unknown case)."""
    if now.tzinfo is None:
        raise ValueError("now must be zone-aware")
    key = str(case_id)
    case = db.execute("SELECT * FROM assistance_cases WHERE case_id = ?", (key,)).fetchone()
    if case is None:
        return None
    within = load_deadlines(db, POLICY_TABLE)["assistance_acceptance_within"]
    consents = tuple(
        ConsentRecord(r["kind"], bool(r["given"]), r["given_by"], parse_ts(r["at"]))
        for r in db.execute(
            "SELECT kind, given, given_by, at FROM assistance_consents WHERE case_id = ?"
            " ORDER BY version",
            (key,),
        )
    )
    current = _current_consents(db, key)
    referrals = tuple(
        _referral_view(db, r, now, within)
        for r in db.execute(
            "SELECT * FROM assistance_referrals WHERE case_id = ?"
            " ORDER BY referred_at, made_position, referral_id",
            (key,),
        ).fetchall()
    )
    gaps = _pathway_gaps(db, case, current) + [
        _not_accepted(v, UUID(key)) for v in referrals if v.acceptance_overdue
    ]
    return CaseAssistance(
        case_id=UUID(key),
        agency=case["agency"],
        area=_area(db, case),
        is_open=case["closed_at"] is None,
        consents=consents,
        current_consents=current,
        referrals=referrals,
        gaps=tuple(gaps),
    )


def gaps(db: ReadModelDb, *, now: datetime, agency: str | None = None) -> list[Gap]:
    """Every gap as of ``now`` (of cases ``agency`` holds, when given): pathway gaps of open
    consented cases, then referrals waiting for acceptance too long, each by case."""
    if now.tzinfo is None:
        raise ValueError("now must be zone-aware")
    within = load_deadlines(db, POLICY_TABLE)["assistance_acceptance_within"]
    where, params = ("", ()) if agency is None else (" WHERE agency = ?", (agency,))
    found: list[Gap] = []
    consented = db.execute(
        "SELECT DISTINCT case_id FROM assistance_consents WHERE kind = 'assistance_referral'"
    ).fetchall()
    consented_ids = {r[0] for r in consented}
    cases = db.execute(
        "SELECT * FROM assistance_cases" + where + " ORDER BY received_at, case_id",
        params,
    ).fetchall()
    for case in cases:
        if case["case_id"] in consented_ids:
            found.extend(_pathway_gaps(db, case, _current_consents(db, case["case_id"])))
    cutoff = ts(now - within)
    waiting = db.execute(
        "SELECT r.* FROM assistance_referrals r JOIN assistance_cases c USING (case_id)"
        " WHERE r.status = 'referred' AND r.referred_at < ?"
        + ("" if agency is None else " AND c.agency = ?")
        + " ORDER BY r.referred_at, r.made_position, r.referral_id",
        (cutoff, *params),
    ).fetchall()
    for row in waiting:
        view = _referral_view(db, row, now, within)
        if view.acceptance_overdue:
            found.append(_not_accepted(view, UUID(row["case_id"])))
    return found


def provider_referrals(
    db: ReadModelDb, provider: str, *, now: datetime, open_only: bool = True
) -> list[tuple[UUID, ReferralView]]:
    """The referrals made to ``provider`` (still open ones by default), oldest first, each
    with its case id: what a service provider works from."""
    if now.tzinfo is None:
        raise ValueError("now must be zone-aware")
    within = load_deadlines(db, POLICY_TABLE)["assistance_acceptance_within"]
    query = "SELECT * FROM assistance_referrals WHERE provider = ?"
    if open_only:
        query += " AND status IN ('referred', 'accepted')"
    rows = db.execute(
        query + " ORDER BY referred_at, made_position, referral_id", (provider,)
    ).fetchall()
    return [(UUID(r["case_id"]), _referral_view(db, r, now, within)) for r in rows]
