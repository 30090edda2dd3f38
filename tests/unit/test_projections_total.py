"""Every projection applies every message it can be given (issue #12, ADR 10).

Two properties, searched with Hypothesis rather than hand-picked:

1. A state machine drives the real application with any sequence of commands, their values
   drawn from everything the types allow (a complaint received in the year 1, an incident in
   the year 9999, a deadline of a century). What the domain refuses is refused with a named
   error; what it records is translated into contract messages exactly as the relay does and
   applied to the three read models, which must never raise and must keep their invariants:
   the inbox holds open cases only, each in the inbox of the agency holding it; every
   statistics report adds up.
2. Arbitrary messages that pass the published JSON Schemas (generated from the schemas
   themselves), in any order and about a handful of shared cases, are applied to every
   projection without raising.

``make test`` runs a bounded number of examples; ``make soak`` (marker ``soak``) a long run.
"""

from __future__ import annotations

import json
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from uuid import UUID

import jsonschema_rs
import msgspec
import msgspec.inspect as mi
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)

from contracts.actors import ActorRef
from contracts.case import CaseReceivedV1
from contracts.catalogue import (
    MESSAGE_TYPES,
    decode_message,
    encode_message,
    envelope_of,
    json_schema,
    schema_id,
)
from contracts.envelope import CloudEvent, message_type
from domain.actors import Actor, Role
from domain.case import Allegation
from domain.errors import DomainError, ImplausibleTime
from domain.personal_data import DataSubject, PersonDetails
from domain.policy import NetworkPolicy
from domain.vocabulary import (
    AgeBand,
    AllegationSubtype,
    AllegationType,
    Channel,
    ClosureReason,
    ComplainantRole,
    ComplaintCategory,
    ConsentGiver,
    ConsentKind,
    ErasureReason,
    FeedbackChannel,
    InvestigationOutcome,
    PersonnelCategory,
    ServiceType,
    Sex,
    SharedItem,
    TransferReason,
)
from projections.assistance import AssistanceProjection
from projections.base import Projection, create_position_table
from projections.inbox import InboxProjection
from projections.inbox.model import case_row, inbox
from projections.stats import StatisticsProjection
from projections.stats.reports import Report, reports
from services.application.mechanism import ComplaintMechanism
from services.application.store import is_published
from services.bootstrap import complaint_mechanism
from services.projector.runner import apply_batch, open_projection
from services.relay.translation import to_cloud_event
from services.settings import Settings
from tests.api_world import build_network
from tests.world import AREA, COORDINATOR

QUICK = {"machines": 15, "steps": 50, "messages": 80}
"""``make test``: a few seconds."""
LONG = {"machines": 1_000, "steps": 100, "messages": 20_000}
"""``make soak`` (marker ``soak``): about 10 minutes on two cores (measured: 605 s)."""

START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
AGENCIES = ("unhcr", "wfp")
OPERATOR = {a: Actor(f"op-{a}", a, Role.INTAKE_OPERATOR) for a in AGENCIES}
FOCAL_POINT = {a: Actor(f"fp-{a}", a, Role.FOCAL_POINT) for a in AGENCIES}
INVESTIGATOR = {a: Actor(f"inv-{a}", a, Role.INVESTIGATING_ENTITY) for a in AGENCIES}
PROVIDER = Actor("prov-med", "med-a", Role.SERVICE_PROVIDER)

zones = st.integers(min_value=-14 * 60, max_value=14 * 60).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
any_instant = st.datetimes(timezones=zones)
"""Any zone-aware time Python can hold, the year 1 and the year 9999 included."""


def near(now: datetime) -> st.SearchStrategy[datetime]:
    """A time around ``now``: mostly shortly before it, sometimes just after."""
    return st.builds(
        lambda seconds, zone: (now - timedelta(seconds=seconds)).astimezone(zone),
        st.integers(min_value=-3_600, max_value=400 * 86_400),
        zones,
    )


def received_times(now: datetime) -> st.SearchStrategy[datetime]:
    """Mostly a time the policy takes (so that cases go on to be worked), sometimes one just
    past its bounds, sometimes any time at all."""
    plausible = st.builds(
        lambda seconds, zone: (now - timedelta(seconds=seconds)).astimezone(zone),
        st.integers(min_value=0, max_value=300 * 86_400),
        zones,
    )
    return st.integers(min_value=0, max_value=9).flatmap(
        lambda pick: any_instant if pick == 0 else near(now) if pick < 3 else plausible
    )


def any_day_near(received: date) -> st.SearchStrategy[date | None]:
    return st.one_of(
        st.none(),
        st.integers(min_value=-3, max_value=20_000).map(lambda d: received - timedelta(days=d)),
        st.dates(),
    )


durations = st.one_of(
    st.integers(min_value=1, max_value=90 * 86_400).map(lambda s: timedelta(seconds=s)),
    st.integers(min_value=-10, max_value=999_999_999).map(lambda d: timedelta(days=d)),
)


def _published(app: ComplaintMechanism, after: int) -> Iterator[tuple[int, CloudEvent[Any]]]:
    """The contract messages after position ``after``, as the relay translates them."""
    for notification in app.recorder.select_notifications(start=after + 1, limit=100_000):
        event = app.mapper.to_domain_event(notification)
        if is_published(event):
            yield notification.id, to_cloud_event(event, source="test", position=notification.id)


def assert_adds_up(report: Report) -> None:
    """Without suppression (k=1), every row, every column and the table add up."""
    values = [[cell.value for cell in row] for row in report.cells]
    for row, total in zip(values, report.row_totals, strict=True):
        assert sum(v or 0 for v in row) == total.value, report.name
    for j, total in enumerate(report.column_totals):
        assert sum(row[j] or 0 for row in values) == total.value, report.name
    assert sum(t.value or 0 for t in report.row_totals) == report.total.value, report.name


class CommandSequences(RuleBasedStateMachine):
    """Any sequence of commands the application takes, and the read models that follow."""

    cases = Bundle("cases")
    referrals = Bundle("referrals")

    def __init__(self) -> None:
        super().__init__()
        self._resources = ExitStack()
        folder = Path(self._resources.enter_context(tempfile.TemporaryDirectory()))
        self.app = complaint_mechanism(
            Settings(data_dir=folder, event_store=f"sqlite:///{folder / 'events.sqlite3'}")
        )
        self._resources.callback(self.app.close)
        self.now = START
        build_network(self.app, at=START - timedelta(days=1))
        self.projections: list[tuple[Projection, sqlite3.Connection]] = []
        for projection in (InboxProjection(), AssistanceProjection(), StatisticsProjection()):
            db = open_projection(projection, folder / f"{projection.name}.sqlite3")
            self._resources.callback(db.close)
            self.projections.append((projection, db))
        self.position = 0
        self.case_ids: list[UUID] = []
        self.refused: list[str] = []

    def teardown(self) -> None:
        self._resources.close()

    def _try(self, command: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except ImplausibleTime as e:
            assert e.field in str(e)
            self.refused.append(e.field)
        except DomainError:
            pass
        return None

    def _handler(self, case_id: UUID) -> Actor:
        return FOCAL_POINT[self.app.get_case(case_id).custodian]

    # ------------------------------------------------------------------ the clock

    @rule(seconds=st.integers(min_value=0, max_value=200 * 86_400))
    def time_passes(self, seconds: int) -> None:
        self.now += timedelta(seconds=seconds)

    # ------------------------------------------------------------------ commands

    @initialize(target=cases, agency=st.sampled_from(AGENCIES))
    def first_complaint(self, agency: str) -> UUID:
        written = self.app.receive_complaint(
            actor=OPERATOR[agency],
            at=self.now,
            received_at=self.now - timedelta(hours=3),
            channel=Channel.HOTLINE,
            complainant_role=ComplainantRole.ANONYMOUS,
            immediate_safety_risk=False,
            narrative="what was said",
        )
        self.case_ids.append(written.id)
        return written.id

    @rule(
        target=cases,
        agency=st.sampled_from(AGENCIES),
        data=st.data(),
        channel=st.sampled_from(Channel),
        anonymous=st.booleans(),
        risk=st.booleans(),
    )
    def receive(
        self, agency: str, data: st.DataObject, channel: Channel, anonymous: bool, risk: bool
    ) -> Any:
        received_at = data.draw(received_times(self.now), label="received_at")
        written = self._try(
            self.app.receive_complaint,
            actor=OPERATOR[agency],
            at=self.now,
            received_at=received_at,
            channel=channel,
            complainant_role=ComplainantRole.ANONYMOUS if anonymous else ComplainantRole.SURVIVOR,
            immediate_safety_risk=risk,
            narrative="what was said",
            complainant=None if anonymous else PersonDetails(name="someone"),
            survivor=PersonDetails(name="someone", phone="+000"),
        )
        if written is None:
            return multiple()
        self.case_ids.append(written.id)
        return written.id

    @rule(
        case_id=cases,
        data=st.data(),
        sea=st.booleans(),
        kind=st.sampled_from(AllegationType),
        personnel=st.sampled_from(PersonnelCategory),
        sex=st.sampled_from(Sex),
        age=st.sampled_from(AgeBand),
        implicated=st.sampled_from((*AGENCIES, None)),
    )
    def assess(
        self,
        case_id: UUID,
        data: st.DataObject,
        sea: bool,
        kind: AllegationType,
        personnel: PersonnelCategory,
        sex: Sex,
        age: AgeBand,
        implicated: str | None,
    ) -> None:
        received = self.app.get_case(case_id).received_at.date()
        subtypes = [s for s in AllegationSubtype if s.allegation_type is kind]
        allegation = Allegation(
            allegation_type=kind,
            subtype=data.draw(st.sampled_from([None, *subtypes]), label="subtype"),
            child_involved=age.is_child,
            implicated_agency=implicated,
            personnel_category=personnel,
            incident_date=data.draw(any_day_near(received), label="incident_date"),
            incident_area=AREA,
            victim_sex=sex,
            victim_age_band=age,
        )
        category = data.draw(
            st.sampled_from(
                [c for c in ComplaintCategory if c is not ComplaintCategory.SEA_ALLEGATION]
            )
        )
        self._try(
            self.app.assess_case,
            case_id,
            actor=self._handler(case_id),
            category=ComplaintCategory.SEA_ALLEGATION if sea else category,
            allegation=allegation if sea else None,
            at=self.now,
        )

    @rule(case_id=cases)
    def assign(self, case_id: UUID) -> None:
        handler = self._handler(case_id)
        self._try(
            self.app.assign_focal_points,
            case_id,
            actor=handler,
            focal_points=(handler.user,),
            at=self.now,
        )

    @rule(case_id=cases, reason=st.sampled_from(TransferReason))
    def transfer(self, case_id: UUID, reason: TransferReason) -> None:
        holder = self.app.get_case(case_id).custodian
        self._try(
            self.app.transfer_case,
            case_id,
            actor=FOCAL_POINT[holder],
            to_agency=next(a for a in AGENCIES if a != holder),
            reason=reason,
            shared=(SharedItem.ALLEGATION_SUMMARY,),
            at=self.now,
        )

    @rule(case_id=cases, kind=st.sampled_from(ConsentKind), withdraw=st.booleans())
    def consent(self, case_id: UUID, kind: ConsentKind, withdraw: bool) -> None:
        if withdraw:
            self._try(
                self.app.withdraw_consent,
                case_id,
                actor=self._handler(case_id),
                kind=kind,
                at=self.now,
            )
        else:
            self._try(
                self.app.give_consent,
                case_id,
                actor=self._handler(case_id),
                kind=kind,
                given_by=ConsentGiver.SURVIVOR,
                at=self.now,
            )

    @rule(target=referrals, case_id=cases)
    def refer_for_assistance(self, case_id: UUID) -> Any:
        written = self._try(
            self.app.refer_for_assistance,
            case_id,
            actor=self._handler(case_id),
            service_type=ServiceType.MEDICAL,
            provider="med-a",
            area=AREA,
            at=self.now,
        )
        return multiple() if written is None else written.id

    @rule(referral_id=referrals, step=st.sampled_from(("accept", "decline", "deliver")))
    def provider_acts(self, referral_id: UUID, step: str) -> None:
        command = {
            "accept": self.app.accept_referral,
            "decline": self.app.decline_referral_by_provider,
            "deliver": self.app.deliver_referral,
        }[step]
        self._try(command, referral_id, actor=PROVIDER, at=self.now)

    @rule(case_id=cases)
    def refer_for_investigation(self, case_id: UUID) -> None:
        case = self.app.get_case(case_id)
        implicated = (
            case.assessment.allegation.implicated_agency
            if case.assessment is not None and case.assessment.allegation is not None
            else None
        )
        self._try(
            self.app.refer_for_investigation,
            case_id,
            actor=self._handler(case_id),
            entity=f"{implicated or case.custodian}-oig",
            shared=(SharedItem.ALLEGATION_SUMMARY,),
            at=self.now,
        )

    @rule(
        case_id=cases,
        agency=st.sampled_from(AGENCIES),
        outcome=st.sampled_from(InvestigationOutcome),
    )
    def investigate(self, case_id: UUID, agency: str, outcome: InvestigationOutcome) -> None:
        self._try(
            self.app.acknowledge_investigation,
            case_id,
            actor=INVESTIGATOR[agency],
            at=self.now,
        )
        self._try(
            self.app.record_investigation_outcome,
            case_id,
            actor=INVESTIGATOR[agency],
            outcome=outcome,
            at=self.now,
        )

    @rule(case_id=cases, channel=st.sampled_from(FeedbackChannel))
    def tell_complainant(self, case_id: UUID, channel: FeedbackChannel) -> None:
        self._try(
            self.app.give_feedback,
            case_id,
            actor=self._handler(case_id),
            message="news of your complaint",
            channel=channel,
            at=self.now,
        )

    @rule(case_id=cases, original=cases)
    def duplicate(self, case_id: UUID, original: UUID) -> None:
        self._try(
            self.app.mark_as_duplicate,
            case_id,
            actor=self._handler(case_id),
            original_case_id=original,
            at=self.now,
        )

    @rule(case_id=cases, reason=st.sampled_from(ClosureReason), reopen=st.booleans())
    def close_or_reopen(self, case_id: UUID, reason: ClosureReason, reopen: bool) -> None:
        if reopen:
            self._try(
                self.app.reopen_case,
                case_id,
                actor=self._handler(case_id),
                reason="came back with more",
                at=self.now,
            )
        else:
            self._try(
                self.app.close_case,
                case_id,
                actor=self._handler(case_id),
                reason=reason,
                no_outcome_reason="none",
                no_feedback_reason="none",
                at=self.now,
            )

    @rule(case_id=cases, subjects=st.sets(st.sampled_from(DataSubject), min_size=1))
    def erase(self, case_id: UUID, subjects: set[DataSubject]) -> None:
        self._try(
            self.app.erase_personal_data,
            case_id,
            actor=COORDINATOR,
            subjects=tuple(sorted(subjects)),
            reason=ErasureReason.NETWORK_DECISION,
            at=self.now,
        )

    @rule(assess=durations, acknowledge=durations, recorded=durations, incidents=durations)
    def set_policy(
        self,
        assess: timedelta,
        acknowledge: timedelta,
        recorded: timedelta,
        incidents: timedelta,
    ) -> None:
        try:
            policy = NetworkPolicy(
                assess_within=assess,
                acknowledge_within=acknowledge,
                complaints_recorded_within=recorded,
                incidents_reported_within=incidents,
            )
        except ImplausibleTime:
            return
        self._try(self.app.set_policy, actor=COORDINATOR, policy=policy, at=self.now)

    # ------------------------------------------------------------------ the read models

    @invariant()
    def read_models_follow(self) -> None:
        messages = list(_published(self.app, self.position))
        if not messages:
            return
        for projection, db in self.projections:
            done = apply_batch(projection, db, messages)
            assert done.gap is None
            assert done.position == messages[-1][0]
        self.position = messages[-1][0]

    @invariant()
    def the_inbox_holds_open_cases_only(self) -> None:
        db = self.projections[0][1]
        held: set[UUID] = set()
        for agency in AGENCIES:
            for item in inbox(db, agency, now=self.now):
                case = self.app.get_case(item.case_id)
                assert not case.is_closed
                assert case.custodian == agency
                held.add(item.case_id)
        for case_id in self.case_ids:
            row = case_row(db, case_id)
            assert row is not None
            assert row.is_open == (not self.app.get_case(case_id).is_closed)

    @invariant()
    def statistics_add_up(self) -> None:
        db = self.projections[2][1]
        published = reports(db, k=1)
        for report in published.values():
            assert_adds_up(report)
        counted = published["complaint_category_by_quarter"].total.value
        duplicates = sum(self.app.get_case(c).duplicate_of is not None for c in self.case_ids)
        assert counted == len(self.case_ids) - duplicates


def _machine_settings(size: dict[str, int]) -> settings:
    return settings(
        max_examples=size["machines"],
        stateful_step_count=size["steps"],
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )


def test_any_command_sequence_keeps_every_read_model_going() -> None:
    run_state_machine_as_test(CommandSequences, settings=_machine_settings(QUICK))


@pytest.mark.soak
def test_a_long_run_of_command_sequences_keeps_every_read_model_going() -> None:
    run_state_machine_as_test(CommandSequences, settings=_machine_settings(LONG))


# ---------------------------------------------------------------------- arbitrary messages

SHARED_IDS = [UUID(int=n) for n in range(1, 4)]
ID_FIELDS = frozenset({"case_id", "referral_id", "feedback_id", "network_id", "original_case_id"})


def values_of(info: mi.Type, name: str = "") -> st.SearchStrategy[Any]:
    """Any value of a contract type, within the constraints its JSON Schema publishes
    (patterns, lengths, bounds, literals). Aggregate ids come from a few shared ones, so
    that generated messages meet in the read models."""
    if name in ID_FIELDS:
        return st.sampled_from(SHARED_IDS)
    match info:
        case mi.Metadata():
            return values_of(info.type, name)
        case mi.StructType():
            fields = {
                f.name: values_of(f.type, f.name) for f in info.fields if f.name != "specversion"
            }
            return st.fixed_dictionaries(fields).map(
                lambda values: msgspec.convert(values, info.cls, from_attributes=True)
            )
        case mi.UnionType():
            return st.one_of([values_of(t, name) for t in info.types])
        case mi.LiteralType():
            return st.sampled_from(info.values)
        case mi.EnumType():
            return st.sampled_from(list(info.cls))
        case mi.StrType() if info.pattern is not None:
            return st.from_regex(info.pattern, fullmatch=True)
        case mi.StrType():
            return st.text(min_size=info.min_length or 0, max_size=info.max_length or 24)
        case mi.IntType():
            low = info.ge if info.ge is not None else (info.gt + 1 if info.gt is not None else None)
            high = (
                info.le if info.le is not None else (info.lt - 1 if info.lt is not None else None)
            )
            return st.integers(min_value=low, max_value=high)
        case mi.BoolType():
            return st.booleans()
        case mi.NoneType():
            return st.none()
        case mi.UUIDType():
            return st.uuids()
        case mi.DateTimeType():
            return any_instant
        case mi.DateType():
            return st.dates()
        case mi.TimeType():
            return st.times()
        case mi.TimeDeltaType():
            return st.timedeltas()
        case mi.ListType() | mi.FrozenSetType() | mi.SetType():
            return st.lists(values_of(info.item_type), max_size=3)
        case mi.VarTupleType():
            return st.lists(values_of(info.item_type), max_size=3).map(tuple)
        case mi.DictType():
            return st.dictionaries(values_of(info.key_type), values_of(info.value_type), max_size=3)
    raise NotImplementedError(f"no strategy for {info!r} yet: add one")


VALIDATORS = {name: jsonschema_rs.validator_for(json_schema(name)) for name in MESSAGE_TYPES}


def _message(name: str) -> st.SearchStrategy[CloudEvent[Any]]:
    """Messages of type ``name`` that pass its published JSON Schema, decoded as a consumer
    decodes them."""

    def published(message: CloudEvent[Any]) -> CloudEvent[Any]:
        raw = encode_message(
            msgspec.structs.replace(message, type=name, dataschema=schema_id(name))
        )
        VALIDATORS[name].validate(json.loads(raw))
        return decode_message(raw)

    return values_of(mi.type_info(envelope_of(MESSAGE_TYPES[name]))).map(published)


@contextmanager
def _in_memory(projection: Projection) -> Iterator[sqlite3.Connection]:
    db = sqlite3.connect(":memory:", isolation_level=None)
    db.row_factory = sqlite3.Row
    try:
        projection.create_tables(db)
        create_position_table(db)
        yield db
    finally:
        db.close()


any_message = st.one_of([_message(name) for name in sorted(MESSAGE_TYPES)])


def _every_projection_applies(messages: list[CloudEvent[Any]]) -> None:
    numbered = list(enumerate(messages, start=1))
    for projection in (InboxProjection(), AssistanceProjection(), StatisticsProjection()):
        with _in_memory(projection) as db:
            assert apply_batch(projection, db, numbered).position == len(messages)


def _message_settings(size: dict[str, int]) -> settings:
    return settings(
        max_examples=size["messages"],
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def _received_first(messages: list[CloudEvent[Any]], receipts: list[CloudEvent[Any]]) -> Any:
    """The stream's one promise about order: a case's receipt comes before its other facts
    (the statistics stop, loudly, on a fact of a case never received; ADR 10)."""
    first = [
        msgspec.structs.replace(m, data=msgspec.structs.replace(m.data, case_id=case_id))
        for m, case_id in zip(receipts, SHARED_IDS, strict=True)
    ]
    return [*first, *messages]


any_messages = st.builds(
    _received_first,
    st.lists(any_message, min_size=1, max_size=8),
    st.lists(
        _message(message_type("case", "received")),
        min_size=len(SHARED_IDS),
        max_size=len(SHARED_IDS),
    ),
)


@_message_settings(QUICK)
@given(messages=any_messages)
def test_any_schema_valid_messages_are_applied_by_every_projection(
    messages: list[CloudEvent[Any]],
) -> None:
    _every_projection_applies(messages)


@pytest.mark.soak
@_message_settings(LONG)
@given(messages=any_messages)
def test_a_long_run_of_schema_valid_messages_is_applied_by_every_projection(
    messages: list[CloudEvent[Any]],
) -> None:
    _every_projection_applies(messages)


@pytest.mark.parametrize("offset_hours", [1, 0, 14, -12])
def test_a_year_one_complaint_already_in_the_log_does_not_stop_the_read_models(
    offset_hours: int,
) -> None:
    """A store written before the door refused such times still holds them: the read models
    must take them (the reproduction of issue #12, at the projections)."""
    year_one = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=offset_hours)))
    case_id = UUID(int=9)
    message: CloudEvent[Any] = CloudEvent(
        id=f"{case_id}:1",
        source="test",
        type=message_type("case", "received"),
        time=year_one,
        subject=str(case_id),
        position=1,
        data=CaseReceivedV1(
            case_id=case_id,
            version=1,
            actor=ActorRef(user="op-unhcr", agency="unhcr", role="intake_operator"),
            received_at=year_one,
            channel="hotline",
            complainant_role="anonymous",
            immediate_safety_risk=False,
            has_complainant_details=False,
            has_survivor_details=False,
        ),
    )
    for projection in (InboxProjection(), AssistanceProjection(), StatisticsProjection()):
        with _in_memory(projection) as db:
            assert apply_batch(projection, db, [(1, message)]).applied == 1
