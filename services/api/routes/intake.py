"""Intake from the tools agencies use (issue #19, ADR 17): KoboToolbox, RapidPro/TextIt and a
hotline log, each mapped (``services.api.intake``) onto the command ``POST /v1/cases`` or
``POST /v1/feedback`` runs, by an integration's service account (role ``intake_service``).

Each submission is recorded once: its Idempotency-Key is derived from the tool's own id of
it (Kobo's ``_uuid``, RapidPro's run UUID, the hotline log's ``call_id``), keyed with the
intake key (``CBCM_INTAKE_KEY_FILE``) so that nobody holding the database and a submission
id can derive it. A tool that sends the same submission again gets the first answer
(``Idempotent-Replayed: true``) and nothing is recorded twice; the same id with other content
is refused (422), never recorded over. A submission that cannot be mapped is answered 422
problem+json naming the fields at fault, records nothing, and is counted in
``cbcm_intake_submissions_total{tool,outcome="refused",reason}``; nothing a person wrote goes
to a log line, a metric or a problem.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from domain.actors import Actor, Role
from domain.vocabulary import Channel
from services.api.auth import CurrentPrincipal, require_role
from services.api.intake import (
    Malformed,
    Submission,
    Tool,
    from_hotline,
    from_kobo,
    from_rapidpro,
)
from services.api.problems import Problem
from services.api.routes.cases import complaint_command
from services.api.schemas.cases import ComplaintIn
from services.api.schemas.common import PROBLEM_RESPONSES, WrittenOut
from services.api.writes import mechanism, now, perform
from services.application.commands import Written
from services.application.mechanism import ComplaintMechanism

router = APIRouter(prefix="/v1/intake", tags=["intake"], responses=PROBLEM_RESPONSES)

SERVICE = (Role.INTAKE_SERVICE,)

JSON_BODY = {"application/json": {"schema": {"type": "object"}}}


class IntakeOut(WrittenOut):
    kind: str = Field(description="complaint (a case) or feedback")
    replayed: bool = Field(description="the submission was recorded before: nothing new")


class HotlineLineOut(IntakeOut):
    line: int = Field(description="the record's line in the log")


class HotlineOut(BaseModel):
    recorded: int
    replayed: int
    records: list[HotlineLineOut]


# ------------------------------------------------------------------ the intake key


def intake_key(request: Request) -> bytes:
    """The key submission ids are turned into Idempotency-Keys with (32 bytes, a file made
    once at random, 0600; every API instance of a network shares it)."""
    cached: bytes | None = getattr(request.app.state, "intake_key", None)
    if cached is not None:
        return cached
    settings = request.app.state.settings
    path = settings.intake_key_file or Path(settings.data_dir) / "keys" / "intake.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another instance made it first
        else:
            with os.fdopen(fd, "wb") as out:
                out.write(secrets.token_bytes(32))
    key = path.read_bytes()
    if len(key) < 32:
        raise Problem(503, "the intake key is not usable", title="Intake not configured")
    request.app.state.intake_key = key
    return key


def idempotency_key(key: bytes, tool: Tool, user: str, submission_id: str) -> str:
    """``<tool>:<40 hex>``, derived from the tool's id of the submission."""
    digest = hmac.new(key, f"{tool}\n{user}\n{submission_id}".encode(), hashlib.sha256)
    return f"{tool}:{digest.hexdigest()[:40]}"


# ------------------------------------------------------------------ recording


def _count(request: Request, tool: Tool, outcome: str, reason: str = "") -> None:
    request.app.state.metrics.intake.labels(tool=tool, outcome=outcome, reason=reason).inc()


def _refuse(request: Request, tool: Tool, error: Malformed) -> Problem:
    _count(request, tool, "refused", error.reason)
    return Problem(
        422,
        error.detail,
        title="Submission not recorded",
        type=f"urn:cbcm:problem:intake-{error.reason.replace('_', '-')}",
        fields=list(error.fields),
    )


def _command(actor: Actor, submission: Submission, receipt: Any) -> Any:
    body = submission.body
    if isinstance(body, ComplaintIn):
        # intake from other tools never records a survivor's details, whatever its mapping
        # made (the API's own intake may: ``POST /v1/cases``)
        return complaint_command(actor, body.model_copy(update={"survivor": None}), receipt)

    def feedback(app: ComplaintMechanism) -> Written:
        return app.receive_feedback(
            actor=actor,
            channel=body.channel,
            category=body.category,
            sector=body.sector,
            concerned_agency=body.concerned_agency,
            text=body.text,
            at=now(),
        )

    return feedback


async def _record(
    request: Request, principal: CurrentPrincipal, actor: Actor, submission: Submission
) -> IntakeOut:
    """Record one mapped submission once; what was recorded (or recorded before)."""
    key = idempotency_key(
        intake_key(request), submission.tool, principal.user, submission.submission_id
    )
    # A retry must ask for exactly the same: the fingerprint is of the mapped command, so a
    # tool that re-serialises its JSON differently is still recognised.
    canonical = json.dumps(
        {"kind": submission.kind, "body": submission.body.model_dump(mode="json")},
        sort_keys=True,
    ).encode()
    receipts = request.app.state.receipts
    receipt = None
    if submission.issue_receipt:
        existing = await _already(request, principal, key)
        if not existing:
            receipt = await receipts.issue(mechanism(request))
    answer = await perform(
        request,
        principal,
        _command(actor, submission, receipt),
        status=201,
        receipt=None if receipt is None else receipt[0],
        idempotency_key=key,
        fingerprint_body=canonical,
    )
    replayed = answer.headers.get("Idempotent-Replayed") == "true"
    _count(request, submission.tool, "replayed" if replayed else "recorded")
    written = WrittenOut.model_validate(json.loads(bytes(answer.body)))
    return IntakeOut(**written.model_dump(), kind=submission.kind, replayed=replayed)


async def _already(request: Request, principal: CurrentPrincipal, key: str) -> bool:
    from services.api.writes import in_thread  # noqa: PLC0415
    from services.application.idempotency import record_id  # noqa: PLC0415

    app = mechanism(request)
    return (
        await in_thread(lambda: app.idempotent_request(record_id(principal.user, key))) is not None
    )


def _answer(out: IntakeOut) -> JSONResponse:
    headers = {"Idempotent-Replayed": "true"} if out.replayed else {}
    path = "cases" if out.kind == "complaint" else "feedback"
    headers["Location"] = f"/v1/{path}/{out.id}"
    return JSONResponse(
        out.model_dump(mode="json"), status_code=200 if out.replayed else 201, headers=headers
    )


# ------------------------------------------------------------------ routes


@router.post(
    "/kobo",
    status_code=201,
    response_model=IntakeOut,
    openapi_extra={"requestBody": {"required": True, "content": JSON_BODY}},
)
async def kobo(
    request: Request,
    principal: CurrentPrincipal,
    channel: Annotated[
        Channel, Query(description="the entry point the form records (default: in person)")
    ] = Channel.IN_PERSON,
) -> JSONResponse:
    """One KoboToolbox submission, as its REST Services post it (JSON). 201 recorded; 200 and
    ``Idempotent-Replayed: true`` when Kobo sends it again; 422 when it does not fit."""
    actor = require_role(principal, SERVICE)
    try:
        submission = from_kobo(await request.body(), channel=channel)
    except Malformed as e:
        raise _refuse(request, "kobo", e) from None
    return _answer(await _record(request, principal, actor, submission))


@router.post(
    "/rapidpro",
    status_code=201,
    response_model=IntakeOut,
    openapi_extra={"requestBody": {"required": True, "content": JSON_BODY}},
)
async def rapidpro(request: Request, principal: CurrentPrincipal) -> JSONResponse:
    """One RapidPro/TextIt flow run, as its "Call webhook" action posts it. With the result
    ``receipt`` = yes, the answer's ``receipt_code`` is there for the flow to send back by
    SMS (``@webhook.json.receipt_code``); a resend answers the same code."""
    actor = require_role(principal, SERVICE)
    try:
        submission = from_rapidpro(await request.body())
    except Malformed as e:
        raise _refuse(request, "rapidpro", e) from None
    return _answer(await _record(request, principal, actor, submission))


@router.post(
    "/hotline",
    response_model=HotlineOut,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "application/jsonl": {"schema": {"type": "string"}},
            },
        }
    },
)
async def hotline(request: Request, principal: CurrentPrincipal) -> HotlineOut:
    """A hotline call log, CSV (``text/csv``, a header line) or JSON lines (any other type),
    one complaint or feedback per record. All or nothing at the door: one record that does
    not fit refuses the log (422, its line named) before anything is recorded; a log sent
    again records only what was not recorded before."""
    actor = require_role(principal, SERVICE)
    try:
        submissions = from_hotline(
            await request.body(), request.headers.get("content-type", "").lower()
        )
    except Malformed as e:
        raise _refuse(request, "hotline", e) from None
    records = []
    for line, submission in submissions:
        out = await _record(request, principal, actor, submission)
        records.append(HotlineLineOut(**out.model_dump(), line=line))
    replayed = sum(r.replayed for r in records)
    return HotlineOut(recorded=len(records) - replayed, replayed=replayed, records=records)
