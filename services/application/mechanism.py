"""The application service: one command per step of the complaint mechanism.

Most commands are declarations (``Decision``...: which aggregate, which domain method, what
it consults); the rest are written out where they coordinate several aggregates. Each loads
what it needs, lets the domain decide, and saves every aggregate it changed in one
transaction (``services.application.store``). Library errors become domain errors at that
edge. A caller may name the version it last read (``Expected(id, version)``); if the aggregate
moved on since, the command is refused with ``VersionConflict``, and a concurrent writer that
wins the race in the database is refused the same way: nothing is ever silently overwritten.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any, TypeVar, Unpack
from uuid import UUID

from eventsourcing.domain import Aggregate, DomainEventProtocol
from eventsourcing.persistence import (
    IntegrityError,
    OperationalError,
)

from domain.actors import Actor
from domain.assistance import OPEN_STATUSES, AssistanceReferral
from domain.audit_grants import AuditGrants, audit_grants_id
from domain.case import Case
from domain.case_notices import CaseNotices, case_notices_id
from domain.errors import InvalidCommand, NotFound, VersionConflict
from domain.feedback import Feedback, forwarded_feedback_id
from domain.network import NETWORK_ID, Network
from domain.notification import (
    ContactPreferences,
    Notification,
    StaffContact,
    contact_id,
)
from domain.personal_data import DataSubject, PersonDetails
from domain.personal_data_reads import PersonalDataReads, reads_id
from domain.policy import NetworkPolicy
from domain.receipt import Receipt, receipt_id
from domain.vocabulary import (
    Channel,
    ClosureReason,
    ComplainantRole,
    ComplaintCategory,
    ConsentKind,
    ErasureReason,
    FeedbackCategory,
    Sector,
)
from services.application.commands import (
    Decision,
    DecisionConsulting,
    NetworkDecision,
    Target,
    Written,
    expecting,
    unpack,
)
from services.application.idempotency import IdempotentRequest
from services.application.prevention import PreventionWork
from services.application.webhooks import WebhookCommands
from services.event_store.errors import EventStoreUnavailable

A = TypeVar("A", bound=Aggregate)


def the_network(app: ComplaintMechanism, _: object) -> Network:
    """What most case rules consult: the network's policy and registry."""
    return app.network()


def the_custodian(app: ComplaintMechanism, referral: AssistanceReferral) -> str:
    """The agency holding the referral's case (it may follow its referrals up)."""
    return app.get_case(referral.case_id).custodian


class ComplaintMechanism(WebhookCommands, PreventionWork):
    """The network's community-based complaint mechanism, on an event store: one command per
    step of the SOP, most of them declared (``services.application.commands``)."""

    name = "cbcm"
    env = {"AGGREGATE_CACHE_MAXSIZE": "1000", "AGGREGATE_CACHE_FASTFORWARD": "y"}

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self._network: Network | None = None
        super().__init__(env=env)

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
        """Replace the deadlines and thresholds (refused if the coordinator decided on a
        version of the network that has moved on)."""
        return self.decide_on(
            Network,
            expecting(NETWORK_ID, expected_version),
            lambda n: n.set_policy(actor=actor, policy=policy, at=at),
        )

    register_agency = NetworkDecision(Network.register_agency)
    designate_investigating_entity = NetworkDecision(Network.designate_investigating_entity)
    appoint_focal_point = NetworkDecision(Network.appoint_focal_point)
    withdraw_focal_point = NetworkDecision(Network.withdraw_focal_point)
    register_service_provider = NetworkDecision(Network.register_service_provider)
    register_agency_share_key = NetworkDecision(Network.register_agency_share_key)
    """Register (or replace) the X25519 key that personal data shared with an agency is sealed
    to (issue #6)."""

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

    def case_version(self, case_id: UUID) -> int:
        """The version of the case's last recorded event (0: no such record), without
        loading it."""
        return self._current_version(case_id)

    def record_export(
        self,
        readers: dict[UUID, Actor],
        *,
        fields: tuple[str, ...],
        purpose: str,
        at: datetime,
    ) -> None:
        """Record, in the read log of every case exported (``readers``: each case and the
        actor it was exported to), that it was exported: one read per case, all in ONE
        transaction, so either every case of the export shows it or none does (and then the
        export is not handed out). Concurrent readers of the same cases: retried."""
        for _attempt in range(20):
            logs = []
            for case_id, actor in readers.items():
                try:
                    log = self._load(PersonalDataReads, reads_id(case_id))
                except NotFound:
                    log = PersonalDataReads.start(case_id=case_id, at=at)
                log.record(actor=actor, fields=fields, purpose=purpose, at=max(at, log.modified_on))
                logs.append(log)
            try:
                self.save(*logs)
            except IntegrityError:
                continue
            except OperationalError as e:
                raise EventStoreUnavailable(str(e)) from e
            return
        raise EventStoreUnavailable("could not record an export: too much contention")

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

    assess_case = DecisionConsulting(Case, Case.assess, consults=the_network)
    assign_focal_points = DecisionConsulting(Case, Case.assign_focal_points, consults=the_network)
    transfer_case = DecisionConsulting(Case, Case.transfer, consults=the_network)
    give_consent = Decision(Case, Case.give_consent)

    def withdraw_consent(
        self, case: Target, /, *, actor: Actor, kind: ConsentKind, at: datetime
    ) -> Written:
        """Record that the survivor withdrew a consent; without assistance consent no service
        goes on, so the case's open referrals are declined in the same transaction."""

        def decide(case: Case) -> tuple[AssistanceReferral, ...]:
            case.withdraw_consent(actor=actor, kind=kind, at=at)
            if kind is not ConsentKind.ASSISTANCE_REFERRAL:
                return ()
            # Without consent no service goes on: open referrals are declined with it.
            stopped = []
            for referral_id in case.assistance_referrals:
                referral = self._load(AssistanceReferral, referral_id)
                if referral.status in OPEN_STATUSES:
                    referral.decline_by_survivor(case.custodian, actor=actor, at=at)
                    stopped.append(referral)
            return tuple(stopped)

        return self.decide_on(Case, case, decide)

    refer_for_assistance = DecisionConsulting(
        Case, Case.refer_for_assistance, consults=the_network, opens=True
    )
    """Refer the survivor to a service; the answer names the new referral."""
    refer_for_investigation = DecisionConsulting(
        Case, Case.refer_for_investigation, consults=the_network
    )
    acknowledge_investigation = Decision(Case, Case.acknowledge_investigation)
    record_investigation_outcome = Decision(Case, Case.record_investigation_outcome)
    give_feedback = Decision(Case, Case.give_feedback)

    def mark_as_duplicate(
        self, case: Target, /, *, actor: Actor, original_case_id: UUID, at: datetime
    ) -> Written:
        """Record that the case repeats ``original_case_id`` (which the domain consults)."""
        original = self._load(Case, original_case_id)
        return self.decide_on(
            Case, case, lambda c: c.mark_as_duplicate_of(actor=actor, original=original, at=at)
        )

    close_case = Decision(Case, Case.close)
    reopen_case = Decision(Case, Case.reopen)

    def forward_to_feedback_mechanism(
        self,
        target: Target,
        /,
        *,
        actor: Actor,
        category: FeedbackCategory,
        sector: Sector,
        concerned_agency: str,
        at: datetime,
    ) -> Written:
        """A complaint assessed as non-sensitive feedback goes to the concerned agency's CFM:
        a Feedback item is opened with what was said, and the case is closed, atomically."""
        network = self.network()
        case_id, _ = unpack(target)

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

        return self.decide_on(Case, target, forward, opens=True)

    # ------------------------------------------------------------------ erasure

    def erase_personal_data(
        self,
        target: Target,
        /,
        *,
        actor: Actor,
        subjects: tuple[DataSubject, ...],
        reason: ErasureReason,
        at: datetime,
    ) -> Written:
        """Erase these people's personal data from the case and every record of it (its
        referrals, auditors' grants, the feedback item it was forwarded as), for good: their
        data keys are destroyed in the same transaction as the erasure event."""
        network = self.network()
        case_id, _ = unpack(target)

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
                        network, actor=actor, reason=reason, at=at, with_case=case_id
                    )
                    forwarded = (feedback,)
            case.erase_personal_data(
                network,
                actor=actor,
                subjects=subjects,
                reason=reason,
                records=tuple(records),
                at=at,
            )
            return forwarded

        return self.decide_on(Case, target, decide)

    def records_of(self, case: Case) -> tuple[UUID, ...]:
        """The case's other records that hold personal data of its people: its assistance
        referrals and its auditors' grants."""
        grants = audit_grants_id(case.id)
        return (*case.assistance_referrals, *((grants,) if self._current_version(grants) else ()))

    def has_live_personal_data(self, scopes: tuple[UUID, ...]) -> bool:
        """Whether any of these records still holds personal data that can be read."""
        return self.data_keys is not None and self.data_keys.table.any_live(scopes)

    erase_feedback = DecisionConsulting(
        Feedback, Feedback.erase_personal_data, consults=the_network
    )
    """Erase what was said and answered in one community feedback item, for good."""

    # ------------------------------------------------------------------ assistance referrals

    def get_referral(self, referral_id: UUID) -> AssistanceReferral:
        return self._load(AssistanceReferral, referral_id)

    accept_referral = Decision(AssistanceReferral, AssistanceReferral.accept)
    decline_referral_by_provider = Decision(
        AssistanceReferral, AssistanceReferral.decline_by_provider
    )
    decline_referral_by_survivor = DecisionConsulting(
        AssistanceReferral, AssistanceReferral.decline_by_survivor, consults=the_custodian
    )
    deliver_referral = Decision(AssistanceReferral, AssistanceReferral.deliver)
    follow_up_referral = DecisionConsulting(
        AssistanceReferral, AssistanceReferral.follow_up, consults=the_custodian
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

    respond_to_feedback = Decision(Feedback, Feedback.respond)
    close_feedback_loop = Decision(Feedback, Feedback.close_loop)

    # ------------------------------------------------------------------ staff contacts

    def staff_contact(self, user: str) -> StaffContact | None:
        """``user``'s contact record (``None``: none registered)."""
        try:
            return self._load(StaffContact, contact_id(user))
        except NotFound:
            return None

    def register_staff_contact(
        self, *, actor: Actor, user: str, at: datetime, **preferences: Unpack[ContactPreferences]
    ) -> Written:
        """Record (or replace) how and when to reach ``user`` (issue #18)."""
        if self._current_version(contact_id(user)) == 0:
            return self._commit(StaffContact.register(actor=actor, user=user, at=at, **preferences))
        return self.decide_on(
            StaffContact,
            contact_id(user),
            lambda c: c.change(actor=actor, at=at, **preferences),
        )

    def erase_staff_contact(self, *, actor: Actor, user: str, at: datetime) -> Written:
        """Destroy ``user``'s addresses for good."""
        return self.decide_on(
            StaffContact,
            contact_id(user),
            lambda c: c.erase_personal_data(actor=actor, at=at),
        )

    def record_notification(self, notice: Notification) -> Written | None:
        """Record a notice sent or given up; ``None`` if that notice (same recipient, kind
        and subject) is already in the log: the log holds at most one of each."""
        try:
            return self.record_notifications([notice])
        except VersionConflict:
            if self._current_version(notice.id) > 0:
                return None
            raise

    def record_notifications(self, notices: list[Notification]) -> Written:
        """Record several notices in one transaction (refused whole, ``VersionConflict``,
        if one of them is already in the log).

        Each notice about a case is named, in the same transaction, in that case's index of
        notices (``CaseNotices``): the custody trail finds them by the case's id. Another
        writer's entry in an index since it was read is retried here."""
        # a failed commit drains the aggregates' pending events: keep them for a retry
        pending = [list(n.pending_events) for n in notices]
        for _attempt in range(20):
            for notice, events in zip(notices, pending, strict=True):
                notice.collect_events()
                notice.pending_events.extend(events)
            indexes = self._case_notice_entries(pending)
            try:
                return self._commit(*notices, *indexes)
            except VersionConflict:
                if any(self._current_version(n.id) > 0 for n in notices):
                    raise
                # only an index moved (another writer's notices about the same case): again
        raise EventStoreUnavailable("could not index notices: too much contention")

    def _case_notice_entries(self, pending: list[list[Any]]) -> list[CaseNotices]:
        """The entries naming each notice about a case in that case's index (a notice is
        one ``Sent`` or ``GivenUp`` event, which names its case)."""
        by_case: dict[UUID, list[Any]] = {}
        for events in pending:
            for recorded in events:
                case_id = getattr(recorded, "case_id", None)
                if case_id is not None:
                    by_case.setdefault(case_id, []).append(recorded)
        indexes = []
        for case_id, recorded in by_case.items():
            at = max(e.timestamp for e in recorded)
            try:
                index = self._load(CaseNotices, case_notices_id(case_id))
            except NotFound:
                index = CaseNotices.start(case_id=case_id, at=at)
            # one already named is already in the log: the commit refuses it (VersionConflict)
            names = tuple(e.originator_id for e in recorded if e.originator_id not in index.notices)
            if names:
                index.index(notices=names, at=at)
                indexes.append(index)
        return indexes

    def notification_recorded(self, notice_id: UUID) -> bool:
        return self._current_version(notice_id) > 0

    def notification_outcome(self, notice_id: UUID) -> str | None:
        """``sent`` or ``undelivered``, as the log has the notice (``None``: not there)."""
        try:
            stored = self.recorder.select_events(notice_id, limit=1)
        except OperationalError as e:
            raise EventStoreUnavailable(str(e)) from e
        if not stored:
            return None
        event = self.mapper.to_domain_event(stored[0])
        return "undelivered" if isinstance(event, Notification.GivenUp) else "sent"

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
