"""Need-to-know over HTTP (issue #4): every endpoint, every role, own agency and other agency.

The standard case of these tests is held by unhcr, implicates wfp (so it is referred to wfp's
investigating entity) and has a medical referral to provider med-a. A caller who may not see
a resource gets exactly the answer for a resource that does not exist (404); a caller who may
see it but whose role may not do the command gets 403; a refused call records nothing.
"""

from __future__ import annotations

import base64
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
from fastapi.testclient import TestClient
from nacl.public import PrivateKey

from domain.actors import Actor, Role
from domain.case import Allegation
from domain.personal_data import PersonDetails
from domain.policy import NetworkPolicy
from domain.prevention import DEFAULT_RISK_FACTORS, TrainedCounts, work_plan_id
from domain.vocabulary import (
    AgeBand,
    AllegationType,
    AudienceCategory,
    AwarenessKind,
    Channel,
    ClosureReason,
    CommunityAudience,
    ComplainantRole,
    ComplaintCategory,
    ConsentGiver,
    ConsentKind,
    ContactMethod,
    FeedbackCategory,
    FeedbackChannel,
    MitigationMeasure,
    NotificationChannel,
    NotificationDelivery,
    PersonnelCategory,
    Sector,
    ServiceType,
    Sex,
    SharedItem,
    TrainingTopic,
    TransferReason,
    WorkPlanActivityKind,
)
from domain.webhooks import webhook_endpoint_id
from projections.assistance import AssistanceProjection
from projections.inbox import InboxProjection
from projections.register import RegisterProjection
from projections.stats import StatisticsProjection
from services.application.mechanism import ComplaintMechanism
from services.bootstrap import complaint_mechanism
from services.identity.tokens import issue_token
from services.settings import Settings
from tests.api_world import CALLERS, RECENTLY, World, make_world, project_into
from tests.world import AREA, COORDINATOR

ALL = tuple(CALLERS)
OPERATOR = Actor("op-unhcr", "unhcr", Role.INTAKE_OPERATOR)
FOCAL_POINT = Actor("fp-unhcr", "unhcr", Role.FOCAL_POINT)
INVESTIGATOR = Actor("inv-wfp", "wfp", Role.INVESTIGATING_ENTITY)
PROVIDER = Actor("prov-med", "med-a", Role.SERVICE_PROVIDER)

CANARY = "CANARY-7f3a"
"""Put in every personal field, so a leak is one substring search away."""


class Clock:
    """Times for set-up commands: increasing, and before the API's own clock."""

    def __init__(self) -> None:
        self._ticks = itertools.count()
        self._start = datetime.now(UTC) - timedelta(hours=2)

    def __call__(self) -> datetime:
        return self._start + timedelta(seconds=next(self._ticks))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    data_dir = tmp_path_factory.mktemp("access")
    mechanism = complaint_mechanism(
        Settings(data_dir=data_dir, event_store=f"sqlite:///{data_dir / 'events.sqlite3'}")
    )
    yield make_world(data_dir, mechanism)
    mechanism.close()


@pytest.fixture(scope="module")
def client(world: World) -> Iterator[TestClient]:
    with TestClient(world.api) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def clock() -> Clock:
    return Clock()


# ---------------------------------------------------------------------------------- set-ups


def sea_allegation(implicated: str = "wfp") -> Allegation:
    return Allegation(
        allegation_type=AllegationType.SEXUAL_EXPLOITATION,
        subtype=None,
        child_involved=False,
        implicated_agency=implicated,
        personnel_category=PersonnelCategory.UN_STAFF,
        incident_date=None,
        incident_area=AREA,
        victim_sex=Sex.FEMALE,
        victim_age_band=AgeBand.ADULT,
        incident_place_detail=f"{CANARY} place",
        alleged_perpetrator=f"{CANARY} perpetrator",
    )


def received(app: ComplaintMechanism, clock: Clock) -> UUID:
    said = clock()
    return app.receive_complaint(
        actor=OPERATOR,
        at=clock(),
        received_at=said,
        channel=Channel.HOTLINE,
        complainant_role=ComplainantRole.SURVIVOR,
        immediate_safety_risk=False,
        narrative=f"{CANARY} narrative",
        complainant=PersonDetails(name=f"{CANARY} complainant"),
        survivor=PersonDetails(
            name=f"{CANARY} survivor",
            phone=f"{CANARY} phone",
            email=f"{CANARY} email",
            address=f"{CANARY} address",
        ),
    ).id


def assessed(app: ComplaintMechanism, clock: Clock, category: ComplaintCategory) -> UUID:
    case_id = received(app, clock)
    allegation = sea_allegation() if category is ComplaintCategory.SEA_ALLEGATION else None
    app.assess_case(
        case_id, actor=FOCAL_POINT, category=category, allegation=allegation, at=clock()
    )
    return case_id


def consented(app: ComplaintMechanism, clock: Clock, *kinds: ConsentKind) -> UUID:
    case_id = assessed(app, clock, ComplaintCategory.SEA_ALLEGATION)
    for kind in kinds:
        methods = (ContactMethod.PHONE,) if kind is ConsentKind.CONTACT else ()
        app.give_consent(
            case_id,
            actor=FOCAL_POINT,
            kind=kind,
            given_by=ConsentGiver.SURVIVOR,
            contact_methods=methods,
            at=clock(),
        )
    return case_id


def referred(app: ComplaintMechanism, clock: Clock, *shared: SharedItem) -> UUID:
    case_id = consented(app, clock, ConsentKind.IDENTITY_DISCLOSURE)
    app.refer_for_investigation(
        case_id,
        actor=FOCAL_POINT,
        entity="wfp-oig",
        shared=shared or (SharedItem.ALLEGATION_SUMMARY,),
        at=clock(),
    )
    return case_id


def referral(app: ComplaintMechanism, clock: Clock, *steps: str) -> UUID:
    case_id = consented(app, clock, ConsentKind.ASSISTANCE_REFERRAL, ConsentKind.CONTACT)
    made = app.refer_for_assistance(
        case_id,
        actor=FOCAL_POINT,
        service_type=ServiceType.MEDICAL,
        provider="med-a",
        area=AREA,
        share_contact=True,
        at=clock(),
    ).id
    for step in steps:
        if step == "accepted":
            app.accept_referral(made, actor=PROVIDER, at=clock())
        if step == "delivered":
            app.deliver_referral(made, actor=PROVIDER, at=clock())
    return made


def feedback_item(app: ComplaintMechanism, clock: Clock, responded: bool = False) -> UUID:
    made = app.receive_feedback(
        actor=OPERATOR,
        channel=Channel.HOTLINE,
        category=FeedbackCategory.SUGGESTION,
        sector=Sector.HEALTH,
        concerned_agency="unhcr",
        text=f"{CANARY} feedback",
        at=clock(),
    ).id
    if responded:
        app.respond_to_feedback(made, actor=FOCAL_POINT, response="thanks", at=clock())
    return made


# ---------------------------------------------------------------------------------- commands

CASE_SEERS = frozenset({"focal_point_own", "coordinator", "auditor"})
"""Who sees any case held by unhcr (investigator_own also, once it is referred to wfp)."""
REFERRAL_SEERS = frozenset({"focal_point_own", "coordinator", "auditor", "provider_own"})
FEEDBACK_SEERS = frozenset({"focal_point_own", "coordinator", "auditor"})
HANDLERS = frozenset({"focal_point_own", "coordinator"})
INTAKE = frozenset(
    {"intake_operator", "intake_service", "focal_point_own", "focal_point_other", "coordinator"}
)
NETWORK_KEEPER = frozenset({"coordinator"})


@dataclass(frozen=True)
class Command:
    """One write endpoint: how to reach a state where it is valid, who may do it, and who
    may see the resource (the others get 404; ``seers`` None: a collection, others get 403)."""

    name: str
    method: str
    prepare: Callable[[ComplaintMechanism, Clock], tuple[str, dict[str, Any]]]
    allowed: frozenset[str]
    seers: frozenset[str] | None


def case_command(
    name: str,
    suffix: str,
    state: Callable[[ComplaintMechanism, Clock], UUID],
    body: dict[str, Any] | Callable[[ComplaintMechanism, Clock], dict[str, Any]],
    allowed: frozenset[str] = HANDLERS,
    referred_to_wfp: bool = False,
) -> Command:
    def prepare(app: ComplaintMechanism, clock: Clock) -> tuple[str, dict[str, Any]]:
        case_id = state(app, clock)
        payload = body(app, clock) if callable(body) else body
        return f"/v1/cases/{case_id}/{suffix}", payload

    seers = CASE_SEERS | ({"investigator_own"} if referred_to_wfp else set())
    return Command(name, "POST", prepare, allowed, frozenset(seers))


def fixed(
    path: str, body: dict[str, Any]
) -> Callable[[ComplaintMechanism, Clock], tuple[str, dict[str, Any]]]:
    return lambda app, clock: (path, body)


def referral_command(
    suffix: str, steps: tuple[str, ...], body: dict[str, Any], allowed: frozenset[str]
) -> Command:
    def prepare(app: ComplaintMechanism, clock: Clock) -> tuple[str, dict[str, Any]]:
        return f"/v1/referrals/{referral(app, clock, *steps)}/{suffix}", body

    return Command(f"referral {suffix}", "POST", prepare, allowed, REFERRAL_SEERS)


def feedback_command(suffix: str, responded: bool, body: dict[str, Any]) -> Command:
    def prepare(app: ComplaintMechanism, clock: Clock) -> tuple[str, dict[str, Any]]:
        return f"/v1/feedback/{feedback_item(app, clock, responded)}/{suffix}", body

    return Command(f"feedback {suffix}", "POST", prepare, HANDLERS, FEEDBACK_SEERS)


def _fresh_code() -> str:
    return f"ag-{uuid4().hex[:8]}"


def _fresh_share_key() -> str:
    return base64.b64encode(bytes(PrivateKey.generate().public_key)).decode()


def closed(app: ComplaintMechanism, clock: Clock) -> UUID:
    case_id = assessed(app, clock, ComplaintCategory.OTHER_SENSITIVE)
    app.close_case(
        case_id,
        actor=FOCAL_POINT,
        reason=ClosureReason.REFERRED_TO_AGENCY_PROCEDURE,
        at=clock(),
    )
    return case_id


def appointed(app: ComplaintMechanism, clock: Clock) -> str:
    user = f"fp-{uuid4().hex[:8]}"
    # the network is also changed through the API, at the API's clock
    app.appoint_focal_point(actor=COORDINATOR, agency="wfp", user=user, at=datetime.now(UTC))
    return user


def audit_granted(app: ComplaintMechanism, clock: Clock) -> UUID:
    case_id = received(app, clock)
    # the API revokes at its own clock: the grant is made before it
    app.grant_audit_access(case_id, actor=COORDINATOR, auditor="aud-1", reason="audit", at=clock())
    return case_id


COMPLAINT = {
    "received_at": RECENTLY,
    "channel": "hotline",
    "complainant_role": "anonymous",
    "narrative": f"{CANARY} narrative",
}
SEA = {
    "category": "sea_allegation",
    "allegation": {
        "allegation_type": "sexual_exploitation",
        "child_involved": False,
        "implicated_agency": "wfp",
        "personnel_category": "un_staff",
        "victim_sex": "female",
        "victim_age_band": "18+",
    },
}


# --------------------------------------------------------------- prevention work (#22)

PREVENTION_YEAR = datetime.now(UTC).year
PLAN_YEAR = PREVENTION_YEAR + 1
"""The work plan year the matrix opens (the set-ups add activities to it)."""
TODAY_TEXT = datetime.now(UTC).date().isoformat()
RATINGS = dict.fromkeys(DEFAULT_RISK_FACTORS, 3)


def _training(app: ComplaintMechanism, clock: Clock) -> UUID:
    return app.record_training(
        actor=FOCAL_POINT,
        agency="unhcr",
        held_on=clock().date(),
        area=AREA,
        audience=AudienceCategory.STAFF,
        topic=TrainingTopic.SEA_BASICS,
        trained=TrainedCounts(female=3),
        at=clock(),
    ).id


def _awareness(app: ComplaintMechanism, clock: Clock) -> UUID:
    return app.record_awareness(
        actor=FOCAL_POINT,
        agency="unhcr",
        held_on=clock().date(),
        area=AREA,
        kind=AwarenessKind.RADIO,
        audience=CommunityAudience.MIXED,
        reach=100,
        preferred_channels=(),
        at=clock(),
    ).id


def _alternate(app: ComplaintMechanism, clock: Clock) -> str:
    # the agency's one readiness record is also written by the API (at its own clock): the
    # set-up writes at the present, since a history never runs backwards
    user = f"alt-{uuid4().hex[:8]}"
    app.appoint_alternate(actor=FOCAL_POINT, agency="unhcr", user=user, at=datetime.now(UTC))
    return user


def _assessment(app: ComplaintMechanism, clock: Clock, *, mitigation: bool = False) -> UUID:
    assessed = app.assess_risk(
        actor=FOCAL_POINT,
        agency="unhcr",
        area=AREA,
        sector=Sector.CASH,
        assessed_on=clock().date(),
        ratings=RATINGS,
        at=clock(),
    ).id
    if mitigation:
        app.agree_mitigation(
            assessed,
            actor=FOCAL_POINT,
            measure=MitigationMeasure.PERSONNEL_VETTING,
            owner_agency="unhcr",
            due_on=clock().date(),
            at=clock(),
        )
    return assessed


def _plan_year(app: ComplaintMechanism, clock: Clock) -> int:
    """The matrix's work plan, opened on first use."""
    if app._current_version(work_plan_id(PLAN_YEAR)) == 0:
        app.open_work_plan(actor=COORDINATOR, year=PLAN_YEAR, at=clock())
    return PLAN_YEAR


def _plan(app: ComplaintMechanism, clock: Clock) -> int:
    """An activity of unhcr in the matrix's work plan: its number."""
    _plan_year(app, clock)
    app.plan_activity(
        work_plan_id(PLAN_YEAR),
        actor=COORDINATOR,
        kind=WorkPlanActivityKind.TRAINING,
        owner_agency="unhcr",
        target=10,
        due_on=date(PLAN_YEAR, 6, 30),
        at=datetime.now(UTC),  # the plan is also written by the API: never backwards
    )
    return len(app.work_plan(PLAN_YEAR).activities)


def _fresh_year(app: ComplaintMechanism, clock: Clock) -> tuple[str, dict[str, Any]]:
    # a year no work plan has yet (the coordinator's run opens one; the set-ups use PLAN_YEAR)
    for year in range(PREVENTION_YEAR - 5, PREVENTION_YEAR + 6):
        if year != PLAN_YEAR and app._current_version(work_plan_id(year)) == 0:
            return "/v1/prevention/work-plans", {"year": year}
    raise AssertionError("no free work-plan year left")


PREVENTION_RECORDERS = frozenset({"focal_point_own", "coordinator"})
TRAINING_BODY = {
    "agency": "unhcr",
    "held_on": TODAY_TEXT,
    "area": AREA,
    "audience": "staff",
    "topic": "sea_basics",
    "trained": {"female": 4, "male": 2},
}
PREVENTION_COMMANDS: tuple[Command, ...] = (
    Command(
        "record training",
        "POST",
        fixed("/v1/prevention/trainings", TRAINING_BODY),
        PREVENTION_RECORDERS,
        None,
    ),
    Command(
        "withdraw training",
        "POST",
        lambda app, clock: (f"/v1/prevention/trainings/{_training(app, clock)}/withdrawal", {}),
        PREVENTION_RECORDERS,
        None,
    ),
    Command(
        "record awareness",
        "POST",
        fixed(
            "/v1/prevention/awareness",
            {
                "agency": "unhcr",
                "held_on": TODAY_TEXT,
                "area": AREA,
                "kind": "community_meeting",
                "audience": "women",
                "reach": 30,
                "preferred_channels": ["hotline"],
            },
        ),
        PREVENTION_RECORDERS,
        None,
    ),
    Command(
        "withdraw awareness",
        "POST",
        lambda app, clock: (f"/v1/prevention/awareness/{_awareness(app, clock)}/withdrawal", {}),
        PREVENTION_RECORDERS,
        None,
    ),
    Command(
        "appoint alternate",
        "POST",
        lambda app, clock: (
            "/v1/prevention/readiness/unhcr/alternates",
            {"user": f"alt-{uuid4().hex[:8]}"},
        ),
        PREVENTION_RECORDERS,
        None,
    ),
    Command(
        "withdraw alternate",
        "POST",
        lambda app, clock: (
            "/v1/prevention/readiness/unhcr/alternate-withdrawals",
            {"user": _alternate(app, clock)},
        ),
        PREVENTION_RECORDERS,
        None,
    ),
    Command(
        "record focal point training",
        "POST",
        lambda app, clock: (
            "/v1/prevention/readiness/unhcr/trainings",
            {"user": _alternate(app, clock), "completed_on": TODAY_TEXT},
        ),
        PREVENTION_RECORDERS,
        None,
    ),
    Command(
        "assess risk",
        "POST",
        fixed(
            "/v1/prevention/risk-assessments",
            {
                "agency": "unhcr",
                "area": AREA,
                "sector": "cash",
                "assessed_on": TODAY_TEXT,
                "ratings": RATINGS,
            },
        ),
        PREVENTION_RECORDERS,
        None,
    ),
    Command(
        "reassess risk",
        "POST",
        lambda app, clock: (
            f"/v1/prevention/risk-assessments/{_assessment(app, clock)}/reassessment",
            {"assessed_on": TODAY_TEXT, "ratings": RATINGS},
        ),
        PREVENTION_RECORDERS,
        None,
    ),
    Command(
        "agree mitigation",
        "POST",
        lambda app, clock: (
            f"/v1/prevention/risk-assessments/{_assessment(app, clock)}/mitigation",
            {"measure": "complaint_channels", "owner_agency": "wfp", "due_on": TODAY_TEXT},
        ),
        PREVENTION_RECORDERS,
        None,
    ),
    Command(
        "report mitigation",
        "POST",
        lambda app, clock: (
            "/v1/prevention/risk-assessments/"
            f"{_assessment(app, clock, mitigation=True)}/mitigation/1/status",
            {"status": "done"},
        ),
        PREVENTION_RECORDERS,
        None,
    ),
    Command("open work plan", "POST", _fresh_year, NETWORK_KEEPER, None),
    Command(
        "plan activity",
        "POST",
        lambda app, clock: (
            f"/v1/prevention/work-plans/{_plan_year(app, clock)}/activities",
            {
                "kind": "awareness",
                "owner_agency": "wfp",
                "target": 50,
                "due_on": date(PLAN_YEAR, 9, 30).isoformat(),
            },
        ),
        NETWORK_KEEPER,
        None,
    ),
    Command(
        "report work plan progress",
        "POST",
        lambda app, clock: (
            f"/v1/prevention/work-plans/{PLAN_YEAR}/activities/{_plan(app, clock)}/progress",
            {"status": "in_progress", "achieved": 5},
        ),
        PREVENTION_RECORDERS,
        None,
    ),
    Command(
        "set prevention policy",
        "PUT",
        fixed(
            "/v1/prevention/policy",
            {
                "risk_factors": list(DEFAULT_RISK_FACTORS),
                "training_targets": [{"agency": "unhcr", "year": PREVENTION_YEAR, "personnel": 20}],
            },
        ),
        NETWORK_KEEPER,
        None,
    ),
)
WEBHOOK_TYPE = "org.psea.cbcm.case.received.v1"


def _webhook_secret() -> str:
    return "whsec_" + base64.b64encode(uuid4().bytes + uuid4().bytes).decode()


def webhook(app: ComplaintMechanism, disabled: bool = False) -> UUID:
    """An endpoint of wfp, registered (and disabled) at the API's clock, as the API does."""
    written = app.register_webhook(
        actor=COORDINATOR,
        agency="wfp",
        url="https://cfm.wfp.example/cbcm",
        secret=_webhook_secret(),
        event_types=(WEBHOOK_TYPE,),
        at=datetime.now(UTC),
    )
    endpoint = webhook_endpoint_id(written.version)
    if disabled:
        app.disable_webhook(endpoint, actor=COORDINATOR, at=datetime.now(UTC))
    return endpoint


def webhook_command(
    name: str, method: str, suffix: str, body: dict[str, Any], disabled: bool = False
) -> Command:
    def prepare(app: ComplaintMechanism, clock: Clock) -> tuple[str, dict[str, Any]]:
        path = f"/v1/webhooks/{webhook(app, disabled)}"
        return (f"{path}/{suffix}" if suffix else path), body

    return Command(name, method, prepare, NETWORK_KEEPER, None)


def intake_command(tool: str, body: Callable[[str], dict[str, Any]]) -> Command:
    """An intake route: a submission with a fresh id each time (a resend would replay)."""
    return Command(
        f"intake {tool}",
        "POST",
        lambda app, clock: (f"/v1/intake/{tool}", body(str(uuid4()))),
        frozenset({"intake_service"}),
        None,
    )


STAFF = frozenset(
    {
        "focal_point_own",
        "focal_point_other",
        "coordinator",
        "investigator_own",
        "investigator_other",
        "provider_own",
        "provider_other",
    }
)
"""The callers who are told things (issue #18), and so keep notification preferences."""


def contact(app: ComplaintMechanism, clock: Clock, caller: str) -> str:
    """``caller``'s addresses registered by the coordinator (anew if erased): its user."""
    user, agency, role = CALLERS[caller]
    app.register_staff_contact(
        actor=COORDINATOR,
        user=user,
        organisation=agency,
        role=role,
        email=f"{user}@staff.test",
        phone=None,
        channels=(NotificationChannel.EMAIL,),
        quiet_hours=None,
        delivery=NotificationDelivery.IMMEDIATE,
        at=datetime.now(UTC),  # the API records these at its own time
    )
    return user


def every_staff_contact(app: ComplaintMechanism, clock: Clock) -> tuple[str, dict[str, Any]]:
    for caller in STAFF:
        contact(app, clock, caller)
    return "/v1/me/notifications", {}


NOTIFICATION_COMMANDS: tuple[Command, ...] = (
    Command(
        "register my notifications",
        "PUT",
        fixed("/v1/me/notifications", {"email": "me@staff.test", "channels": ["email"]}),
        STAFF,
        None,
    ),
    Command("erase my notifications", "DELETE", every_staff_contact, STAFF, None),
    Command(
        "register staff notifications",
        "PUT",
        fixed(
            "/v1/network/staff/inv-wfp/notifications",
            {
                "email": "oig@staff.test",
                "channels": ["email"],
                "organisation": "wfp",
                "role": "investigating_entity",
            },
        ),
        NETWORK_KEEPER,
        None,
    ),
    Command(
        "erase staff notifications",
        "DELETE",
        lambda app, clock: (
            f"/v1/network/staff/{contact(app, clock, 'provider_other')}/notifications",
            {},
        ),
        NETWORK_KEEPER,
        None,
    ),
)
"""Where and when staff are told (issue #18)."""


COMMANDS: tuple[Command, ...] = (
    Command("intake", "POST", fixed("/v1/cases", COMPLAINT), INTAKE, None),
    case_command("assess", "assessment", received, SEA),
    case_command("assign focal points", "focal-points", received, {"focal_points": ["fp-unhcr"]}),
    case_command(
        "transfer",
        "transfers",
        received,
        {"to_agency": "wfp", "reason": "capacity", "shared": ["allegation_summary"]},
    ),
    case_command(
        "give consent",
        "consents",
        received,
        {"kind": "assistance_referral", "given_by": "survivor"},
    ),
    case_command(
        "withdraw consent",
        "consents/assistance_referral/withdrawal",
        lambda app, clock: consented(app, clock, ConsentKind.ASSISTANCE_REFERRAL),
        {},
    ),
    case_command(
        "refer for assistance",
        "assistance-referrals",
        lambda app, clock: consented(app, clock, ConsentKind.ASSISTANCE_REFERRAL),
        {"service_type": "medical", "provider": "med-a", "area": AREA},
    ),
    case_command(
        "refer for investigation",
        "investigation-referral",
        lambda app, clock: assessed(app, clock, ComplaintCategory.SEA_ALLEGATION),
        {"entity": "wfp-oig", "shared": ["allegation_summary"]},
    ),
    case_command(
        "acknowledge investigation",
        "investigation-referral/acknowledgement",
        referred,
        {},
        allowed=frozenset({"investigator_own", "coordinator"}),
        referred_to_wfp=True,
    ),
    case_command(
        "record outcome",
        "investigation-referral/outcome",
        referred,
        {"outcome": "substantiated"},
        allowed=frozenset({"investigator_own", "coordinator"}),
        referred_to_wfp=True,
    ),
    case_command("give feedback", "feedback", received, {"message": "seen", "channel": "phone"}),
    case_command(
        "mark as duplicate",
        "duplicate-of",
        received,
        lambda app, clock: {"original_case_id": str(received(app, clock))},
    ),
    case_command(
        "close",
        "closure",
        lambda app, clock: assessed(app, clock, ComplaintCategory.OTHER_SENSITIVE),
        {"reason": "referred_to_agency_procedure"},
    ),
    case_command(
        "reopen",
        "reopening",
        closed,
        {"reason": "new information"},
    ),
    case_command(
        "erase personal data",
        "erasure",
        received,
        {"subjects": ["survivor"], "reason": "survivor_request"},
    ),
    case_command(
        "forward to feedback mechanism",
        "feedback-mechanism",
        lambda app, clock: assessed(app, clock, ComplaintCategory.NON_SENSITIVE_FEEDBACK),
        {"category": "suggestion", "sector": "health", "concerned_agency": "unhcr"},
    ),
    case_command(
        "grant audit access",
        "audit-grants",
        received,
        {"auditor": "aud-1", "reason": "audit of custody steps"},
        allowed=NETWORK_KEEPER,
    ),
    Command(
        "revoke audit access",
        "DELETE",
        lambda app, clock: (f"/v1/cases/{audit_granted(app, clock)}/audit-grants/aud-1", {}),
        NETWORK_KEEPER,
        CASE_SEERS,
    ),
    referral_command("acceptance", (), {}, frozenset({"provider_own"})),
    referral_command("provider-decline", (), {"reason": "full"}, frozenset({"provider_own"})),
    referral_command(
        "survivor-decline", (), {}, frozenset({"provider_own", "focal_point_own", "coordinator"})
    ),
    referral_command("delivery", ("accepted",), {}, frozenset({"provider_own"})),
    referral_command(
        "follow-up",
        ("accepted", "delivered"),
        {},
        frozenset({"provider_own", "focal_point_own", "coordinator"}),
    ),
    Command(
        "receive feedback",
        "POST",
        fixed(
            "/v1/feedback",
            {
                "channel": "hotline",
                "category": "suggestion",
                "sector": "health",
                "concerned_agency": "unhcr",
                "text": "more water points",
            },
        ),
        INTAKE,
        None,
    ),
    feedback_command("response", False, {"response": "we will"}),
    feedback_command("loop-closure", True, {}),
    Command(
        "register agency",
        "POST",
        lambda app, clock: (
            "/v1/network/agencies",
            {"code": _fresh_code(), "name": "New", "agency_type": "national_ngo"},
        ),
        NETWORK_KEEPER,
        None,
    ),
    Command(
        "designate investigating entity",
        "PUT",
        fixed("/v1/network/agencies/unhcr/investigating-entity", {"entity": "unhcr-oig"}),
        NETWORK_KEEPER,
        None,
    ),
    Command(
        "appoint focal point",
        "POST",
        lambda app, clock: (
            "/v1/network/agencies/wfp/focal-points",
            {"user": f"fp-{uuid4().hex[:8]}"},
        ),
        NETWORK_KEEPER,
        None,
    ),
    Command(
        "withdraw focal point",
        "DELETE",
        lambda app, clock: (f"/v1/network/agencies/wfp/focal-points/{appointed(app, clock)}", {}),
        NETWORK_KEEPER,
        None,
    ),
    Command(
        "register service provider",
        "POST",
        lambda app, clock: (
            "/v1/network/service-providers",
            {
                "code": _fresh_code(),
                "name": "Legal aid",
                "service_types": ["legal"],
                "areas": [AREA],
            },
        ),
        NETWORK_KEEPER,
        None,
    ),
    Command(
        "register agency share key",
        "PUT",
        lambda app, clock: (
            "/v1/network/agencies/wfp/share-key",
            {"public_key": _fresh_share_key()},
        ),
        NETWORK_KEEPER,
        None,
    ),
    Command("set policy", "PUT", fixed("/v1/network/policy", {}), NETWORK_KEEPER, None),
    *PREVENTION_COMMANDS,
    Command(
        "register webhook",
        "POST",
        lambda app, clock: (
            "/v1/webhooks",
            {
                "agency": "wfp",
                "url": "https://cfm.wfp.example/cbcm",
                "secret": _webhook_secret(),
                "event_types": [WEBHOOK_TYPE],
            },
        ),
        NETWORK_KEEPER,
        None,
    ),
    webhook_command("rotate webhook secret", "PUT", "secret", {"secret": _webhook_secret()}),
    webhook_command("set webhook types", "PUT", "event-types", {"event_types": [WEBHOOK_TYPE]}),
    webhook_command("disable webhook", "POST", "disable", {}),
    webhook_command("enable webhook", "POST", "enable", {}, disabled=True),
    webhook_command("remove webhook", "DELETE", "", {}),
    intake_command(
        "kobo",
        lambda uid: {
            "_uuid": uid,
            "end": RECENTLY,
            "grp/kind": "complaint",
            "grp/complainant_role": "anonymous",
            "grp/narrative": f"{CANARY} by kobo",
        },
    ),
    intake_command(
        "rapidpro",
        lambda uid: {
            "contact": {"uuid": str(uuid4()), "name": "", "urn": "tel:+10000000000"},
            "flow": {"uuid": str(uuid4()), "name": "complaint"},
            "run": {"uuid": uid, "created_on": RECENTLY},
            "results": {
                "kind": {"value": "complaint", "category": "Complaint"},
                "complainant_role": {"value": "anonymous", "category": "Anonymous"},
                "narrative": {"value": f"{CANARY} by sms", "category": "All Responses"},
            },
        },
    ),
    intake_command(
        "hotline",  # one record of JSON lines
        lambda uid: {
            "call_id": uid,
            "received_at": RECENTLY,
            "kind": "complaint",
            "complainant_role": "anonymous",
            "narrative": f"{CANARY} by phone",
        },
    ),
    *NOTIFICATION_COMMANDS,
)


def expected_status(command: Command, caller: str) -> int | None:
    """None: allowed (any 2xx)."""
    if caller in command.allowed:
        return None
    if command.seers is None or caller in command.seers:
        return 403
    return 404


@pytest.mark.parametrize("caller", ALL)
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.name)
def test_every_command_is_allowed_or_refused_by_role_and_agency(
    world: World, client: TestClient, clock: Clock, command: Command, caller: str
) -> None:
    # given a resource in a state where the command is valid
    path, body = command.prepare(world.mechanism, clock)
    before = world.event_count()
    # when the caller sends it
    answer = client.request(command.method, path, json=body, headers=world.headers(caller))
    # then it is done for the allowed, refused (403 or, if they may not see it, 404) for others
    expected = expected_status(command, caller)
    if expected is None:
        assert 200 <= answer.status_code < 300, answer.text
        assert world.event_count() > before
    else:
        assert answer.status_code == expected, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
        assert world.event_count() == before, "a refused command recorded something"


def test_a_denied_case_is_answered_exactly_like_a_missing_one(
    world: World, client: TestClient, clock: Clock
) -> None:
    # given a case held by unhcr, and a case id that exists nowhere
    existing = received(world.mechanism, clock)
    missing = uuid4()
    # when another agency's focal point asks for both
    hidden = client.get(f"/v1/cases/{existing}", headers=world.headers("focal_point_other"))
    absent = client.get(f"/v1/cases/{missing}", headers=world.headers("focal_point_other"))
    # then the answers differ only in the path they name
    assert hidden.status_code == absent.status_code == 404
    strip = {"instance"}
    assert {k: v for k, v in hidden.json().items() if k not in strip} == {
        k: v for k, v in absent.json().items() if k not in strip
    }


def test_without_a_valid_token_nothing_is_answered(world: World, client: TestClient) -> None:
    for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic x"}):
        answer = client.get("/v1/network", headers=headers)
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"].startswith("Bearer")
        assert answer.headers["content-type"] == "application/problem+json"


def test_a_refused_token_is_challenged_as_invalid_and_a_missing_one_is_not(
    world: World, client: TestClient
) -> None:
    # RFC 6750, section 3.1: a client (or its OIDC library) refreshes on invalid_token
    forged = world.tokens["coordinator"][:-4] + "AAAA"
    refused = client.get("/v1/network", headers={"Authorization": f"Bearer {forged}"})
    assert refused.status_code == 401
    challenge = refused.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="cbcm", error="invalid_token", error_description="')
    assert forged not in challenge
    missing = client.get("/v1/network")
    assert missing.headers["www-authenticate"] == 'Bearer realm="cbcm"'


# ---------------------------------------------------------------------------------- reads


def project(world: World) -> None:
    """Feed the read models from the store, as relay and projectors would."""
    project_into(
        world,
        InboxProjection(),
        AssistanceProjection(),
        StatisticsProjection(),
        RegisterProjection(),
    )


@dataclass(frozen=True)
class Standard:
    case_id: UUID
    referral_id: UUID
    feedback_id: UUID
    webhook_id: UUID


@pytest.fixture(scope="module")
def standard(world: World, clock: Clock) -> Standard:
    app = world.mechanism
    referral_id = referral(app, clock)
    case_id = app.get_referral(referral_id).case_id
    app.refer_for_investigation(
        case_id,
        actor=FOCAL_POINT,
        entity="wfp-oig",
        shared=(SharedItem.ALLEGATION_SUMMARY, SharedItem.ALLEGED_PERPETRATOR_DETAILS),
        at=clock(),
    )
    app.give_feedback(
        case_id,
        actor=FOCAL_POINT,
        message=f"{CANARY} message",
        channel=FeedbackChannel.PHONE,
        at=clock(),
    )
    feedback_id = feedback_item(app, clock)
    for caller in STAFF:
        contact(app, clock, caller)
    project(world)
    return Standard(case_id, referral_id, feedback_id, webhook(app))


PREVENTION_READERS = frozenset(
    {"coordinator", "focal_point_own", "focal_point_other", "statistics_reader", "auditor"}
)
READS: dict[str, tuple[Callable[[Standard], str], frozenset[str], int]] = {
    "case": (lambda s: f"/v1/cases/{s.case_id}", CASE_SEERS | {"investigator_own"}, 404),
    "history": (lambda s: f"/v1/cases/{s.case_id}/history", CASE_SEERS, 404),
    "referral": (lambda s: f"/v1/referrals/{s.referral_id}", REFERRAL_SEERS, 404),
    "feedback": (lambda s: f"/v1/feedback/{s.feedback_id}", FEEDBACK_SEERS, 404),
    "inbox": (lambda s: "/v1/inbox/unhcr", HANDLERS, 403),
    "inbox case": (lambda s: f"/v1/inbox/cases/{s.case_id}", CASE_SEERS, 404),
    # the case register (#21): the roles that see cases, each its own (test_register_api)
    "case register": (
        lambda s: "/v1/cases",
        CASE_SEERS | {"focal_point_other", "investigator_own", "investigator_other"},
        403,
    ),
    "assistance case": (lambda s: f"/v1/assistance/cases/{s.case_id}", CASE_SEERS, 404),
    "assistance gaps": (
        lambda s: "/v1/assistance/gaps",
        HANDLERS | {"focal_point_other"},
        403,
    ),
    "provider referrals": (
        lambda s: "/v1/assistance/referrals",
        frozenset({"provider_own", "provider_other"}),
        403,
    ),
    # the live reports change with every case: the coordinator's alone (issue #14)
    "statistics": (lambda s: "/v1/stats", frozenset({"coordinator"}), 403),
    "statistics releases": (
        lambda s: "/v1/stats/releases",
        frozenset(
            {"statistics_reader", "coordinator", "focal_point_own", "focal_point_other", "auditor"}
        ),
        403,
    ),
    "network": (
        lambda s: "/v1/network",
        frozenset(ALL) - {"statistics_reader", "intake_service"},
        403,
    ),
    "prevention compliance": (
        lambda s: f"/v1/prevention/compliance?year={PREVENTION_YEAR}",
        PREVENTION_READERS,
        403,
    ),
    "prevention readiness": (lambda s: "/v1/prevention/readiness", PREVENTION_READERS, 403),
    "prevention coverage": (lambda s: "/v1/prevention/coverage", PREVENTION_READERS, 403),
    "prevention risks": (lambda s: "/v1/prevention/risks", PREVENTION_READERS, 403),
    "prevention risk map": (
        lambda s: f"/v1/prevention/risk-map?year={PREVENTION_YEAR}",
        PREVENTION_READERS,
        403,
    ),
    "prevention work plan": (
        lambda s: f"/v1/prevention/work-plans/{PREVENTION_YEAR}",
        PREVENTION_READERS,
        403,
    ),
    "prevention quarterly report": (
        lambda s: f"/v1/prevention/reports/{PREVENTION_YEAR}-Q1",
        frozenset({"coordinator", "statistics_reader", "auditor"}),
        403,
    ),
    "webhooks": (lambda s: "/v1/webhooks", NETWORK_KEEPER, 403),
    "webhook": (lambda s: f"/v1/webhooks/{s.webhook_id}", NETWORK_KEEPER, 403),
    "webhook event types": (lambda s: "/v1/webhooks/event-types", NETWORK_KEEPER, 403),
    # one's own addresses (issue #18): the staff who are told things, each their own
    "my notifications": (lambda s: "/v1/me/notifications", STAFF, 403),
}


@pytest.mark.parametrize("caller", ALL)
@pytest.mark.parametrize("read", READS)
def test_every_read_is_answered_by_need_to_know(
    world: World, client: TestClient, standard: Standard, read: str, caller: str
) -> None:
    path, readers, denial = READS[read]
    before = world.event_count()
    answer = client.get(path(standard), headers=world.headers(caller))
    if caller in readers:
        assert answer.status_code == 200, answer.text
    else:
        assert answer.status_code == denial, answer.text
        assert world.event_count() == before
    # no read model and no view leaks personal data to anyone but those allowed
    if caller not in {"focal_point_own", "investigator_own", "provider_own"}:
        assert CANARY not in answer.text


def test_another_agencys_gaps_and_inbox_are_refused_to_a_focal_point(
    world: World, client: TestClient, standard: Standard
) -> None:
    headers = world.headers("focal_point_other")
    assert client.get("/v1/assistance/gaps?agency=unhcr", headers=headers).status_code == 403
    assert client.get("/v1/inbox/unhcr", headers=headers).status_code == 403
    assert client.get("/v1/inbox/wfp", headers=headers).status_code == 200


def test_a_provider_lists_only_its_own_referrals(
    world: World, client: TestClient, standard: Standard
) -> None:
    own = client.get("/v1/assistance/referrals", headers=world.headers("provider_own")).json()
    other = client.get("/v1/assistance/referrals", headers=world.headers("provider_other")).json()
    assert str(standard.referral_id) in {r["referral_id"] for r in own["referrals"]}
    assert other["referrals"] == []


# ---------------------------------------------------------------------------------- fields


def personal_of(view: dict[str, Any]) -> dict[str, Any]:
    allegation = (view.get("assessment") or {}).get("allegation") or {}
    return {
        "narrative": view["narrative"],
        "complainant": view["complainant"],
        "survivor": view["survivor"],
        "alleged_perpetrator": allegation.get("alleged_perpetrator"),
        "incident_place_detail": allegation.get("incident_place_detail"),
    }


def test_the_holding_focal_point_sees_every_field_and_the_read_is_recorded(
    world: World, client: TestClient, standard: Standard
) -> None:
    view = client.get(f"/v1/cases/{standard.case_id}", headers=world.headers("focal_point_own"))
    personal = personal_of(view.json())
    assert personal["narrative"] == f"{CANARY} narrative"
    assert personal["survivor"]["phone"] == f"{CANARY} phone"
    assert personal["alleged_perpetrator"] == f"{CANARY} perpetrator"
    assert view.json()["redacted"] == []
    reads = world.mechanism.personal_data_reads(standard.case_id)
    last = reads[-1]
    assert (last.actor.user, last.actor.role) == ("fp-unhcr", Role.FOCAL_POINT)
    assert {"narrative", "survivor.name", "survivor.phone"} <= set(last.fields)


def test_the_coordinator_sees_personal_data_only_where_policy_allows(
    world: World, client: TestClient, standard: Standard, clock: Clock
) -> None:
    headers = world.headers("coordinator")
    redacted = client.get(f"/v1/cases/{standard.case_id}", headers=headers).json()
    assert CANARY not in str(personal_of(redacted))
    assert "narrative" in redacted["redacted"]
    world.mechanism.set_policy(
        actor=COORDINATOR,
        policy=NetworkPolicy(coordinator_sees_personal_data=True),
        at=datetime.now(UTC),
    )
    try:
        allowed = client.get(f"/v1/cases/{standard.case_id}", headers=headers).json()
        assert allowed["narrative"] == f"{CANARY} narrative"
        assert world.mechanism.personal_data_reads(standard.case_id)[-1].actor.user == "coord-1"
    finally:
        world.mechanism.set_policy(actor=COORDINATOR, policy=NetworkPolicy(), at=datetime.now(UTC))


def test_the_investigating_entity_sees_the_allegation_but_not_the_survivor_without_consent(
    world: World, client: TestClient, standard: Standard
) -> None:
    view = client.get(f"/v1/cases/{standard.case_id}", headers=world.headers("investigator_own"))
    personal = personal_of(view.json())
    # shared: allegation summary and perpetrator details; no identity disclosure consent
    assert personal["alleged_perpetrator"] == f"{CANARY} perpetrator"
    assert personal["narrative"] is None
    assert personal["survivor"] is None
    assert personal["complainant"] is None
    assert {"narrative", "survivor.name", "consents", "assistance_referrals"} <= set(
        view.json()["redacted"]
    )
    assert view.json()["assistance_referrals"] is None


def test_the_survivors_identity_reaches_the_investigator_only_while_disclosure_is_consented(
    world: World, client: TestClient, clock: Clock
) -> None:
    # given a case referred with the survivor's identity, under disclosure consent
    case_id = referred(
        world.mechanism, clock, SharedItem.ALLEGATION_SUMMARY, SharedItem.SURVIVOR_IDENTITY
    )
    headers = world.headers("investigator_own")
    shown = client.get(f"/v1/cases/{case_id}", headers=headers).json()
    assert shown["survivor"]["name"] == f"{CANARY} survivor"
    assert shown["survivor"]["phone"] is None  # contact details were not shared
    # when the survivor withdraws that consent
    world.mechanism.withdraw_consent(
        case_id, actor=FOCAL_POINT, kind=ConsentKind.IDENTITY_DISCLOSURE, at=clock()
    )
    # then the identity is no longer shown
    hidden = client.get(f"/v1/cases/{case_id}", headers=headers).json()
    assert hidden["survivor"] is None
    assert "survivor.name" in hidden["redacted"]


def test_the_provider_sees_contact_details_only_as_consented(
    world: World, client: TestClient, standard: Standard, clock: Clock
) -> None:
    headers = world.headers("provider_own")
    view = client.get(f"/v1/referrals/{standard.referral_id}", headers=headers).json()
    # contact consented by phone only: name and phone, not e-mail or address
    assert view["survivor_contact"] == {
        "name": f"{CANARY} survivor",
        "phone": f"{CANARY} phone",
        "email": None,
        "address": None,
    }
    assert set(view["redacted"]) == {"survivor.email", "survivor.address"}
    # a referral made without sharing contact shows none
    case_id = consented(
        world.mechanism, clock, ConsentKind.ASSISTANCE_REFERRAL, ConsentKind.CONTACT
    )
    quiet = world.mechanism.refer_for_assistance(
        case_id,
        actor=FOCAL_POINT,
        service_type=ServiceType.MEDICAL,
        provider="med-a",
        area=AREA,
        share_contact=False,
        at=clock(),
    ).id
    none = client.get(f"/v1/referrals/{quiet}", headers=headers).json()
    assert none["survivor_contact"] is None


def test_the_auditor_replays_the_history_with_personal_data_redacted(
    world: World, client: TestClient, standard: Standard
) -> None:
    client.get(f"/v1/cases/{standard.case_id}", headers=world.headers("focal_point_own"))
    history = client.get(
        f"/v1/cases/{standard.case_id}/history", headers=world.headers("auditor")
    ).json()
    assert CANARY not in str(history)
    types = [e["type"] for e in history["events"]]
    assert types[:2] == ["Case.Received", "Case.Assessed"]
    assert "Case.ReferredForInvestigation" in types
    received_event = history["events"][0]
    assert {"narrative", "survivor.name"} <= set(received_event["redacted"])
    assert received_event["actor"] == {
        "user": "op-unhcr",
        "agency": "unhcr",
        "role": "intake_operator",
    }
    # the custody trail names who read personal data, which fields, never the values
    readers = {(r["user"], r["role"]) for r in history["personal_data_reads"]}
    assert ("fp-unhcr", "focal_point") in readers


def test_an_intake_operator_sees_nothing_of_a_complaint_after_submitting_it(
    world: World, client: TestClient
) -> None:
    headers = world.headers("intake_operator")
    written = client.post("/v1/cases", json=COMPLAINT, headers=headers)
    assert written.status_code == 201
    assert set(written.json()) == {"id", "version", "position", "receipt_code"}
    case_id = written.json()["id"]
    assert client.get(f"/v1/cases/{case_id}", headers=headers).status_code == 404
    assert client.get(f"/v1/cases/{case_id}/history", headers=headers).status_code == 404


def test_an_integrations_service_account_records_for_its_agency_and_sees_nothing(
    world: World, client: TestClient
) -> None:
    # given a hotline system's client-credentials token for unhcr (role intake_service)
    headers = world.headers("intake_service")
    # when it records a complaint, with a receipt for the caller, and a feedback item
    written = client.post("/v1/cases", json={**COMPLAINT, "issue_receipt": True}, headers=headers)
    feedback = client.post(
        "/v1/feedback",
        json={
            "channel": "hotline",
            "category": "service_complaint",
            "sector": "health",
            "concerned_agency": "unhcr",
            "text": "the clinic was closed",
        },
        headers=headers,
    )
    # then both are recorded, the case held by its own agency, under its own role
    assert written.status_code == 201, written.text
    assert feedback.status_code == 201, feedback.text
    assert written.json()["receipt_code"]
    case = world.mechanism.get_case(UUID(written.json()["id"]))
    assert case.custodian == "unhcr"
    received_by = world.mechanism.case_history(case.id)[0].actor  # type: ignore[attr-defined]
    assert received_by == Actor("svc-hotline-unhcr", "unhcr", Role.INTAKE_SERVICE)
    # and it sees nothing of them afterwards (the matrices refuse it everything else)
    assert client.get(f"/v1/cases/{case.id}", headers=headers).status_code == 404
    answer = client.get(f"/v1/feedback/{feedback.json()['id']}", headers=headers)
    assert answer.status_code == 404


def test_every_view_endpoint_is_in_the_matrix(world: World) -> None:
    """The matrices above must grow with the API: an endpoint added without its row fails."""
    paths = world.api.openapi()["paths"]
    operations = [
        (method, path)
        for path, item in paths.items()
        if path.startswith("/v1/") and not path.startswith("/v1/public/")
        for method in item
    ]
    writes = [o for o in operations if o[0] in ("post", "put", "delete")]
    reads = [o for o in operations if o[0] == "get"]
    # establishing the network is a one-off bootstrap, tested on its own below; the case
    # register's export (#21) is attacked in test_register_api
    assert len(writes) - 2 == len(COMMANDS)
    # /v1/stats/{report} shares the statistics row, /v1/stats/releases/{id} the releases' row
    assert len(reads) == len(READS) + 2


def test_only_the_coordinator_establishes_a_network_and_only_once(
    world: World, client: TestClient
) -> None:
    body = {"name": "Another"}
    for caller in ALL:
        answer = client.post("/v1/network", json=body, headers=world.headers(caller))
        assert answer.status_code == (409 if caller == "coordinator" else 403), caller


# ---------------------------------------------------------------------------------- review


def test_a_survivor_complainants_identity_follows_the_disclosure_consent(
    world: World, client: TestClient, clock: Clock
) -> None:
    # given a survivor who complained in person: their details are the survivor's identity
    case_id = referred(
        world.mechanism, clock, SharedItem.ALLEGATION_SUMMARY, SharedItem.COMPLAINANT_IDENTITY
    )
    headers = world.headers("investigator_own")
    assert client.get(f"/v1/cases/{case_id}", headers=headers).json()["complainant"] is not None
    # when the survivor withdraws consent to disclosure
    world.mechanism.withdraw_consent(
        case_id, actor=FOCAL_POINT, kind=ConsentKind.IDENTITY_DISCLOSURE, at=clock()
    )
    # then the investigators no longer see the complainant's (the survivor's) details
    assert client.get(f"/v1/cases/{case_id}", headers=headers).json()["complainant"] is None


def test_an_agency_handed_a_case_sees_only_what_the_transfer_shared(
    world: World, client: TestClient, clock: Clock
) -> None:
    # given a case transferred to wfp with the allegation summary only
    case_id = assessed(world.mechanism, clock, ComplaintCategory.SEA_ALLEGATION)
    world.mechanism.transfer_case(
        case_id,
        actor=FOCAL_POINT,
        to_agency="wfp",
        reason=TransferReason.IMPLICATED_AGENCY_CUSTODY,
        shared=(SharedItem.ALLEGATION_SUMMARY,),
        at=clock(),
    )
    # when wfp's focal point reads it
    view = client.get(f"/v1/cases/{case_id}", headers=world.headers("focal_point_other")).json()
    # then the custody is theirs, but not the survivor's identity nor the narrative
    assert view["custodian"] == "wfp"
    assert CANARY not in str(personal_of(view))
    assert {"narrative", "survivor.name"} <= set(view["redacted"])


def test_a_withdrawn_focal_point_loses_access_at_once(
    world: World, client: TestClient, clock: Clock
) -> None:
    # given a focal point of unhcr who can read a unhcr case
    user = f"fp-{uuid4().hex[:8]}"
    now = datetime.now(UTC)
    world.mechanism.appoint_focal_point(actor=COORDINATOR, agency="unhcr", user=user, at=now)
    token = issue_token(
        world.settings.data_dir, user=user, agency="unhcr", roles=[Role.FOCAL_POINT]
    )
    headers = {"Authorization": f"Bearer {token}"}
    case_id = received(world.mechanism, clock)
    assert client.get(f"/v1/cases/{case_id}", headers=headers).status_code == 200
    # when the coordinator withdraws the appointment (the token is still valid)
    world.mechanism.withdraw_focal_point(
        actor=COORDINATOR, agency="unhcr", user=user, at=datetime.now(UTC)
    )
    # then the token's focal-point role counts no more
    assert client.get(f"/v1/cases/{case_id}", headers=headers).status_code == 403
    # and an account never appointed gets nothing either
    stranger = issue_token(
        world.settings.data_dir, user="fp-stranger", agency="unhcr", roles=[Role.FOCAL_POINT]
    )
    answer = client.get(f"/v1/cases/{case_id}", headers={"Authorization": f"Bearer {stranger}"})
    assert answer.status_code == 403


def test_the_provider_loses_the_contact_details_once_the_survivor_declines(
    world: World, client: TestClient, clock: Clock
) -> None:
    made = referral(world.mechanism, clock)
    headers = world.headers("provider_own")
    assert client.get(f"/v1/referrals/{made}", headers=headers).json()["survivor_contact"]
    world.mechanism.decline_referral_by_survivor(made, actor=FOCAL_POINT, at=clock())
    assert client.get(f"/v1/referrals/{made}", headers=headers).json()["survivor_contact"] is None


def test_reading_community_feedback_text_is_recorded(
    world: World, client: TestClient, clock: Clock
) -> None:
    made = feedback_item(world.mechanism, clock)
    view = client.get(f"/v1/feedback/{made}", headers=world.headers("focal_point_own")).json()
    assert view["text"] == f"{CANARY} feedback"
    reads = world.mechanism.personal_data_reads(made)
    assert [(r.actor.user, r.fields) for r in reads] == [("fp-unhcr", ("text",))]
    # the coordinator and auditors see the item but not its text
    for caller in ("coordinator", "auditor"):
        other = client.get(f"/v1/feedback/{made}", headers=world.headers(caller)).json()
        assert other["text"] is None


def test_a_command_that_changes_nothing_records_nothing_even_with_an_idempotency_key(
    world: World, client: TestClient
) -> None:
    # appointing a focal point who is already appointed changes nothing
    url = "/v1/network/agencies/unhcr/focal-points"
    for extra in ({}, {"Idempotency-Key": uuid4().hex}):
        before = world.event_count()
        answer = client.post(
            url, json={"user": "fp-unhcr"}, headers=world.headers("coordinator", **extra)
        )
        assert answer.status_code == 422, answer.text
        assert world.event_count() == before


def test_a_duplicate_of_another_agencys_case_does_not_show_its_id(
    world: World, client: TestClient, clock: Clock
) -> None:
    # given a unhcr case marked (by the coordinator) as a duplicate of a wfp case
    wfp_operator = Actor("op-wfp", "wfp", Role.INTAKE_OPERATOR)
    said = clock()
    original = world.mechanism.receive_complaint(
        actor=wfp_operator,
        at=clock(),
        received_at=said,
        channel=Channel.HOTLINE,
        complainant_role=ComplainantRole.ANONYMOUS,
        immediate_safety_risk=False,
        narrative="same incident",
    ).id
    case_id = received(world.mechanism, clock)
    world.mechanism.mark_as_duplicate(
        case_id, actor=COORDINATOR, original_case_id=original, at=clock()
    )
    # then unhcr's focal point does not learn the wfp case's id; the coordinator does
    own = client.get(f"/v1/cases/{case_id}", headers=world.headers("focal_point_own")).json()
    assert own["duplicate_of"] is None
    assert "duplicate_of" in own["redacted"]
    assert str(original) not in str(own)
    coordinator = client.get(f"/v1/cases/{case_id}", headers=world.headers("coordinator")).json()
    assert coordinator["duplicate_of"] == str(original)
