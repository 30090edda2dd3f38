"""Community feedback for an agency's complaint and feedback mechanism (CFM)."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse

from domain.actors import Actor, Role
from domain.errors import NotFound
from domain.feedback import Feedback
from domain.need_to_know import READ_PRIORITY, can_see_feedback, feedback_text_visible
from services.api.auth import CurrentPrincipal, first_seeing, require_role
from services.api.schemas.common import PROBLEM_RESPONSES, EmptyIn, WrittenOut
from services.api.schemas.feedback import FeedbackIn, FeedbackOut, FeedbackResponseIn
from services.api.views import feedback_view
from services.api.writes import in_thread, mechanism, now, perform
from services.application.mechanism import ComplaintMechanism
from services.identity.tokens import Principal

router = APIRouter(prefix="/v1/feedback", tags=["community feedback"], responses=PROBLEM_RESPONSES)

FeedbackId = Annotated[UUID, Path(description="the feedback item")]
INTAKE = (Role.INTAKE_OPERATOR, Role.INTAKE_SERVICE, Role.FOCAL_POINT, Role.COORDINATOR)
ANSWERERS = (Role.FOCAL_POINT, Role.COORDINATOR)


async def _load_visible(
    app: ComplaintMechanism, principal: Principal, feedback_id: UUID, roles: tuple[Role, ...]
) -> tuple[Feedback, Actor | None]:
    feedback = await in_thread(lambda: app.get_feedback(feedback_id))
    reader = first_seeing(
        principal, roles or READ_PRIORITY, lambda actor: can_see_feedback(actor, feedback)
    )
    if reader is not None:
        return feedback, reader
    if first_seeing(principal, READ_PRIORITY, lambda actor: can_see_feedback(actor, feedback)):
        return feedback, None
    raise NotFound(f"no feedback {feedback_id}")


@router.post("", status_code=201, response_model=WrittenOut)
async def receive_feedback(
    request: Request, principal: CurrentPrincipal, body: FeedbackIn
) -> JSONResponse:
    """Record non-sensitive feedback for the concerned agency's CFM."""
    actor = require_role(principal, INTAKE)
    return await perform(
        request,
        principal,
        lambda app: app.receive_feedback(
            actor=actor,
            channel=body.channel,
            category=body.category,
            sector=body.sector,
            concerned_agency=body.concerned_agency,
            text=body.text,
            at=now(),
        ),
        status=201,
        location=lambda w: f"/v1/feedback/{w.id}",
    )


@router.get("/{feedback_id}", response_model=FeedbackOut)
async def get_feedback(
    request: Request, principal: CurrentPrincipal, feedback_id: FeedbackId
) -> FeedbackOut:
    """The feedback item; its text only to the concerned agency's focal points."""
    app = mechanism(request)
    feedback, reader = await _load_visible(app, principal, feedback_id, ())
    assert reader is not None
    visible = feedback_text_visible(reader, feedback)
    if visible:
        await in_thread(
            lambda: app.record_personal_data_read(
                feedback.source_case_id or feedback.id,
                actor=reader,
                fields=("text",),
                purpose="community feedback",
                at=now(),
            )
        )
    return feedback_view(feedback, visible)


async def _answer(
    request: Request, principal: Principal, feedback_id: UUID, respond: str | None
) -> JSONResponse:
    app = mechanism(request)
    _, actor = await _load_visible(app, principal, feedback_id, ANSWERERS)
    if actor is None:
        actor = require_role(principal, ANSWERERS)
    chosen = actor
    if respond is None:
        return await perform(
            request,
            principal,
            lambda app: app.close_feedback_loop(feedback_id, actor=chosen, at=now()),
        )
    return await perform(
        request,
        principal,
        lambda app: app.respond_to_feedback(feedback_id, actor=chosen, response=respond, at=now()),
    )


@router.post("/{feedback_id}/response", response_model=WrittenOut)
async def respond(
    request: Request, principal: CurrentPrincipal, feedback_id: FeedbackId, body: FeedbackResponseIn
) -> JSONResponse:
    """The concerned agency's answer to the person who gave the feedback."""
    return await _answer(request, principal, feedback_id, body.response)


@router.post("/{feedback_id}/loop-closure", response_model=WrittenOut)
async def close_loop(
    request: Request, principal: CurrentPrincipal, feedback_id: FeedbackId, body: EmptyIn
) -> JSONResponse:
    """The person was answered: the loop is closed."""
    return await _answer(request, principal, feedback_id, None)
