"""Aggregates -> what a reader may see, and the personal fields that reading shows.

Every view returns the personal fields it reveals (non-empty values only), so the route can
record the read in the case's custody trail before answering.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from domain.assistance import AssistanceReferral
from domain.case import Case
from domain.feedback import Feedback
from domain.need_to_know import PERSON_FIELDS, CaseAccess
from domain.personal_data import PersonDetails, is_erased, personal_data_paths
from services.api.schemas.cases import (
    AllegationOut,
    AssessmentOut,
    CaseOut,
    ClosureOut,
    ConsentOut,
    HistoryEventOut,
    InvestigationOut,
    PersonOut,
)
from services.api.schemas.feedback import FeedbackOut
from services.api.schemas.referrals import ReferralOut


def _given(value: object) -> bool:
    return value is not None and (not isinstance(value, str) or bool(value.strip()))


class _Shown:
    """Collects which personal fields a view revealed and which it withheld."""

    def __init__(self, allowed: frozenset[str]) -> None:
        self.allowed = allowed
        self.revealed: list[str] = []
        self.redacted: list[str] = []
        self.erased: list[str] = []

    def field(self, path: str, value: str | None) -> str | None:
        if not _given(value):
            return None
        if is_erased(value):  # nothing left to show, nor to record as read
            self.erased.append(path)
            return None
        if path in self.allowed:
            self.revealed.append(path)
            return value
        self.redacted.append(path)
        return None

    def person(self, prefix: str, details: PersonDetails | None) -> PersonOut | None:
        if details is None:
            return None
        values = {f: self.field(f"{prefix}.{f}", getattr(details, f)) for f in PERSON_FIELDS}
        return PersonOut(**values) if any(v is not None for v in values.values()) else None


def case_view(case: Case, access: CaseAccess) -> tuple[CaseOut, tuple[str, ...]]:
    """The case as ``access`` allows, and the personal fields it reveals."""
    shown = _Shown(access.personal)
    withheld = access.withheld
    assessment = None
    if case.assessment is not None:
        a = case.assessment.allegation
        allegation = None
        if a is not None:
            allegation = AllegationOut(
                allegation_type=a.allegation_type,
                subtype=a.subtype,
                child_involved=a.child_involved,
                implicated_agency=a.implicated_agency,
                personnel_category=a.personnel_category,
                incident_date=a.incident_date,
                incident_area=a.incident_area,
                victim_sex=a.victim_sex,
                victim_age_band=a.victim_age_band,
                incident_place_detail=shown.field(
                    "allegation.incident_place_detail", a.incident_place_detail
                ),
                alleged_perpetrator=shown.field(
                    "allegation.alleged_perpetrator", a.alleged_perpetrator
                ),
            )
        assessment = AssessmentOut(
            category=case.assessment.category,
            allegation=allegation,
            assessed_at=case.assessment.assessed_at,
        )
    inv = case.investigation
    closure = None
    if case.closure is not None:
        closure = ClosureOut(
            reason=case.closure.reason,
            closed_at=case.closure.closed_at,
            no_outcome_reason=shown.field(
                "closure.no_outcome_reason", case.closure.no_outcome_reason
            ),
            no_feedback_reason=shown.field(
                "closure.no_feedback_reason", case.closure.no_feedback_reason
            ),
        )
    out = CaseOut(
        id=case.id,
        version=case.version,
        status=case.status,
        received_at=case.received_at,
        recorded_at=case.recorded_at,
        channel=case.channel,
        receiving_agency=case.receiving_agency,
        custodian=case.custodian,
        complainant_role=case.complainant_role,
        immediate_safety_risk=case.immediate_safety_risk,
        focal_points=None if "focal_points" in withheld else list(case.focal_points),
        narrative=shown.field("narrative", case.narrative),
        complainant=shown.person("complainant", case.complainant),
        survivor=shown.person("survivor", case.survivor),
        assessment=assessment,
        consents=None
        if "consents" in withheld
        else [
            ConsentOut(
                kind=c.kind,
                given=c.given,
                given_by=c.given_by,
                contact_methods=list(c.contact_methods),
                recorded_at=c.recorded_at,
            )
            for c in case.consents.values()
        ],
        assistance_referrals=None
        if "assistance_referrals" in withheld
        else list(case.assistance_referrals),
        investigation=None
        if inv is None
        else InvestigationOut(
            agency=inv.agency,
            entity=inv.entity,
            shared=list(inv.shared),
            referred_at=inv.referred_at,
            acknowledged_at=inv.acknowledged_at,
            outcome=inv.outcome,
            outcome_at=inv.outcome_at,
        ),
        feedback_given_at=None if "feedback_given_at" in withheld else list(case.feedback_given_at),
        duplicate_of=case.duplicate_of,
        closure=closure,
        reopened_count=case.reopened_count,
        redacted=sorted({*shown.redacted, *withheld}),
        erased=sorted(shown.erased),
    )
    return out, tuple(shown.revealed)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list | frozenset | set):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _redact(data: dict[str, Any], path: str) -> bool:
    head, _, rest = path.partition(".")
    if head not in data or data[head] is None:
        return False
    if not rest:
        if not _given(data[head]):
            return False
        data[head] = None
        return True
    inner = data[head]
    return isinstance(inner, dict) and _redact(inner, rest)


_SKIPPED = frozenset({"originator_id", "originator_version", "timestamp", "originator_topic"})


def history_event(event: Any, reveal_personal: bool) -> tuple[HistoryEventOut, tuple[str, ...]]:
    """One stored event for the custody trail; personal fields redacted unless revealed."""
    data = {
        f.name: _plain(getattr(event, f.name))
        for f in dataclasses.fields(event)
        if f.name not in _SKIPPED and f.name != "actor"
    }
    paths = personal_data_paths(type(event))
    erased = [p for p in paths if _erased(data, p)]
    present = [p for p in paths if _present(data, p)]
    redacted: list[str] = []
    if not reveal_personal:
        redacted = [p for p in present if _redact(data, p)]
    actor = getattr(event, "actor", None)
    out = HistoryEventOut(
        version=event.originator_version,
        type=type(event).__qualname__,
        at=event.timestamp,
        actor=None
        if actor is None
        else {"user": actor.user, "agency": actor.agency, "role": str(actor.role)},
        data=data,
        redacted=redacted,
        erased=erased,
    )
    return out, (tuple(present) if reveal_personal else ())


def _erased(data: dict[str, Any], path: str) -> bool:
    """Whether the field at ``path`` was erased (it is then set to null)."""
    *parents, last = path.split(".")
    target: Any = data
    for part in parents:
        target = target.get(part) if isinstance(target, dict) else None
    if isinstance(target, dict) and is_erased(target.get(last)):
        target[last] = None
        return True
    return False


def _present(data: dict[str, Any], path: str) -> bool:
    value: Any = data
    for part in path.split("."):
        if not isinstance(value, dict) or value.get(part) is None:
            return False
        value = value[part]
    return _given(value)


def referral_view(
    referral: AssistanceReferral, case: Case, contact_fields: tuple[str, ...]
) -> tuple[ReferralOut, tuple[str, ...]]:
    shown = _Shown(frozenset(contact_fields))
    contact = shown.person("survivor", case.survivor)
    out = ReferralOut(
        id=referral.id,
        version=referral.version,
        case_id=referral.case_id,
        service_type=referral.service_type,
        provider=referral.provider,
        area=referral.area,
        contact_shared=referral.contact_shared,
        referring_agency=referral.referring_agency,
        status=referral.status,
        status_times=dict(referral.status_times),
        survivor_contact=contact,
        redacted=sorted(shown.redacted),
        erased=sorted(shown.erased),
    )
    return out, tuple(shown.revealed)


def feedback_view(feedback: Feedback, text_visible: bool) -> FeedbackOut:
    return FeedbackOut(
        id=feedback.id,
        version=feedback.version,
        channel=feedback.channel,
        category=feedback.category,
        sector=feedback.sector,
        concerned_agency=feedback.concerned_agency,
        text=feedback.text if text_visible and not is_erased(feedback.text) else None,
        source_case_id=feedback.source_case_id,
        received_at=feedback.received_at,
        responded_at=feedback.responded_at,
        loop_closed_at=feedback.loop_closed_at,
        redacted=[] if text_visible else ["text"],
        erased=["text"] if is_erased(feedback.text) else [],
    )
