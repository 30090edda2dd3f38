"""Signing in to the console with the network's OIDC provider (issue #21), against a real
provider: the certified ``oidc-provider`` package run by Node (``tests/fixtures/
oidc_provider``), the console on a real server. Authorization code with PKCE, state and
nonce; the access token verified by the API's own verifier. And the attacks: a stolen code
redeemed in the attacker's own sign-in (PKCE), a replayed callback, a forged state, the
development sign-in, which must not exist while an issuer is configured."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import parse_qs, urljoin, urlparse

import httpx
import pytest
import uvicorn

from services.api.serving import server_config
from services.bootstrap import complaint_mechanism
from services.nats.server import free_port
from services.settings import Settings
from tests.api_world import World, make_world
from tests.console_signing import oidc_provider, oidc_settings

ACCOUNTS = {
    "fp-unhcr": {"agency": "unhcr", "roles": ["focal_point"]},
    "fp-withdrawn": {"agency": "unhcr", "roles": ["focal_point"]},
    "someone": {"agency": "unhcr", "roles": []},
}


@dataclass
class Stack:
    world: World
    console: str
    issuer: str


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    console_port = free_port()
    console = f"http://127.0.0.1:{console_port}"
    with oidc_provider(f"{console}/console/sign-in/callback", ACCOUNTS) as issuer:
        data = tmp_path_factory.mktemp("console-oidc")
        mechanism = complaint_mechanism(
            Settings(data_dir=data, event_store=f"sqlite:///{data / 'events.sqlite3'}")
        )
        world = make_world(data, mechanism, **oidc_settings(issuer, console))
        config = server_config(world.api, "127.0.0.1", console_port)
        config.timeout_graceful_shutdown = 1
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            assert thread.is_alive(), "the console did not start"
            time.sleep(0.02)
        try:
            yield Stack(world, console, issuer)
        finally:
            server.should_exit = True
            thread.join(10)
            mechanism.close()


def browser() -> httpx.Client:
    """A browser as far as cookies and redirects go (both followed by hand)."""
    return httpx.Client(follow_redirects=False, timeout=10)


def go(client: httpx.Client, url: str) -> httpx.Response:
    answer = client.get(url)
    assert answer.status_code in (200, 302, 303), f"{url}: {answer.status_code} {answer.text}"
    return answer


def to_provider_login(client: httpx.Client, stack: Stack, next_path: str = "/console/") -> str:
    """Starts a sign-in at the console and follows it to the provider's login form: the
    form's page URL."""
    start = go(client, f"{stack.console}/console/sign-in/start?next={next_path}")
    assert start.status_code == 303
    authorize = start.headers["location"]
    assert authorize.startswith(stack.issuer)
    query = parse_qs(urlparse(authorize).query)
    assert query["code_challenge_method"] == ["S256"] and query["code_challenge"][0]
    assert query["state"][0] and query["nonce"][0]
    interaction = go(client, authorize)
    return urljoin(authorize, interaction.headers["location"])


def log_in_at_provider(client: httpx.Client, login_page: str, account: str) -> str:
    """Types the account at the provider's login form and follows it back: the callback URL
    the provider sends the browser to (not opened yet)."""
    page = go(client, login_page)
    action = re.search(r'<form[^>]*action="([^"]+)"', page.text)
    assert action is not None, page.text
    fields = dict(
        re.findall(r'<input[^>]*type="hidden"[^>]*name="([^"]+)"[^>]*value="([^"]*)"', page.text)
    )
    fields.update({"login": account, "password": "any"})
    answer = client.post(urljoin(login_page, action.group(1)), data=fields)
    url = urljoin(login_page, answer.headers["location"])
    for _ in range(10):
        if "/console/sign-in/callback" in url:
            return url
        answer = go(client, url)
        url = urljoin(url, answer.headers["location"])
    raise AssertionError(f"the provider did not send back to the console: {url}")


def sign_in_with_provider(
    stack: Stack, account: str, next_path: str = "/console/"
) -> tuple[httpx.Client, httpx.Response]:
    client = browser()
    callback = log_in_at_provider(client, to_provider_login(client, stack, next_path), account)
    return client, client.get(callback)


def test_staff_sign_in_with_the_network_provider(stack: Stack) -> None:
    client, answer = sign_in_with_provider(stack, "fp-unhcr", "/console/?from=provider")
    assert answer.status_code == 200
    # the page moves on by itself (a Strict cookie is not sent on the provider's redirect)
    assert 'http-equiv="refresh" content="0; url=/console/?from=provider"' in answer.text
    home = client.get(f"{stack.console}/console/?from=provider")
    assert home.status_code == 200
    assert "Signed in as fp-unhcr, unhcr" in home.text
    assert "Focal point" in home.text


def test_the_sign_in_page_offers_the_provider_and_no_development_form(stack: Stack) -> None:
    page = browser().get(f"{stack.console}/console/sign-in")
    assert "Sign in with your organisation" in page.text
    assert "Development sign-in" not in page.text
    assert 'name="form"' not in page.text


def test_the_development_sign_in_does_not_exist_with_an_issuer(stack: Stack) -> None:
    client = browser()
    answer = client.post(
        f"{stack.console}/console/sign-in/development",
        data={"form": "x", "user": "fp-unhcr", "agency": "unhcr", "role": "coordinator"},
    )
    assert answer.status_code == 404
    assert "cbcm-console=" not in answer.headers.get("set-cookie", "")
    assert client.get(f"{stack.console}/console/").status_code == 303


def test_a_stolen_code_is_useless_in_the_attackers_own_sign_in(stack: Stack) -> None:
    """PKCE: the code was issued for the victim's verifier; the attacker's sign-in holds
    another one, and the provider refuses the exchange."""
    victim = browser()
    stolen = log_in_at_provider(victim, to_provider_login(victim, stack), "fp-unhcr")
    code = parse_qs(urlparse(stolen).query)["code"][0]
    attacker = browser()
    start = go(attacker, f"{stack.console}/console/sign-in/start")
    own_state = parse_qs(urlparse(start.headers["location"]).query)["state"][0]
    answer = attacker.get(
        f"{stack.console}/console/sign-in/callback",
        params={"code": code, "state": own_state, "iss": stack.issuer},
    )
    assert answer.status_code == 400
    assert "could not be completed" in answer.text
    assert attacker.get(f"{stack.console}/console/").status_code == 303


def test_a_callback_with_another_state_is_refused(stack: Stack) -> None:
    client = browser()
    callback = log_in_at_provider(client, to_provider_login(client, stack), "fp-unhcr")
    forged = callback.replace("state=", "state=x")
    answer = client.get(forged)
    assert answer.status_code == 400
    assert client.get(f"{stack.console}/console/").status_code == 303


def test_a_callback_without_the_sign_in_cookie_is_refused(stack: Stack) -> None:
    """Login CSRF: a callback the attacker made the victim's browser open carries no
    pre-sign-in cookie of the victim's."""
    attacker = browser()
    callback = log_in_at_provider(attacker, to_provider_login(attacker, stack), "fp-unhcr")
    victim = browser()
    answer = victim.get(callback)
    assert answer.status_code == 400
    assert "cbcm-console=" not in answer.headers.get("set-cookie", "")


def test_a_replayed_callback_opens_no_second_session(stack: Stack) -> None:
    client = browser()
    callback = log_in_at_provider(client, to_provider_login(client, stack), "fp-unhcr")
    pre_sign_in = dict(client.cookies)
    assert client.get(callback).status_code == 200
    replay = browser()
    for name, value in pre_sign_in.items():
        replay.cookies.set(name, value)
    answer = replay.get(callback)
    assert answer.status_code == 400
    assert "cbcm-console=" not in answer.headers.get("set-cookie", "")


def test_an_account_without_a_cbcm_role_is_told_so(stack: Stack) -> None:
    _, answer = sign_in_with_provider(stack, "someone")
    assert answer.status_code == 403
    assert "holds no role" in answer.text


def test_a_focal_point_the_network_never_appointed_gets_no_session(stack: Stack) -> None:
    client, answer = sign_in_with_provider(stack, "fp-withdrawn")
    assert answer.status_code == 403
    assert client.get(f"{stack.console}/console/").status_code == 303


def test_an_id_token_answering_another_sign_ins_nonce_is_refused(stack: Stack) -> None:
    """The provider's ID token names the nonce of the sign-in it answers; a sign-in that
    sent another one (an ID token injected from elsewhere) does not open a session. The
    pre-sign-in cookie is re-sealed here with the server's key to stand for that sign-in."""
    sessions = stack.world.api.state.console_sessions
    client = browser()
    callback = log_in_at_provider(client, to_provider_login(client, stack), "fp-unhcr")
    pending = sessions.open("signin", client.cookies["cbcm-console-signin"])
    assert pending is not None
    pending["nonce"] = "a-nonce-of-another-sign-in"
    client.cookies.set("cbcm-console-signin", sessions.seal("signin", pending))
    answer = client.get(callback)
    assert answer.status_code == 400
    assert "cbcm-console=" not in answer.headers.get("set-cookie", "")
