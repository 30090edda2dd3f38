"""What the public reaches without logging in: the web-form intake and receipt look-ups.

A receipt look-up answers the status in plain words and the feedback meant for the
complainant, nothing else. An unknown locator and a wrong secret get the same 404, after the
same amount of hashing; failed look-ups are throttled per client and per locator, and once a
limit is reached even the right code waits (otherwise guessing could go on).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import date
from typing import NoReturn

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from domain.actors import Actor, Role
from domain.case import Case, CaseStatus
from domain.personal_data import is_erased
from domain.vocabulary import Channel, FeedbackChannel
from services.api.problems import Problem
from services.api.schemas.common import PROBLEM_RESPONSES
from services.api.schemas.public import (
    PublicComplaintIn,
    PublicComplaintOut,
    PublicFeedbackOut,
    PublicReceiptOut,
    ReceiptLookupIn,
)
from services.api.throttle import FailureThrottle, RateLimit, Refusal, client_key
from services.api.writes import in_thread, mechanism, now
from services.application.mechanism import ComplaintMechanism
from services.application.receipts import (
    ReceiptCode,
    ReceiptHasher,
    new_receipt_code,
    parse_receipt_code,
)

router = APIRouter(prefix="/v1/public", tags=["public"], responses=PROBLEM_RESPONSES)

WEB_FORM_USER = "public-web-form"
"""The account the public web form records complaints under."""

PLAIN_STATUS: dict[CaseStatus, str] = {
    CaseStatus.UNDER_PRELIMINARY_ASSESSMENT: (
        "Your complaint was received. It is being looked at by the people responsible."
    ),
    CaseStatus.REFERRED_PENDING_INVESTIGATION: (
        "Your complaint was received and passed to the office that looks into such matters."
    ),
    CaseStatus.UNDER_INVESTIGATION: (
        "Your complaint was received and is being looked into by the responsible office."
    ),
}
CLOSED = "Your complaint has been dealt with and the case is closed."


def plain_status(case: Case) -> str:
    """Where the complaint stands, in words for the complainant (no outcome detail: what
    may be said of an outcome is said in feedback messages)."""
    if case.is_closed:
        return CLOSED
    return PLAIN_STATUS.get(case.status, PLAIN_STATUS[CaseStatus.UNDER_INVESTIGATION])


@dataclass
class ReceiptDesk:
    """Issues receipt codes and checks them, with bounded hashing and throttles."""

    hasher: ReceiptHasher
    failures: FailureThrottle
    intake_limit: RateLimit
    hashing: anyio.CapacityLimiter
    """Bounds the look-ups hashing at once."""
    issuing: anyio.CapacityLimiter
    """Bounds the receipts being issued at once: a burst of look-ups never delays intake."""
    stripes: tuple[threading.Lock, ...] = field(
        default_factory=lambda: tuple(threading.Lock() for _ in range(64))
    )
    """Look-ups of one locator take turns (check, hash, count), so concurrent guesses at one
    receipt cannot all pass the check before the first failure is counted."""

    def stripe(self, locator: str) -> threading.Lock:
        return self.stripes[hash(locator) % len(self.stripes)]

    def new(self, app: ComplaintMechanism) -> tuple[ReceiptCode, str]:
        """A code whose locator is free, and the verifier of its secret (blocking)."""
        while True:
            code = new_receipt_code()
            if code.locator != UNREADABLE and not app.receipt_exists(code.locator):
                return code, self.hasher.verifier(code)

    async def issue(self, app: ComplaintMechanism) -> tuple[ReceiptCode, str]:
        return await anyio.to_thread.run_sync(self.new, app, limiter=self.issuing)


UNREADABLE = "22222222"
"""The locator failures of unreadable codes count under (never issued), so that a client
sending garbage is throttled like one guessing secrets."""

NOT_FOUND = "no complaint is known under this receipt code; check the code and try again"


def _client(request: Request) -> str:
    return client_key(request.client.host if request.client else "unknown")[:64]


LOOK_UP = "/v1/public/receipt-lookups"


@router.get("/receipts/{code}", include_in_schema=False, response_model=None)
async def receipt_in_the_url(code: str) -> NoReturn:
    """The look-up by URL of before issue #16, gone: a URL is kept in proxy and browser logs
    and histories, and the code is a secret. Answered 410 with where to go, the code neither
    looked up nor echoed (an old client must not read 404 as "no such complaint")."""
    raise Problem(
        410,
        f"receipt codes are looked up with POST {LOOK_UP} and the code in the body "
        '({"code": "..."}), so that the code stays out of URLs and logs; this URL form is gone',
        instance="/v1/public/receipts/{code}",
    )


@router.post(
    "/receipt-lookups",
    response_model=PublicReceiptOut,
    responses={429: {"description": "too many failed look-ups; retry later"}},
)
async def look_up_receipt(request: Request, body: ReceiptLookupIn) -> PublicReceiptOut:
    """No login: the status of the complaint in plain words, and the feedback messages meant
    for the complainant. The code travels in the body, never in the URL."""
    code = body.code
    desk: ReceiptDesk = request.app.state.receipts
    client = _client(request)
    parsed = parse_receipt_code(code)
    locator = parsed.locator if parsed is not None else UNREADABLE

    def throttled(refusal: Refusal) -> NoReturn:
        request.app.state.metrics.receipt_lookups.labels("throttled").inc()
        raise Problem(
            429,
            "too many failed look-ups; wait before trying again",
            headers={"Retry-After": str(refusal.retry_after)},
        )

    refusal = await in_thread(lambda: desk.failures.check(client, locator))
    if refusal is not None:
        throttled(refusal)
    app = mechanism(request)
    receipt = None if parsed is None else await in_thread(lambda: app.receipt(parsed.locator))
    verifier = None if receipt is None else receipt.verifier

    def attempt() -> bool | Refusal:
        # Check again once this locator's turn and a hashing slot are held: look-ups queued
        # behind them must not all have passed the check made before any of them failed.
        with desk.stripe(locator):
            refused = desk.failures.check(client, locator)
            if refused is not None:
                return refused
            ok = parsed is not None and desk.hasher.verify(verifier, parsed)
            if not ok:
                desk.failures.failed(client, locator)
            return ok

    ok = await anyio.to_thread.run_sync(attempt, limiter=desk.hashing)
    if isinstance(ok, Refusal):
        throttled(ok)
    if not ok or receipt is None or parsed is None:
        request.app.state.metrics.receipt_lookups.labels("not_found").inc()
        raise Problem(404, NOT_FOUND)
    request.app.state.metrics.receipt_lookups.labels("found").inc()
    case_id = receipt.case_id

    def load() -> tuple[Case, list[PublicFeedbackOut]]:
        case = app.get_case(case_id)
        messages = [
            PublicFeedbackOut(given_on=e.timestamp.date().isoformat(), message=e.message)
            for e in app.case_history(case_id)
            if isinstance(e, Case.FeedbackGiven)
            and e.channel is FeedbackChannel.RECEIPT_CODE
            and not is_erased(e.message)  # erased for good: nothing to show
        ]
        return case, messages

    case, messages = await in_thread(load)
    received: date = case.received_at.date()
    return PublicReceiptOut(
        code=str(parsed),
        status=plain_status(case),
        received_on=received.isoformat(),
        feedback=messages,
    )


@router.post(
    "/complaints",
    status_code=201,
    response_model=PublicComplaintOut,
    responses={429: {"description": "too many complaints from this client; retry later"}},
)
async def web_form_complaint(request: Request, body: PublicComplaintIn) -> JSONResponse:
    """The public web form: no login, rate-limited per client. The complaint is received by
    the form's agency; the answer is the receipt code to follow it with."""
    desk: ReceiptDesk = request.app.state.receipts
    client = _client(request)
    refusal = await in_thread(lambda: desk.intake_limit.hit(client))
    if refusal is not None:
        raise Problem(
            429,
            "too many complaints from this address; wait before sending another",
            headers={"Retry-After": str(refusal.retry_after)},
        )
    app = mechanism(request)
    actor = Actor(WEB_FORM_USER, body.agency, Role.INTAKE_OPERATOR)
    await in_thread(lambda: app.network().agency(body.agency))
    code, verifier = await desk.issue(app)
    at = now()
    await in_thread(
        lambda: app.receive_complaint(
            actor=actor,
            at=at,
            received_at=at,
            channel=Channel.WEB_FORM,
            complainant_role=body.complainant_role,
            immediate_safety_risk=body.immediate_safety_risk,
            narrative=body.narrative,
            receipt=(code.locator, verifier),
        )
    )
    out = PublicComplaintOut(
        receipt_code=str(code),
        message="Your complaint was received. Keep this code: with it you can see what "
        "happens to your complaint and the answers meant for you.",
    )
    return JSONResponse(out.model_dump(mode="json"), status_code=201)
