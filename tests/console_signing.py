"""Signing in to the staff console in tests (issue #21): the embedded set-up's development
sign-in, as a person would use it, through the page's own form.

``sign_in(client, "fp-unhcr", "unhcr", Role.FOCAL_POINT)`` leaves the client with a
session cookie and answers the session's form token (the ``csrf`` field every console
form carries). Works with a ``TestClient`` or any ``httpx.Client`` pointed at the app.
"""

from __future__ import annotations

import re

import httpx

from domain.actors import Role

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
