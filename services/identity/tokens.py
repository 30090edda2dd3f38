"""Who calls the HTTP API: bearer tokens (JWT) turned into a :class:`Principal`.

Two modes, chosen by ``CBCM_OIDC_ISSUER``:

- embedded (unset): ``cbcm token`` signs short-lived EdDSA tokens with a local Ed25519 key
  kept under ``<data dir>/keys/``; :class:`LocalTokenVerifier` checks them with its public key.
- production (set): tokens come from the network's OIDC provider and
  :class:`OidcTokenVerifier` checks them against the provider's published keys (JWKS).

Every refusal is an :class:`InvalidToken` whose message is safe to show a client: it says why
in words and never repeats the token or the values of its claims.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import threading
import time
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, Protocol

import jwt
import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from jwt import PyJWK, PyJWKClient
from jwt.exceptions import PyJWKClientConnectionError, PyJWKClientError, PyJWKSetError

from domain.actors import Role, validate_code, validate_user
from domain.errors import InvalidCode
from services.settings import Settings

__all__ = [
    "LOCAL_ISSUER",
    "IdentityProviderUnavailable",
    "InvalidToken",
    "LocalTokenVerifier",
    "OidcTokenVerifier",
    "Principal",
    "TokenVerifier",
    "claim_at",
    "discover_jwks_url",
    "issue_token",
    "load_or_create_ed25519_key",
    "load_or_create_signing_key",
    "signing_key_path",
    "verifier_from_settings",
]

log = structlog.get_logger()

LOCAL_ISSUER: Final = "urn:cbcm:local"
LOCAL_ALGORITHM: Final = "EdDSA"
MAX_TTL: Final = timedelta(hours=12)
LEEWAY: Final = timedelta(seconds=30)
JWKS_LIFESPAN_SECONDS: Final = 300
JWKS_TIMEOUT_SECONDS: Final = 5.0
JWKS_REFRESH_SECONDS: Final = 30.0
JWKS_FAILURE_SECONDS: Final = 30.0
"""After a failed fetch of the key set or the discovery document, the provider counts as
unavailable (503) this long without being asked again."""
"""A token naming a key we do not hold fetches the key set again at most this often."""
DISCOVERY_PATH: Final = "/.well-known/openid-configuration"
MAX_DISCOVERY_BYTES: Final = 1_000_000
ACCESS_TOKEN_TYPES: Final = frozenset({"at+jwt", "application/at+jwt"})
"""RFC 9068's ``typ`` of a JWT access token."""

_ROLE_VALUES: Final = frozenset(role.value for role in Role)


# ---------------------------------------------------------------------------- the principal


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: an account, the agency it acts for, the roles it holds."""

    user: str
    agency: str
    roles: frozenset[Role]

    def __post_init__(self) -> None:
        validate_user(self.user)
        validate_code("agency", self.agency)
        if not self.roles:
            raise ValueError("a principal holds at least one role")


class InvalidToken(Exception):
    """The bearer token is refused. The message is safe to show the client (HTTP 401)."""


class IdentityProviderUnavailable(InvalidToken):
    """The provider's keys cannot be fetched, so no token can be checked (HTTP 503)."""


class TokenVerifier(Protocol):
    def verify(self, token: str) -> Principal:
        """The principal a valid token names; :class:`InvalidToken` otherwise."""
        ...


# ------------------------------------------------------------------------- local signing key


def signing_key_path(data_dir: Path) -> Path:
    """Where the embedded mode's token signing key lives."""
    return Path(data_dir) / "keys" / "token-signing-key.pem"


def _read_signing_key(path: Path) -> Ed25519PrivateKey:
    data = path.read_bytes()
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{path} is not an unencrypted PEM private key") from e
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key")
    return key


def load_or_create_signing_key(data_dir: Path) -> Ed25519PrivateKey:
    """The local token signing key, created on first use (see
    :func:`load_or_create_ed25519_key`).

    Raises ``ValueError`` if the file exists but holds no Ed25519 key, ``OSError`` if it cannot
    be read or written.
    """
    return load_or_create_ed25519_key(signing_key_path(data_dir))


def load_or_create_ed25519_key(path: Path) -> Ed25519PrivateKey:
    """The Ed25519 private key in the PEM file at ``path``, created on first use.

    The key directory is created 0700 and the PEM file 0600. The file appears complete or not
    at all: it is written to a temporary file and hard-linked into place, which fails if the
    file already exists, so when processes race the first one wins and the others read its key.

    Raises ``ValueError`` if the file exists but holds no Ed25519 key, ``OSError`` if it cannot
    be read or written.
    """
    path = Path(path)
    with contextlib.suppress(FileNotFoundError):
        return _read_signing_key(path)

    keys_dir = path.parent
    keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(keys_dir, 0o700)  # mkdir's mode is subject to the umask
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    tmp = keys_dir / f".{path.name}.{os.getpid()}.{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            os.write(fd, pem)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return _read_signing_key(path)  # another process was first: use its key
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(keys_dir)
    return key


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------ local tokens


def _checked_roles(roles: Iterable[Role | str]) -> list[Role]:
    checked: list[Role] = []
    for role in roles:
        if role not in _ROLE_VALUES:
            raise ValueError(f"unknown role: use one of {', '.join(sorted(_ROLE_VALUES))}")
        if Role(role) not in checked:
            checked.append(Role(role))
    if not checked:
        raise ValueError("a token needs at least one role")
    return checked


def issue_token(
    data_dir: Path,
    *,
    user: str,
    agency: str,
    roles: Iterable[Role],
    ttl: timedelta = timedelta(minutes=15),
    now: datetime | None = None,
    audience: str = "cbcm",
) -> str:
    """An EdDSA token signed with the local key (created if needed), for embedded mode.

    Raises ``ValueError`` for an invalid user, agency, role set or lifetime (checked before
    the key is touched), ``OSError`` if the key cannot be read or written.
    """
    try:
        validate_user(user)
        validate_code("agency", agency)
    except InvalidCode as e:
        raise ValueError(str(e)) from e
    checked_roles = _checked_roles(roles)
    if ttl <= timedelta(0) or ttl > MAX_TTL:
        raise ValueError("token lifetime must be more than 0 and at most 12 hours")
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if not audience:
        raise ValueError("audience must not be empty")

    key = load_or_create_signing_key(data_dir)
    issued = int(now.timestamp())
    claims: dict[str, Any] = {
        "iss": LOCAL_ISSUER,
        "aud": audience,
        "sub": user,
        "agency": agency,
        "roles": [role.value for role in checked_roles],
        "iat": issued,
        "nbf": issued,
        "exp": int((now + ttl).timestamp()),
        "jti": secrets.token_urlsafe(16),
    }
    return jwt.encode(claims, key, algorithm=LOCAL_ALGORITHM, headers={"typ": "JWT"})


# ---------------------------------------------------------------------------- verification


def _decode(
    token: str,
    key: Ed25519PublicKey | PyJWK,
    *,
    algorithms: Sequence[str],
    issuer: str,
    audience: str,
    leeway: timedelta,
) -> dict[str, Any]:
    """The token's claims once signature, issuer, audience and times are checked."""
    try:
        return jwt.decode(
            token,
            key,
            algorithms=list(algorithms),
            audience=audience,
            issuer=issuer,
            leeway=leeway,
            options={
                "require": ["exp", "iat", "sub", "iss", "aud"],
                "verify_signature": True,
                "verify_exp": True,
                "verify_iat": True,
                "verify_nbf": True,
                "verify_iss": True,
                "verify_aud": True,
                "verify_sub": True,
            },
        )
    except jwt.PyJWTError as e:  # also a key unfit for the algorithm (InvalidKeyError)
        raise InvalidToken(_reason(e)) from None


def _reason(error: jwt.PyJWTError) -> str:
    """Why a token is refused, in words that repeat nothing from the token."""
    if isinstance(error, jwt.ExpiredSignatureError):
        return "token has expired"
    if isinstance(error, jwt.ImmatureSignatureError):
        return "token is not yet valid"
    if isinstance(error, jwt.InvalidAudienceError):
        return "token is not meant for this service (audience)"
    if isinstance(error, jwt.InvalidIssuerError):
        return "token comes from an issuer this service does not trust"
    if isinstance(error, jwt.MissingRequiredClaimError):
        return f"token lacks the required '{error.claim}' claim"
    if isinstance(error, jwt.InvalidAlgorithmError):
        return "token signature algorithm is not accepted"
    if isinstance(error, jwt.InvalidSignatureError):
        return "token signature is invalid"
    if isinstance(error, jwt.InvalidIssuedAtError):
        return "token issue time is invalid"
    if isinstance(error, jwt.DecodeError):
        return "token is malformed"
    return "token is invalid"


def claim_at(claims: Mapping[str, Any], path: str) -> object:
    """The claim at a dotted ``path`` (``realm_access.roles``: the ``roles`` member of the
    ``realm_access`` object); a claim whose own name holds a dot is found first under that
    whole name. None when any step is missing or not an object."""
    if path in claims:
        return claims[path]
    found: object = claims
    for step in path.split("."):
        if not isinstance(found, Mapping) or step not in found:
            return None
        found = found[step]
    return found


def _principal(claims: Mapping[str, Any], *, agency_claim: str, roles_claim: str) -> Principal:
    user = claims.get("sub")
    if not isinstance(user, str):
        raise InvalidToken("token subject is not a valid account identifier")
    try:
        validate_user(user)
    except InvalidCode:
        raise InvalidToken("token subject is not a valid account identifier") from None
    agency = claim_at(claims, agency_claim)
    if agency is None:
        raise InvalidToken(f"token lacks the '{agency_claim}' claim")
    if not isinstance(agency, str):
        raise InvalidToken("token agency is not a valid agency code")
    try:
        validate_code("agency", agency)
    except InvalidCode:
        raise InvalidToken("token agency is not a valid agency code") from None
    raw_roles = claim_at(claims, roles_claim)
    names: list[object]
    if isinstance(raw_roles, str):
        names = list(raw_roles.split())
    elif isinstance(raw_roles, list):
        names = list(raw_roles)
    elif raw_roles is None:
        raise InvalidToken(f"token lacks the '{roles_claim}' claim")
    else:
        raise InvalidToken(f"token '{roles_claim}' claim is not a list of roles")
    roles = frozenset(
        Role(name) for name in names if isinstance(name, str) and name in _ROLE_VALUES
    )
    if not roles:
        raise InvalidToken("token grants no cbcm role")
    return Principal(user=user, agency=agency, roles=roles)


class LocalTokenVerifier:
    """Embedded mode: tokens from :func:`issue_token`, checked with the local public key."""

    def __init__(
        self,
        key: Ed25519PrivateKey | Ed25519PublicKey,
        *,
        audience: str = "cbcm",
        leeway: timedelta = LEEWAY,
    ) -> None:
        self._public_key = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
        self._audience = audience
        self._leeway = leeway

    def verify(self, token: str) -> Principal:
        claims = _decode(
            token,
            self._public_key,
            algorithms=[LOCAL_ALGORITHM],
            issuer=LOCAL_ISSUER,
            audience=self._audience,
            leeway=self._leeway,
        )
        return _principal(claims, agency_claim="agency", roles_claim="roles")


def _allowed_algorithms(algorithms: str | Sequence[str]) -> tuple[str, ...]:
    names = algorithms.split(",") if isinstance(algorithms, str) else list(algorithms)
    allowed = tuple(dict.fromkeys(name.strip() for name in names if name.strip()))
    if not allowed:
        raise ValueError("no signature algorithm allowed: list at least one, e.g. RS256")
    known = jwt.algorithms.get_default_algorithms()
    for name in allowed:
        if name.lower() == "none" or name.upper().startswith("HS"):
            raise ValueError(
                f"signature algorithm {name} is not allowed: tokens from an identity provider "
                "are checked with its public keys (use e.g. RS256, ES256 or EdDSA)"
            )
        if name not in known:
            raise ValueError(f"unknown signature algorithm {name}")
    return allowed


class _JwksClient(PyJWKClient):
    """A JWKS client whose keys live only as long as the key set they came in.

    The key set is cached for ``JWKS_LIFESPAN_SECONDS``, then fetched again: a key the provider
    withdraws stops being trusted within that time (the library's per-``kid`` cache would keep
    it until restart, so it is off). A ``kid`` not in the cached set fetches the set again, at
    most once per ``JWKS_REFRESH_SECONDS`` (a key the provider has just added is found at once;
    tokens with made-up ``kid`` values cannot make us fetch on every request). Any failure to
    obtain usable keys reads as the provider's fault (:class:`PyJWKClientConnectionError`).
    """

    def __init__(self, uri: str, *, timeout: float, lifespan: float) -> None:
        super().__init__(
            uri, cache_keys=False, cache_jwk_set=True, lifespan=lifespan, timeout=timeout
        )
        self._refresh_lock = threading.Lock()
        self._last_refresh = -JWKS_REFRESH_SECONDS
        self._fetch_lock = threading.Lock()
        self._failed_until = 0.0

    def get_signing_keys(self, refresh: bool = False) -> list[PyJWK]:
        # One fetch at a time; after a failed one, none for JWKS_FAILURE_SECONDS: a failing or
        # hanging provider must not hold a worker thread per request (the public endpoints
        # share them), nor be asked once per token.
        with self._fetch_lock:
            if time.monotonic() < self._failed_until:
                raise PyJWKClientConnectionError("the key set failed moments ago")
            try:
                return super().get_signing_keys(refresh)
            except (PyJWKClientError, PyJWKSetError, ValueError) as e:  # ValueError: not JSON
                self._failed_until = time.monotonic() + JWKS_FAILURE_SECONDS
                if isinstance(e, PyJWKClientConnectionError):
                    raise
                raise PyJWKClientConnectionError(f"unusable key set: {e}") from e

    def get_signing_key(self, kid: str) -> PyJWK:
        key = self.match_kid(self.get_signing_keys(), kid)
        if key is None:
            with self._refresh_lock:
                now = time.monotonic()
                if now - self._last_refresh >= JWKS_REFRESH_SECONDS:
                    self._last_refresh = now
                    key = self.match_kid(self.get_signing_keys(refresh=True), kid)
        if key is None:
            raise PyJWKClientError(f"no signing key {kid!r} in the key set")
        return key


def discover_jwks_url(issuer: str, timeout: float = JWKS_TIMEOUT_SECONDS) -> str:
    """The ``jwks_uri`` of the issuer's OpenID Connect discovery document
    (``<issuer>/.well-known/openid-configuration``), which must name the same issuer (OpenID
    Connect Discovery 1.0, section 4.3). Raises :class:`IdentityProviderUnavailable` when the
    document cannot be had or does not fit."""
    url = issuer.rstrip("/") + DISCOVERY_PATH
    try:
        # no redirect is followed: a document served from elsewhere is not the issuer's
        with _NO_REDIRECTS.open(url, timeout=timeout) as answer:
            document = json.loads(answer.read(MAX_DISCOVERY_BYTES + 1)[:MAX_DISCOVERY_BYTES])
    except (OSError, ValueError) as e:
        log.warning("identity.discovery_failed", url=url, error=type(e).__name__)
        raise IdentityProviderUnavailable("identity provider unavailable") from None
    if not isinstance(document, dict) or document.get("issuer") != issuer:
        log.error("identity.discovery_names_another_issuer", url=url)
        raise IdentityProviderUnavailable(
            "identity provider unavailable: its discovery document names another issuer"
        )
    jwks_uri = document.get("jwks_uri")
    scheme = "https://" if issuer.startswith("https://") else ("https://", "http://")
    if not isinstance(jwks_uri, str) or not jwks_uri.startswith(scheme):
        log.error("identity.discovery_without_jwks_uri", url=url)
        raise IdentityProviderUnavailable(
            "identity provider unavailable: its discovery document has no usable jwks_uri"
        )
    return jwks_uri


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_NO_REDIRECTS = urllib.request.build_opener(_RefuseRedirects())


class OidcTokenVerifier:
    """Production: tokens from the network's OIDC provider, checked against its JWKS.

    Without a JWKS URL, the issuer's OpenID Connect discovery document names it (found on
    first use). The key set is cached for five minutes and then fetched again, so a key the
    provider withdraws stops being trusted within that time. ``verify`` may block on the
    network for up to ``timeout`` seconds: call it from a worker thread, not an event loop.
    """

    def __init__(
        self,
        *,
        issuer: str,
        jwks_url: str | None = None,
        audience: str = "cbcm",
        algorithms: str | Sequence[str] = ("RS256", "ES256", "EdDSA"),
        agency_claim: str = "agency",
        roles_claim: str = "roles",
        require_access_token_type: bool = False,
        leeway: timedelta = LEEWAY,
        timeout: float = JWKS_TIMEOUT_SECONDS,
        keys_lifespan: float = JWKS_LIFESPAN_SECONDS,
    ) -> None:
        if not issuer:
            raise ValueError("the OIDC issuer must not be empty")
        if not audience:
            raise ValueError("the token audience must not be empty")
        self._algorithms = _allowed_algorithms(algorithms)
        self._issuer = issuer
        self._audience = audience
        self._agency_claim = agency_claim
        self._roles_claim = roles_claim
        self._leeway = leeway
        self._require_at_jwt = require_access_token_type
        self._timeout = timeout
        self._keys_lifespan = keys_lifespan
        self._client_lock = threading.Lock()
        self._discovery_failed_until = 0.0
        self._client: _JwksClient | None = None
        if jwks_url is not None:
            self._client = self._jwks_client(jwks_url)

    def _jwks_client(self, jwks_url: str) -> _JwksClient:
        try:
            return _JwksClient(jwks_url, timeout=self._timeout, lifespan=self._keys_lifespan)
        except PyJWKClientError as e:
            raise ValueError(f"bad JWKS URL {jwks_url!r}: {e}") from e

    def _keys(self) -> _JwksClient:
        """The JWKS client; without a configured URL, found by discovery on first use (and
        tried again on the next request while the provider cannot be reached)."""
        with self._client_lock:
            if self._client is None:
                if time.monotonic() < self._discovery_failed_until:
                    raise IdentityProviderUnavailable("identity provider unavailable")
                try:
                    found = discover_jwks_url(self._issuer, self._timeout)
                except IdentityProviderUnavailable:
                    self._discovery_failed_until = time.monotonic() + JWKS_FAILURE_SECONDS
                    raise
                self._client = self._jwks_client(found)
            return self._client

    @property
    def algorithms(self) -> tuple[str, ...]:
        return self._algorithms

    def verify(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise InvalidToken("token is malformed") from None
        if header.get("alg") not in self._algorithms:  # refused before any network call
            raise InvalidToken("token signature algorithm is not accepted")
        if self._require_at_jwt and str(header.get("typ", "")).lower() not in ACCESS_TOKEN_TYPES:
            raise InvalidToken("token is not an access token (typ at+jwt)")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidToken("token does not name its signing key (kid)")
        try:
            key = self._keys().get_signing_key(kid)
        except PyJWKClientConnectionError:
            raise IdentityProviderUnavailable("identity provider keys unavailable") from None
        except PyJWKClientError:
            raise InvalidToken(
                "token is signed with a key the identity provider does not publish"
            ) from None
        claims = _decode(
            token,
            key,
            algorithms=self._algorithms,
            issuer=self._issuer,
            audience=self._audience,
            leeway=self._leeway,
        )
        return _principal(claims, agency_claim=self._agency_claim, roles_claim=self._roles_claim)


def verifier_from_settings(settings: Settings) -> TokenVerifier:
    """OIDC when ``CBCM_OIDC_ISSUER`` is set, otherwise the local key (created if needed)."""
    if settings.oidc_issuer:
        issuer = settings.oidc_issuer
        return OidcTokenVerifier(
            issuer=issuer,
            jwks_url=settings.oidc_jwks_url,
            audience=settings.oidc_audience,
            algorithms=settings.oidc_algorithms,
            agency_claim=settings.oidc_agency_claim,
            roles_claim=settings.oidc_roles_claim,
            require_access_token_type=settings.oidc_require_access_token_type,
        )
    return LocalTokenVerifier(
        load_or_create_signing_key(settings.data_dir), audience=settings.oidc_audience
    )
