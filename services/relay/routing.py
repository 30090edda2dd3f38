"""Which agency a stored event is published under (the ``<agency>`` token of its subject).

ADR 3: Case events go under the agency holding the case *after* the event, AssistanceReferral
events under the agency holding the referral's case, Feedback events under the concerned
agency, Network events under ``network``. Prevention records (issue #22) go under the agency
that recorded them; the work plan and the prevention policy under ``network``.

The router is fed every event in log order, so its cache always describes the store as of the
event being routed. A miss (after a restart, or after the bounded cache forgot an entry) is
answered from the store *as of that event's position*, never from the aggregate's latest
state: a case transferred later in the log must not pull earlier events to its new agency.

Synchronous: it reads the event store, so the relay calls it from a worker thread.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Generic, TypeVar
from uuid import UUID

from eventsourcing.domain import Aggregate
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.sqlite import SQLiteApplicationRecorder

from contracts.subjects import NETWORK_AGENCY
from domain.assistance import AssistanceReferral
from domain.case import Case
from domain.feedback import Feedback
from domain.network import Network
from domain.notification import Notification, StaffContact
from domain.prevention import (
    AwarenessActivity,
    FocalPointReadiness,
    PreventionPolicy,
    RiskAssessment,
    TrainingSession,
    WorkPlan,
)
from services.application.mechanism import ComplaintMechanism

K = TypeVar("K")
V = TypeVar("V")


class _Lru(Generic[K, V]):
    """A bounded mapping that forgets the least recently used entries.

    Bounded because a long-lived relay sees every case of the network; forgetting is safe
    because every miss is answered exactly from the store.
    """

    def __init__(self, maxsize: int) -> None:
        self._items: OrderedDict[K, V] = OrderedDict()
        self._maxsize = maxsize

    def get(self, key: K) -> V | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        if len(self._items) > self._maxsize:
            self._items.popitem(last=False)


_AGENCY_RECORDS = (
    TrainingSession.Event,
    AwarenessActivity.Event,
    FocalPointReadiness.Event,
    RiskAssessment.Event,
)


class Router:
    """Agency of each event, from a cache fed by the events as they pass."""

    def __init__(self, app: ComplaintMechanism, cache_size: int = 200_000) -> None:
        self._app = app
        self._holders: _Lru[UUID, str] = _Lru(cache_size)
        """case id -> agency holding it, as of the last routed event."""
        self._referral_cases: _Lru[UUID, UUID] = _Lru(cache_size)
        """referral id -> its case id (never changes)."""
        self._concerned: _Lru[UUID, str] = _Lru(cache_size)
        """feedback id -> concerned agency (never changes)."""
        self._recorders: _Lru[UUID, str] = _Lru(cache_size)
        """prevention record id -> the agency that recorded it (never changes)."""
        self.store_lookups = 0
        """How many misses were answered from the store (for tests and logs)."""

    def agency_of(self, event: Any, position: int) -> str:
        """The agency ``event``, stored at ``position``, is published under.

        Must be called for every event in position order (it is what keeps the cache true).
        """
        if isinstance(event, Case.Received):
            agency = str(event.actor.agency)
            self._holders.put(event.originator_id, agency)
            return agency
        if isinstance(event, Case.Transferred):
            self._holders.put(event.originator_id, event.to_agency)
            return event.to_agency
        if isinstance(event, Case.Event):
            holder = self._holders.get(event.originator_id)
            if holder is None:
                # The case after this very event: its version pins the point in the log.
                case = self._load(Case, event.originator_id, event.originator_version)
                holder = str(case.custodian)
                self._holders.put(event.originator_id, holder)
            return holder
        if isinstance(event, AssistanceReferral.Event):
            return self._case_holder(self._referral_case(event), position)
        if isinstance(event, Feedback.Received):
            self._concerned.put(event.originator_id, event.concerned_agency)
            return event.concerned_agency
        if isinstance(event, Feedback.Event):
            concerned = self._concerned.get(event.originator_id)
            if concerned is None:
                feedback = self._load(Feedback, event.originator_id, event.originator_version)
                concerned = str(feedback.concerned_agency)
                self._concerned.put(event.originator_id, concerned)
            return concerned
        if isinstance(
            event,
            (
                Network.Event,
                WorkPlan.Event,
                PreventionPolicy.Event,
                StaffContact.Event,
                Notification.Event,
            ),
        ):
            return NETWORK_AGENCY
        if isinstance(event, _AGENCY_RECORDS):
            return self._recording_agency(event)
        raise LookupError(f"no routing rule for {type(event).__qualname__}")

    def _recording_agency(self, event: Any) -> str:
        """Prevention records travel under the agency that recorded them (issue #22)."""
        agency = getattr(event, "agency", None)
        if isinstance(agency, str):  # the record's created-event names it
            self._recorders.put(event.originator_id, agency)
            return agency
        agency = self._recorders.get(event.originator_id)
        if agency is None:
            record = self._load(Aggregate, event.originator_id, event.originator_version)
            agency = str(record.agency)
            self._recorders.put(event.originator_id, agency)
        return agency

    def _referral_case(self, event: Any) -> UUID:
        if isinstance(event, AssistanceReferral.Made):
            self._referral_cases.put(event.originator_id, event.case_id)
            return UUID(str(event.case_id))
        case_id = self._referral_cases.get(event.originator_id)
        if case_id is None:
            referral = self._load(AssistanceReferral, event.originator_id, event.originator_version)
            case_id = UUID(str(referral.case_id))
            self._referral_cases.put(event.originator_id, case_id)
        return case_id

    def _case_holder(self, case_id: UUID, position: int) -> str:
        holder = self._holders.get(case_id)
        if holder is None:
            # The case as it was just before this position: a later transfer must not count.
            version = self._version_before(case_id, position)
            case = self._load(Case, case_id, version)
            holder = str(case.custodian)
            self._holders.put(case_id, holder)
        return holder

    def _load(self, cls: type[Aggregate], aggregate_id: UUID, version: int | None) -> Any:
        self.store_lookups += 1
        aggregate: Aggregate = self._app.repository.get(aggregate_id, version=version)
        if not isinstance(aggregate, cls):
            raise LookupError(f"{aggregate_id} is not a {cls.__name__}")
        return aggregate

    def version_before(self, aggregate_id: UUID, position: int) -> int | None:
        """The aggregate's last version stored before ``position`` (None: its latest); for
        the relay's other as-of-that-position look-ups (the agencies' share keys)."""
        return self._version_before(aggregate_id, position)

    def _version_before(self, aggregate_id: UUID, position: int) -> int | None:
        """The aggregate's last version stored before ``position`` (None: its latest).

        The library's recorders do not expose the notification id of an aggregate's events,
        so this asks the two databases cbcm supports directly (same tables the recorder
        created). On any other recorder it falls back to the latest version, which is right
        unless the case was transferred after ``position``.
        """
        recorder: Any = self._app.recorder
        table = recorder.events_table_name
        if isinstance(recorder, SQLiteApplicationRecorder):
            statement = (
                f"SELECT MAX(originator_version) FROM {table} "  # noqa: S608 - library's name
                "WHERE originator_id = ? AND rowid < ?"
            )
            with recorder.datastore.transaction(commit=False) as cursor:
                cursor.execute(statement, (aggregate_id.hex, position))
                row = cursor.fetchone()
            return None if row is None or row[0] is None else int(row[0])
        if isinstance(recorder, PostgresApplicationRecorder):
            from psycopg.sql import SQL, Identifier  # noqa: PLC0415 - PostgreSQL only

            query = SQL(
                "SELECT MAX(originator_version) AS v FROM {}.{} "
                "WHERE originator_id = %s AND notification_id < %s"
            ).format(Identifier(recorder.datastore.schema), Identifier(table))
            with recorder.datastore.transaction(commit=False) as cursor:
                cursor.execute(query, (aggregate_id, position))
                row = cursor.fetchone()
            return None if row is None or row["v"] is None else int(row["v"])
        return None
