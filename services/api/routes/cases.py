"""Cases: intake, every command of the workflow, the case and its custody trail.

A case the caller may not see is answered 404, exactly like a case that does not exist,
for reads and for commands alike. A caller who may see the case but whose role may not do
the command is answered 403 (the domain's rule, ``ActionNotPermitted``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse

from domain.actors import Actor, Role
from domain.case import Allegation, Case
from domain.errors import InvalidCommand, NotFound
from domain.need_to_know import CaseAccess, best_case_access, case_access
from domain.personal_data import PersonDetails
from domain.policy import NetworkPolicy
from domain.vocabulary import ConsentKind, ErasureReason
from services.api.auth import CurrentPrincipal, acting_on, first_seeing, require_role
from services.api.replay import Step, case_steps
from services.api.schemas.cases import (
    AcknowledgementIn,
    AllegationIn,
    AssessmentIn,
    AssistanceReferralIn,
    AuditGrantIn,
    CaseHistoryOut,
    CaseOut,
    ClosureIn,
    ComplaintIn,
    ConsentIn,
    ConsentWithdrawalIn,
    DuplicateIn,
    ErasureIn,
    FeedbackToComplainantIn,
    FocalPointsIn,
    ForwardingIn,
    InvestigationReferralIn,
    NoticeOut,
    OutcomeIn,
    PersonalDataReadOut,
    PersonIn,
    ReopeningIn,
    StepOut,
    TransferIn,
)
from services.api.schemas.common import PROBLEM_RESPONSES, USER, CaseCommand, WrittenOut
from services.api.views import case_view, history_event
from services.api.writes import (
    Command,
    command_fields,
    in_thread,
    mechanism,
    merged,
    now,
    perform,
    perform_as,
)
from services.application.commands import Written, expecting
from services.application.mechanism import ComplaintMechanism
from services.identity.tokens import Principal

router = APIRouter(prefix="/v1/cases", tags=["cases"], responses=PROBLEM_RESPONSES)

CaseId = Annotated[UUID, Path(description="the case")]
AuditorId = Annotated[str, Path(pattern=USER, description="the auditor's account id")]

HANDLERS = (Role.FOCAL_POINT, Role.COORDINATOR)
INVESTIGATORS = (Role.INVESTIGATING_ENTITY, Role.COORDINATOR)
INTAKE = (Role.INTAKE_OPERATOR, Role.INTAKE_SERVICE, Role.FOCAL_POINT, Role.COORDINATOR)


def _person(details: PersonIn | None) -> PersonDetails | None:
    return None if details is None else PersonDetails(**details.model_dump())


def _allegation(a: AllegationIn) -> Allegation:
    # The API's shape is the domain's, field for field; the domain checks the values.
    return Allegation(**a.model_dump())


def complaint_command(
    actor: Actor, body: ComplaintIn, receipt: Any
) -> Callable[[ComplaintMechanism], Written]:
    """Recording the complaint ``body`` (with ``receipt``: the receipt code issued for it and
    its secret), for ``POST /v1/cases`` and for intake from other tools."""

    def command(app: ComplaintMechanism) -> Written:
        return app.receive_complaint(
            actor=actor,
            at=now(),
            received_at=body.received_at,
            channel=body.channel,
            complainant_role=body.complainant_role,
            immediate_safety_risk=body.immediate_safety_risk,
            narrative=body.narrative,
            complainant=_person(body.complainant),
            survivor=_person(body.survivor),
            receipt=None if receipt is None else (receipt[0].locator, receipt[1]),
        )

    return command


def _case_location(written: Written) -> str:
    return f"/v1/cases/{written.id}"


async def _load_visible(
    app: ComplaintMechanism, principal: Principal, case_id: UUID
) -> tuple[Case, NetworkPolicy]:
    def load() -> tuple[Case, NetworkPolicy]:
        return app.get_case(case_id), app.network().policy

    case, policy = await in_thread(load)
    if best_case_access(principal.user, principal.agency, principal.roles, case, policy) is None:
        raise NotFound(f"no case {case_id}")
    return case, policy


async def _audit_grantees(
    app: ComplaintMechanism, principal: Principal, case_id: UUID
) -> frozenset[str]:
    """The auditors granted this case's personal data, when the caller is an auditor."""
    if Role.AUDITOR not in principal.roles:
        return frozenset()
    return await in_thread(lambda: app.audit_grantees(case_id))


async def _sees(app: ComplaintMechanism, principal: Principal, case_id: UUID) -> bool:
    try:
        await _load_visible(app, principal, case_id)
    except NotFound:
        return False
    return True


async def _command(
    request: Request,
    principal: Principal,
    case_id: UUID,
    roles: Iterable[Role],
    decide: Callable[[ComplaintMechanism, Actor, datetime], Written],
    *,
    status: int = 200,
    location: Callable[[Written], str] | None = None,
) -> JSONResponse:
    """A command on a case the caller can see, in the first of ``roles`` that sees it."""
    case, policy = await _load_visible(mechanism(request), principal, case_id)
    actor = acting_on(
        principal, roles, lambda candidate: case_access(candidate, case, policy) is not None, "case"
    )
    return await perform_as(request, principal, actor, decide, status=status, location=location)


# ------------------------------------------------------------------ intake


@router.post("", status_code=201, response_model=WrittenOut)
async def receive_complaint(
    request: Request, principal: CurrentPrincipal, body: ComplaintIn
) -> JSONResponse:
    """Record a complaint (any entry point). Intake operators see nothing of it afterwards;
    with ``issue_receipt`` the answer carries the complainant's receipt code, once."""
    actor = require_role(principal, INTAKE)
    app = mechanism(request)
    receipts = request.app.state.receipts
    receipt = await receipts.issue(app) if body.issue_receipt else None

    command = complaint_command(actor, body, receipt)

    return await perform(
        request,
        principal,
        command,
        status=201,
        receipt=None if receipt is None else receipt[0],
        location=_case_location,
    )


# ------------------------------------------------------------------ reads


@router.get("/{case_id}", response_model=CaseOut)
async def get_case(request: Request, principal: CurrentPrincipal, case_id: CaseId) -> CaseOut:
    """The case, as the caller's task needs it. Personal data shown is recorded (who, when,
    which fields) in the case's custody trail before the answer leaves."""
    view, _, _ = await read_case(mechanism(request), principal, case_id)
    return view


async def read_case(
    app: ComplaintMechanism, principal: Principal, case_id: UUID, *, purpose: str = "case"
) -> tuple[CaseOut, Case, CaseAccess]:
    """The case as ``principal`` may see it (``NotFound`` when they may not), the case
    itself and their access; personal data shown is recorded as read, with ``purpose``,
    before it is returned. The API's case and the console's case page both read through
    here, so a page never shows what the API would not."""
    case, policy = await _load_visible(app, principal, case_id)
    grantees = await _audit_grantees(app, principal, case_id)
    access = best_case_access(
        principal.user, principal.agency, principal.roles, case, policy, audit_grantees=grantees
    )
    assert access is not None
    view, revealed = case_view(case, access)
    if case.duplicate_of is not None and not await _sees(app, principal, case.duplicate_of):
        # The case it duplicates may be another agency's: not even its id is shown.
        view.duplicate_of = None
        view.redacted = sorted({*view.redacted, "duplicate_of"})
    if revealed:
        await in_thread(
            lambda: app.record_personal_data_read(
                case_id, actor=access.reader, fields=revealed, purpose=purpose, at=now()
            )
        )
    return view, case, access


HISTORY_READERS = (Role.FOCAL_POINT, Role.COORDINATOR, Role.AUDITOR)


@router.get("/{case_id}/history", response_model=CaseHistoryOut)
async def case_history(
    request: Request, principal: CurrentPrincipal, case_id: CaseId
) -> CaseHistoryOut:
    """The custody trail: every recorded step (who, when, what, what was shared) and every
    read of personal data, each event with its place in the hash chain and a summary in plain
    words. Personal fields are shown only to readers who may see them all (an auditor: with
    the coordinator's grant for this case)."""
    app = mechanism(request)
    case, policy = await _load_visible(app, principal, case_id)
    grantees = await _audit_grantees(app, principal, case_id)
    reader = first_seeing(
        principal,
        HISTORY_READERS,
        lambda actor: case_access(actor, case, policy, audit_grantees=grantees) is not None,
    )
    if reader is None:
        raise NotFound(f"no case {case_id}")
    access = case_access(reader, case, policy, audit_grantees=grantees)
    assert access is not None
    reveal = access.full_history

    def load() -> tuple[list[Any], list[PersonalDataReadOut], tuple[Step, ...]]:
        steps = case_steps(app, case_id)
        events: list[Any] = list(app.case_history(case_id))
        reads = [
            PersonalDataReadOut(
                at=r.timestamp,
                user=r.actor.user,
                agency=r.actor.agency,
                role=str(r.actor.role),
                fields=list(r.fields),
                purpose=r.purpose,
            )
            for r in app.personal_data_reads(case_id)
        ]
        return events, reads, steps

    events, reads, steps = await in_thread(load)
    of_case = {s.version: s for s in steps if s.record == "case"}
    shown: set[str] = set()
    outs = []
    for event in events:
        out, revealed = history_event(event, reveal)
        step = of_case.get(out.version)
        if step is not None:
            out.position, out.link = step.evidence.position, step.evidence.link
            out.summary = step.summary
        outs.append(out)
        shown.update(revealed)
    if shown:
        await in_thread(
            lambda: app.record_personal_data_read(
                case_id, actor=reader, fields=tuple(shown), purpose="history", at=now()
            )
        )
    return CaseHistoryOut(
        case_id=case_id,
        version=case.version,
        events=outs,
        personal_data_reads=reads,
        steps=[_step_out(s) for s in steps],
    )


def _step_out(step: Step) -> StepOut:
    actor = step.actor
    return StepOut(
        at=step.at,
        record=step.record,
        aggregate_id=step.aggregate_id,
        version=step.version,
        type=step.event,
        actor=None
        if actor is None
        else {"user": actor.user, "agency": actor.agency, "role": str(actor.role)},
        holder=step.holder,
        summary=step.summary,
        position=step.evidence.position,
        link=step.evidence.link,
        link_recomputes=step.evidence.recomputes,
        missing=step.evidence.missing,
        notice=None if step.notice is None else NoticeOut(**step.notice.to_json()),
    )


# ------------------------------------------------------------------ auditors' grants


@router.post("/{case_id}/audit-grants", response_model=WrittenOut)
async def grant_audit_access(
    request: Request, principal: CurrentPrincipal, case_id: CaseId, body: AuditGrantIn
) -> JSONResponse:
    """The coordinator lets an auditor see this case's personal data (in the case and its
    history; every read is recorded), saying why. Recorded in the custody trail."""
    return await _command(
        request,
        principal,
        case_id,
        (Role.COORDINATOR,),
        lambda app, actor, at: app.grant_audit_access(
            case_id, actor=actor, auditor=body.auditor, reason=body.reason, at=at
        ),
    )


@router.delete("/{case_id}/audit-grants/{auditor}", response_model=WrittenOut)
async def revoke_audit_access(
    request: Request, principal: CurrentPrincipal, case_id: CaseId, auditor: AuditorId
) -> JSONResponse:
    """The coordinator ends an auditor's access to this case's personal data (recorded;
    nothing is deleted)."""
    return await _command(
        request,
        principal,
        case_id,
        (Role.COORDINATOR,),
        lambda app, actor, at: app.revoke_audit_access(
            case_id, actor=actor, auditor=auditor, at=at
        ),
    )


# ------------------------------------------------------------------ commands


def assessment_arguments(body: AssessmentIn) -> dict[str, Any]:
    """The assessment's allegation as the domain's."""
    return {"allegation": None if body.allegation is None else _allegation(body.allegation)}


def erasure_arguments(body: ErasureIn) -> dict[str, Any]:
    """The erasure's arguments besides the body's: each subject once. Retention is applied
    by the retention job, never on request (refused here, as the domain's refusals are)."""
    if body.reason is ErasureReason.RETENTION_EXPIRED:
        raise InvalidCommand("retention is applied by the retention job, not on request")
    return {"subjects": tuple(dict.fromkeys(body.subjects))}


def case_decision(
    case_id: UUID,
    body: CaseCommand,
    command: Command,
    arguments: Callable[[Any], dict[str, Any]] | None = None,
    **extra: Any,
) -> Callable[[ComplaintMechanism, Actor, datetime], Written]:
    """``command`` on the case at the version ``body`` expects; its keyword arguments are the
    body's fields (named alike), ``extra``, and what ``arguments(body)`` gives when it runs.
    The API's routes and the console's case page decide through here."""

    def decide(app: ComplaintMechanism, actor: Actor, at: datetime) -> Written:
        # what ``arguments`` makes of a body field (the erasure's subjects, each once)
        # stands for that field
        made = arguments(body) if arguments else {}
        fields = merged(command_fields(body, *made), extra, made)
        target = expecting(case_id, body.expected_version)
        return command(app)(target, actor=actor, at=at, **fields)

    return decide


async def _on_case(
    request: Request,
    principal: Principal,
    case_id: UUID,
    body: CaseCommand,
    command: Command,
    *,
    roles: Iterable[Role] = HANDLERS,
    status: int = 200,
    location: Callable[[Written], str] | None = None,
    arguments: Callable[[Any], dict[str, Any]] | None = None,
    **extra: Any,
) -> JSONResponse:
    """``command`` (``case_decision``) on a case the caller can see, in the first of
    ``roles`` that sees it."""
    decide = case_decision(case_id, body, command, arguments, **extra)
    return await _command(
        request, principal, case_id, roles, decide, status=status, location=location
    )


@router.post("/{case_id}/assessment", response_model=WrittenOut)
async def assess(
    request: Request, principal: CurrentPrincipal, case_id: CaseId, body: AssessmentIn
) -> JSONResponse:
    """Triage: SEA allegation (with its details), other sensitive complaint, or feedback."""
    return await _on_case(
        request,
        principal,
        case_id,
        body,
        lambda app: app.assess_case,
        arguments=assessment_arguments,
    )


@router.post("/{case_id}/focal-points", response_model=WrittenOut)
async def assign_focal_points(
    request: Request, principal: CurrentPrincipal, case_id: CaseId, body: FocalPointsIn
) -> JSONResponse:
    """Hand the case to named focal points of the agency holding it."""
    return await _on_case(request, principal, case_id, body, lambda app: app.assign_focal_points)


@router.post("/{case_id}/transfers", response_model=WrittenOut)
async def transfer(
    request: Request, principal: CurrentPrincipal, case_id: CaseId, body: TransferIn
) -> JSONResponse:
    """Hand custody to another agency, recording why and what was shared."""
    return await _on_case(request, principal, case_id, body, lambda app: app.transfer_case)


@router.post("/{case_id}/consents", response_model=WrittenOut)
async def give_consent(
    request: Request, principal: CurrentPrincipal, case_id: CaseId, body: ConsentIn
) -> JSONResponse:
    """Record the survivor's informed consent."""
    return await _on_case(request, principal, case_id, body, lambda app: app.give_consent)


@router.post("/{case_id}/consents/{kind}/withdrawal", response_model=WrittenOut)
async def withdraw_consent(
    request: Request,
    principal: CurrentPrincipal,
    case_id: CaseId,
    kind: ConsentKind,
    body: ConsentWithdrawalIn,
) -> JSONResponse:
    """Record that the survivor withdrew a consent (open assistance referrals stop with it)."""
    return await _on_case(
        request, principal, case_id, body, lambda app: app.withdraw_consent, kind=kind
    )


@router.post("/{case_id}/assistance-referrals", status_code=201, response_model=WrittenOut)
async def refer_for_assistance(
    request: Request, principal: CurrentPrincipal, case_id: CaseId, body: AssistanceReferralIn
) -> JSONResponse:
    """Refer the survivor to one service (only with the survivor's consent)."""
    return await _on_case(
        request,
        principal,
        case_id,
        body,
        lambda app: app.refer_for_assistance,
        status=201,
        location=lambda w: f"/v1/referrals/{w.id}",
    )


@router.post("/{case_id}/investigation-referral", response_model=WrittenOut)
async def refer_for_investigation(
    request: Request, principal: CurrentPrincipal, case_id: CaseId, body: InvestigationReferralIn
) -> JSONResponse:
    """Refer the allegation to the implicated agency's investigating entity."""
    return await _on_case(
        request, principal, case_id, body, lambda app: app.refer_for_investigation
    )


@router.post("/{case_id}/investigation-referral/acknowledgement", response_model=WrittenOut)
async def acknowledge_investigation(
    request: Request, principal: CurrentPrincipal, case_id: CaseId, body: AcknowledgementIn
) -> JSONResponse:
    """The investigating entity confirms it received the referral."""
    return await _on_case(
        request,
        principal,
        case_id,
        body,
        lambda app: app.acknowledge_investigation,
        roles=INVESTIGATORS,
    )


@router.post("/{case_id}/investigation-referral/outcome", response_model=WrittenOut)
async def record_investigation_outcome(
    request: Request, principal: CurrentPrincipal, case_id: CaseId, body: OutcomeIn
) -> JSONResponse:
    """The investigating entity reports the outcome."""
    return await _on_case(
        request,
        principal,
        case_id,
        body,
        lambda app: app.record_investigation_outcome,
        roles=INVESTIGATORS,
    )


@router.post("/{case_id}/feedback", response_model=WrittenOut)
async def give_feedback(
    request: Request, principal: CurrentPrincipal, case_id: CaseId, body: FeedbackToComplainantIn
) -> JSONResponse:
    """Feedback to the complainant; with channel ``receipt_code`` an anonymous complainant
    reads it with their receipt code."""
    return await _on_case(request, principal, case_id, body, lambda app: app.give_feedback)


@router.post("/{case_id}/duplicate-of", response_model=WrittenOut)
async def mark_as_duplicate(
    request: Request, principal: CurrentPrincipal, case_id: CaseId, body: DuplicateIn
) -> JSONResponse:
    """Link this report to the case of the same incident (counted once)."""
    # The original must be visible to the caller too: a link must not probe for cases.
    await _load_visible(mechanism(request), principal, body.original_case_id)
    return await _on_case(request, principal, case_id, body, lambda app: app.mark_as_duplicate)


@router.post("/{case_id}/closure", response_model=WrittenOut)
async def close(
    request: Request, principal: CurrentPrincipal, case_id: CaseId, body: ClosureIn
) -> JSONResponse:
    """Close with a reason."""
    return await _on_case(request, principal, case_id, body, lambda app: app.close_case)


@router.post("/{case_id}/reopening", response_model=WrittenOut)
async def reopen(
    request: Request, principal: CurrentPrincipal, case_id: CaseId, body: ReopeningIn
) -> JSONResponse:
    """Reopen a closed case, saying why."""
    return await _on_case(request, principal, case_id, body, lambda app: app.reopen_case)


@router.post("/{case_id}/erasure", response_model=WrittenOut)
async def erase_personal_data(
    request: Request, principal: CurrentPrincipal, case_id: CaseId, body: ErasureIn
) -> JSONResponse:
    """Erase these people's personal data from the case and its records, for good (their data
    keys are destroyed; the log is not rewritten, the case's other facts stay)."""
    return await _on_case(
        request,
        principal,
        case_id,
        body,
        lambda app: app.erase_personal_data,
        arguments=erasure_arguments,
    )


@router.post("/{case_id}/feedback-mechanism", status_code=201, response_model=WrittenOut)
async def forward_to_feedback_mechanism(
    request: Request, principal: CurrentPrincipal, case_id: CaseId, body: ForwardingIn
) -> JSONResponse:
    """A case assessed as non-sensitive feedback goes to the concerned agency's CFM."""
    return await _on_case(
        request,
        principal,
        case_id,
        body,
        lambda app: app.forward_to_feedback_mechanism,
        status=201,
        location=lambda w: f"/v1/feedback/{w.id}",
    )
