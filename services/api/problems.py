"""RFC 9457 problem details for every error the API answers."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from domain import errors
from services.api.throttle import ThrottleUnavailable
from services.event_store.errors import EventStoreUnavailable, OutcomeUnknown

PROBLEM_JSON = "application/problem+json"


class Problem(Exception):
    """An error answered as problem+json; ``detail`` never carries personal data."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title or HTTPStatus(status).phrase
        self.detail = detail
        self.headers = headers or {}
        self.extensions = extensions


def problem_response(
    request: Request,
    status: int,
    title: str,
    detail: str,
    headers: dict[str, str] | None = None,
    **extensions: Any,
) -> JSONResponse:
    body = {
        "type": extensions.pop("type", "about:blank"),
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
        **extensions,
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


UNPROCESSABLE: tuple[type[errors.DomainError], ...] = (
    errors.InvalidCode,
    errors.InvalidCommand,
    errors.UnknownAgency,
    errors.UnknownServiceProvider,
    errors.ServiceNotOffered,
    errors.NoInvestigatingEntity,
    errors.NotAFocalPoint,
    errors.WrongInvestigatingEntity,
)
"""The command's values do not fit the network or each other: 422. Other refusals depend on
the state of the case: 409."""


def _slug(name: str) -> str:
    return "".join(f"-{c.lower()}" if c.isupper() else c for c in name).lstrip("-")


def domain_problem(error: errors.DomainError) -> Problem:
    """The problem answering a refused command. Messages carry ids and codes only."""
    kind = f"urn:cbcm:problem:{_slug(type(error).__name__)}"
    if isinstance(error, errors.NotFound):
        return Problem(404, "no such resource, or it is not visible to you", type=kind)
    if isinstance(error, errors.VersionConflict):
        return Problem(409, str(error), title=error.title, type=kind, current_version=error.current)
    if isinstance(error, errors.ActionNotPermitted):
        return Problem(403, str(error), title=error.title, type=kind)
    if isinstance(error, errors.EarlierThanLastStep):
        # The API records at its own clock: another write to the same aggregate got in
        # between reading the clock and deciding. Nothing was recorded; deciding again works.
        return Problem(
            409,
            "the case changed while this command was being decided; nothing was recorded; "
            "send it again",
            title="Concurrent change",
            type=kind,
            current_version=error.current_version,
        )
    if isinstance(error, errors.ImplausibleTime):
        return Problem(422, str(error), title=error.title, type=kind, field=error.field)
    status = 422 if isinstance(error, UNPROCESSABLE) else 409
    return Problem(status, str(error), title=error.title, type=kind)


def install_problem_handlers(app: FastAPI) -> None:
    """Answer every error, including FastAPI's own, as problem+json."""

    @app.exception_handler(errors.DomainError)
    async def _refused(request: Request, exc: errors.DomainError) -> JSONResponse:
        problem = domain_problem(exc)
        return problem_response(
            request, problem.status, problem.title, problem.detail, **problem.extensions
        )

    @app.exception_handler(EventStoreUnavailable)
    async def _unavailable(request: Request, exc: EventStoreUnavailable) -> JSONResponse:
        # The driver's message may name hosts; the client needs only to retry.
        if isinstance(exc, OutcomeUnknown):
            return problem_response(
                request,
                503,
                "Outcome unknown",
                "the event store failed while this command was being recorded and cannot "
                "tell yet whether it was: retry with the same Idempotency-Key (a retry "
                "records nothing twice), or look it up before sending it again",
                {"Retry-After": "2"},
                type="urn:cbcm:problem:outcome-unknown",
            )
        return problem_response(
            request,
            503,
            "Event store unavailable",
            "the event store cannot be reached; nothing was recorded; retry shortly",
            {"Retry-After": "2"},
        )

    @app.exception_handler(psycopg.OperationalError)
    async def _database_away(request: Request, exc: psycopg.OperationalError) -> JSONResponse:
        # A read model's or the release ledger's PostgreSQL out of reach where no read path
        # said so itself (the attack review found console and prevention pages giving 500).
        # The driver's message may name hosts: not repeated.
        return problem_response(
            request,
            503,
            "Database unavailable",
            "a database this answer reads cannot be reached just now; retry shortly",
            {"Retry-After": "5"},
        )

    @app.exception_handler(ThrottleUnavailable)
    async def _throttle_down(request: Request, exc: ThrottleUnavailable) -> JSONResponse:
        # A throttle that cannot count refuses: guesses must not pass while it is down.
        return problem_response(
            request,
            503,
            "Service unavailable",
            "this request cannot be served just now; nothing was recorded; retry shortly",
            {"Retry-After": "5"},
        )

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(
            request, exc.status, exc.title, exc.detail, exc.headers, **exc.extensions
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        status = exc.status_code
        return problem_response(
            request, status, HTTPStatus(status).phrase, str(exc.detail), dict(exc.headers or {})
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Name the offending parameters, not the values: a value may be personal data.
        errors = [
            {"loc": [str(p) for p in err.get("loc", ())], "msg": err.get("msg", "")}
            for err in exc.errors()
        ]
        return problem_response(
            request, 422, "Invalid request", "the request does not fit its schema", errors=errors
        )
