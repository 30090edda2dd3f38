"""Signing in to the staff console in tests (issue #21): the embedded set-up's development
sign-in, as a person would use it, through the page's own form.

``sign_in(client, "fp-unhcr", "unhcr", Role.FOCAL_POINT)`` leaves the client with a
session cookie and answers the session's form token (the ``csrf`` field every console
form carries). Works with a ``TestClient`` or any ``httpx.Client`` pointed at the app.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from domain.actors import Role
from projections.assistance import AssistanceProjection
from projections.inbox import InboxProjection
from projections.stats import StatisticsProjection
from services.nats.server import free_port
from tests.api_world import RECENTLY, World, project_into
from tests.node_packages import installed, node_and_npm

ON_THIS_MACHINE = ("127.0.0.1", 50000)
"""The client address of a test's browser: the development sign-in opens only to a browser on
the server itself (Starlette's ``TestClient`` says ``testclient`` otherwise)."""

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
FORM = re.compile(r'name="form" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found is not None, "no console form token on the page"
    return found.group(1)


def sign_in(client: httpx.Client, user: str, agency: str, *roles: Role, lang: str = "en") -> str:
    """Signs ``client`` in (development sign-in) and answers the session's form token."""
    page = client.get("/console/sign-in", params={"lang": lang})
    assert page.status_code == 200, page.text
    found = FORM.search(page.text)
    assert found is not None, "no development sign-in form (is an OIDC issuer configured?)"
    answer = client.post(
        "/console/sign-in/development",
        data={
            "form": found.group(1),
            "user": user,
            "agency": agency,
            "role": [role.value for role in roles],
            "lang": lang,
            "next": "/console/",
        },
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
    home = client.get("/console/")
    assert home.status_code == 200, home.text
    return csrf_of(home.text)


def project(world: World) -> None:
    """Feed the read models from the store, as the relay and the projectors would; again
    after each write."""
    project_into(world, InboxProjection(), AssistanceProjection(), StatisticsProjection())


def file_complaint(
    client: httpx.Client,
    world: World,
    *,
    narrative: str = "A distribution worker asked for sex in exchange for food.",
    survivor: dict[str, str] | None = None,
    complainant_role: str = "survivor",
    urgent: bool = False,
    received_at: str = RECENTLY,
) -> str:
    """A complaint received by unhcr's intake operator through the API: the case's id."""
    answer = client.post(
        "/v1/cases",
        json={
            "received_at": received_at,
            "channel": "hotline",
            "complainant_role": complainant_role,
            "immediate_safety_risk": urgent,
            "narrative": narrative,
            **({"survivor": survivor} if survivor else {}),
        },
        headers=world.headers("intake_operator"),
    )
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


OIDC_PROVIDER = Path(__file__).parent / "fixtures" / "oidc_provider"
OIDC_CLIENT_ID = "cbcm-console"
OIDC_RESOURCE = "https://cbcm.test/api"


@contextmanager
def oidc_provider(
    redirect_uri: str, accounts: dict[str, dict[str, object]], *, host: str = "127.0.0.1"
) -> Iterator[str]:
    """A real OpenID Connect provider (``oidc-provider`` by Node) with the console as its
    client and ``accounts`` (their agency and roles claims), named ``http://<host>:<port>``:
    its issuer."""
    node, _ = node_and_npm()
    where = installed(OIDC_PROVIDER)
    config = {
        "port": free_port(),
        "host": host,
        "client_id": OIDC_CLIENT_ID,
        "redirect_uri": redirect_uri,
        "resource": OIDC_RESOURCE,
        "accounts": accounts,
    }
    provider = subprocess.Popen(
        [node, "provider.mjs", json.dumps(config)],
        cwd=where,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert provider.stdout is not None
        line = provider.stdout.readline()
        assert line.startswith("ready "), f"the provider did not start: {line!r}"
        yield line.split()[1]
    finally:
        provider.terminate()
        provider.wait(10)


def oidc_settings(issuer: str, console: str) -> dict[str, object]:
    """The settings of a console signing in with ``oidc_provider`` at ``console``."""
    return {
        "oidc_issuer": issuer,
        "oidc_audience": OIDC_RESOURCE,
        "oidc_require_access_token_type": True,
        "console_oidc_client_id": OIDC_CLIENT_ID,
        "console_oidc_resource": OIDC_RESOURCE,
        "console_url": console,
    }
