"""Who is calling: the bearer token's principal, and the role they act in."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from domain.actors import Actor, Role
from domain.errors import NotFound
from services.api.problems import Problem
from services.identity.tokens import (
    IdentityProviderUnavailable,
    InvalidToken,
    Principal,
    TokenVerifier,
)

bearer = HTTPBearer(
    auto_error=False,
    description="a JWT from the network's identity provider (embedded: `cbcm token`)",
)

UNAUTHORISED = {"WWW-Authenticate": 'Bearer realm="cbcm"'}
"""No token (RFC 6750, section 3: no error code when the request carried no credentials)."""


def refused_token(reason: str) -> dict[str, str]:
    """The challenge for a token that was refused (RFC 6750, section 3.1: ``invalid_token``),
    with the reason in words (never the token or its claims' values)."""
    description = "".join(c for c in reason if c.isprintable() and c not in '"\\')
    return {
        "WWW-Authenticate": (
            f'Bearer realm="cbcm", error="invalid_token", error_description="{description}"'
        )
    }


async def current_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    """The verified caller, or 401 (503 while the identity provider's keys are unreachable)."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Problem(401, "a bearer token is required", headers=UNAUTHORISED)
    verifier: TokenVerifier = request.app.state.verifier
    try:
        # Verifying may fetch the identity provider's keys: off the event loop.
        principal = await run_in_threadpool(verifier.verify, credentials.credentials)
    except IdentityProviderUnavailable as e:
        raise Problem(503, str(e), headers={"Retry-After": "5"}) from None
    except InvalidToken as e:
        raise Problem(
            401, f"the bearer token was refused: {e}", headers=refused_token(str(e))
        ) from None
    # The token says what the identity provider knows; whether someone is a focal point of
    # an agency now is the network's register (a withdrawn focal point loses access at once).
    if Role.FOCAL_POINT in principal.roles:
        principal = await run_in_threadpool(_appointed_only, request, principal)
    return principal


def _appointed_only(request: Request, principal: Principal) -> Principal:
    """The focal-point role counts only for a focal point the network has appointed (and not
    withdrawn) for the token's agency."""
    try:
        network = request.app.state.mechanism().network()
    except NotFound:  # no network yet: nobody is appointed
        network = None
    agency = None if network is None else network.agencies.get(principal.agency)
    if agency is not None and principal.user in agency.focal_points:
        return principal
    roles = principal.roles - {Role.FOCAL_POINT}
    if not roles:
        raise Problem(
            403, "not an appointed focal point of this agency", title="Role not permitted"
        )
    return Principal(principal.user, principal.agency, roles)


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def acting_as(principal: Principal, roles: Iterable[Role]) -> Actor | None:
    """The principal acting in the first of ``roles`` they hold, or ``None``."""
    for role in roles:
        if role in principal.roles:
            return Actor(principal.user, principal.agency, role)
    return None


def first_seeing(
    principal: Principal, roles: Iterable[Role], sees: Callable[[Actor], bool]
) -> Actor | None:
    """The principal acting in the first of ``roles`` they hold in which ``sees`` lets them
    see the resource, or ``None``."""
    for role in roles:
        if role in principal.roles:
            actor = Actor(principal.user, principal.agency, role)
            if sees(actor):
                return actor
    return None


def acting_on(
    principal: Principal, roles: Iterable[Role], sees: Callable[[Actor], bool], what: str
) -> Actor:
    """The principal acting in the first of ``roles`` in which they see ``what`` (a resource
    they can read), or 403 naming the roles that may act on it."""
    wanted = tuple(roles)
    actor = first_seeing(principal, wanted, sees)
    if actor is None:
        raise Problem(
            403,
            f"your role may not do this on this {what}: "
            + ", ".join(r.value for r in wanted)
            + " may",
            title="Action not permitted",
        )
    return actor


def require_role(principal: Principal, roles: Iterable[Role]) -> Actor:
    """Acting in one of ``roles``, or 403 (for resources whose existence is not secret)."""
    wanted = tuple(roles)
    actor = acting_as(principal, wanted)
    if actor is None:
        raise Problem(
            403,
            "this needs one of the roles: " + ", ".join(r.value for r in wanted),
            title="Role not permitted",
        )
    return actor
