"""Form tokens that need no cookie (ADR 20).

A form is rendered with a fresh random *nonce*, the time it was issued and a MAC over
``form | client | nonce | issued`` under the pages' key; the three come back as hidden fields.
The MAC does what the cookie of a double-submit scheme does: it ties what is submitted to
something the attacker cannot choose, here the client the form was served to (the same key
the throttles count under). A page on another site can make a visitor's browser post to us,
but not read a form of ours in that browser, and a form it fetched itself is bound to its own
address: the visitor's post then fails the check. Each nonce is taken once (in the throttle
store, shared between instances), so a form cannot be posted twice: a reload of the answer
page or a double tap records nothing more. ``Sec-Fetch-Site``, which every current browser
sends, must not say the post comes from another site: a second, independent check.

A complainant whose address changed between loading and sending (a phone moving between
networks) gets the form back with what they wrote and a new token: nothing is lost.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Final

from limits.errors import StorageError
from limits.storage import Storage

from services.api.throttle import ThrottleUnavailable

MAX_AGE_SECONDS: Final = 4 * 3600
"""How long a form may stay open before it is sent (a long account is typed slowly)."""
KEY_BYTES: Final = 32


class Verdict(StrEnum):
    OK = "ok"
    INVALID = "invalid"  # missing, forged, for another form or another client
    EXPIRED = "expired"
    USED = "used"  # this form was already sent
    CROSS_SITE = "cross_site"


@dataclass(frozen=True)
class FormToken:
    nonce: str
    issued: str
    mac: str


def form_key_path(data_dir: Path) -> Path:
    return Path(data_dir) / "keys" / "pages-form-key"


def load_or_create_form_key(data_dir: Path) -> bytes:
    """The pages' MAC key (32 random bytes, mode 0600), made on first start. Instances
    behind one address share it (the same file) so that one can check another's forms."""
    path = form_key_path(data_dir)
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        fresh = secrets.token_bytes(KEY_BYTES)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            key = path.read_bytes()  # another process made it first
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(fresh)
            key = fresh
    if len(key) != KEY_BYTES:
        raise ValueError(f"{path} does not hold a {KEY_BYTES}-byte key")
    return key


def same_site(headers: dict[str, str]) -> bool:
    """False when the browser says the post comes from another site (``Sec-Fetch-Site``).
    ``Origin`` is not used: under the pages' ``Referrer-Policy: no-referrer`` browsers send
    ``Origin: null`` with their own forms, and behind a proxy ``Host`` need not be the name
    the browser used."""
    fetch_site = headers.get("sec-fetch-site")
    return fetch_site is None or fetch_site in ("same-origin", "none")


class FormGuard:
    def __init__(self, key: bytes, storage: Storage, *, max_age: int = MAX_AGE_SECONDS) -> None:
        self._key = key
        self._storage = storage
        self._max_age = max_age

    def _mac(self, form: str, client: str, nonce: str, issued: str) -> str:
        message = f"{form}|{client}|{nonce}|{issued}".encode()
        digest = hmac.new(self._key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def issue(self, form: str, client: str, *, now: float | None = None) -> FormToken:
        nonce = secrets.token_urlsafe(18)
        issued = str(int(time.time() if now is None else now))
        return FormToken(nonce, issued, self._mac(form, client, nonce, issued))

    def check(
        self,
        form: str,
        client: str,
        token: FormToken,
        *,
        now: float | None = None,
        consume: bool = True,
    ) -> Verdict:
        """Whether the posted token is one this site issued for this form and client, in
        time, and (``consume``) not used before; a valid token is used up."""
        if not (token.nonce and token.issued.isdigit() and token.mac) or len(token.nonce) > 64:
            return Verdict.INVALID
        expected = self._mac(form, client, token.nonce, token.issued)
        if not hmac.compare_digest(expected, token.mac):
            return Verdict.INVALID
        age = (time.time() if now is None else now) - int(token.issued)
        if age > self._max_age or age < -60:
            return Verdict.EXPIRED
        if not consume:
            return Verdict.OK
        try:
            uses = self._storage.incr(f"form-nonce/{token.nonce}", self._max_age + 60)
        except StorageError as e:
            raise ThrottleUnavailable(type(e.storage_error).__name__) from None
        return Verdict.OK if uses == 1 else Verdict.USED
