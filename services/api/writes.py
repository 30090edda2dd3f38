"""Running a write: in a worker thread, once per Idempotency-Key, answered with its position.

A write with an ``Idempotency-Key`` header saves a record of the key and its answer in the
same transaction as the events (``services.application.idempotency``). A retry with the same key and
the
same request gets the first answer again (``Idempotent-Replayed: true``) and records nothing;
the same key with another request is refused (422); of two concurrent duplicates, the
database lets one be saved and the other is answered like a retry.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from domain.actors import Actor, Role
from domain.errors import DomainError
from services.api.auth import require_role
from services.api.problems import Problem
from services.api.schemas.common import WrittenOut
from services.application.commands import Expected, Written
from services.application.idempotency import (
    KEY_PATTERN,
    IdempotentRequest,
    fingerprint,
    record_id,
    seal,
    unseal,
)
from services.application.mechanism import ComplaintMechanism
from services.application.receipts import ReceiptCode
from services.application.store import DuplicateRequest
from services.identity.tokens import Principal

T = TypeVar("T")

IDEMPOTENCY_HEADER = "Idempotency-Key"

Command = Callable[[ComplaintMechanism], Callable[..., Written]]
"""A command of the application, chosen on it: ``lambda app: app.give_consent``."""


def mechanism(request: Request) -> ComplaintMechanism:
    """The application service the API was started with."""
    app: ComplaintMechanism = request.app.state.mechanism()
    return app


def now() -> datetime:
    """The time a command is recorded at (the API's clock; the domain never reads one)."""
    return datetime.now(UTC)


async def in_thread(call: Callable[[], T]) -> T:
    """The library is synchronous: never block the event loop with it."""
    return await run_in_threadpool(call)


def command_fields(body: BaseModel, *leave: str) -> dict[str, Any]:
    """A command body's fields as the domain command's keyword arguments, named alike: lists
    as tuples, without ``expected_version`` (that goes to ``expecting``) and ``leave``."""
    fields = {}
    for name in type(body).model_fields:
        if name == "expected_version" or name in leave:
            continue
        value = getattr(body, name)
        fields[name] = tuple(value) if isinstance(value, list) else value
    return fields


def calling(
    command: Command,
    body: BaseModel | None,
    *on: object,
    actor: Actor,
    **extra: object,
) -> Callable[[ComplaintMechanism], Written]:
    """``command`` (``lambda app: app.assess_risk``) by ``actor`` on the record ``on`` names
    (nothing for a new one), at the time it runs; its keyword arguments are the body's fields
    (``command_fields``; none without a body) and ``extra``. The API's routes and the
    console's forms call the application through here."""
    version = None if body is None else getattr(body, "expected_version", None)
    if version is not None and not any(
        isinstance(o, Expected) and o.version == version for o in on
    ):
        # a version the caller expects must be checked (``expecting(id, version)`` as the
        # target), never dropped: the command would go over a newer version unseen
        raise TypeError(f"{type(body).__name__}'s expected_version is not on its target")
    fields = merged(None if body is None else command_fields(body), extra)
    return lambda app: command(app)(*on, actor=actor, at=now(), **fields)


SERVER_ARGUMENTS = frozenset({"actor", "at"})
"""What the server gives every command, never a body."""


def merged(fields: dict[str, Any] | None, *more: dict[str, Any]) -> dict[str, Any]:
    """A body's fields with the arguments the server adds, refusing (a programming error,
    never a request's) any name given twice, or a body field named like an argument only the
    server gives: a body must never be able to set, or silently lose, one of those."""
    together: dict[str, Any] = {}
    for part in (fields or {}, *more):
        clash = (together.keys() | SERVER_ARGUMENTS) & part.keys()
        if clash:
            raise TypeError(f"command arguments given twice or reserved: {sorted(clash)}")
        together.update(part)
    return together


async def perform_command(
    request: Request,
    principal: Principal,
    roles: Iterable[Role],
    command: Command,
    body: BaseModel | None,
    *on: object,
    status: int = 200,
    **extra: object,
) -> JSONResponse:
    """``command`` by the caller, in the first of ``roles`` they hold (403 otherwise), run
    once (``perform``) as ``calling`` makes it: on ``on``, with the body's fields and
    ``extra``."""
    actor = require_role(principal, roles)
    return await perform(
        request, principal, calling(command, body, *on, actor=actor, **extra), status=status
    )


def _answer(written: WrittenOut, status: int, replayed: bool, location: str | None) -> JSONResponse:
    headers = {}
    if location:
        headers["Location"] = location
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(written.model_dump(mode="json"), status_code=status, headers=headers)


async def perform(
    request: Request,
    principal: Principal,
    command: Callable[[ComplaintMechanism], Written],
    *,
    status: int = 200,
    receipt: ReceiptCode | None = None,
    location: Callable[[Written], str] | None = None,
    idempotency_key: str | None = None,
    fingerprint_body: bytes | None = None,
) -> JSONResponse:
    """Run ``command`` (synchronous) on the application once, honouring an Idempotency-Key:
    with a key, it runs on ``app.also_saving(...)``, which saves the key's record in the
    command's own transaction. ``idempotency_key`` and ``fingerprint_body`` stand for the
    header and the body when the caller derives them (intake from other tools)."""
    app = mechanism(request)
    key = idempotency_key or request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        written = await in_thread(lambda: command(app))
        out = WrittenOut(
            id=written.id,
            version=written.version,
            position=written.position,
            receipt_code=None if receipt is None else str(receipt),
        )
        return _answer(out, status, False, location(written) if location else None)

    if not KEY_PATTERN.fullmatch(key):
        raise Problem(
            400,
            "Idempotency-Key must be 16-128 characters of letters, digits, '.', '_', ':', '-' "
            "(a UUID fits)",
            title="Invalid Idempotency-Key",
        )
    rid = record_id(principal.user, key)
    body = fingerprint_body if fingerprint_body is not None else await request.body()
    request_fingerprint = fingerprint(request.method, request.url.path, body, key=key, rid=rid)

    existing = await in_thread(lambda: app.idempotent_request(rid))
    if existing is not None:
        return await _replay(app, existing, key, request_fingerprint, location)

    def make(preview: Written) -> IdempotentRequest:
        return IdempotentRequest.record(
            user=principal.user,
            key=key,
            request_fingerprint=request_fingerprint,
            status_code=status,
            answer=json.dumps({"id": str(preview.id), "version": preview.version}),
            sealed_secret=None if receipt is None else seal(str(receipt), key, rid),
            at=now(),
        )

    try:
        written = await in_thread(lambda: command(app.also_saving(make)))
    except DuplicateRequest:
        existing = await in_thread(lambda: app.idempotent_request(rid))
        assert existing is not None
        return await _replay(app, existing, key, request_fingerprint, location)
    except DomainError:
        # A concurrent duplicate may have been saved between the look-up above and this
        # attempt, which then saw its effect ("already a duplicate", a conflict...): the
        # answer is the duplicate's (another body under the key: _replay answers 422).
        existing = await in_thread(lambda: app.idempotent_request(rid))
        if existing is None:
            raise
        return await _replay(app, existing, key, request_fingerprint, location)
    out = WrittenOut(
        id=written.id,
        version=written.version,
        position=written.position,
        receipt_code=None if receipt is None else str(receipt),
    )
    return _answer(out, status, False, location(written) if location else None)


async def perform_as(
    request: Request,
    principal: Principal,
    actor: Actor,
    decide: Callable[[ComplaintMechanism, Actor, datetime], Written],
    *,
    status: int = 200,
    location: Callable[[Written], str] | None = None,
) -> JSONResponse:
    """``perform`` a command that ``actor`` decides now (the routes' common case)."""
    return await perform(
        request,
        principal,
        lambda app: decide(app, actor, now()),
        status=status,
        location=location,
    )


async def _replay(
    app: ComplaintMechanism,
    record: IdempotentRequest,
    key: str,
    request_fingerprint: str,
    location: Callable[[Written], str] | None,
) -> JSONResponse:
    if record.request_fingerprint != request_fingerprint:
        raise Problem(
            422,
            "this Idempotency-Key was already used for another request; use a new key",
            title="Idempotency-Key reused",
        )
    answer = json.loads(record.answer)
    written_id, version = answer["id"], int(answer["version"])
    position = await in_thread(lambda: app.position_of(UUID(written_id), version))
    code = None
    if record.sealed_secret is not None:
        code = unseal(record.sealed_secret, key, record.id)
    written = Written(id=UUID(written_id), version=version, position=position)
    out = WrittenOut(id=written.id, version=version, position=position, receipt_code=code)
    return _answer(out, record.status_code, True, location(written) if location else None)
