"""Signing in to the console and out of it (ADR 24).

- With the network's OIDC provider (``CBCM_OIDC_ISSUER`` and ``CBCM_CONSOLE_OIDC_CLIENT_ID``
  set): the authorization code flow with PKCE (S256), a ``state`` and a ``nonce`` (Authlib
  builds the request and exchanges the code). The ID token is checked (signature by the
  provider's keys, issuer, audience = our client, expiry, the nonce we sent); the access
  token then goes through the API's own verifier, so the console's principal is exactly the
  one the API would see. A state is good once: a replayed callback is refused.
- In the embedded set-up (no issuer): a development sign-in that issues the local token, as
  ``cbcm token`` does, and says plainly on the page that it is for development only. With an
  issuer configured it does not exist (404, nothing issued).

The pre-sign-in cookie (state, nonce, PKCE verifier, where to go next) is encrypted like the
session and SameSite=Lax: the provider's redirect back to us is a cross-site navigation, on
which a Strict cookie is not sent. For the same reason the callback answers with a small page
that moves on to the console by itself (a meta refresh, no script): the session cookie is
Strict, and a redirect chain that began on the provider's site would not carry it.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import time
import warnings
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final
from urllib.parse import urlencode

import httpx
import jwt
from authlib.common.security import generate_token
from authlib.deprecate import AuthlibDeprecationWarning

with warnings.catch_warnings():
    # Authlib 1.9 warns on import that its httpx client will move to httpx2; the API runs on
    # httpx (as Starlette does), and the warning would land in every API process's log.
    warnings.simplefilter("ignore", AuthlibDeprecationWarning)
    from authlib.integrations.httpx_client import AsyncOAuth2Client
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from domain.actors import Role
from services.api.console.session import (
    PREFIX,
    SIGN_IN_PATH,
    ConsoleRefusal,
    SignedIn,
    check_form,
    principal_of,
    read_form,
    safe_next,
    sessions_of,
)
from services.api.console.site import CODES, console_language, render
from services.api.pages.csrf import same_site
from services.api.pages.i18n import N_
from services.api.problems import Problem
from services.identity.tokens import MAX_TTL, issue_token
from services.settings import Settings

router = APIRouter(prefix=PREFIX, include_in_schema=False)

SIGN_IN_SECONDS: Final = 600
"""How long a sign-in at the provider may take (the pre-sign-in cookie's life)."""
HTTP_TIMEOUT: Final = 10.0
MAX_FIELD: Final = 200

DEV_ROLES: Final = (
    Role.FOCAL_POINT,
    Role.COORDINATOR,
    Role.INVESTIGATING_ENTITY,
    Role.SERVICE_PROVIDER,
    Role.AUDITOR,
    Role.STATISTICS_READER,
)

PROVIDER_DOWN: Final = N_(
    "The identity provider cannot be reached right now. Please try again in a minute."
)
SIGN_IN_FAILED: Final = N_(
    "The sign-in could not be completed (it may have taken too long, or been opened twice). "
    "Please sign in again."
)
NO_ROLE: Final = N_(
    "Your account was recognised, but it holds no role in this network's console. Ask your "
    "network's coordinator."
)
NO_SUCH_PAGE: Final = N_("There is no such page.")
NO_DEVELOPMENT_SIGN_IN: Final = N_(
    "This console has no identity provider, and its development sign-in opens only to a "
    "browser on the server itself. Ask the operators to set up the network's identity "
    "provider (CBCM_OIDC_ISSUER)."
)
NOT_CONFIGURED: Final = N_(
    "The console's sign-in is not set up: the network's identity provider is configured "
    "(CBCM_OIDC_ISSUER) but the console's client is not (CBCM_CONSOLE_OIDC_CLIENT_ID). Tell "
    "the operators."
)


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def oidc_configured(settings: Settings) -> bool:
    return bool(settings.oidc_issuer)


def development_sign_in_allowed(settings: Settings, request: Request) -> bool:
    """The development sign-in makes anyone who reaches it anyone: it exists only without an
    identity provider, when not switched off (``CBCM_CONSOLE_DEVELOPMENT_SIGN_IN``), never
    for a console published over TLS, and only to a browser on this machine (the client
    address the edge believes, so a forwarded header from an untrusted peer does not count)."""
    if oidc_configured(settings) or not settings.console_development_sign_in:
        return False
    if (settings.console_url or "").lower().startswith("https://"):
        return False
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


# --------------------------------------------------------------------------- the pages


@router.get("/sign-in", response_class=HTMLResponse)
async def sign_in_page(request: Request) -> Response:
    """The sign-in page: a link to the provider, or the development form."""
    settings = _settings(request)
    next_path = safe_next(request.query_params.get("next"))
    ended = request.query_params.get("ended") == "1"
    signed_out = request.query_params.get("out") == "1"
    if oidc_configured(settings):
        if not settings.console_oidc_client_id:
            raise ConsoleRefusal(503, NOT_CONFIGURED)
        return render(
            request,
            None,
            "console/sign_in.html",
            oidc=True,
            start=f"{SIGN_IN_PATH}/start?{urlencode({'next': next_path})}",
            ended=ended,
            signed_out=signed_out,
            next_path=next_path,
        )
    if not development_sign_in_allowed(settings, request):
        raise ConsoleRefusal(403, NO_DEVELOPMENT_SIGN_IN)
    return _development_form(request, next_path, ended=ended, signed_out=signed_out)


def _development_form(
    request: Request,
    next_path: str,
    *,
    ended: bool = False,
    signed_out: bool = False,
    error: str | None = None,
    values: dict[str, Any] | None = None,
    status_code: int = 200,
) -> Response:
    sessions = sessions_of(request)
    form = secrets.token_urlsafe(18)
    response = render(
        request,
        None,
        "console/sign_in.html",
        status_code=status_code,
        oidc=False,
        form_token=form,
        dev_roles=[role.value for role in DEV_ROLES],
        ended=ended,
        signed_out=signed_out,
        error=error,
        values=values or {},
        next_path=next_path,
    )
    sessions.set_cookie(
        request, response, "signin", {"form": form}, max_age=SIGN_IN_SECONDS, same_site="lax"
    )
    return response


@router.post("/sign-in/development", response_class=HTMLResponse)
async def development_sign_in(request: Request) -> Response:
    """The embedded set-up's sign-in: the local token for the account, agency and roles
    typed (as ``cbcm token`` issues it). Absent when an OIDC issuer is configured."""
    settings = _settings(request)
    if oidc_configured(settings):
        raise ConsoleRefusal(404, NO_SUCH_PAGE)
    if not development_sign_in_allowed(settings, request):
        raise ConsoleRefusal(403, NO_DEVELOPMENT_SIGN_IN)
    sessions = sessions_of(request)
    form = await read_form(request)
    fields = dict(form.items())
    roles = [str(v) for v in form.getlist("role")]
    next_path = safe_next(fields.get("next"))
    pending = sessions.open("signin", request.cookies.get(sessions.cookie_name(request, "signin")))
    headers = {k: v for k, v in request.headers.items() if k == "sec-fetch-site"}
    if (
        pending is None
        or not same_site(headers)
        or not hmac.compare_digest(str(pending.get("form", "")), fields.get("form", ""))
    ):
        return _development_form(
            request,
            next_path,
            error=N_("This form expired or did not come from this page. Please send it again."),
            values=fields,
            status_code=403,
        )
    user = fields.get("user", "").strip()[:MAX_FIELD]
    agency = fields.get("agency", "").strip()[:MAX_FIELD]
    lang = console_language(fields.get("lang"), request.headers.get("accept-language"))
    try:
        token = await run_in_threadpool(
            lambda: issue_token(
                settings.data_dir,
                user=user,
                agency=agency,
                roles=[Role(r) for r in roles if r in {d.value for d in DEV_ROLES}],
                ttl=min(MAX_TTL, timedelta(hours=settings.console_session_hours)),
                audience=settings.oidc_audience,
            )
        )
    except ValueError:
        return _development_form(
            request,
            next_path,
            error=N_(
                "Give an account id (letters, digits, '.', '_', '-'), an agency code and at "
                "least one role."
            ),
            values=fields,
            status_code=422,
        )
    try:
        await principal_of(request, token)
    except Problem as e:
        return _development_form(
            request,
            next_path,
            error=NO_ROLE if e.status == 403 else PROVIDER_DOWN,
            values=fields,
            status_code=e.status,
        )
    response = RedirectResponse(next_path, status_code=303)
    sessions.start(request, response, token=token, lang=lang, via="development")
    sessions.clear_cookie(request, response, "signin")
    return response


# ----------------------------------------------------------------------------- OIDC


@dataclass(frozen=True)
class ProviderMetadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    fetched: float


METADATA_SECONDS: Final = 300.0


async def provider_metadata(request: Request) -> ProviderMetadata:
    """The provider's OpenID Connect discovery document (cached five minutes), whose
    ``issuer`` must be the configured one."""
    settings = _settings(request)
    cached: ProviderMetadata | None = getattr(request.app.state, "console_oidc", None)
    if cached is not None and time.monotonic() - cached.fetched < METADATA_SECONDS:
        return cached
    issuer = str(settings.oidc_issuer).rstrip("/")
    try:
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT, follow_redirects=False) as client:
            answer = await client.get(f"{issuer}/.well-known/openid-configuration")
            answer.raise_for_status()
            document = answer.json()
        metadata = ProviderMetadata(
            issuer=str(document["issuer"]),
            authorization_endpoint=str(document["authorization_endpoint"]),
            token_endpoint=str(document["token_endpoint"]),
            jwks_uri=str(settings.oidc_jwks_url or document["jwks_uri"]),
            fetched=time.monotonic(),
        )
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        raise ConsoleRefusal(503, PROVIDER_DOWN) from None
    if metadata.issuer.rstrip("/") != issuer:
        raise ConsoleRefusal(503, PROVIDER_DOWN)
    request.app.state.console_oidc = metadata
    return metadata


def redirect_uri(request: Request) -> str:
    settings = _settings(request)
    if settings.console_url:
        return f"{settings.console_url.rstrip('/')}{SIGN_IN_PATH}/callback"
    return str(request.url_for("oidc_callback"))


def _client(settings: Settings, uri: str) -> AsyncOAuth2Client:
    return AsyncOAuth2Client(
        client_id=settings.console_oidc_client_id,
        client_secret=settings.console_oidc_client_secret,
        token_endpoint_auth_method=(
            "client_secret_basic" if settings.console_oidc_client_secret else "none"
        ),
        scope=settings.console_oidc_scopes,
        redirect_uri=uri,
        code_challenge_method="S256",
        timeout=HTTP_TIMEOUT,
    )


@router.get("/sign-in/start")
async def oidc_start(request: Request) -> Response:
    """Off to the provider: a fresh state, nonce and PKCE verifier, kept in the
    pre-sign-in cookie."""
    settings = _settings(request)
    if not oidc_configured(settings) or not settings.console_oidc_client_id:
        raise ConsoleRefusal(404, NO_SUCH_PAGE)
    metadata = await provider_metadata(request)
    state, nonce, verifier = generate_token(32), generate_token(32), generate_token(64)
    extra: dict[str, str] = {"nonce": nonce}
    if settings.console_oidc_resource:
        extra["resource"] = settings.console_oidc_resource
    lang = console_language(
        request.query_params.get("lang"), request.headers.get("accept-language")
    )
    async with _client(settings, redirect_uri(request)) as client:
        url, _ = client.create_authorization_url(
            metadata.authorization_endpoint, state=state, code_verifier=verifier, **extra
        )
    response = RedirectResponse(url, status_code=303)
    sessions_of(request).set_cookie(
        request,
        response,
        "signin",
        {
            "state": state,
            "nonce": nonce,
            "verifier": verifier,
            "next": safe_next(request.query_params.get("next")),
            "lang": lang,
        },
        max_age=SIGN_IN_SECONDS,
        same_site="lax",
    )
    return response


@router.get("/sign-in/callback", name="oidc_callback")
async def oidc_callback(request: Request) -> Response:
    """Back from the provider: the state checked (once), the code exchanged with the PKCE
    verifier, the ID token's nonce checked, the access token verified as the API does."""
    settings = _settings(request)
    if not oidc_configured(settings) or not settings.console_oidc_client_id:
        raise ConsoleRefusal(404, NO_SUCH_PAGE)
    sessions = sessions_of(request)
    pending = sessions.open("signin", request.cookies.get(sessions.cookie_name(request, "signin")))
    state = request.query_params.get("state", "")
    code = request.query_params.get("code", "")
    if (
        pending is None
        or not state
        or not code
        or not hmac.compare_digest(str(pending.get("state", "")), state)
    ):
        raise ConsoleRefusal(400, SIGN_IN_FAILED)
    if not await run_in_threadpool(sessions.take_once, f"state/{state}", SIGN_IN_SECONDS + 60):
        raise ConsoleRefusal(400, SIGN_IN_FAILED)
    metadata = await provider_metadata(request)
    extra: dict[str, str] = {}
    if settings.console_oidc_resource:
        extra["resource"] = settings.console_oidc_resource
    try:
        async with _client(settings, redirect_uri(request)) as client:
            token = await client.fetch_token(
                metadata.token_endpoint,
                grant_type="authorization_code",
                code=code,
                code_verifier=str(pending["verifier"]),
                **extra,
            )
    except httpx.HTTPError:
        raise ConsoleRefusal(503, PROVIDER_DOWN) from None
    except Exception:  # the provider refused the code (Authlib's OAuthError and kin)
        raise ConsoleRefusal(400, SIGN_IN_FAILED) from None
    id_token = token.get("id_token")
    access_token = token.get("access_token")
    if not isinstance(id_token, str) or not isinstance(access_token, str):
        raise ConsoleRefusal(400, SIGN_IN_FAILED)
    await run_in_threadpool(
        _check_id_token, id_token, metadata, settings, str(pending.get("nonce", ""))
    )
    try:
        await principal_of(request, access_token)
    except Problem as e:
        if e.status == 503:
            raise ConsoleRefusal(503, PROVIDER_DOWN) from None
        raise ConsoleRefusal(403, NO_ROLE) from None
    lang = str(pending.get("lang", "en"))
    next_path = safe_next(str(pending.get("next", "")))
    response = render(
        request,
        None,
        "console/signed_in.html",
        next_path=next_path,
    )
    sessions.start(
        request, response, token=access_token, lang=lang if lang in CODES else "en", via="oidc"
    )
    sessions.clear_cookie(request, response, "signin")
    return response


def _check_id_token(
    id_token: str, metadata: ProviderMetadata, settings: Settings, nonce: str
) -> None:
    """The ID token is the provider's, for us, current, and answers our nonce."""
    try:
        keys = jwt.PyJWKClient(metadata.jwks_uri, timeout=int(HTTP_TIMEOUT))
        key = keys.get_signing_key_from_jwt(id_token)
        claims = jwt.decode(
            id_token,
            key.key,
            algorithms=[a.strip() for a in settings.oidc_algorithms.split(",") if a.strip()],
            audience=settings.console_oidc_client_id,
            issuer=metadata.issuer,
            leeway=30,
            options={"require": ["exp", "iat", "iss", "aud", "sub", "nonce"]},
        )
    except jwt.PyJWKClientConnectionError:
        raise ConsoleRefusal(503, PROVIDER_DOWN) from None
    except jwt.PyJWTError:
        raise ConsoleRefusal(400, SIGN_IN_FAILED) from None
    if not nonce or not hmac.compare_digest(str(claims.get("nonce", "")), nonce):
        raise ConsoleRefusal(400, SIGN_IN_FAILED)


# ------------------------------------------------------------------- session pages


@router.get("/", response_class=HTMLResponse)
async def home(request: Request, staff: SignedIn) -> Response:
    """The console's first page: what the reader's roles may open."""
    return render(request, staff, "console/home.html")


@router.post("/sign-out")
async def sign_out(request: Request, staff: SignedIn) -> Response:
    form = await read_form(request)
    check_form(request, staff, form)
    sessions = sessions_of(request)
    session = sessions.read(request)
    if session:
        await run_in_threadpool(sessions.end, session)
    response = RedirectResponse(f"{SIGN_IN_PATH}?out=1", status_code=303)
    sessions.clear_cookie(request, response, "session")
    return response


@router.post("/language")
async def choose_language(request: Request, staff: SignedIn) -> Response:
    fields = await read_form(request)
    check_form(request, staff, fields)
    sessions = sessions_of(request)
    session = sessions.read(request)
    response = RedirectResponse(safe_next(fields.get("next")), status_code=303)
    if session:
        lang = fields.get("lang", "")
        sessions.keep(
            request,
            response,
            type(session)(
                sid=session.sid,
                token=session.token,
                lang=lang if lang in CODES else session.lang,
                expires=session.expires,
                via=session.via,
            ),
        )
    return response
