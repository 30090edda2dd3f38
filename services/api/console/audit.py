"""The auditor's view in the console (issue #21): a case's history as the auditor's replay
gives it (``services.api.replay``, as ``cbcm audit case`` shows it), the grants of the case,
and the case bundle (``cbcm-audit-bundle/v1``, as ``cbcm audit export`` writes it) that anyone
checks with ``cbcm audit verify-bundle`` and the network's public keys alone.

For auditors only. Personal data is redacted unless the coordinator granted this auditor the
case (``POST /v1/cases/{id}/audit-grants``); with a grant, the replay records its read in the
case's read log before the page or the bundle is built, exactly as the CLI does. The bundle
is proven against the latest checkpoint the policy's witnesses cosigned, found in the witness
books the API's settings name (``CBCM_WITNESS_DIR``, ``CBCM_AUDIT_WITNESSES``).
"""

from __future__ import annotations

import json
from typing import Any, Final
from uuid import UUID

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse

from domain.actors import Actor, Role
from domain.errors import NotFound
from domain.need_to_know import case_access
from services.api.auth import first_seeing
from services.api.console.recording import (
    FormProblem,
    in_thread,
    matching,
    mechanism,
    parse,
    posted,
    record,
    role_in,
    translations,
    uuid_of,
)
from services.api.console.session import ConsoleRefusal, SignedIn, Staff
from services.api.console.site import NAV, render
from services.api.pages.i18n import N_
from services.api.replay import CaseReplay, ReplayError, replay_case
from services.api.schemas.cases import AuditGrantIn
from services.api.writes import now
from services.application.mechanism import ComplaintMechanism
from services.audit.bundle import BundleError, build
from services.audit.evidence import Evidence, EvidenceError, gather
from services.audit.keys import AuditKeyError, load_log_identity, witness_policy
from services.audit.note import NoteError
from services.audit.witness import witness_book_path
from services.event_store.store_id import store_id_of
from services.settings import Settings

router = APIRouter(prefix="/console")

AUDITORS: Final = (Role.AUDITOR,)
NAV.append(("/console/audit", N_("Audit"), AUDITORS))

NO_CASE: Final = N_("There is no such case.")
NO_EVIDENCE: Final = N_(
    "The audit keys or the witness books cannot be read, so nothing can be proven: ask the "
    "network's operator (cbcm audit verify names the problem)."
)
NO_CHECKPOINT: Final = N_(
    "No checkpoint of this log that the witness policy accepts is held yet: there is nothing "
    "to prove the case's events against. Try again after the next checkpoint is cosigned."
)
NOT_PROVABLE: Final = N_(
    "The store's tree does not match the cosigned checkpoint: the bundle cannot be built. "
    "Ask the network's operator to run cbcm audit verify."
)


def _evidence(app: ComplaintMechanism, settings: Settings) -> Evidence:
    """The checkpoints and cosigned tree heads the witness books hold for this store, as
    ``cbcm audit`` gathers them with the settings' policy."""
    log = load_log_identity(settings)
    policy, needed = witness_policy(settings)
    return gather(
        [witness_book_path(settings, log.origin)],
        log,
        policy,
        needed,
        store_id_of(app.recorder),
    )


def _replay(
    app: ComplaintMechanism, settings: Settings, case_id: UUID, auditor: Actor
) -> tuple[CaseReplay, Evidence | None, bool]:
    """The replay for ``auditor`` (personal data only with a grant, the read recorded),
    with the evidence when the books can be read."""
    app.get_case(case_id)  # NotFound before anything is recorded
    granted = auditor.user in app.audit_grantees(case_id)
    try:
        evidence: Evidence | None = _evidence(app, settings)
    except (AuditKeyError, EvidenceError, NoteError, OSError):
        evidence = None
    replay = replay_case(
        app,
        case_id,
        checkpoints=[] if evidence is None else evidence.checkpoints,
        reveal_personal=granted,
        reader=auditor,
    )
    return replay, evidence, granted


@router.get("/audit")
async def audit_home(request: Request, staff: SignedIn, case: str = "") -> Response:
    """The look-up: a case id, then its history."""
    role_in(staff, AUDITORS)
    if case:
        try:
            case_id = UUID(case.strip())
        except ValueError:
            raise ConsoleRefusal(404, NO_CASE, staff) from None
        return RedirectResponse(f"/console/audit/cases/{case_id}", status_code=303)
    return render(request, staff, "console/audit.html")


async def _load(
    request: Request, staff: Staff, case_id: UUID
) -> tuple[CaseReplay, Evidence | None, bool]:
    auditor = role_in(staff, AUDITORS)
    app = mechanism(request)
    settings: Settings = request.app.state.settings
    try:
        return await in_thread(lambda: _replay(app, settings, case_id, auditor))
    except NotFound:
        raise ConsoleRefusal(404, NO_CASE, staff) from None
    except ReplayError as e:
        raise ConsoleRefusal(422, str(e), staff) from None


@router.get("/audit/cases/{case_id}")
async def audit_case(request: Request, staff: SignedIn, case_id: str) -> Response:
    """The case's custody steps in plain words, its state, the chain's verification and
    the grants."""
    role_in(staff, AUDITORS)
    replay, evidence, granted = await _load(request, staff, uuid_of(staff, case_id, NO_CASE))
    document = replay.to_json()
    grants = [
        s
        for s in document["steps"]
        if s["record"] == "audit grants" or s["event"].startswith("AuditGrants.")
    ]
    return render(
        request,
        staff,
        "console/audit_case.html",
        case_id=str(case_id),
        replay=document,
        granted=granted,
        grants=grants,
        provable=evidence is not None and evidence.latest_note() is not None,
        state_json=json.dumps(document["state"]["case"], indent=1, ensure_ascii=False),
    )


@router.get("/audit/cases/{case_id}/bundle")
async def audit_bundle(request: Request, staff: SignedIn, case_id: str) -> Response:
    """The case bundle, as ``cbcm audit export`` writes it (a JSON file)."""
    role_in(staff, AUDITORS)
    return await _bundle(request, staff, uuid_of(staff, case_id, NO_CASE))


async def _bundle(request: Request, staff: Staff, case_id: UUID) -> Response:
    replay, evidence, _ = await _load(request, staff, case_id)
    if evidence is None:
        raise ConsoleRefusal(503, NO_EVIDENCE, staff)
    note = evidence.latest_note()
    if note is None:
        raise ConsoleRefusal(409, NO_CHECKPOINT, staff)
    app = mechanism(request)
    positions = [s.evidence.position for s in replay.steps if s.evidence.position is not None]

    def make() -> dict[str, Any]:
        return build(
            app.recorder,
            positions,
            case_id=case_id,
            log_vkey=evidence.log.vkey,
            checkpoint_note=note,
            replay=replay.to_json(),
        )

    try:
        bundle = await in_thread(make)
    except (BundleError, NoteError):
        raise ConsoleRefusal(409, NOT_PROVABLE, staff) from None
    body = json.dumps(bundle, indent=1, ensure_ascii=False) + "\n"
    return Response(
        body.encode(),
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="cbcm-case-{case_id}.bundle.json"'},
    )


# ------------------------------------------------------------------ the coordinator's grants

COORDINATOR: Final = (Role.COORDINATOR,)
NAV.append(("/console/audit-grants", N_("Auditors' grants"), COORDINATOR))


async def _granting(request: Request, staff: Staff, case_id: UUID) -> Actor:
    """The coordinator acting on a case it sees (as ``POST /v1/cases/{id}/audit-grants``);
    a case it may not see is answered as one that does not exist."""
    role_in(staff, COORDINATOR)
    app = mechanism(request)

    def load() -> Actor | None:
        try:
            case, policy = app.get_case(case_id), app.network().policy
        except NotFound:
            return None
        return first_seeing(
            staff.principal, COORDINATOR, lambda a: case_access(a, case, policy) is not None
        )

    actor = await in_thread(load)
    if actor is None:
        raise ConsoleRefusal(404, NO_CASE, staff)
    return actor


async def _grants_page(
    request: Request,
    staff: Staff,
    case_id: UUID | None,
    *,
    error: str | None = None,
    status: int = 200,
) -> Response:
    grantees: list[str] = []
    if case_id is not None:
        await _granting(request, staff, case_id)
        app = mechanism(request)
        grantees = sorted(await in_thread(lambda: app.audit_grantees(case_id)))
    return render(
        request,
        staff,
        "console/audit_grants.html",
        status_code=status,
        case_id=None if case_id is None else str(case_id),
        grantees=grantees,
        error=error,
        done=request.query_params.get("done") == "1",
    )


@router.get("/audit-grants")
async def audit_grants(request: Request, staff: SignedIn, case: str = "") -> Response:
    """The coordinator's view of one case's grants: who holds one, and the forms to grant
    and to revoke. The reasons given are personal data: not shown here."""
    role_in(staff, COORDINATOR)
    if not case:
        return await _grants_page(request, staff, None)
    try:
        case_id = UUID(case.strip())
    except ValueError:
        raise ConsoleRefusal(404, NO_CASE, staff) from None
    return await _grants_page(request, staff, case_id)


@router.post("/audit-grants/{case_id}/{action}")
async def change_grant(
    request: Request,
    staff: SignedIn,
    case_id: str,
    action: str,
) -> Response:
    """As ``POST /v1/cases/{id}/audit-grants`` and ``DELETE .../audit-grants/{auditor}``."""
    role_in(staff, COORDINATOR)
    matching(staff, action, r"grant|revocation")
    return await _change_grant(request, staff, uuid_of(staff, case_id, NO_CASE), action)


async def _change_grant(request: Request, staff: Staff, case_id: UUID, action: str) -> Response:
    actor = await _granting(request, staff, case_id)
    fields = await posted(request, staff)
    gettext = translations(request, staff)
    try:
        if action == "grant":
            body = parse(AuditGrantIn, fields, gettext)
            await record(
                request,
                lambda app: app.grant_audit_access(
                    case_id, actor=actor, auditor=body.auditor, reason=body.reason, at=now()
                ),
                gettext,
            )
        else:
            auditor = str(fields.get("auditor", ""))
            await record(
                request,
                lambda app: app.revoke_audit_access(
                    case_id, actor=actor, auditor=auditor, at=now()
                ),
                gettext,
            )
    except FormProblem as e:
        return await _grants_page(request, staff, case_id, error=e.message, status=e.status)
    return RedirectResponse(f"/console/audit-grants?case={case_id}&done=1", status_code=303)
