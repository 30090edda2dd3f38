"""The custody trail page (issue #21): a case's steps as a timeline in plain words, every
read of personal data among them, each with its place in the hash chain, and how far the
chain is verified ("verified up to checkpoint N").

What ``cbcm audit case`` computes (``services.api.replay.replay_case``, called as it is): the
steps of the case, its assistance referrals, its read log and its auditors' grants, each
event's position and link, the checkpoint that vouches for it, and the chain from the case's
first event to the head held to the checkpoints the witness's book holds. The page shows the
sentences (codes, ids and field names, never a personal value), so showing it reads no
personal data. The same readers as ``GET /v1/cases/{id}/history``: the case's focal points,
the coordinator, auditors.
"""

from __future__ import annotations

from typing import Any, Final
from uuid import UUID

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from domain import errors
from domain.actors import Role
from domain.need_to_know import case_access
from services.api.auth import first_seeing
from services.api.console.session import PREFIX, ConsoleRefusal, SignedIn
from services.api.console.site import render
from services.api.pages.i18n import N_
from services.api.replay import CaseReplay, replay_case
from services.api.writes import in_thread, mechanism
from services.application.mechanism import ComplaintMechanism
from services.audit.evidence import gather
from services.audit.keys import load_log_identity, witness_policy
from services.audit.witness import witness_book_path
from services.event_store.errors import EventStoreUnavailable
from services.event_store.store_id import store_id_of
from services.settings import Settings

router = APIRouter(prefix=PREFIX, include_in_schema=False)

TRAIL_READERS: Final = (Role.FOCAL_POINT, Role.COORDINATOR, Role.AUDITOR)
NO_SUCH_CASE: Final = N_("There is no such case, or it is not yours to see.")
STORE_DOWN: Final = N_("The case store cannot be reached right now. Please try again in a minute.")

RECORD_WORDS: Final = {
    "case": N_("case"),
    "assistance referral": N_("assistance referral"),
    "personal-data reads": N_("read of personal data"),
    "audit grants": N_("auditors' grants"),
    "notification": N_("notification sent"),
    "notice index": N_("index of notices"),
}


def witness_checkpoints(app: ComplaintMechanism, settings: Settings) -> list[Any]:
    """The checkpoints the witness's book holds for this store, each signature checked, as
    ``cbcm audit case`` gathers them; none when there is no book or no audit key (the page
    then says that nothing is covered by a checkpoint yet)."""
    try:
        log = load_log_identity(settings)
        policy, needed = witness_policy(settings)
        evidence = gather(
            [witness_book_path(settings, log.origin)],
            log,
            policy,
            needed,
            store_id_of(app.recorder),
        )
    except Exception:  # no audit key, no book, a book that cannot vouch: no checkpoint
        return []
    return list(evidence.checkpoints)


def verified_up_to(replay: CaseReplay) -> int | None:
    """The position of the last checkpoint that vouches for a step of this case."""
    positions = [
        step.evidence.checkpoint.position
        for step in replay.steps
        if step.evidence.checkpoint is not None and step.evidence.recomputes
    ]
    return max(positions) if positions else None


@router.get("/cases/{case_id:uuid}/trail", response_class=HTMLResponse)
async def trail_page(request: Request, staff: SignedIn, case_id: UUID) -> Response:
    """The case's custody trail as a timeline, with the chain's evidence."""
    app = mechanism(request)
    principal = staff.principal
    settings: Settings = request.app.state.settings

    def load() -> CaseReplay | None:
        case = app.get_case(case_id)
        policy = app.network().policy
        grantees = app.audit_grantees(case_id) if Role.AUDITOR in principal.roles else frozenset()
        reader = first_seeing(
            principal,
            TRAIL_READERS,
            lambda actor: case_access(actor, case, policy, audit_grantees=grantees) is not None,
        )
        if reader is None:
            return None
        return replay_case(app, case_id, checkpoints=witness_checkpoints(app, settings))

    try:
        replay = await in_thread(load)
    except errors.NotFound:
        replay = None
    except EventStoreUnavailable:
        raise ConsoleRefusal(503, STORE_DOWN, staff) from None
    if replay is None:
        raise ConsoleRefusal(404, NO_SUCH_CASE, staff)
    verification = replay.verification
    return render(
        request,
        staff,
        "console/trail.html",
        case_id=case_id,
        replay=replay,
        steps=list(enumerate(replay.steps, 1)),
        reads=sum(1 for step in replay.steps if step.record == "personal-data reads"),
        verification=verification,
        checkpoint=verified_up_to(replay),
        record_words=RECORD_WORDS,
    )
