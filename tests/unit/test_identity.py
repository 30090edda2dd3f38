"""Bearer tokens in embedded mode: what `cbcm token` issues and what the API accepts."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import stat
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from domain.actors import Role
from services.identity.tokens import (
    LOCAL_ISSUER,
    IdentityProviderUnavailable,
    InvalidToken,
    LocalTokenVerifier,
    OidcTokenVerifier,
    Principal,
    issue_token,
    load_or_create_signing_key,
    signing_key_path,
    verifier_from_settings,
)
from services.settings import Settings

CBCM = Path(sys.executable).parent / "cbcm"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(header: dict[str, Any], claims: dict[str, Any], sign: Any = None) -> str:
    """A compact JWT built by hand, so tests can make what PyJWT refuses to encode."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    signature = b"" if sign is None else sign(signing_input.encode())
    return f"{signing_input}.{b64(signature)}"


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(datetime.now(UTC).timestamp())
    base: dict[str, Any] = {
        "iss": LOCAL_ISSUER,
        "aud": "cbcm",
        "sub": "u-1042",
        "agency": "unhcr",
        "roles": ["focal_point"],
        "iat": now,
        "nbf": now,
        "exp": now + 600,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def key(data_dir: Path) -> Ed25519PrivateKey:
    return load_or_create_signing_key(data_dir)


@pytest.fixture
def verifier(key: Ed25519PrivateKey) -> LocalTokenVerifier:
    return LocalTokenVerifier(key)


def signed(key: Ed25519PrivateKey, payload: dict[str, Any]) -> str:
    return jwt.encode(payload, key, algorithm="EdDSA")


# ------------------------------------------------------------------------- accepted tokens


def test_an_issued_token_verifies_to_the_user_agency_and_roles(
    data_dir: Path, verifier: LocalTokenVerifier
) -> None:
    # given a token issued for a focal point who is also an auditor
    token = issue_token(
        data_dir, user="u-1042", agency="unhcr", roles=[Role.FOCAL_POINT, Role.AUDITOR]
    )
    # when the API verifies it
    principal = verifier.verify(token)
    # then it names exactly that account, agency and those roles
    assert principal == Principal(
        user="u-1042", agency="unhcr", roles=frozenset({Role.FOCAL_POINT, Role.AUDITOR})
    )


def test_a_roles_claim_may_be_one_space_separated_string(
    key: Ed25519PrivateKey, verifier: LocalTokenVerifier
) -> None:
    token = signed(key, claims(roles="coordinator auditor"))
    assert verifier.verify(token).roles == {Role.COORDINATOR, Role.AUDITOR}


def test_a_token_verifies_with_the_key_loaded_again_from_disk(data_dir: Path) -> None:
    # given a token issued by one process
    token = issue_token(data_dir, user="u-7", agency="wfp", roles=[Role.INTAKE_OPERATOR])
    # when another process loads the key from the data dir
    principal = verifier_from_settings(Settings(data_dir=data_dir, oidc_issuer=None)).verify(token)
    # then it accepts the token
    assert principal.user == "u-7"


# -------------------------------------------------------------------------- refused tokens


def test_an_expired_token_is_refused(data_dir: Path, verifier: LocalTokenVerifier) -> None:
    # given a token that expired an hour ago (well beyond the 30 s leeway)
    token = issue_token(
        data_dir,
        user="u-1",
        agency="unhcr",
        roles=[Role.FOCAL_POINT],
        now=datetime.now(UTC) - timedelta(hours=2),
        ttl=timedelta(hours=1),
    )
    with pytest.raises(InvalidToken, match="expired"):
        verifier.verify(token)


def test_a_token_expired_within_the_leeway_is_still_accepted(
    key: Ed25519PrivateKey, verifier: LocalTokenVerifier
) -> None:
    now = int(datetime.now(UTC).timestamp())
    token = signed(key, claims(iat=now - 600, nbf=now - 600, exp=now - 10))
    assert verifier.verify(token).user == "u-1042"


def test_a_token_for_another_audience_is_refused(
    data_dir: Path, verifier: LocalTokenVerifier
) -> None:
    token = issue_token(
        data_dir, user="u-1", agency="unhcr", roles=[Role.FOCAL_POINT], audience="other-app"
    )
    with pytest.raises(InvalidToken, match="audience"):
        verifier.verify(token)


def test_a_token_from_another_issuer_is_refused(
    key: Ed25519PrivateKey, verifier: LocalTokenVerifier
) -> None:
    token = signed(key, claims(iss="https://idp.example.org"))
    with pytest.raises(InvalidToken, match="issuer"):
        verifier.verify(token)


def test_a_token_signed_by_another_key_is_refused(verifier: LocalTokenVerifier) -> None:
    token = signed(Ed25519PrivateKey.generate(), claims())
    with pytest.raises(InvalidToken, match="signature"):
        verifier.verify(token)


def test_a_token_whose_payload_was_changed_is_refused(
    data_dir: Path, verifier: LocalTokenVerifier
) -> None:
    # given a real token for an intake operator, whose payload is rewritten to coordinator
    token = issue_token(data_dir, user="u-1", agency="unhcr", roles=[Role.INTAKE_OPERATOR])
    header, payload, signature = token.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    body["roles"] = ["coordinator"]
    tampered = f"{header}.{b64(json.dumps(body).encode())}.{signature}"
    with pytest.raises(InvalidToken, match="signature"):
        verifier.verify(tampered)


def test_an_unsigned_alg_none_token_is_refused(verifier: LocalTokenVerifier) -> None:
    token = forged({"alg": "none", "typ": "JWT"}, claims())
    with pytest.raises(InvalidToken, match="algorithm"):
        verifier.verify(token)


def test_an_hs256_token_keyed_with_the_public_key_is_refused(
    key: Ed25519PrivateKey, verifier: LocalTokenVerifier
) -> None:
    # given an attacker who knows the public key and uses it as an HMAC secret
    for public in (
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw),
    ):
        token = forged(
            {"alg": "HS256", "typ": "JWT"},
            claims(roles=["coordinator"]),
            lambda data, secret=public: hmac.new(secret, data, hashlib.sha256).digest(),
        )
        with pytest.raises(InvalidToken, match="algorithm"):
            verifier.verify(token)


def test_a_token_without_expiry_is_refused(
    key: Ed25519PrivateKey, verifier: LocalTokenVerifier
) -> None:
    token = signed(key, claims(exp=None))
    with pytest.raises(InvalidToken, match="'exp'"):
        verifier.verify(token)


def test_unknown_roles_are_ignored(key: Ed25519PrivateKey, verifier: LocalTokenVerifier) -> None:
    token = signed(key, claims(roles=["admin", "auditor", "superuser"]))
    assert verifier.verify(token).roles == {Role.AUDITOR}


def test_a_token_with_no_known_role_is_refused(
    key: Ed25519PrivateKey, verifier: LocalTokenVerifier
) -> None:
    token = signed(key, claims(roles=["admin", "superuser"]))
    with pytest.raises(InvalidToken, match="no cbcm role"):
        verifier.verify(token)


@pytest.mark.parametrize("subject", ["jane doe", "jane.doe@example.org", "", 42])
def test_a_subject_that_is_not_an_account_identifier_is_refused(
    key: Ed25519PrivateKey, verifier: LocalTokenVerifier, subject: object
) -> None:
    token = forged({"alg": "EdDSA", "typ": "JWT"}, claims(sub=subject), sign=key.sign)
    with pytest.raises(InvalidToken) as refused:
        verifier.verify(token)
    # and the refusal does not repeat the personal data it was given
    assert "jane" not in str(refused.value)


def test_an_invalid_agency_code_is_refused(
    key: Ed25519PrivateKey, verifier: LocalTokenVerifier
) -> None:
    token = signed(key, claims(agency="Save the Children"))
    with pytest.raises(InvalidToken, match="agency") as refused:
        verifier.verify(token)
    assert "Save" not in str(refused.value)


def test_a_malformed_token_is_refused(verifier: LocalTokenVerifier) -> None:
    with pytest.raises(InvalidToken, match="malformed"):
        verifier.verify("not-a-jwt")


# ------------------------------------------------------------------------------ issuing


@pytest.mark.parametrize(
    ("user", "agency", "roles", "ttl", "message"),
    [
        ("jane doe", "unhcr", [Role.AUDITOR], timedelta(minutes=5), "user"),
        ("jane@example.org", "unhcr", [Role.AUDITOR], timedelta(minutes=5), "user"),
        ("u-1", "UNHCR", [Role.AUDITOR], timedelta(minutes=5), "agency"),
        ("u-1", "unhcr", [], timedelta(minutes=5), "role"),
        ("u-1", "unhcr", ["admin"], timedelta(minutes=5), "role"),
        ("u-1", "unhcr", [Role.AUDITOR], timedelta(0), "lifetime"),
        ("u-1", "unhcr", [Role.AUDITOR], timedelta(hours=12, seconds=1), "lifetime"),
    ],
)
def test_issuing_refuses_what_could_not_be_verified(
    data_dir: Path, user: str, agency: str, roles: list[Role], ttl: timedelta, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        issue_token(data_dir, user=user, agency=agency, roles=roles, ttl=ttl)
    # and nothing was written for a refused request
    assert not signing_key_path(data_dir).exists()


# ------------------------------------------------------------------------------ the key


def test_the_signing_key_is_private_to_its_owner_and_reused(data_dir: Path) -> None:
    # when the key is asked for twice
    first = load_or_create_signing_key(data_dir)
    second = load_or_create_signing_key(data_dir)
    # then it was created once, readable by its owner only
    path = signing_key_path(data_dir)
    assert path == data_dir / "keys" / "token-signing-key.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert first.private_bytes_raw() == second.private_bytes_raw()
    # and a token issued later still verifies with the first key
    token = issue_token(data_dir, user="u-1", agency="unhcr", roles=[Role.AUDITOR])
    assert LocalTokenVerifier(first).verify(token).user == "u-1"


def test_a_file_that_is_not_an_ed25519_key_is_reported(data_dir: Path) -> None:
    path = signing_key_path(data_dir)
    path.parent.mkdir(parents=True)
    path.write_text("not a key\n")
    with pytest.raises(ValueError, match="private key"):
        load_or_create_signing_key(data_dir)


def test_concurrent_first_use_ends_with_one_key(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given two callers that both find no key and generate one at the same moment
    callers = 2
    together = threading.Barrier(callers, timeout=2)
    generate = Ed25519PrivateKey.generate

    def generate_together() -> Ed25519PrivateKey:
        # an implementation may serialise first use: then nobody waits here for long
        with contextlib.suppress(threading.BrokenBarrierError):
            together.wait()
        return generate()

    monkeypatch.setattr(Ed25519PrivateKey, "generate", staticmethod(generate_together))
    tokens: list[str] = []
    errors: list[BaseException] = []

    def issue(n: int) -> None:
        try:
            tokens.append(
                issue_token(data_dir, user=f"u-{n}", agency="unhcr", roles=[Role.AUDITOR])
            )
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=issue, args=(n,)) for n in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    # then one key is on disk, no temporary file is left, and both tokens verify with it
    assert [p.name for p in signing_key_path(data_dir).parent.iterdir()] == [
        "token-signing-key.pem"
    ]
    monkeypatch.undo()
    verifier = LocalTokenVerifier(load_or_create_signing_key(data_dir))
    assert sorted(verifier.verify(t).user for t in tokens) == ["u-0", "u-1"]


# ------------------------------------------------------------------------ configuration


@pytest.mark.parametrize("algorithms", ["RS256,HS256", "none", "ES256, hs512", " , ", "RS265"])
def test_an_oidc_allow_list_with_a_shared_secret_or_no_signature_is_refused(
    algorithms: str,
) -> None:
    with pytest.raises(ValueError, match="algorithm"):
        OidcTokenVerifier(
            issuer="https://idp.example.org",
            jwks_url="https://idp.example.org/jwks",
            algorithms=algorithms,
        )


def test_settings_with_an_issuer_choose_the_identity_provider(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, oidc_issuer="https://idp.example.org/realms/psea/")
    verifier = verifier_from_settings(settings)
    assert isinstance(verifier, OidcTokenVerifier)
    assert verifier.algorithms == ("RS256", "ES256", "EdDSA")
    # and no local signing key is created
    assert not signing_key_path(tmp_path).exists()


def test_identity_provider_unavailable_is_a_refused_token() -> None:
    # the API may answer it with 503, but code that only knows InvalidToken still refuses
    assert issubclass(IdentityProviderUnavailable, InvalidToken)


# ------------------------------------------------------------------------------ cbcm token


def run_cbcm(data_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CBCM_")}
    return subprocess.run(
        [str(CBCM), "token", *args],
        env={**clean, "CBCM_DATA_DIR": str(data_dir), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cbcm_token_prints_a_token_the_api_accepts(data_dir: Path) -> None:
    done = run_cbcm(
        data_dir,
        "--user",
        "u-1042",
        "--agency",
        "unhcr",
        "--role",
        "focal_point",
        "--role",
        "coordinator",
        "--minutes",
        "30",
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1
    principal = LocalTokenVerifier(load_or_create_signing_key(data_dir)).verify(lines[0])
    assert principal == Principal(
        user="u-1042", agency="unhcr", roles=frozenset({Role.FOCAL_POINT, Role.COORDINATOR})
    )
    lifetime = jwt.decode(lines[0], options={"verify_signature": False})
    assert lifetime["exp"] - lifetime["iat"] == 30 * 60


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--role", "admin"], {}, "unknown role: use one or more of intake_operator"),
        (["--role", "auditor", "--minutes", "721"], {}, "--minutes"),
        (
            ["--role", "auditor"],
            {"CBCM_OIDC_ISSUER": "https://idp.example.org"},
            "identity provider",
        ),
    ],
)
def test_cbcm_token_refuses_in_one_line(
    data_dir: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    done = run_cbcm(data_dir, "--user", "u-1", "--agency", "unhcr", *args, **env)
    assert done.returncode == 2
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert not signing_key_path(data_dir).exists()


def test_cbcm_token_refuses_a_name_as_user_without_repeating_it(data_dir: Path) -> None:
    done = run_cbcm(data_dir, "--user", "Jane Doe", "--agency", "unhcr", "--role", "auditor")
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1
    assert "Jane" not in done.stderr
