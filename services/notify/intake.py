"""Who is told what: contract events -> notices in the outbox (issue #18).

The notifier's intake is a projection run by the projector's runner
(``services.projector.runner``): each batch of events, the outbox rows it makes and the new
stream position are one SQLite transaction, so a restart neither forgets a notice nor makes
one twice (the outbox key makes a second insert a no-op anyway).

Beside the outbox it keeps what deciding needs, all from the stream and none of it personal:
the agencies' appointed focal points, who registered a contact (organisation, role,
preferences; never the address) and the inbox's case milestones and deadlines (the same
``InboxProjection`` rules as the focal points' inbox, in the notifier's own file), which the
scheduler reads for due-soon and overdue reminders.

Who is told:
- a new case: the focal points of the receiving agency (``urgent_case`` when flagged as an
  immediate safety risk, ``new_case`` otherwise);
- a transfer: the focal points of the agency it went to (``transfer_received``);
- a referral for investigation: the contacts registered as investigating entity for the
  implicated agency (or for the entity's own code) (``investigation_referral``);
- an assistance referral: the contacts registered for the provider
  (``assistance_referral``).
Events recorded more than ``history_grace`` before the notifier was first started are
history: they update the state but tell no one.
"""

# Table and column names in SQL text are constants of this module, never input.
# ruff: noqa: S608

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from contracts.assistance_referral import AssistanceReferralMadeV1
from contracts.case import CaseReceivedV1, CaseReferredForInvestigationV1, CaseTransferredV1
from contracts.envelope import CloudEvent
from contracts.network import NetworkFocalPointAppointedV1, NetworkFocalPointWithdrawnV1
from contracts.notification import (
    StaffContactChangedV1,
    StaffContactPersonalDataErasedV1,
    StaffContactRegisteredV1,
)
from domain.vocabulary import NotificationKind
from projections.base import ReadModelDb, parse_ts, ts
from projections.inbox import InboxProjection
from services.notify import outbox

NAME = "notify"

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS notify_focal_points ("
    " agency TEXT NOT NULL, user TEXT NOT NULL, PRIMARY KEY (agency, user))",
    "CREATE TABLE IF NOT EXISTS notify_contacts ("
    " user TEXT PRIMARY KEY, organisation TEXT NOT NULL, role TEXT NOT NULL,"
    " channels TEXT NOT NULL, quiet_start TEXT, quiet_end TEXT, quiet_zone TEXT,"
    " delivery TEXT NOT NULL, reachable INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS notify_contacts_role ON notify_contacts (role, organisation)",
    "CREATE TABLE IF NOT EXISTS notify_contacts_ids ("
    " contact_id TEXT PRIMARY KEY, user TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS notify_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
)
_STATE_TABLES = ("notify_focal_points", "notify_contacts", "notify_contacts_ids")
"""Dropped by a rebuild (they follow from the stream). The outbox and the meta table are
kept: a rebuild must not send again what was sent."""


def focal_points_of(db: ReadModelDb, agency: str) -> list[str]:
    rows = db.execute(
        "SELECT user FROM notify_focal_points WHERE agency = ? ORDER BY user", (agency,)
    )
    return [r[0] for r in rows]


def contacts_with(db: ReadModelDb, role: str, organisations: tuple[str, ...]) -> list[str]:
    marks = ", ".join("?" for _ in organisations)
    rows = db.execute(
        f"SELECT user FROM notify_contacts WHERE role = ? AND organisation IN ({marks})"
        " ORDER BY user",
        (role, *organisations),
    )
    return [r[0] for r in rows]


def coordinators(db: ReadModelDb) -> list[str]:
    rows = db.execute("SELECT user FROM notify_contacts WHERE role = 'coordinator' ORDER BY user")
    return [r[0] for r in rows]


def notify_since(db: ReadModelDb) -> datetime | None:
    row = db.execute("SELECT value FROM notify_meta WHERE name = 'since'").fetchone()
    return None if row is None else parse_ts(row[0])


class NotifierIntake:
    """Contract messages -> the notifier's state and outbox (a ``Projection``)."""

    name = NAME
    schema_version = 1

    def __init__(self, *, now: datetime, history_grace: timedelta = timedelta(hours=24)) -> None:
        self._inbox = InboxProjection()
        self._now = now
        self._grace = history_grace
        self._since: datetime | None = None

    def create_tables(self, db: ReadModelDb) -> None:
        for statement in _SCHEMA:
            db.execute(statement)
        outbox.create(db)
        self._inbox.create_tables(db)
        db.execute(
            "INSERT OR IGNORE INTO notify_meta (name, value) VALUES ('since', ?)", (ts(self._now),)
        )

    def drop_tables(self, db: ReadModelDb) -> None:
        for table in _STATE_TABLES:
            db.execute(f"DROP TABLE IF EXISTS {table}")
        self._inbox.drop_tables(db)

    def end_batch(self, db: ReadModelDb) -> None:
        self._inbox.end_batch(db)

    def apply(self, db: ReadModelDb, message: CloudEvent[Any]) -> None:
        self._inbox.apply(db, message)
        data = message.data
        if isinstance(data, NetworkFocalPointAppointedV1):
            db.execute(
                "INSERT OR IGNORE INTO notify_focal_points (agency, user) VALUES (?, ?)",
                (data.agency, data.user),
            )
        elif isinstance(data, NetworkFocalPointWithdrawnV1):
            db.execute(
                "DELETE FROM notify_focal_points WHERE agency = ? AND user = ?",
                (data.agency, data.user),
            )
        elif isinstance(data, StaffContactRegisteredV1 | StaffContactChangedV1):
            self._contact(db, data)
        elif isinstance(data, StaffContactPersonalDataErasedV1):
            db.execute(
                "UPDATE notify_contacts SET reachable = 0 WHERE user = (SELECT user FROM"
                " notify_contacts_ids WHERE contact_id = ?)",
                (str(data.contact_id),),
            )
        elif self._is_news(db, message):
            self._notices(db, message)

    def _contact(
        self, db: ReadModelDb, data: StaffContactRegisteredV1 | StaffContactChangedV1
    ) -> None:
        quiet = data.quiet_hours
        if isinstance(data, StaffContactRegisteredV1):
            user = data.user
            db.execute(
                "INSERT OR REPLACE INTO notify_contacts_ids (contact_id, user) VALUES (?, ?)",
                (str(data.contact_id), user),
            )
        else:
            row = db.execute(
                "SELECT user FROM notify_contacts_ids WHERE contact_id = ?",
                (str(data.contact_id),),
            ).fetchone()
            if row is None:
                return
            user = row[0]
        db.execute(
            "INSERT OR REPLACE INTO notify_contacts (user, organisation, role, channels,"
            " quiet_start, quiet_end, quiet_zone, delivery, reachable)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                user,
                data.organisation,
                data.role,
                ",".join(data.channels),
                None if quiet is None else quiet.start.isoformat(),
                None if quiet is None else quiet.end.isoformat(),
                None if quiet is None else quiet.zone,
                data.delivery,
                int(data.has_email or data.has_phone),
            ),
        )

    def _is_news(self, db: ReadModelDb, message: CloudEvent[Any]) -> bool:
        if self._since is None:
            self._since = notify_since(db) or self._now
        return bool(message.time >= self._since - self._grace)

    def _notices(self, db: ReadModelDb, message: CloudEvent[Any]) -> None:
        data = message.data
        at = message.time
        if isinstance(data, CaseReceivedV1):
            agency = data.actor.agency
            kind = (
                NotificationKind.URGENT_CASE
                if data.immediate_safety_risk
                else NotificationKind.NEW_CASE
            )
            for user in focal_points_of(db, agency):
                outbox.enqueue(
                    db,
                    recipient=user,
                    kind=kind,
                    about=str(data.case_id),
                    case_id=data.case_id,
                    organisation=agency,
                    urgent=data.immediate_safety_risk,
                    at=at,
                )
        elif isinstance(data, CaseTransferredV1):
            for user in focal_points_of(db, data.to_agency):
                outbox.enqueue(
                    db,
                    recipient=user,
                    kind=NotificationKind.TRANSFER_RECEIVED,
                    about=f"{data.case_id}:v{data.version}",
                    case_id=data.case_id,
                    organisation=data.to_agency,
                    urgent=self._urgent_case(db, str(data.case_id)),
                    at=at,
                )
        elif isinstance(data, CaseReferredForInvestigationV1):
            for user in contacts_with(db, "investigating_entity", (data.agency, data.entity)):
                outbox.enqueue(
                    db,
                    recipient=user,
                    kind=NotificationKind.INVESTIGATION_REFERRAL,
                    about=f"{data.case_id}:v{data.version}",
                    case_id=data.case_id,
                    organisation=data.agency,
                    at=at,
                )
        elif isinstance(data, AssistanceReferralMadeV1):
            for user in contacts_with(db, "service_provider", (data.provider,)):
                outbox.enqueue(
                    db,
                    recipient=user,
                    kind=NotificationKind.ASSISTANCE_REFERRAL,
                    about=str(data.referral_id),
                    case_id=data.case_id,
                    organisation=data.provider,
                    at=at,
                )

    @staticmethod
    def _urgent_case(db: ReadModelDb, case_id: str) -> bool:
        row = db.execute(
            "SELECT immediate_safety_risk FROM inbox_cases WHERE case_id = ?", (case_id,)
        ).fetchone()
        return bool(row is not None and row[0])
