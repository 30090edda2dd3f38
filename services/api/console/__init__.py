"""The staff console (issue #21, ADR 24): pages for the people who handle cases, served by
the API process under ``/console``.

The base (console-core): ``session`` (who is signed in, the session cookie, form checks),
``site`` (the layout, rendering, the menu, the console's own security headers), ``signin``
(OIDC with PKCE; the embedded set-up's development sign-in). The pages: ``inbox``, ``case``,
``trail`` (console-core) and the modules of the other parts, each with its own
``router = APIRouter(prefix="/console")``, included here by name.

A page calls the application through the same need-to-know rules as the API (the functions
``services.api.routes`` use), so a page never shows what the API would not.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Final

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import RedirectResponse, Response

from services.api.console.session import (
    ConsoleRefusal,
    CrossSiteArrival,
    Sessions,
    SignInNeeded,
    load_or_create_session_key,
    sign_in_url,
)
from services.api.console.site import ConsoleCatalogues, ConsoleHeaders, ConsoleSite, render
from services.api.pages.i18n import N_
from services.api.throttle import throttle_storage
from services.settings import Settings

MODULES: Final = (
    "signin",
    "inbox",
    "case",
    "trail",
    "register",
    "stats",
    "registry",
    "audit",
    "referrals",
    "prevention",
)
"""The console's page modules, in menu order. A module not (yet) on this branch is left out;
each one that is present is included."""


def console_router() -> APIRouter:
    """Every page module's router, included in one."""
    router = APIRouter()
    for name in MODULES:
        qualified = f"{__name__}.{name}"
        if importlib.util.find_spec(qualified) is None:
            continue
        module = importlib.import_module(qualified)
        router.include_router(module.router)

    @router.api_route(
        "/console/{rest:path}",
        methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
        include_in_schema=False,
    )
    async def no_such_page(request: Request, rest: str) -> Response:
        """Any other address or method under the console: a readable page, not the API's
        JSON (a page is only ever read or posted)."""
        if request.method not in ("GET", "HEAD", "POST"):
            raise ConsoleRefusal(405, NOT_A_PAGE_METHOD)
        raise ConsoleRefusal(404, NO_SUCH_PAGE)

    return router


NO_SUCH_PAGE: Final = N_("There is no such page.")
NOT_A_PAGE_METHOD: Final = N_("The console's pages are only opened or sent as forms.")


async def _refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ConsoleRefusal)
    page = render(
        request, exc.staff, "console/refused.html", status_code=exc.status, message=exc.message
    )
    if exc.status == 405:
        page.headers["Allow"] = "GET, HEAD, POST"
    return page


async def _arrived_from_elsewhere(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, CrossSiteArrival)
    return render(request, None, "console/signed_in.html", next_path=exc.here, arriving=True)


async def _sign_in_needed(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SignInNeeded)
    url = sign_in_url(exc.next_path)
    if exc.reason:
        url += "&ended=1"
    return RedirectResponse(url, status_code=303)


def mount(app: FastAPI, settings: Settings) -> None:
    """Serves the console on ``app``: its pages, its session keys, its security headers
    (call after the edge's middlewares are added: the console's headers go outside them)."""
    secure = None
    if settings.console_url:
        secure = settings.console_url.startswith("https://")
    app.state.console = ConsoleSite(ConsoleCatalogues(settings.data_dir / "locales"))
    app.state.console_sessions = Sessions(
        load_or_create_session_key(settings.data_dir),
        throttle_storage(settings.throttle_store, settings.throttle_key_prefix),
        hours=settings.console_session_hours,
        secure=secure,
    )
    app.add_exception_handler(ConsoleRefusal, _refused)
    app.add_exception_handler(SignInNeeded, _sign_in_needed)
    app.add_exception_handler(CrossSiteArrival, _arrived_from_elsewhere)
    app.add_middleware(ConsoleHeaders)
    app.include_router(console_router(), include_in_schema=False)  # pages, not API operations
