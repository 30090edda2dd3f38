"""The console's session and forms under attack (issue #21): forged and tampered cookies,
expired and signed-out sessions, forms without the session's token or from another site,
open redirects through ``next=``, a focal point withdrawn while signed in. The embedded
set-up's development sign-in (the OIDC sign-in: ``test_console_oidc``)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from domain.actors import Role
from services.api.console.session import Sessions, safe_next
from services.bootstrap import complaint_mechanism
from services.settings import Settings
from tests.api_world import World, make_world
from tests.console_signing import FORM, ON_THIS_MACHINE, file_complaint, sign_in
from tests.world import COORDINATOR


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    data: Path = tmp_path_factory.mktemp("console-session")
    mechanism = complaint_mechanism(
        Settings(data_dir=data, event_store=f"sqlite:///{data / 'events.sqlite3'}")
    )
    # no projector runs here: a page that reads a read model answers that it is not ready
    # once this wait is over (5 s by default, which only held a core idle)
    yield make_world(data, mechanism, read_wait_seconds=0.05)
    mechanism.close()


@pytest.fixture(scope="module")
def case_id(world: World) -> str:
    with TestClient(world.api, client=ON_THIS_MACHINE) as api:
        return file_complaint(api, world)


def client(world: World) -> TestClient:
    return TestClient(world.api, client=ON_THIS_MACHINE, follow_redirects=False)


def test_a_page_without_a_session_sends_to_the_sign_in_and_back(world: World) -> None:
    answer = client(world).get("/console/inbox?overdue=1")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/sign-in?next=/console/inbox%3Foverdue%3D1"


def test_the_session_cookie_is_httponly_strict_and_every_page_is_no_store(world: World) -> None:
    browser = client(world)
    sign_in(browser, "fp-unhcr", "unhcr", Role.FOCAL_POINT)
    page = browser.get("/console/")
    assert page.headers["cache-control"] == "no-store"
    policy = page.headers["content-security-policy"]
    assert "script-src" not in policy and "default-src 'none'" in policy
    assert "frame-ancestors 'none'" in policy and "form-action 'self'" in policy
    again = client(world)
    form = FORM.search(again.get("/console/sign-in").text)
    assert form is not None
    answer = again.post(
        "/console/sign-in/development",
        data={"form": form.group(1), "user": "fp-unhcr", "agency": "unhcr", "role": "focal_point"},
    )
    cookie = answer.headers["set-cookie"].lower()
    assert cookie.startswith("cbcm-console=")
    assert "httponly" in cookie and "samesite=strict" in cookie and "max-age=" in cookie


def test_over_tls_the_cookie_is_secure_and_host_bound(world: World) -> None:
    browser = TestClient(
        world.api, client=ON_THIS_MACHINE, base_url="https://testserver", follow_redirects=False
    )
    form = FORM.search(browser.get("/console/sign-in").text)
    assert form is not None
    answer = browser.post(
        "/console/sign-in/development",
        data={"form": form.group(1), "user": "fp-unhcr", "agency": "unhcr", "role": "focal_point"},
    )
    session = next(c for c in answer.headers.get_list("set-cookie") if "cbcm-console=" in c)
    assert session.startswith("__Host-cbcm-console=")
    assert "Secure" in session and "Path=/" in session


def test_a_tampered_or_forged_cookie_is_no_session(world: World) -> None:
    browser = client(world)
    sign_in(browser, "fp-unhcr", "unhcr", Role.FOCAL_POINT)
    value = browser.cookies["cbcm-console"]
    for forged in (
        value[:-2] + ("A" if value[-2] != "A" else "B") + value[-1],  # one character changed
        value[:20] + value[21:],  # one removed
        "x" * len(value),
        Sessions(b"k" * 32, storage=None, hours=1).seal(  # type: ignore[arg-type]
            "session",
            {"sid": "s", "tok": "t", "lang": "en", "exp": time.time() + 3600, "via": "oidc"},
        ),  # sealed with another key
    ):
        attacker = client(world)
        attacker.cookies.set("cbcm-console", forged)
        answer = attacker.get("/console/inbox")
        assert answer.status_code == 303, forged
        assert answer.headers["location"].startswith("/console/sign-in")


def test_a_cookie_sealed_for_the_sign_in_is_not_a_session(world: World) -> None:
    sessions: Sessions = world.api.state.console_sessions
    browser = client(world)
    sign_in(browser, "fp-unhcr", "unhcr", Role.FOCAL_POINT)
    good = sessions.open("session", browser.cookies["cbcm-console"])
    assert good is not None
    attacker = client(world)
    attacker.cookies.set("cbcm-console", sessions.seal("signin", good))
    assert attacker.get("/console/inbox").status_code == 303


def test_an_expired_session_is_sent_to_sign_in_again(world: World) -> None:
    sessions: Sessions = world.api.state.console_sessions
    browser = client(world)
    sign_in(browser, "fp-unhcr", "unhcr", Role.FOCAL_POINT)
    payload = sessions.open("session", browser.cookies["cbcm-console"])
    assert payload is not None
    payload["exp"] = int(time.time()) - 1  # as the server would have sealed it hours ago
    browser.cookies.set("cbcm-console", sessions.seal("session", payload))
    answer = browser.get("/console/inbox")
    assert answer.status_code == 303
    assert answer.headers["location"].endswith("&ended=1")


def test_a_signed_out_session_is_dead_even_if_its_cookie_was_copied(world: World) -> None:
    browser = client(world)
    csrf = sign_in(browser, "fp-unhcr", "unhcr", Role.FOCAL_POINT)
    copied = browser.cookies["cbcm-console"]
    out = browser.post("/console/sign-out", data={"csrf": csrf})
    assert out.status_code == 303 and out.headers["location"] == "/console/sign-in?out=1"
    thief = client(world)
    thief.cookies.set("cbcm-console", copied)
    answer = thief.get("/console/inbox")
    assert answer.status_code == 303 and answer.headers["location"].startswith("/console/sign-in")


def _assess(browser: TestClient, case_id: str, **extra: str) -> tuple[int, str]:
    answer = browser.post(
        f"/console/cases/{case_id}/assess",
        data={"expected_version": "1", "category": "other_sensitive", **extra},
        headers={k: v for k, v in extra.items() if k == "Sec-Fetch-Site"},
    )
    return answer.status_code, answer.text


def test_a_form_without_the_sessions_token_records_nothing(world: World, case_id: str) -> None:
    browser = client(world)
    sign_in(browser, "fp-unhcr", "unhcr", Role.FOCAL_POINT)
    before = world.event_count()
    other = client(world)
    other_csrf = sign_in(other, "fp-unhcr-1", "unhcr", Role.FOCAL_POINT)
    for token in ("", "forged", other_csrf):  # none, made up, another session's
        status, text = _assess(browser, case_id, csrf=token)
        assert status == 403
        assert "Nothing was recorded" in text
    assert world.event_count() == before + 0


def test_a_form_posted_from_another_site_records_nothing(world: World, case_id: str) -> None:
    browser = client(world)
    csrf = sign_in(browser, "fp-unhcr", "unhcr", Role.FOCAL_POINT)
    before = world.event_count()
    answer = browser.post(
        f"/console/cases/{case_id}/assess",
        data={"csrf": csrf, "expected_version": "1", "category": "other_sensitive"},
        headers={"Sec-Fetch-Site": "cross-site"},
    )
    assert answer.status_code == 403
    assert "another site" in answer.text
    assert world.event_count() == before


def test_a_form_that_is_not_urlencoded_is_refused(world: World, case_id: str) -> None:
    browser = client(world)
    csrf = sign_in(browser, "fp-unhcr", "unhcr", Role.FOCAL_POINT)
    answer = browser.post(
        f"/console/cases/{case_id}/assess",
        content=f'{{"csrf": "{csrf}", "expected_version": 1}}',
        headers={"Content-Type": "application/json"},
    )
    assert answer.status_code == 415


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example/console",
        "https://evil.example/console/",
        "/\\evil.example",
        "/console//evil.example",
        "/console\\@evil.example",
        "/consolex",
        "/console/\r\nLocation: https://evil.example",
        "javascript:alert(1)",
        "/v1/network",
    ],
)
def test_next_never_leads_off_the_console(world: World, target: str) -> None:
    browser = client(world)
    page = browser.get("/console/sign-in", params={"next": target})
    found = FORM.search(page.text)
    assert found is not None
    assert 'name="next" value="/console/"' in page.text
    answer = browser.post(
        "/console/sign-in/development",
        data={
            "form": found.group(1),
            "user": "fp-unhcr",
            "agency": "unhcr",
            "role": "focal_point",
            "next": target,
        },
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/"


@given(st.text(max_size=60), st.sampled_from(["", "/console", "/console/", "//", "/"]))
def test_next_is_always_a_path_of_this_console(tail: str, start: str) -> None:
    target = safe_next(start + tail)
    resolved = urlsplit(urljoin("https://cbcm.example/console/x", target))
    assert resolved.netloc == "cbcm.example" and resolved.scheme == "https"
    assert resolved.path == "/console" or resolved.path.startswith("/console/")
    assert not any(ord(c) < 0x20 for c in target)


def test_next_keeps_a_console_path() -> None:
    assert safe_next("/console/cases/1?x=2") == "/console/cases/1?x=2"
    assert safe_next("/console/sign-in?next=/x") == "/console/"


def test_the_development_sign_in_says_it_is_for_development(world: World) -> None:
    page = client(world).get("/console/sign-in")
    assert "Development sign-in" in page.text
    assert "Use it only on a development or demonstration machine" in page.text


def test_the_development_sign_in_form_needs_its_own_cookie(world: World) -> None:
    """A page elsewhere cannot sign a visitor in as its own account (login CSRF)."""
    attacker = client(world)
    form = FORM.search(attacker.get("/console/sign-in").text)
    assert form is not None
    victim = client(world)
    answer = victim.post(
        "/console/sign-in/development",
        data={"form": form.group(1), "user": "fp-unhcr", "agency": "unhcr", "role": "focal_point"},
    )
    assert answer.status_code == 403
    assert "cbcm-console=" not in answer.headers.get("set-cookie", "")


def test_a_withdrawn_focal_point_loses_the_console_at_once(world: World) -> None:
    browser = client(world)
    sign_in(browser, "fp-unhcr-2", "unhcr", Role.FOCAL_POINT)
    assert browser.get("/console/").status_code == 200
    world.mechanism.withdraw_focal_point(
        actor=COORDINATOR, agency="unhcr", user="fp-unhcr-2", at=datetime.now(UTC)
    )
    answer = browser.get("/console/")
    assert answer.status_code == 403
    assert "not an appointed focal point" in answer.text


def test_an_unappointed_focal_point_cannot_sign_in(world: World) -> None:
    browser = client(world)
    form = FORM.search(browser.get("/console/sign-in").text)
    assert form is not None
    answer = browser.post(
        "/console/sign-in/development",
        data={"form": form.group(1), "user": "fp-nobody", "agency": "unhcr", "role": "focal_point"},
    )
    assert answer.status_code == 403
    assert "holds no role" in answer.text
    assert "cbcm-console=" not in answer.headers.get("set-cookie", "")


def test_bad_sign_in_fields_come_back_readable(world: World) -> None:
    browser = client(world)
    form = FORM.search(browser.get("/console/sign-in").text)
    assert form is not None
    answer = browser.post(
        "/console/sign-in/development",
        data={"form": form.group(1), "user": "<b>x y</b>", "agency": "unhcr"},
    )
    assert answer.status_code == 422
    assert "Give an account id" in answer.text
    assert "<b>x y</b>" not in answer.text  # what was typed comes back escaped


def test_the_language_follows_the_session(world: World) -> None:
    browser = client(world)
    csrf = sign_in(browser, "fp-unhcr", "unhcr", Role.FOCAL_POINT)
    answer = browser.post(
        "/console/language", data={"csrf": csrf, "lang": "fr", "next": "/console/?x=1"}
    )
    assert answer.status_code == 303 and answer.headers["location"] == "/console/?x=1"
    page = browser.get("/console/")
    assert '<html lang="fr"' in page.text
    assert "Se déconnecter" in page.text


def test_an_address_the_console_does_not_have_is_a_readable_page(world: World) -> None:
    for path in ("/console/cases/not-a-case", "/console/nowhere"):
        answer = client(world).get(path)
        assert answer.status_code == 404
        assert answer.headers["content-type"].startswith("text/html")
        assert "There is no such page." in answer.text


def test_a_navigation_from_another_site_is_asked_again_from_here(world: World) -> None:
    """SameSite=Strict withholds the session on a link from elsewhere: the answer is a page
    that opens the same console address again from this site (then with the cookie)."""
    answer = client(world).get("/console/inbox?overdue=1", headers={"Sec-Fetch-Site": "cross-site"})
    assert answer.status_code == 200
    assert 'http-equiv="refresh" content="0; url=/console/inbox?overdue=1"' in answer.text
    again = client(world).get("/console/inbox?overdue=1", headers={"Sec-Fetch-Site": "same-origin"})
    assert again.status_code == 303  # from here, without a session: the sign-in


def test_the_second_ask_never_leads_off_the_console(world: World) -> None:
    answer = client(world).get(
        "/console/inbox?x=//evil.example/", headers={"Sec-Fetch-Site": "cross-site"}
    )
    assert answer.status_code == 200
    assert 'content="0; url=/console/"' in answer.text


def test_an_issuer_without_the_consoles_client_says_what_is_missing(
    tmp_path: Path,
) -> None:
    mechanism = complaint_mechanism(
        Settings(data_dir=tmp_path, event_store=f"sqlite:///{tmp_path / 'events.sqlite3'}")
    )
    try:
        world = make_world(tmp_path, mechanism, oidc_issuer="https://id.example.org")
        page = TestClient(world.api, client=ON_THIS_MACHINE).get("/console/sign-in")
        assert page.status_code == 503
        assert "CBCM_CONSOLE_OIDC_CLIENT_ID" in page.text
        assert "Development sign-in" not in page.text
    finally:
        mechanism.close()


# Attack (review of #21, F2): without an identity provider the development sign-in makes
# anyone who reaches it anyone, the coordinator included. A console reached from another
# machine, or published over TLS, must not offer it.
@pytest.mark.parametrize(
    ("client_address", "settings"),
    [
        (("203.0.113.9", 40000), {}),
        (("10.1.2.3", 40000), {}),
        (ON_THIS_MACHINE, {"console_url": "https://cbcm.example.org"}),
        (ON_THIS_MACHINE, {"console_development_sign_in": False}),
    ],
    ids=["internet", "private-network", "https-console", "switched-off"],
)
def test_the_development_sign_in_opens_only_to_a_browser_on_the_server_itself(
    tmp_path: Path, client_address: tuple[str, int], settings: dict[str, object]
) -> None:
    mechanism = complaint_mechanism(
        Settings(data_dir=tmp_path, event_store=f"sqlite:///{tmp_path / 'events.sqlite3'}")
    )
    try:
        world = make_world(tmp_path, mechanism, **settings)
        outsider = TestClient(world.api, client=client_address, follow_redirects=False)
        page = outsider.get("/console/sign-in")
        assert page.status_code == 403
        assert "CBCM_OIDC_ISSUER" in page.text and 'name="user"' not in page.text
        # a form fetched from this machine does not help from elsewhere either
        local = TestClient(world.api, client=ON_THIS_MACHINE, follow_redirects=False)
        form = FORM.search(local.get("/console/sign-in").text)
        fields = {"user": "coord-1", "agency": "secretariat", "role": "coordinator"}
        if form is not None:
            outsider.cookies = local.cookies
            fields["form"] = form.group(1)
        answer = outsider.post("/console/sign-in/development", data=fields)
        assert answer.status_code == 403
        assert not any("cbcm-console=" in c for c in answer.headers.get_list("set-cookie"))
        assert outsider.get("/console/").status_code == 303  # still signed out
    finally:
        mechanism.close()


# Attack (review of #21, F3 and F5): a cursor of Unicode digits ('²' passes str.isdigit but
# not int) gave a bare 500 without the console's headers; a PUT or DELETE got the API's JSON.
@pytest.mark.parametrize("path", ["/console/inbox?after=²", "/console/inbox?after=٣"])
def test_odd_digits_in_a_link_get_the_page_not_a_server_error(world: World, path: str) -> None:
    browser = client(world)
    sign_in(browser, "fp-unhcr", "unhcr", Role.FOCAL_POINT)
    page = browser.get(path)
    assert page.status_code != 500  # the page (this world has no inbox yet: 503, said so)
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
def test_a_method_no_page_takes_gets_a_readable_page(
    world: World, case_id: str, method: str
) -> None:
    browser = client(world)
    sign_in(browser, "fp-unhcr", "unhcr", Role.FOCAL_POINT)
    answer = browser.request(method, f"/console/cases/{case_id}")
    assert answer.status_code == 405
    assert answer.headers["content-type"].startswith("text/html")
    assert "only opened or sent as forms" in answer.text
    assert answer.headers["allow"] == "GET, HEAD, POST"
