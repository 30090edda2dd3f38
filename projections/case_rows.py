"""What the inbox and the register share: one row a case, kept from the case's contract
messages, whose derived columns (pending actions, status, the next deadline) depend only on
the row and the network's deadlines.

``CaseRows.apply`` keeps the row: ``CaseReceivedV1`` makes it, every other message of the
projection's ``handlers`` changes it and sets its ``version`` (a message for a case the table
does not hold is logged and ignored). It never recomputes: the cases a batch touched are
recomputed once each, in ``end_batch``, by the projection's ``recompute`` (most of a
rebuild's time went into recomputing a case once per event). A new network policy changes
every open case's deadlines: ``policy_changed`` says when they are recomputed.
"""

# Table and column names in SQL text are constants of the projections, never input.
# ruff: noqa: S608

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any

from contracts.case import (
    CaseAssistanceReferredV1,
    CaseClosedV1,
    CaseConsentGivenV1,
    CaseConsentWithdrawnV1,
    CaseFeedbackGivenV1,
    CaseInvestigationAcknowledgedV1,
    CaseInvestigationOutcomeRecordedV1,
    CaseMarkedAsDuplicateV1,
    CaseReceivedV1,
    CaseReferredForInvestigationV1,
    CaseReopenedV1,
    CaseTransferredV1,
)
from contracts.envelope import CloudEvent
from contracts.network import NetworkEstablishedV1, NetworkPolicySetV1
from projections.base import (
    ReadModelDb,
    Row,
    Rows,
    create_policy_table,
    load_deadlines,
    store_policy,
    ts,
)

Handler = Callable[[ReadModelDb, Any, str], None]
"""How a message changes its case's row: ``(db, message data, message time as text)``."""

CHUNK = 500
"""Case ids per query when a batch's touched cases are read back (SQLite allows 999)."""


def set_columns(db: ReadModelDb, table: str, case_id: object, **values: object) -> None:
    """Set ``values`` (column: value) in the row of ``case_id``."""
    assignments = ", ".join(f"{column} = ?" for column in values)
    db.execute(
        f"UPDATE {table} SET {assignments} WHERE case_id = ?", (*values.values(), str(case_id))
    )


def fact_handlers(table: str) -> dict[type[Any], Handler]:
    """How the workflow's messages change the columns of ``table`` that the deadlines are
    computed from (``projections.inbox.pending_actions`` reads them): who holds the case,
    consent, assistance, the investigation, feedback, duplicate, closure and reopening. The
    inbox and the register keep these facts by the same rules; each adds its own columns."""

    def first(column: str) -> Handler:
        def handle(db: ReadModelDb, data: Any, when: str) -> None:
            db.execute(
                f"UPDATE {table} SET {column} = coalesce({column}, ?) WHERE case_id = ?",
                (when, str(data.case_id)),
            )

        return handle

    def transferred(db: ReadModelDb, data: CaseTransferredV1, when: str) -> None:
        set_columns(db, table, data.case_id, agency=data.to_agency)

    def referred(db: ReadModelDb, data: CaseReferredForInvestigationV1, when: str) -> None:
        set_columns(db, table, data.case_id, investigation_referred_at=when)

    def acknowledged(db: ReadModelDb, data: CaseInvestigationAcknowledgedV1, when: str) -> None:
        set_columns(db, table, data.case_id, acknowledged_at=when)

    def feedback(db: ReadModelDb, data: CaseFeedbackGivenV1, when: str) -> None:
        set_columns(db, table, data.case_id, last_feedback_at=when)

    def duplicate(db: ReadModelDb, data: CaseMarkedAsDuplicateV1, when: str) -> None:
        set_columns(
            db, table, data.case_id, duplicate_of=str(data.original_case_id), duplicate_at=when
        )

    def closed(db: ReadModelDb, data: CaseClosedV1, when: str) -> None:
        set_columns(db, table, data.case_id, closed_at=when, closure_reason=str(data.reason))

    def outcome(db: ReadModelDb, data: CaseInvestigationOutcomeRecordedV1, when: str) -> None:
        # An outcome implies receipt, as in the domain.
        db.execute(
            f"UPDATE {table} SET outcome = ?, outcome_at = ?,"
            " acknowledged_at = coalesce(acknowledged_at, ?) WHERE case_id = ?",
            (str(data.outcome), when, when, str(data.case_id)),
        )

    def reopened(db: ReadModelDb, data: CaseReopenedV1, when: str) -> None:
        # A case never referred for investigation can (and must) be assessed again; a
        # referred one is locked, as in the domain.
        db.execute(
            f"UPDATE {table} SET closed_at = NULL, closure_reason = NULL, reopened_at = ?,"
            " reassess_from = CASE WHEN investigation_referred_at IS NULL THEN ? END"
            " WHERE case_id = ?",
            (when, when, str(data.case_id)),
        )

    return {
        CaseTransferredV1: transferred,
        CaseConsentGivenV1: first("consent_decided_at"),
        CaseConsentWithdrawnV1: first("consent_decided_at"),
        CaseAssistanceReferredV1: first("assistance_referred_at"),
        CaseReferredForInvestigationV1: referred,
        CaseInvestigationAcknowledgedV1: acknowledged,
        CaseInvestigationOutcomeRecordedV1: outcome,
        CaseFeedbackGivenV1: feedback,
        CaseMarkedAsDuplicateV1: duplicate,
        CaseClosedV1: closed,
        CaseReopenedV1: reopened,
    }


class _VersionFirst:
    """The connection a handler writes a known case's row through: the case's version is set
    before anything else the handler does, as ``CaseRows.apply`` sets it, but within the
    handler's first statement when that statement is an update of the case's row (the same
    row, the same values: ``version`` is in no handler's own statements)."""

    def __init__(self, db: ReadModelDb, table: str, version: int, case_id: str) -> None:
        self._db = db
        self._update = f"UPDATE {table} SET "
        self._version = version
        self._case_id = case_id
        self._pending = True

    def flush(self) -> None:
        """Set the version now, if no statement of the handler has set it."""
        if self._pending:
            self._pending = False
            self._db.execute(
                f"{self._update}version = ? WHERE case_id = ?", (self._version, self._case_id)
            )

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Rows:
        if (
            self._pending
            and sql.startswith(self._update)
            and sql.endswith(" WHERE case_id = ?")
            and parameters
            and parameters[-1] == self._case_id
        ):
            self._pending = False
            merged = f"{self._update}version = ?, {sql[len(self._update) :]}"
            return self._db.execute(merged, (self._version, *parameters))
        self.flush()
        return self._db.execute(sql, parameters)

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Rows:
        self.flush()
        return self._db.executemany(sql, parameters)


class CaseRows:
    """A projection of one row a case in ``table`` (with ``case_id`` and ``version``
    columns), made by ``schema`` and dropped as ``tables``, under the policy held in
    ``policy_table``."""

    name: str
    schema_version: int
    table: str
    policy_table: str
    schema: tuple[str, ...]
    tables: tuple[str, ...]

    def __init__(self, handlers: Mapping[type[Any], Handler]) -> None:
        self._handlers = handlers
        self._touched: set[str] = set()
        self._log = logging.getLogger(type(self).__module__)

    def create_tables(self, db: ReadModelDb) -> None:
        for statement in self.schema:
            db.execute(statement)
        create_policy_table(db, self.policy_table)

    def drop_tables(self, db: ReadModelDb) -> None:
        for table in self.tables:
            db.execute(f"DROP TABLE IF EXISTS {table}")

    def apply(self, db: ReadModelDb, message: CloudEvent[Any]) -> None:
        data = message.data
        if isinstance(data, NetworkEstablishedV1 | NetworkPolicySetV1):
            store_policy(db, self.policy_table, data.policy)
            self.policy_changed(db)
            return
        handler = self._handlers.get(type(data))
        if handler is None:
            return
        when = ts(message.time)
        case_id = str(data.case_id)
        if isinstance(data, CaseReceivedV1):
            handler(db, data, when)
        elif case_id in self._touched:
            # known (this batch touched it): the version goes into the handler's own update
            # of the row, one statement instead of two (on PostgreSQL each costs most of a
            # message's applying, ADR 28 section 6)
            versioned = _VersionFirst(db, self.table, data.version, case_id)
            handler(versioned, data, when)
            versioned.flush()
        else:
            # the version first: its count of rows tells whether the case is known, in one
            # statement rather than a look-up and an update (no handler reads the version).
            # A case this batch touched already is known (rows of the table are never
            # deleted) and its count is not read: on PostgreSQL reading it waits for the
            # server, and a case's events mostly come in one batch.
            update = db.execute(
                f"UPDATE {self.table} SET version = ? WHERE case_id = ?", (data.version, case_id)
            )
            if case_id not in self._touched and update.rowcount == 0:
                self._log.warning(
                    "%s: %s for unknown case %s ignored", self.name, message.type, case_id
                )
                return
            handler(db, data, when)
        self._touched.add(case_id)

    def policy_changed(self, db: ReadModelDb) -> None:
        """The network's deadlines changed: every open case is recomputed with the batch."""
        rows = db.execute(f"SELECT case_id FROM {self.table} WHERE closed_at IS NULL")
        self._touched.update(str(r[0]) for r in rows)

    def end_batch(self, db: ReadModelDb) -> None:
        """Recompute every case the batch touched, once."""
        touched, self._touched = self._touched, set()
        if not touched:
            return
        deadlines = load_deadlines(db, self.policy_table)
        ordered = sorted(touched)
        rows: dict[str, Row] = {}
        # the rows in a few queries rather than one per case (on PostgreSQL each query that
        # is read waits for the server)
        for chunk in range(0, len(ordered), CHUNK):
            ids = ordered[chunk : chunk + CHUNK]
            marks = ", ".join("?" for _ in ids)
            for row in db.execute(f"SELECT * FROM {self.table} WHERE case_id IN ({marks})", ids):
                rows[row["case_id"]] = row
        # None: touched in a batch that was rolled back
        found = [row for case_id in ordered if (row := rows.get(case_id)) is not None]
        self.recompute_rows(db, found, deadlines)

    def recompute(self, db: ReadModelDb, row: Row, deadlines: dict[str, timedelta]) -> None:
        """Set the derived columns of the case in ``row``."""
        self.recompute_rows(db, [row], deadlines)

    def recompute_rows(
        self, db: ReadModelDb, rows: Sequence[Row], deadlines: dict[str, timedelta]
    ) -> None:
        """Set the derived columns of the cases in ``rows`` (each statement once for them
        all, ``executemany``: a statement a case each cost a rebuild most on PostgreSQL)."""
        raise NotImplementedError
