"""The application service: one method per command of the complaint mechanism.

Each method loads what it needs, lets the domain decide, and saves every aggregate it
changed in one transaction. Library errors become domain errors here, at the edge. A caller
may pass the version it last read (``expected_version``); if the aggregate moved on since,
the command is refused with ``VersionConflict``, and a concurrent writer that wins the race
in the database is refused the same way: nothing is ever silently overwritten.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate, DomainEventProtocol
from eventsourcing.persistence import IntegrityError, Mapper, OperationalError, Transcoder
from eventsourcing.sqlite import SQLiteApplicationRecorder

from domain.actors import Actor
from domain.assistance import OPEN_STATUSES, AssistanceReferral
from domain.audit_grants import AuditGrants, audit_grants_id
from domain.case import Allegation, Case
from domain.errors import InvalidCommand, NotFound, VersionConflict
from domain.feedback import Feedback, forwarded_feedback_id
from domain.network import NETWORK_ID, Network
from domain.personal_data import DataSubject, PersonDetails
from domain.personal_data_reads import PersonalDataReads, reads_id
from domain.policy import NetworkPolicy
from domain.receipt import Receipt, receipt_id
from domain.vocabulary import (
    AgencyType,
    Channel,
    ClosureReason,
    ComplainantRole,
    ComplaintCategory,
    ConsentGiver,
    ConsentKind,
    ContactMethod,
    ErasureReason,
    FeedbackCategory,
    FeedbackChannel,
    InvestigationOutcome,
    Sector,
    ServiceType,
    SharedItem,
    TransferReason,
)
from services.application.idempotency import IdempotentRequest
from services.event_store.encoding import MsgspecMapper, MsgspecTranscoder
from services.event_store.errors import EventStoreUnavailable, OutcomeUnknown
from services.event_store.personal_data.config import personal_data_keys
from services.event_store.personal_data.data_keys import DataKeyErased

A = TypeVar("A", bound=Aggregate)


INTERNAL_AGGREGATES: tuple[type[Aggregate], ...] = (
    Receipt,
    PersonalDataReads,
    IdempotentRequest,
    AuditGrants,
)
"""Aggregates kept for the mechanism itself (receipt verifiers, the log of personal-data
reads, answers to retried requests, auditors' grants): never published, so a write's
``position`` (what read models are asked to reach) is that of its last published event."""


def is_published(event: object) -> bool:
    """Whether a stored event goes on the bus (everything but the internal aggregates')."""
    return not isinstance(event, tuple(cls.Event for cls in INTERNAL_AGGREGATES))


class StoreConnections(Protocol):
    """What the application asks of the guard on its PostgreSQL store's connections."""

    def activity(self) -> tuple[int, int]:
        """This thread's connections so far: how many it was handed, and how many calls
        failed on theirs."""
        ...


class DuplicateRequest(RuntimeError):
    """Another request with the same Idempotency-Key was saved first; nothing was recorded."""


@dataclass(frozen=True)
class Written:
    """What a command recorded: the aggregate, its new version, and the store position of
    its last event (read models can be asked to wait for that position)."""

    id: UUID
    version: int
    position: int


class ComplaintMechanism(Application[UUID]):
    """The network's community-based complaint mechanism, on an event store."""

    name = "cbcm"
    env = {"AGGREGATE_CACHE_MAXSIZE": "1000", "AGGREGATE_CACHE_FASTFORWARD": "y"}

    def construct_transcoder(self) -> Transcoder:
        return MsgspecTranscoder()

    def construct_mapper(self) -> Mapper[UUID]:
        return self.factory.mapper(
            transcoder=self.construct_transcoder(), mapper_class=MsgspecMapper
        )

    store_connections: StoreConnections | None = None
    """Set by the wiring on a PostgreSQL store (``services.event_store.config.OutageGuard``): tells
    whether a failed commit got as far as the database (and so may have gone through). On
    SQLite, whose commit is local and all or nothing, a failed commit recorded nothing."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self._network: Network | None = None
        self._also = threading.local()
        try:
            super().__init__(env=env)
            self.data_keys = personal_data_keys(self.env, self.recorder)
        except OperationalError as e:
            raise EventStoreUnavailable(str(e)) from e
        # Personal fields are sealed in every store that keeps them at rest (ADR 8).
        mapper: Any = self.mapper
        recorder: Any = self.recorder
        mapper.data_keys = recorder.data_keys = self.data_keys

    # ------------------------------------------------------------------ plumbing

    def save(self, *objs: Any, **kwargs: Any) -> Any:
        try:
            return super().save(*objs, **kwargs)
        finally:
            # A save that failed before reaching the recorder must leave nothing of its data
            # keys behind for the next write on this thread.
            if self.data_keys is not None:
                self.data_keys.discarded()

    def _load(self, cls: type[A], aggregate_id: UUID, version: int | None = None) -> A:
        try:
            aggregate: object = self.repository.get(aggregate_id, version=version)
        except AggregateNotFoundError:
            raise NotFound(f"no {cls.__name__} {aggregate_id}") from None
        except OperationalError as e:
            raise EventStoreUnavailable(str(e)) from e
        if not isinstance(aggregate, cls):
            raise NotFound(f"no {cls.__name__} {aggregate_id}")
        return aggregate

    @contextmanager
    def also_recording(self, make: Callable[[Written], Aggregate]) -> Iterator[None]:
        """Within this block (in this thread), the next command also saves ``make(answer)``
        in its own transaction: an Idempotency-Key's record goes in with what it records."""
        self._also.make = make
        try:
            yield
        finally:
            self._also.make = None

    def _commit(self, *aggregates: Aggregate, answer: Aggregate | None = None) -> Written:
        first = aggregates[0]
        named = answer or first
        loaded = first.version - len(first.pending_events)
        make: Callable[[Written], Aggregate] | None = getattr(self._also, "make", None)
        if not any(a.pending_events for a in aggregates):
            raise InvalidCommand("the command changed nothing")
        extra = () if make is None else (make(Written(named.id, named.version, 0)),)
        # The last event of the first aggregate: one look tells whether the transaction landed.
        ours = first.pending_events[-1] if first.pending_events else None
        used, failed = self._store_activity()
        try:
            recordings = self.save(*aggregates, *extra)
        except IntegrityError:
            # The library retries a commit that failed on its connection; if the failed one
            # went through after all (its answer lost), the retry collides with it.
            if self._store_activity()[1] > failed and self._landed(ours) is True:
                return self._written_after_all(named, aggregates)
            if extra and self._current_version(extra[0].id):
                raise DuplicateRequest(str(extra[0].id)) from None
            current = self._current_version(first.id)
            raise VersionConflict(first.id, expected=loaded, current=current) from None
        except (OperationalError, EventStoreUnavailable) as e:
            if self._store_activity()[0] == used:
                # No try reached PostgreSQL (or the store is SQLite, whose commit is local
                # and all or nothing): nothing can have been committed.
                raise EventStoreUnavailable(str(e)) from e
            landed = self._landed(ours)
            if landed is None:
                raise OutcomeUnknown(str(e)) from e
            if landed:
                return self._written_after_all(named, aggregates)
            raise EventStoreUnavailable(str(e)) from e
        except DataKeyErased:
            # Another process erased personal data of this record since it was read here.
            current = self._current_version(first.id)
            raise VersionConflict(first.id, expected=loaded, current=current) from None
        if not recordings:
            raise InvalidCommand("the command changed nothing")
        published = [r.notification.id for r in recordings if is_published(r.domain_event)]
        return Written(
            id=named.id,
            version=named.version,
            position=max(published or [r.notification.id for r in recordings]),
        )

    def _store_activity(self) -> tuple[int, int]:
        guard = self.store_connections
        return (0, 0) if guard is None else guard.activity()

    def _landed(self, ours: DomainEventProtocol[UUID] | None) -> bool | None:
        """Whether the transaction that recorded ``ours`` was committed after all (its answer
        lost): the stored event at its aggregate's version is ``ours``, every field equal
        (a concurrent writer's event at that version differs at least in its time or its
        content). ``None`` when the store cannot be asked (yet)."""
        if ours is None:
            return False
        try:
            stored = self.recorder.select_events(
                ours.originator_id,
                gt=ours.originator_version - 1,
                lte=ours.originator_version,
            )
            if not stored:
                return False
            found = self.mapper.to_domain_event(stored[0])
        except (OperationalError, EventStoreUnavailable):
            return None
        return type(found) is type(ours) and found == ours

    def _written_after_all(self, named: Aggregate, aggregates: tuple[Aggregate, ...]) -> Written:
        """The answer to a command whose commit went through though its answer was lost (as
        ``_commit`` answers: the position of its last published event)."""
        published = [a for a in aggregates if not isinstance(a, INTERNAL_AGGREGATES)]
        try:
            position = max(self.position_of(a.id, a.version) for a in published or aggregates)
        except EventStoreUnavailable as e:
            raise OutcomeUnknown(str(e)) from e
        return Written(id=named.id, version=named.version, position=position)

    def _current_version(self, aggregate_id: UUID) -> int:
        try:
            stored = self.recorder.select_events(aggregate_id, desc=True, limit=1)
        except OperationalError as e:
            raise EventStoreUnavailable(str(e)) from e
        return stored[0].originator_version if stored else 0

    def _load_expected(self, cls: type[A], aggregate_id: UUID, expected_version: int | None) -> A:
        """Load, refusing if the caller decided on a version the aggregate has moved past."""
        aggregate = self._load(cls, aggregate_id)
        if expected_version is not None and aggregate.version != expected_version:
            raise VersionConflict(aggregate_id, expected_version, aggregate.version)
        return aggregate

    def _create_from(
        self,
        cls: type[A],
        aggregate_id: UUID,
        expected_version: int | None,
        create: Callable[[A], Aggregate],
    ) -> Written:
        """A command on one aggregate that creates another: both are saved together, and the
        answer names the new one."""
        source = self._load_expected(cls, aggregate_id, expected_version)
        created = create(source)
        return self._commit(source, created, answer=created)

    def _change(
        self,
        cls: type[A],
        aggregate_id: UUID,
        expected_version: int | None,
        decide: Callable[[A], Any],
    ) -> Written:
        aggregate = self._load_expected(cls, aggregate_id, expected_version)
        made = decide(aggregate)
        if isinstance(made, Aggregate):
            others: tuple[Aggregate, ...] = (made,)
        elif isinstance(made, tuple):
            others = made
        else:
            others = ()
        return self._commit(aggregate, *others)

    # ------------------------------------------------------------------ network

    def network(self) -> Network:
        """The network's policy and registry, for reading only (do not change it)."""
        # Every case command consults the registry; a cached copy is reused while no newer
        # network event exists, instead of deep-copying it out of the repository each time.
        current = self._current_version(NETWORK_ID)
        cached = self._network
        if cached is None or cached.version != current:
            cached = self._network = self._load(Network, NETWORK_ID)
        return cached

    def has_network(self) -> bool:
        try:
            self.network()
        except NotFound:
            return False
        return True

    def establish_network(
        self, *, actor: Actor, name: str, at: datetime, policy: NetworkPolicy | None = None
    ) -> Written:
        return self._commit(
            Network.establish(actor=actor, name=name, policy=policy or NetworkPolicy(), at=at)
        )

    def set_policy(
        self,
        *,
        actor: Actor,
        policy: NetworkPolicy,
        at: datetime,
        expected_version: int | None = None,
    ) -> Written:
        return self._change(
            Network,
            NETWORK_ID,
            expected_version,
            lambda n: n.set_policy(actor=actor, policy=policy, at=at),
        )

    def register_agency(
        self,
        *,
        actor: Actor,
        code: str,
        name: str,
        agency_type: AgencyType,
        at: datetime,
        expected_version: int | None = None,
    ) -> Written:
        return self._change(
            Network,
            NETWORK_ID,
            expected_version,
            lambda n: n.register_agency(
                actor=actor, code=code, name=name, agency_type=agency_type, at=at
            ),
        )

    def designate_investigating_entity(
        self, *, actor: Actor, agency: str, entity: str, at: datetime
    ) -> Written:
        return self._change(
            Network,
            NETWORK_ID,
            None,
            lambda n: n.designate_investigating_entity(
                actor=actor, agency=agency, entity=entity, at=at
            ),
        )

    def appoint_focal_point(self, *, actor: Actor, agency: str, user: str, at: datetime) -> Written:
        return self._change(
            Network,
            NETWORK_ID,
            None,
            lambda n: n.appoint_focal_point(actor=actor, agency=agency, user=user, at=at),
        )

    def withdraw_focal_point(
        self, *, actor: Actor, agency: str, user: str, at: datetime
    ) -> Written:
        return self._change(
            Network,
            NETWORK_ID,
            None,
            lambda n: n.withdraw_focal_point(actor=actor, agency=agency, user=user, at=at),
        )

    def register_service_provider(
        self,
        *,
        actor: Actor,
        code: str,
        name: str,
        service_types: tuple[ServiceType, ...],
        areas: tuple[str, ...],
        at: datetime,
    ) -> Written:
        return self._change(
            Network,
            NETWORK_ID,
            None,
            lambda n: n.register_service_provider(
                actor=actor,
                code=code,
                name=name,
                service_types=service_types,
                areas=areas,
                at=at,
            ),
        )

    def register_agency_share_key(
        self, *, actor: Actor, agency: str, public_key: str, at: datetime
    ) -> Written:
        """Register (or replace) the X25519 key that personal data shared with ``agency`` is
        sealed to (issue #6)."""
        return self._change(
            Network,
            NETWORK_ID,
            None,
            lambda n: n.register_agency_share_key(
                actor=actor, agency=agency, public_key=public_key, at=at
            ),
        )

    # ------------------------------------------------------------------ cases

    def get_case(self, case_id: UUID, *, version: int | None = None) -> Case:
        """The case now, or as it was at ``version``."""
        return self._load(Case, case_id, version)

    def case_history(self, case_id: UUID) -> list[DomainEventProtocol[UUID]]:
        """Every event of the case, in order."""
        self.get_case(case_id)
        return list(self.events.get(case_id))

    def receive_complaint(
        self,
        *,
        actor: Actor,
        at: datetime,
        received_at: datetime,
        channel: Channel,
        complainant_role: ComplainantRole,
        immediate_safety_risk: bool,
        narrative: str,
        complainant: PersonDetails | None = None,
        survivor: PersonDetails | None = None,
        receipt: tuple[str, str] | None = None,
    ) -> Written:
        """Record a complaint; with ``receipt`` (locator, verifier of its secret), issue the
        receipt an anonymous complainant follows it with, in the same transaction."""
        case = Case.receive(
            actor=actor,
            received_at=received_at,
            channel=channel,
            complainant_role=complainant_role,
            immediate_safety_risk=immediate_safety_risk,
            narrative=narrative,
            complainant=complainant,
            survivor=survivor,
            network=self.network(),
            at=at,
        )
        if receipt is None:
            return self._commit(case)
        locator, verifier = receipt
        issued = Receipt.issue(
            actor=actor, case_id=case.id, locator=locator, verifier=verifier, at=at
        )
        return self._commit(case, issued, answer=case)

    def receipt_exists(self, locator: str) -> bool:
        return bool(self._current_version(receipt_id(locator)))

    def receipt(self, locator: str) -> Receipt | None:
        """The receipt with this locator, if any."""
        try:
            return self._load(Receipt, receipt_id(locator))
        except NotFound:
            return None

    def record_personal_data_read(
        self, case_id: UUID, *, actor: Actor, fields: tuple[str, ...], purpose: str, at: datetime
    ) -> None:
        """Record, before anything is shown, that ``actor`` is shown these personal fields of
        the case. Concurrent readers of one case are serialised by retrying."""
        for _attempt in range(20):
            try:
                log = self._load(PersonalDataReads, reads_id(case_id))
            except NotFound:
                log = PersonalDataReads.start(case_id=case_id, at=at)
            log.record(actor=actor, fields=fields, purpose=purpose, at=max(at, log.modified_on))
            try:
                self.save(log)
            except IntegrityError:
                continue
            except OperationalError as e:
                raise EventStoreUnavailable(str(e)) from e
            return
        raise EventStoreUnavailable(
            f"could not record a read of case {case_id}: too much contention"
        )

    def personal_data_reads(self, case_id: UUID) -> list[PersonalDataReads.Read]:
        """Who was shown which personal fields of the case, and when, in order."""
        try:
            events = list(self.events.get(reads_id(case_id)))
        except OperationalError as e:
            raise EventStoreUnavailable(str(e)) from e
        return [e for e in events if isinstance(e, PersonalDataReads.Read)]

    # ------------------------------------------------------------------ auditors' grants

    def grant_audit_access(
        self, case_id: UUID, *, actor: Actor, auditor: str, reason: str, at: datetime
    ) -> Written:
        """The coordinator lets ``auditor`` see this case's personal data, saying why."""
        self.get_case(case_id)
        try:
            grants = self._load(AuditGrants, audit_grants_id(case_id))
        except NotFound:
            grants = AuditGrants.start(case_id=case_id, at=at)
        grants.grant(actor=actor, auditor=auditor, reason=reason, at=at)
        return self._commit(grants)

    def revoke_audit_access(
        self, case_id: UUID, *, actor: Actor, auditor: str, at: datetime
    ) -> Written:
        """The coordinator ends ``auditor``'s access to this case's personal data."""
        self.get_case(case_id)
        try:
            grants = self._load(AuditGrants, audit_grants_id(case_id))
        except NotFound:  # nothing to revoke: the empty grants refuse it (and are not saved)
            grants = AuditGrants.start(case_id=case_id, at=at)
        grants.revoke(actor=actor, auditor=auditor, at=at)
        return self._commit(grants)

    def audit_grantees(self, case_id: UUID) -> frozenset[str]:
        """The auditors who may see this case's personal data now."""
        if not self._current_version(audit_grants_id(case_id)):
            return frozenset()
        return self._load(AuditGrants, audit_grants_id(case_id)).grantees

    def idempotent_request(self, record: UUID) -> IdempotentRequest | None:
        try:
            return self._load(IdempotentRequest, record)
        except NotFound:
            return None

    def position_of(self, aggregate_id: UUID, version: int) -> int:
        """The store position of one event (the answer replayed to a retried request)."""
        recorder: Any = self.recorder
        table = recorder.events_table_name
        try:
            if isinstance(recorder, SQLiteApplicationRecorder):
                statement = (
                    f"SELECT rowid FROM {table} "  # noqa: S608 - the library's table name
                    "WHERE originator_id = ? AND originator_version = ?"
                )
                with recorder.datastore.transaction(commit=False) as cursor:
                    cursor.execute(statement, (aggregate_id.hex, version))
                    row = cursor.fetchone()
                return int(row[0]) if row else 0
            from psycopg.sql import SQL, Identifier  # noqa: PLC0415 - PostgreSQL only

            query = SQL(
                "SELECT notification_id AS p FROM {}.{} "
                "WHERE originator_id = %s AND originator_version = %s"
            ).format(Identifier(recorder.datastore.schema), Identifier(table))
            with recorder.datastore.transaction(commit=False) as cursor:
                cursor.execute(query, (aggregate_id, version))
                found = cursor.fetchone()
            return int(found["p"]) if found else 0
        except OperationalError as e:
            raise EventStoreUnavailable(str(e)) from e

    def assess_case(
        self,
        case_id: UUID,
        *,
        actor: Actor,
        category: ComplaintCategory,
        allegation: Allegation | None = None,
        at: datetime,
        expected_version: int | None = None,
    ) -> Written:
        network = self.network()
        return self._change(
            Case,
            case_id,
            expected_version,
            lambda c: c.assess(
                actor=actor, category=category, allegation=allegation, network=network, at=at
            ),
        )

    def assign_focal_points(
        self,
        case_id: UUID,
        *,
        actor: Actor,
        focal_points: tuple[str, ...],
        at: datetime,
        expected_version: int | None = None,
    ) -> Written:
        network = self.network()
        return self._change(
            Case,
            case_id,
            expected_version,
            lambda c: c.assign_focal_points(
                actor=actor, focal_points=focal_points, network=network, at=at
            ),
        )

    def transfer_case(
        self,
        case_id: UUID,
        *,
        actor: Actor,
        to_agency: str,
        reason: TransferReason,
        shared: tuple[SharedItem, ...],
        note: str | None = None,
        at: datetime,
        expected_version: int | None = None,
    ) -> Written:
        network = self.network()
        return self._change(
            Case,
            case_id,
            expected_version,
            lambda c: c.transfer(
                actor=actor,
                to_agency=to_agency,
                reason=reason,
                shared=shared,
                note=note,
                network=network,
                at=at,
            ),
        )

    def give_consent(
        self,
        case_id: UUID,
        *,
        actor: Actor,
        kind: ConsentKind,
        given_by: ConsentGiver,
        contact_methods: tuple[ContactMethod, ...] = (),
        at: datetime,
        expected_version: int | None = None,
    ) -> Written:
        return self._change(
            Case,
            case_id,
            expected_version,
            lambda c: c.give_consent(
                actor=actor, kind=kind, given_by=given_by, contact_methods=contact_methods, at=at
            ),
        )

    def withdraw_consent(
        self,
        case_id: UUID,
        *,
        actor: Actor,
        kind: ConsentKind,
        at: datetime,
        expected_version: int | None = None,
    ) -> Written:
        def decide(case: Case) -> tuple[AssistanceReferral, ...]:
            case.withdraw_consent(actor=actor, kind=kind, at=at)
            if kind is not ConsentKind.ASSISTANCE_REFERRAL:
                return ()
            # Without consent no service goes on: open referrals are declined with it.
            stopped = []
            for referral_id in case.assistance_referrals:
                referral = self._load(AssistanceReferral, referral_id)
                if referral.status in OPEN_STATUSES:
                    referral.decline_by_survivor(actor=actor, custodian=case.custodian, at=at)
                    stopped.append(referral)
            return tuple(stopped)

        return self._change(Case, case_id, expected_version, decide)

    def refer_for_assistance(
        self,
        case_id: UUID,
        *,
        actor: Actor,
        service_type: ServiceType,
        provider: str,
        area: str,
        share_contact: bool = False,
        at: datetime,
        expected_version: int | None = None,
    ) -> Written:
        """Refer the survivor to a service. Returns the new referral's id and position."""
        network = self.network()
        return self._create_from(
            Case,
            case_id,
            expected_version,
            lambda case: case.refer_for_assistance(
                actor=actor,
                service_type=service_type,
                provider=provider,
                area=area,
                share_contact=share_contact,
                network=network,
                at=at,
            ),
        )

    def refer_for_investigation(
        self,
        case_id: UUID,
        *,
        actor: Actor,
        entity: str,
        shared: tuple[SharedItem, ...],
        at: datetime,
        expected_version: int | None = None,
    ) -> Written:
        network = self.network()
        return self._change(
            Case,
            case_id,
            expected_version,
            lambda c: c.refer_for_investigation(
                actor=actor, entity=entity, shared=shared, network=network, at=at
            ),
        )

    def acknowledge_investigation(
        self, case_id: UUID, *, actor: Actor, at: datetime, expected_version: int | None = None
    ) -> Written:
        return self._change(
            Case,
            case_id,
            expected_version,
            lambda c: c.acknowledge_investigation(actor=actor, at=at),
        )

    def record_investigation_outcome(
        self,
        case_id: UUID,
        *,
        actor: Actor,
        outcome: InvestigationOutcome,
        at: datetime,
        expected_version: int | None = None,
    ) -> Written:
        return self._change(
            Case,
            case_id,
            expected_version,
            lambda c: c.record_investigation_outcome(actor=actor, outcome=outcome, at=at),
        )

    def give_feedback(
        self,
        case_id: UUID,
        *,
        actor: Actor,
        message: str,
        channel: FeedbackChannel,
        at: datetime,
        expected_version: int | None = None,
    ) -> Written:
        return self._change(
            Case,
            case_id,
            expected_version,
            lambda c: c.give_feedback(actor=actor, message=message, channel=channel, at=at),
        )

    def mark_as_duplicate(
        self,
        case_id: UUID,
        *,
        actor: Actor,
        original_case_id: UUID,
        at: datetime,
        expected_version: int | None = None,
    ) -> Written:
        original = self._load(Case, original_case_id)
        return self._change(
            Case,
            case_id,
            expected_version,
            lambda c: c.mark_as_duplicate_of(actor=actor, original=original, at=at),
        )

    def close_case(
        self,
        case_id: UUID,
        *,
        actor: Actor,
        reason: ClosureReason,
        no_outcome_reason: str | None = None,
        no_feedback_reason: str | None = None,
        at: datetime,
        expected_version: int | None = None,
    ) -> Written:
        return self._change(
            Case,
            case_id,
            expected_version,
            lambda c: c.close(
                actor=actor,
                reason=reason,
                no_outcome_reason=no_outcome_reason,
                no_feedback_reason=no_feedback_reason,
                at=at,
            ),
        )

    def reopen_case(
        self,
        case_id: UUID,
        *,
        actor: Actor,
        reason: str,
        at: datetime,
        expected_version: int | None = None,
    ) -> Written:
        return self._change(
            Case,
            case_id,
            expected_version,
            lambda c: c.reopen(actor=actor, reason=reason, at=at),
        )

    def forward_to_feedback_mechanism(
        self,
        case_id: UUID,
        *,
        actor: Actor,
        category: FeedbackCategory,
        sector: Sector,
        concerned_agency: str,
        at: datetime,
        expected_version: int | None = None,
    ) -> Written:
        """A complaint assessed as non-sensitive feedback goes to the concerned agency's CFM:
        a Feedback item is opened with what was said, and the case is closed, atomically."""
        network = self.network()

        def forward(case: Case) -> Feedback:
            if (
                case.assessment is None
                or case.assessment.category is not ComplaintCategory.NON_SENSITIVE_FEEDBACK
            ):
                raise InvalidCommand(
                    f"case {case_id} must be assessed as non-sensitive feedback to go to a CFM"
                )
            case.close(actor=actor, reason=ClosureReason.REFERRED_TO_FEEDBACK_MECHANISM, at=at)
            return Feedback.receive(
                actor=actor,
                channel=case.channel,
                category=category,
                sector=sector,
                concerned_agency=concerned_agency,
                text=case.narrative,
                network=network,
                source_case_id=case_id,
                at=at,
            )

        return self._create_from(Case, case_id, expected_version, forward)

    # ------------------------------------------------------------------ erasure

    def erase_personal_data(
        self,
        case_id: UUID,
        *,
        actor: Actor,
        subjects: tuple[DataSubject, ...],
        reason: ErasureReason,
        at: datetime,
        expected_version: int | None = None,
    ) -> Written:
        """Erase these people's personal data from the case and every record of it (its
        referrals, auditors' grants, the feedback item it was forwarded as), for good: their
        data keys are destroyed in the same transaction as the erasure event."""
        network = self.network()

        def decide(case: Case) -> tuple[Aggregate, ...]:
            records = list(self.records_of(case))
            forwarded: tuple[Aggregate, ...] = ()
            feedback_id = forwarded_feedback_id(case_id)
            # By retention, the copy in the CFM goes by its own loop's retention instead: the
            # concerned agency may still be answering it.
            if reason is not ErasureReason.RETENTION_EXPIRED and self._current_version(feedback_id):
                records.append(feedback_id)
                feedback = self._load(Feedback, feedback_id)
                touches = {DataSubject.SURVIVOR, DataSubject.COMPLAINANT}.intersection(subjects)
                if touches and not feedback.erased:
                    feedback.erase_personal_data(
                        actor=actor, reason=reason, network=network, at=at, with_case=case_id
                    )
                    forwarded = (feedback,)
            case.erase_personal_data(
                actor=actor,
                subjects=subjects,
                reason=reason,
                records=tuple(records),
                network=network,
                at=at,
            )
            return forwarded

        return self._change(Case, case_id, expected_version, decide)

    def records_of(self, case: Case) -> tuple[UUID, ...]:
        """The case's other records that hold personal data of its people: its assistance
        referrals and its auditors' grants."""
        grants = audit_grants_id(case.id)
        return (*case.assistance_referrals, *((grants,) if self._current_version(grants) else ()))

    def has_live_personal_data(self, scopes: tuple[UUID, ...]) -> bool:
        """Whether any of these records still holds personal data that can be read."""
        return self.data_keys is not None and self.data_keys.table.any_live(scopes)

    def erase_feedback(
        self, feedback_id: UUID, *, actor: Actor, reason: ErasureReason, at: datetime
    ) -> Written:
        """Erase what was said and answered in one community feedback item, for good."""
        network = self.network()
        return self._change(
            Feedback,
            feedback_id,
            None,
            lambda f: f.erase_personal_data(actor=actor, reason=reason, network=network, at=at),
        )

    # ------------------------------------------------------------------ assistance referrals

    def get_referral(self, referral_id: UUID) -> AssistanceReferral:
        return self._load(AssistanceReferral, referral_id)

    def accept_referral(self, referral_id: UUID, *, actor: Actor, at: datetime) -> Written:
        return self._change(
            AssistanceReferral, referral_id, None, lambda r: r.accept(actor=actor, at=at)
        )

    def decline_referral_by_provider(
        self, referral_id: UUID, *, actor: Actor, reason: str | None = None, at: datetime
    ) -> Written:
        return self._change(
            AssistanceReferral,
            referral_id,
            None,
            lambda r: r.decline_by_provider(actor=actor, reason=reason, at=at),
        )

    def decline_referral_by_survivor(
        self, referral_id: UUID, *, actor: Actor, at: datetime
    ) -> Written:
        return self._change(
            AssistanceReferral,
            referral_id,
            None,
            lambda r: r.decline_by_survivor(actor=actor, custodian=self._custodian_of(r), at=at),
        )

    def _custodian_of(self, referral: AssistanceReferral) -> str:
        return self._load(Case, referral.case_id).custodian

    def deliver_referral(self, referral_id: UUID, *, actor: Actor, at: datetime) -> Written:
        return self._change(
            AssistanceReferral, referral_id, None, lambda r: r.deliver(actor=actor, at=at)
        )

    def follow_up_referral(
        self, referral_id: UUID, *, actor: Actor, note: str | None = None, at: datetime
    ) -> Written:
        return self._change(
            AssistanceReferral,
            referral_id,
            None,
            lambda r: r.follow_up(actor=actor, custodian=self._custodian_of(r), note=note, at=at),
        )

    # ------------------------------------------------------------------ community feedback

    def get_feedback(self, feedback_id: UUID) -> Feedback:
        return self._load(Feedback, feedback_id)

    def receive_feedback(
        self,
        *,
        actor: Actor,
        channel: Channel,
        category: FeedbackCategory,
        sector: Sector,
        concerned_agency: str,
        text: str,
        at: datetime,
    ) -> Written:
        return self._commit(
            Feedback.receive(
                actor=actor,
                channel=channel,
                category=category,
                sector=sector,
                concerned_agency=concerned_agency,
                text=text,
                network=self.network(),
                at=at,
            )
        )

    def respond_to_feedback(
        self, feedback_id: UUID, *, actor: Actor, response: str, at: datetime
    ) -> Written:
        return self._change(
            Feedback,
            feedback_id,
            None,
            lambda f: f.respond(actor=actor, response=response, at=at),
        )

    def close_feedback_loop(self, feedback_id: UUID, *, actor: Actor, at: datetime) -> Written:
        return self._change(Feedback, feedback_id, None, lambda f: f.close_loop(actor=actor, at=at))

    # ------------------------------------------------------------------ the log

    def stored_positions(self) -> Iterator[int]:
        """Positions of every stored event, in order (for checks and tools)."""
        start = 1
        while True:
            batch = self.recorder.select_notifications(start=start, limit=500)
            if not batch:
                return
            yield from (n.id for n in batch)
            start = batch[-1].id + 1
