"""What the public reaches without logging in: the web-form intake and receipt look-ups.

A receipt look-up answers the status in plain words and the feedback meant for the
complainant, nothing else. An unknown locator and a wrong secret get the same 404, after the
same amount of hashing. Failed look-ups are limited per client (refused once a client has
used its failures) and slow down look-ups of their locator (held a little longer after each
failure, never refused: issue #20), so that someone who saw the visible part of a code can
slow its owner by seconds but never lock them out.

The words shown to complainants live at the edge (``services.api.pages.i18n``): the API
answers a status *code*; its ``status`` text is the English of the same catalogue.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from datetime import date
from typing import NoReturn

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from domain.actors import Actor, Role
from domain.case import Case, CaseStatus
from domain.personal_data import PersonDetails, is_erased
from domain.vocabulary import Channel, ComplainantRole, FeedbackChannel
from services.api.metrics import ApiMetrics
from services.api.pages.i18n import ENGLISH, status_words
from services.api.problems import Problem
from services.api.schemas.common import PROBLEM_RESPONSES
from services.api.schemas.public import (
    PublicComplaintIn,
    PublicComplaintOut,
    PublicFeedbackOut,
    PublicReceiptOut,
    PublicStatus,
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

PUBLIC_STATUS: dict[CaseStatus, PublicStatus] = {
    CaseStatus.UNDER_PRELIMINARY_ASSESSMENT: "received",
    CaseStatus.REFERRED_PENDING_INVESTIGATION: "referred",
    CaseStatus.UNDER_INVESTIGATION: "under_investigation",
}


def public_status(case: Case) -> PublicStatus:
    """Where the complaint stands, as a code the edge puts into words (no outcome detail:
    what may be said of an outcome is said in feedback messages)."""
    if case.is_closed:
        return "closed"
    return PUBLIC_STATUS.get(case.status, "under_investigation")


class LookupThrottled(Exception):
    """This client has no failed look-up left, or has too many look-ups in flight."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(retry_after)
        self.retry_after = retry_after


class NoSuchReceipt(Exception):
    """Unknown locator, wrong secret or not a code: one answer for all three."""


@dataclass(frozen=True)
class ReceiptFeedback:
    given_on: date
    message: str


@dataclass(frozen=True)
class ReceiptAnswer:
    """What a right code shows: no case id, no narrative, nothing but these."""

    code: ReceiptCode
    status: PublicStatus
    received_on: date
    feedback: tuple[ReceiptFeedback, ...]


PER_CLIENT_IN_FLIGHT = 2
"""Look-ups one client may have in flight at once (in one API process): with the hold of a
slowed-down locator, this bounds how fast one client can guess at it (ADR 20)."""


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
    """Look-ups by one client take turns (check, hash, count), so that one client's
    concurrent guesses cannot all pass its check before the first failure is counted. Keyed by
    client, not by locator (issue #20): the owner of a code never queues behind the guesses
    others make at it."""

    in_flight: dict[str, int] = field(default_factory=dict)
    """Look-ups in flight per client (changed on the event loop only)."""

    def stripe(self, client: str) -> threading.Lock:
        return self.stripes[hash(client) % len(self.stripes)]

    def new(self, app: ComplaintMechanism) -> tuple[ReceiptCode, str]:
        """A code whose locator is free, and the verifier of its secret (blocking)."""
        while True:
            code = new_receipt_code()
            if code.locator != UNREADABLE and not app.receipt_exists(code.locator):
                return code, self.hasher.verifier(code)

    async def issue(self, app: ComplaintMechanism) -> tuple[ReceiptCode, str]:
        return await anyio.to_thread.run_sync(self.new, app, limiter=self.issuing)

    async def look_up(
        self, app: ComplaintMechanism, client: str, text: str, metrics: ApiMetrics
    ) -> ReceiptAnswer:
        """The receipt ``text`` names, after the per-client check and the locator's hold;
        ``LookupThrottled`` or ``NoSuchReceipt`` otherwise."""
        parsed = parse_receipt_code(text)
        locator = parsed.locator if parsed is not None else UNREADABLE

        def throttled(retry_after: int) -> NoReturn:
            metrics.receipt_lookups.labels("throttled").inc()
            raise LookupThrottled(retry_after)

        refusal = await in_thread(lambda: self.failures.check(client, locator))
        if refusal is not None:
            throttled(refusal.retry_after)
        if self.in_flight.get(client, 0) >= PER_CLIENT_IN_FLIGHT:
            throttled(math.ceil(self.failures.slowdown.max_seconds) + 1)
        self.in_flight[client] = self.in_flight.get(client, 0) + 1
        try:
            # Held, not refused: however many failures a locator has had, its owner is let
            # in after at most the slow-down's longest hold.
            hold = await in_thread(lambda: self.failures.delay(locator))
            if hold > 0:
                metrics.receipt_lookups_held.inc()
                await anyio.sleep(hold)
            receipt = (
                None if parsed is None else await in_thread(lambda: app.receipt(parsed.locator))
            )
            verifier = None if receipt is None else receipt.verifier

            def attempt() -> bool | Refusal:
                # Check again once this client's turn and a hashing slot are held: its look-ups
                # queued behind them must not all have passed the check made before any of
                # them failed.
                with self.stripe(client):
                    refused = self.failures.check(client, locator)
                    if refused is not None:
                        return refused
                    ok = parsed is not None and self.hasher.verify(verifier, parsed)
                    if not ok:
                        self.failures.failed(client, locator)
                    return ok

            ok = await anyio.to_thread.run_sync(attempt, limiter=self.hashing)
        finally:
            left = self.in_flight[client] - 1
            if left:
                self.in_flight[client] = left
            else:
                del self.in_flight[client]
        if isinstance(ok, Refusal):
            throttled(ok.retry_after)
        if not ok or receipt is None or parsed is None:
            metrics.receipt_lookups.labels("not_found").inc()
            raise NoSuchReceipt
        metrics.receipt_lookups.labels("found").inc()
        case_id = receipt.case_id

        def load() -> tuple[Case, tuple[ReceiptFeedback, ...]]:
            case = app.get_case(case_id)
            messages = tuple(
                ReceiptFeedback(given_on=e.timestamp.date(), message=e.message)
                for e in app.case_history(case_id)
                if isinstance(e, Case.FeedbackGiven)
                and e.channel is FeedbackChannel.RECEIPT_CODE
                and not is_erased(e.message)  # erased for good: nothing to show
            )
            return case, messages

        case, messages = await in_thread(load)
        return ReceiptAnswer(
            code=parsed,
            status=public_status(case),
            received_on=case.received_at.date(),
            feedback=messages,
        )


UNREADABLE = "22222222"
"""The locator failures of unreadable codes count under (never issued), so that a client
sending garbage is throttled like one guessing secrets."""

NOT_FOUND = "no complaint is known under this receipt code; check the code and try again"


def client_of(request: Request) -> str:
    """The key the public throttles count this request's client under."""
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
    responses={429: {"description": "too many failed look-ups from this client; retry later"}},
)
async def look_up_receipt(request: Request, body: ReceiptLookupIn) -> PublicReceiptOut:
    """No login: the status of the complaint (a code, and its English words), and the
    feedback messages meant for the complainant. The code travels in the body, never in the
    URL. After failed look-ups of a receipt, look-ups of it are answered a little later (at
    most a couple of seconds), never refused; a client that failed too often is refused."""
    desk: ReceiptDesk = request.app.state.receipts
    try:
        answer = await desk.look_up(
            mechanism(request), client_of(request), body.code, request.app.state.metrics
        )
    except LookupThrottled as refused:
        raise Problem(
            429,
            "too many failed look-ups; wait before trying again",
            headers={"Retry-After": str(refused.retry_after)},
        ) from None
    except NoSuchReceipt:
        raise Problem(404, NOT_FOUND) from None
    return PublicReceiptOut(
        code=str(answer.code),
        status_code=answer.status,
        status=status_words(answer.status, ENGLISH),
        received_on=answer.received_on.isoformat(),
        feedback=[
            PublicFeedbackOut(given_on=f.given_on.isoformat(), message=f.message)
            for f in answer.feedback
        ],
    )


class IntakeThrottled(Exception):
    """This client has sent as many public complaints (or feedback) as its window allows."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(retry_after)
        self.retry_after = retry_after


async def receive_public_complaint(
    request: Request,
    *,
    agency: str,
    narrative: str,
    complainant_role: ComplainantRole,
    immediate_safety_risk: bool,
    complainant: PersonDetails | None = None,
    with_receipt: bool = True,
) -> ReceiptCode | None:
    """A complaint from the public (the JSON web form and the pages): the per-client intake
    limit, then the complaint received by ``agency``'s web form, with a receipt if asked.
    ``IntakeThrottled`` when the client is over its limit; domain errors as raised."""
    desk: ReceiptDesk = request.app.state.receipts
    client = client_of(request)
    refusal = await in_thread(lambda: desk.intake_limit.hit(client))
    if refusal is not None:
        raise IntakeThrottled(refusal.retry_after)
    app = mechanism(request)
    actor = Actor(WEB_FORM_USER, agency, Role.INTAKE_OPERATOR)
    await in_thread(lambda: app.network().agency(agency))
    issued = await desk.issue(app) if with_receipt else None
    at = now()
    await in_thread(
        lambda: app.receive_complaint(
            actor=actor,
            at=at,
            received_at=at,
            channel=Channel.WEB_FORM,
            complainant_role=complainant_role,
            immediate_safety_risk=immediate_safety_risk,
            narrative=narrative,
            complainant=complainant,
            receipt=None if issued is None else (issued[0].locator, issued[1]),
        )
    )
    return None if issued is None else issued[0]


@router.post(
    "/complaints",
    status_code=201,
    response_model=PublicComplaintOut,
    responses={429: {"description": "too many complaints from this client; retry later"}},
)
async def web_form_complaint(request: Request, body: PublicComplaintIn) -> JSONResponse:
    """The public web form: no login, rate-limited per client. The complaint is received by
    the form's agency; the answer is the receipt code to follow it with."""
    try:
        code = await receive_public_complaint(
            request,
            agency=body.agency,
            narrative=body.narrative,
            complainant_role=body.complainant_role,
            immediate_safety_risk=body.immediate_safety_risk,
        )
    except IntakeThrottled as refused:
        raise Problem(
            429,
            "too many complaints from this address; wait before sending another",
            headers={"Retry-After": str(refused.retry_after)},
        ) from None
    assert code is not None
    out = PublicComplaintOut(
        receipt_code=str(code),
        message="Your complaint was received. Keep this code: with it you can see what "
        "happens to your complaint and the answers meant for you.",
    )
    return JSONResponse(out.model_dump(mode="json"), status_code=201)
