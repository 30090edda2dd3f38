"""Tokens from an OIDC provider, checked against keys served by a real local JWKS endpoint."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from domain.actors import Role
from services.identity.tokens import (
    IdentityProviderUnavailable,
    InvalidToken,
    OidcTokenVerifier,
    Principal,
    verifier_from_settings,
)
from services.settings import Settings

AUDIENCE = "cbcm"


@dataclass
class Provider:
    """A stand-in identity provider: its signing keys and a JWKS endpoint over HTTP."""

    issuer: str
    jwks_url: str
    rsa_key: rsa.RSAPrivateKey
    ec_key: ec.EllipticCurvePrivateKey
    server: ThreadingHTTPServer
    body: dict[str, bytes] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    redirects: dict[str, str] = field(default_factory=dict)

    def token(
        self, *, kid: str = "rsa-1", alg: str = "RS256", key: Any = None, **overrides: Any
    ) -> str:
        now = int(datetime.now(UTC).timestamp())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": AUDIENCE,
            "sub": "3f0c9a8e-5b1d-4c1e-9a57-0d6f2b1c7e42",
            "agency": "unicef",
            "roles": ["focal_point", "offline_access"],
            "iat": now,
            "exp": now + 300,
        }
        claims.update(overrides)
        claims = {name: value for name, value in claims.items() if value is not None}
        signer = key or (self.rsa_key if alg.startswith("RS") else self.ec_key)
        return jwt.encode(claims, signer, algorithm=alg, headers={"kid": kid})

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def jwk(public_key: Any, codec: Any, kid: str, alg: str) -> dict[str, Any]:
    data: dict[str, Any] = codec.to_jwk(public_key, as_dict=True)
    return {**data, "kid": kid, "alg": alg, "use": "sig"}


@pytest.fixture(scope="module")
def keys() -> tuple[rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey]:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048), ec.generate_private_key(
        ec.SECP256R1()
    )


@pytest.fixture
def provider(keys: tuple[rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey]) -> Iterator[Provider]:
    rsa_key, ec_key = keys
    jwks = {
        "keys": [
            jwk(rsa_key.public_key(), RSAAlgorithm, "rsa-1", "RS256"),
            jwk(ec_key.public_key(), ECAlgorithm, "ec-1", "ES256"),
        ]
    }
    body: dict[str, bytes] = {"/.well-known/jwks.json": json.dumps(jwks).encode()}
    requests: list[str] = []
    redirects: dict[str, str] = {}
    issuer_path = "/realms/psea"

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append(self.path)
            if self.path in redirects:
                self.send_response(302)
                self.send_header("Location", redirects[self.path])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            content = body.get(self.path)
            if content is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    # OpenID Connect discovery, as Keycloak, Entra ID and Okta publish it: the key set is
    # wherever the issuer's discovery document says, not at a path we guess
    body[f"{issuer_path}/.well-known/openid-configuration"] = json.dumps(
        {"issuer": f"{base}{issuer_path}", "jwks_uri": f"{base}/.well-known/jwks.json"}
    ).encode()
    body["/.well-known/openid-configuration"] = json.dumps(
        {"issuer": f"{base}/", "jwks_uri": f"{base}/.well-known/jwks.json"}
    ).encode()
    p = Provider(
        issuer=f"{base}{issuer_path}",
        jwks_url=f"{base}/.well-known/jwks.json",
        rsa_key=rsa_key,
        ec_key=ec_key,
        server=server,
        body=body,
        requests=requests,
        redirects=redirects,
    )
    try:
        yield p
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def verifier_for(provider: Provider, **options: Any) -> OidcTokenVerifier:
    return OidcTokenVerifier(
        issuer=provider.issuer, jwks_url=provider.jwks_url, audience=AUDIENCE, **options
    )


# ------------------------------------------------------------------------------- accepted


@pytest.mark.parametrize(("kid", "alg"), [("rsa-1", "RS256"), ("ec-1", "ES256")])
def test_a_token_signed_by_a_published_key_verifies(provider: Provider, kid: str, alg: str) -> None:
    principal = verifier_for(provider).verify(provider.token(kid=kid, alg=alg))
    # the provider's own roles (offline_access) are ignored
    assert principal == Principal(
        user="3f0c9a8e-5b1d-4c1e-9a57-0d6f2b1c7e42",
        agency="unicef",
        roles=frozenset({Role.FOCAL_POINT}),
    )


def test_claim_names_and_the_jwks_url_come_from_the_settings(
    provider: Provider, tmp_path: Path
) -> None:
    # given a provider that puts cbcm's agency and roles in claims of its own naming,
    # and settings naming only the issuer at the server root (JWKS found by discovery)
    root = provider.jwks_url.removesuffix("/.well-known/jwks.json")
    settings = Settings(
        data_dir=tmp_path,
        oidc_issuer=root + "/",
        oidc_jwks_url=None,
        oidc_algorithms="ES256",
        oidc_agency_claim="cbcm_agency",
        oidc_roles_claim="cbcm_roles",
    )
    token = provider.token(
        kid="ec-1",
        alg="ES256",
        iss=root + "/",
        agency=None,
        roles=None,
        cbcm_agency="wfp",
        cbcm_roles="coordinator auditor",
    )
    # when it is verified by the verifier the settings choose
    principal = verifier_from_settings(settings).verify(token)
    # then the agency and the space-separated roles are read from those claims
    assert principal.agency == "wfp"
    assert principal.roles == {Role.COORDINATOR, Role.AUDITOR}
    assert provider.requests == ["/.well-known/openid-configuration", "/.well-known/jwks.json"]


def test_keys_are_fetched_once_and_survive_a_short_provider_outage(provider: Provider) -> None:
    verifier = verifier_for(provider)
    verifier.verify(provider.token())
    provider.stop()
    # the provider is gone, but its keys are cached
    assert verifier.verify(provider.token(kid="ec-1", alg="ES256")).agency == "unicef"
    assert provider.requests == ["/.well-known/jwks.json"]


# -------------------------------------------------------------------------------- refused


def test_a_token_with_an_unknown_key_id_is_refused(provider: Provider) -> None:
    with pytest.raises(InvalidToken, match="does not publish") as refused:
        verifier_for(provider).verify(provider.token(kid="rsa-2"))
    assert not isinstance(refused.value, IdentityProviderUnavailable)


def test_a_token_signed_by_another_key_under_a_published_key_id_is_refused(
    provider: Provider,
) -> None:
    impostor = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(InvalidToken, match="signature"):
        verifier_for(provider).verify(provider.token(kid="rsa-1", key=impostor))


def test_an_algorithm_outside_the_allow_list_is_refused(provider: Provider) -> None:
    # given a network that accepts ES256 only
    verifier = verifier_for(provider, algorithms="ES256")
    # then a correctly signed RS256 token is refused, without asking the provider
    with pytest.raises(InvalidToken, match="algorithm"):
        verifier.verify(provider.token(kid="rsa-1", alg="RS256"))
    assert provider.requests == []
    # while an ES256 token passes
    assert verifier.verify(provider.token(kid="ec-1", alg="ES256")).agency == "unicef"


def test_a_token_claiming_another_keys_algorithm_is_refused(provider: Provider) -> None:
    # an RS256 signature presented under the EC key's id
    with pytest.raises(InvalidToken, match="algorithm"):
        verifier_for(provider).verify(provider.token(kid="ec-1", alg="RS256"))


def test_a_token_from_another_issuer_is_refused(provider: Provider) -> None:
    token = provider.token(iss="https://other-idp.example.org/realms/psea")
    with pytest.raises(InvalidToken, match="issuer"):
        verifier_for(provider).verify(token)


def test_a_token_for_another_audience_is_refused(provider: Provider) -> None:
    with pytest.raises(InvalidToken, match="audience"):
        verifier_for(provider).verify(provider.token(aud="account"))


def test_a_token_without_an_agency_is_refused(provider: Provider) -> None:
    with pytest.raises(InvalidToken, match="'agency'"):
        verifier_for(provider).verify(provider.token(agency=None))


def test_a_token_without_expiry_is_refused(provider: Provider) -> None:
    with pytest.raises(InvalidToken, match="'exp'"):
        verifier_for(provider).verify(provider.token(exp=None))


# ----------------------------------------------------------------------- provider trouble


def test_an_unreachable_jwks_means_the_provider_is_unavailable(provider: Provider) -> None:
    verifier = verifier_for(provider)
    token = provider.token()
    provider.stop()
    with pytest.raises(IdentityProviderUnavailable, match="identity provider keys unavailable"):
        verifier.verify(token)


@pytest.mark.parametrize("body", [b"<html>maintenance</html>", b"[]", b'{"keys": []}'])
def test_a_jwks_endpoint_serving_no_usable_keys_means_the_provider_is_unavailable(
    provider: Provider, body: bytes
) -> None:
    provider.body["/.well-known/jwks.json"] = body
    with pytest.raises(IdentityProviderUnavailable):
        verifier_for(provider).verify(provider.token())


def test_a_missing_jwks_document_means_the_provider_is_unavailable(provider: Provider) -> None:
    verifier = OidcTokenVerifier(
        issuer=provider.issuer, jwks_url=provider.jwks_url + "-moved", audience=AUDIENCE
    )
    with pytest.raises(IdentityProviderUnavailable):
        verifier.verify(provider.token())


# ------------------------------------------------------------- a real provider's habits


def test_the_key_set_is_found_by_oidc_discovery_under_the_issuer(provider: Provider) -> None:
    # given only the issuer, as for Keycloak (<issuer> = .../realms/<realm>)
    verifier = OidcTokenVerifier(issuer=provider.issuer, audience=AUDIENCE)
    # then the first token finds the key set through the discovery document
    assert verifier.verify(provider.token()).agency == "unicef"
    assert provider.requests == [
        "/realms/psea/.well-known/openid-configuration",
        "/.well-known/jwks.json",
    ]


def test_a_discovery_document_naming_another_issuer_is_not_trusted(provider: Provider) -> None:
    # given a discovery document (a misconfigured proxy, or an impostor) for another issuer
    provider.body["/realms/psea/.well-known/openid-configuration"] = json.dumps(
        {"issuer": "https://evil.example/realms/psea", "jwks_uri": provider.jwks_url}
    ).encode()
    verifier = OidcTokenVerifier(issuer=provider.issuer, audience=AUDIENCE)
    # then no key is taken from it: the provider counts as unavailable (503), not as valid
    with pytest.raises(IdentityProviderUnavailable, match="another issuer"):
        verifier.verify(provider.token())
    assert "/.well-known/jwks.json" not in provider.requests


def test_a_rotated_key_is_taken_at_once_and_a_withdrawn_one_stops_being_trusted(
    provider: Provider,
) -> None:
    verifier = verifier_for(provider, keys_lifespan=0.2)
    assert verifier.verify(provider.token(kid="rsa-1")).agency == "unicef"
    # when the provider rotates: a new key is published and the old one withdrawn
    new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    provider.body["/.well-known/jwks.json"] = json.dumps(
        {"keys": [jwk(new_key.public_key(), RSAAlgorithm, "rsa-2", "RS256")]}
    ).encode()
    # then a token signed with the new key verifies at once (its kid fetches the set again)
    assert verifier.verify(provider.token(kid="rsa-2", key=new_key)).agency == "unicef"
    # and, once the key set's lifespan has passed, the withdrawn key is refused
    time.sleep(0.25)
    with pytest.raises(InvalidToken, match="does not publish"):
        verifier.verify(provider.token(kid="rsa-1"))


def test_tokens_with_made_up_key_ids_cannot_make_us_flood_the_provider(
    provider: Provider,
) -> None:
    verifier = verifier_for(provider)
    verifier.verify(provider.token())
    # when an attacker sends tokens naming keys that do not exist, one after another
    for index in range(50):
        with pytest.raises(InvalidToken):
            verifier.verify(provider.token(kid=f"made-up-{index}"))
    # then the key set was fetched again once, not once per token
    assert provider.requests.count("/.well-known/jwks.json") <= 2


def test_roles_and_agency_can_be_read_from_nested_claims(provider: Provider) -> None:
    # given Keycloak's layout: realm roles under realm_access.roles
    verifier = verifier_for(
        provider, roles_claim="realm_access.roles", agency_claim="org.agency_code"
    )
    token = provider.token(
        roles=None,
        agency=None,
        realm_access={"roles": ["offline_access", "focal_point"]},
        org={"agency_code": "wfp"},
    )
    principal = verifier.verify(token)
    assert (principal.agency, principal.roles) == ("wfp", {Role.FOCAL_POINT})
    # and a missing step is a missing claim, said by its path
    with pytest.raises(InvalidToken, match=r"realm_access\.roles"):
        verifier.verify(provider.token(realm_access={"other": []}, org={"agency_code": "wfp"}))


def test_an_id_token_is_refused_where_access_tokens_are_required(provider: Provider) -> None:
    verifier = verifier_for(provider, require_access_token_type=True)
    # an ID token of the same provider (typ JWT) is not an access token
    with pytest.raises(InvalidToken, match="access token"):
        verifier.verify(provider.token())
    access = jwt.encode(
        jwt.decode(provider.token(), options={"verify_signature": False}),
        provider.rsa_key,
        algorithm="RS256",
        headers={"kid": "rsa-1", "typ": "at+jwt"},
    )
    assert verifier.verify(access).agency == "unicef"


def test_a_failing_provider_is_asked_once_not_once_per_request(provider: Provider) -> None:
    # given a provider whose key set cannot be had (the endpoint answers 404)
    del provider.body["/.well-known/jwks.json"]
    verifier = verifier_for(provider)
    # when 50 requests arrive with tokens (junk ones, as an attacker would send)
    for _ in range(50):
        with pytest.raises(IdentityProviderUnavailable):
            verifier.verify(provider.token())
    # then the key set was asked for once: a failure is remembered for a while (503 at once)
    assert provider.requests.count("/.well-known/jwks.json") == 1


def test_a_failing_discovery_is_asked_once_not_once_per_request(provider: Provider) -> None:
    del provider.body["/realms/psea/.well-known/openid-configuration"]
    verifier = OidcTokenVerifier(issuer=provider.issuer, audience=AUDIENCE)
    for _ in range(50):
        with pytest.raises(IdentityProviderUnavailable) as refused:
            verifier.verify(provider.token())
        # what a caller is told names no internal address
        assert "127.0.0.1" not in str(refused.value)
    assert provider.requests.count("/realms/psea/.well-known/openid-configuration") == 1


def test_a_discovery_document_reached_by_a_redirect_is_not_trusted(provider: Provider) -> None:
    # given the issuer's discovery path redirecting to a document elsewhere that names the
    # right issuer and the attacker's key set
    elsewhere = "/elsewhere/openid-configuration"
    provider.body[elsewhere] = json.dumps(
        {"issuer": provider.issuer, "jwks_uri": provider.jwks_url}
    ).encode()
    root = provider.jwks_url.removesuffix("/.well-known/jwks.json")
    provider.redirects["/realms/psea/.well-known/openid-configuration"] = root + elsewhere
    verifier = OidcTokenVerifier(issuer=provider.issuer, audience=AUDIENCE)
    # then the redirect is not followed and no key is taken
    with pytest.raises(IdentityProviderUnavailable):
        verifier.verify(provider.token())
    assert elsewhere not in provider.requests


@pytest.mark.parametrize("everyone", ["0.0.0.0/0", "::/0"])
def test_a_trusted_proxy_list_that_trusts_every_address_is_refused(
    everyone: str, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="every address"):
        Settings(data_dir=tmp_path, trusted_proxies=f"10.0.0.1,{everyone}")
