"""Who is signed in to the console: the session cookie, the principal behind it, form checks.

The session is a cookie the server encrypts and authenticates (AES-256-GCM under a key of its
own, ``keys/console-session-key``), holding a random session id, the bearer token the sign-in
obtained (the OIDC provider's access token, or in the embedded set-up the local token), the
session's language and its expiry. On every request the token is verified again by the API's
own verifier and the focal-point role checked against the network's register
(``services.api.auth.current_principal``), so a page sees exactly the principal the API would,
and a withdrawn focal point loses access at the next click. Signing out records the session
id as ended in the throttle store (shared between API instances) until the session would have
expired anyway, so a copied cookie is dead too.

The cookie is HttpOnly, SameSite=Strict, Secure where the console is served over TLS (then
named ``__Host-``, which a browser accepts only from this host over TLS, path ``/``). Each
form carries the session's token ``csrf`` (an HMAC of the session id); ``check_form`` also
refuses a post the browser says comes from another site (``Sec-Fetch-Site``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final, Literal
from urllib.parse import parse_qsl, quote

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials
from limits.errors import StorageError
from limits.storage import Storage
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import ImmutableMultiDict
from starlette.responses import Response

from services.api.auth import current_principal
from services.api.pages.csrf import same_site
from services.api.pages.i18n import N_
from services.api.problems import Problem
from services.identity.tokens import Principal

PREFIX: Final = "/console"
KEY_BYTES: Final = 32
SIGN_IN_PATH: Final = f"{PREFIX}/sign-in"

Via = Literal["oidc", "development"]


@dataclass(frozen=True)
class Staff:
    """Who is signed in: the principal as the API verifies it, the session's language and
    the session's form token (put in every form as the field ``csrf``)."""

    principal: Principal
    lang: str
    csrf: str


@dataclass(frozen=True)
class Session:
    """What the cookie holds (encrypted)."""

    sid: str
    token: str
    lang: str
    expires: int  # unix seconds
    via: Via


class SignInNeeded(Exception):
    """No session, or one that ended: the reader is sent to sign in, then back."""

    def __init__(self, next_path: str, reason: str = "") -> None:
        super().__init__(reason)
        self.next_path = next_path
        self.reason = reason


class CrossSiteArrival(Exception):
    """A navigation from another site without the session cookie (which SameSite=Strict
    withholds then): answered with a page that opens the same address again from here."""

    def __init__(self, here: str) -> None:
        super().__init__(here)
        self.here = safe_next(here)


class ConsoleRefusal(Exception):
    """A request the console refuses, rendered as a readable page in the reader's language
    (``message`` is an English msgid, translated when shown)."""

    def __init__(self, status: int, message: str, staff: Staff | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.staff = staff


def session_key_path(data_dir: Path) -> Path:
    return Path(data_dir) / "keys" / "console-session-key"


def load_or_create_session_key(data_dir: Path) -> bytes:
    """The console's cookie key (32 random bytes, mode 0600), made on first start; API
    instances behind one address share the file."""
    path = session_key_path(data_dir)
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        fresh = secrets.token_bytes(KEY_BYTES)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            key = path.read_bytes()
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(fresh)
            key = fresh
    if len(key) != KEY_BYTES:
        raise ValueError(f"{path} does not hold a {KEY_BYTES}-byte key")
    return key


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Sessions:
    """Sealing and opening the console's cookies, and the record of ended sessions."""

    def __init__(
        self, key: bytes, storage: Storage, *, hours: float, secure: bool | None = None
    ) -> None:
        self._aead = AESGCM(hashlib.sha256(b"cbcm console cookie|" + key).digest())
        self._mac_key = hashlib.sha256(b"cbcm console csrf|" + key).digest()
        self._storage = storage
        self.seconds = int(hours * 3600)
        self._secure = secure

    # --- cookies --------------------------------------------------------------------
    def secure(self, request: Request) -> bool:
        """Secure cookies where the console is served over TLS (its configured URL, else the
        request's scheme)."""
        if self._secure is not None:
            return self._secure
        return request.url.scheme == "https"

    def cookie_name(self, request: Request, purpose: str = "session") -> str:
        base = "cbcm-console" if purpose == "session" else f"cbcm-console-{purpose}"
        return f"__Host-{base}" if self.secure(request) else base

    def seal(self, purpose: str, payload: Mapping[str, Any]) -> str:
        nonce = secrets.token_bytes(12)
        plain = json.dumps(payload, separators=(",", ":")).encode()
        return _b64(nonce + self._aead.encrypt(nonce, plain, purpose.encode()))

    def open(self, purpose: str, value: str | None) -> dict[str, Any] | None:
        """The payload of a cookie this server sealed for ``purpose``; None for anything
        else (missing, forged, tampered, sealed for another purpose)."""
        if not value or len(value) > 8192:
            return None
        try:
            raw = _unb64(value)
            plain = self._aead.decrypt(raw[:12], raw[12:], purpose.encode())
            payload = json.loads(plain)
        except (InvalidTag, ValueError, TypeError):
            return None
        return payload if isinstance(payload, dict) else None

    def set_cookie(
        self,
        request: Request,
        response: Response,
        purpose: str,
        payload: Mapping[str, Any],
        *,
        max_age: int,
        same_site: Literal["strict", "lax"] = "strict",
    ) -> None:
        response.set_cookie(
            self.cookie_name(request, purpose),
            self.seal(purpose, payload),
            max_age=max_age,
            path="/",
            secure=self.secure(request),
            httponly=True,
            samesite=same_site,
        )

    def clear_cookie(self, request: Request, response: Response, purpose: str) -> None:
        response.delete_cookie(
            self.cookie_name(request, purpose),
            path="/",
            secure=self.secure(request),
            httponly=True,
            samesite="strict" if purpose == "session" else "lax",
        )

    # --- sessions -------------------------------------------------------------------
    def start(
        self,
        request: Request,
        response: Response,
        *,
        token: str,
        lang: str,
        via: Via,
        now: float | None = None,
    ) -> Session:
        session = Session(
            sid=secrets.token_urlsafe(18),
            token=token,
            lang=lang,
            expires=int((time.time() if now is None else now) + self.seconds),
            via=via,
        )
        self.keep(request, response, session)
        return session

    def keep(self, request: Request, response: Response, session: Session) -> None:
        """Writes ``session`` into the cookie (a new language, say), same id and expiry."""
        payload = {
            "sid": session.sid,
            "tok": session.token,
            "lang": session.lang,
            "exp": session.expires,
            "via": session.via,
        }
        max_age = max(1, session.expires - int(time.time()))
        self.set_cookie(request, response, "session", payload, max_age=max_age)

    def read(self, request: Request, *, now: float | None = None) -> Session | Literal[0] | None:
        """The request's session; None when there is none (or it is not ours), 0 when it has
        expired."""
        payload = self.open("session", request.cookies.get(self.cookie_name(request)))
        if payload is None:
            return None
        try:
            session = Session(
                sid=str(payload["sid"]),
                token=str(payload["tok"]),
                lang=str(payload["lang"]),
                expires=int(payload["exp"]),
                via=payload["via"] if payload["via"] in ("oidc", "development") else "oidc",
            )
        except (KeyError, TypeError, ValueError):
            return None
        if session.expires <= (time.time() if now is None else now):
            return 0
        return session

    def csrf(self, session: Session) -> str:
        return _b64(hmac.new(self._mac_key, f"csrf|{session.sid}".encode(), "sha256").digest())

    def end(self, session: Session) -> None:
        """Records the session as ended (signed out) until it would have expired."""
        ttl = max(1, session.expires - int(time.time()) + 60)
        try:
            self._storage.incr(f"console-ended/{session.sid}", ttl)
        except StorageError as e:
            raise ConsoleRefusal(503, UNAVAILABLE) from e

    def ended(self, session: Session) -> bool:
        try:
            return self._storage.get(f"console-ended/{session.sid}") > 0
        except StorageError as e:
            raise ConsoleRefusal(503, UNAVAILABLE) from e

    def take_once(self, what: str, ttl: int) -> bool:
        """True the first time ``what`` is taken (a sign-in state), False ever after."""
        try:
            return self._storage.incr(f"console-once/{what}", ttl) == 1
        except StorageError as e:
            raise ConsoleRefusal(503, UNAVAILABLE) from e


UNAVAILABLE: Final = N_(
    "The console cannot check sessions right now. Please try again in a minute."
)
NOT_APPOINTED: Final = N_(
    "You are not an appointed focal point of this agency (any more), and your account holds "
    "no other role in the console. Ask your network's coordinator."
)
SIGN_IN_AGAIN: Final = N_("Your session has ended. Please sign in again.")
CROSS_SITE: Final = N_("This form was sent from another site. Nothing was recorded.")
STALE_FORM: Final = N_(
    "This form is not from your current session (it may be from before you signed in "
    "again). Nothing was recorded: please go back, reload the page and send it again."
)


def safe_next(value: str | None) -> str:
    """Where to go after signing in: a console path of this site, never another site
    (``//evil``, ``/\\evil``, ``https://...``, control characters) and never the sign-in
    itself."""
    if (
        not value
        or not value.startswith(PREFIX)
        or value.startswith(SIGN_IN_PATH)
        or len(value) > 2000
        or any(c in value for c in "\\\r\n\t")
        or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value)
        or "//" in value
        or value[len(PREFIX) : len(PREFIX) + 1] not in ("", "/", "?")
    ):
        return f"{PREFIX}/"
    return value


def sign_in_url(next_path: str) -> str:
    return f"{SIGN_IN_PATH}?next={quote(safe_next(next_path), safe='/')}"


def sessions_of(request: Request) -> Sessions:
    sessions: Sessions = request.app.state.console_sessions
    return sessions


async def principal_of(request: Request, token: str) -> Principal:
    """The token's principal exactly as the API's bearer check finds it (verified, focal
    point only while appointed); raises ``Problem`` as the API would."""
    credentials = HTTPAuthorizationCredentials(scheme="Bearer", credentials=token)
    return await current_principal(request, credentials)


async def signed_in(request: Request) -> Staff:
    """The signed-in member of staff (a FastAPI dependency). No session, an ended or expired
    one, or a token the verifier now refuses: sent to sign in again, then back here."""
    sessions = sessions_of(request)
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if request.method != "GET":
        # a form sent after the session ended: back to the console's first page (the
        # form's address answers posts only)
        here = f"{PREFIX}/"
    session = sessions.read(request)
    if session is None:
        if request.method == "GET" and request.headers.get("sec-fetch-site") == "cross-site":
            # A link from another site (an e-mail, a notification): the browser kept the
            # Strict session cookie back. The page asks again from here, with it if any.
            raise CrossSiteArrival(here)
        raise SignInNeeded(here)
    if session == 0 or await run_in_threadpool(sessions.ended, session):
        raise SignInNeeded(here, SIGN_IN_AGAIN)
    try:
        principal = await principal_of(request, session.token)
    except Problem as e:
        if e.status == 401:
            raise SignInNeeded(here, SIGN_IN_AGAIN) from None
        if e.status == 403:
            raise ConsoleRefusal(403, NOT_APPOINTED) from None
        raise ConsoleRefusal(503, UNAVAILABLE) from None
    return Staff(principal=principal, lang=session.lang, csrf=sessions.csrf(session))


SignedIn = Annotated[Staff, Depends(signed_in)]


def check_form(request: Request, staff: Staff, fields: Mapping[str, Any]) -> None:
    """Refuses (403, a readable page) a post that did not come from a form of this session
    on this site: the ``csrf`` field must be the session's, and ``Sec-Fetch-Site`` must not
    name another site."""
    headers = {k: v for k, v in request.headers.items() if k == "sec-fetch-site"}
    if not same_site(headers):
        raise ConsoleRefusal(403, CROSS_SITE, staff)
    sent = fields.get("csrf", "")
    if not isinstance(sent, str) or not hmac.compare_digest(sent.encode(), staff.csrf.encode()):
        raise ConsoleRefusal(403, STALE_FORM, staff)


MAX_FIELDS: Final = 200


Form = ImmutableMultiDict[str, str]


async def read_form(request: Request) -> Form:
    """A posted form (``application/x-www-form-urlencoded``; the edge bounds its size).
    Anything else is refused: the console's forms send nothing else."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise ConsoleRefusal(415, BAD_FORM)
    body = (await request.body()).decode("utf-8", errors="replace")
    try:
        pairs = parse_qsl(body, keep_blank_values=True, max_num_fields=MAX_FIELDS)
    except ValueError:
        raise ConsoleRefusal(400, BAD_FORM) from None
    return ImmutableMultiDict(pairs)


BAD_FORM: Final = N_("This request is not a form of the console. Nothing was recorded.")
