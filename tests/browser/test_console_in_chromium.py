"""The staff console in real Chromium (issue #21), the acceptance walk: a case from intake to
closure across two agencies, with an assistance referral and a transfer, a different role at
each step, each role checked to see only what it may (a planted name and phone appear only on
the pages of roles that may see them); two browsers editing one case, the second told of the
conflict; axe-core (WCAG 2.1 A and AA) on every kind of console page, under the console's
own Content-Security-Policy."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from playwright.sync_api import Browser, BrowserContext, Page

from services.api.serving import server_config
from services.bootstrap import complaint_mechanism
from services.nats.server import free_port
from services.settings import Settings
from tests.api_world import RECENTLY, World, make_world
from tests.browser.conftest import follow, served
from tests.console_signing import oidc_provider, oidc_settings, project

WCAG_A_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
NAME = "Halima CANARYNAME"
PHONE = "+252 61 555 4242"


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[World, str]]:
    data = tmp_path_factory.mktemp("console-browser")
    mechanism = complaint_mechanism(
        Settings(data_dir=data, event_store=f"sqlite:///{data / 'events.sqlite3'}")
    )
    # the inbox waits this long for a change the walk has not projected yet
    world = make_world(data, mechanism, read_wait_seconds=0.5)
    with served(world.api) as (host, port):
        yield world, f"http://{host}:{port}"
    mechanism.close()


def violations(page: Page, axe_source: str) -> list[dict[str, Any]]:
    page.evaluate(axe_source + "\n;0")
    result = page.evaluate(
        "tags => axe.run(document, {runOnly: {type: 'tag', values: tags}})", WCAG_A_AA
    )
    return [
        {"id": v["id"], "nodes": [n["html"] for n in v["nodes"]][:3]} for v in result["violations"]
    ]


class Walk:
    """The people of the walk, each in a browser context of their own; every page they
    open is checked with axe once per kind."""

    def __init__(self, browser: Browser, base: str, axe_source: str) -> None:
        self.browser = browser
        self.base = base
        self.axe_source = axe_source
        self.checked: set[str] = set()
        self.contexts: list[BrowserContext] = []

    def check(self, page: Page, kind: str) -> None:
        if kind in self.checked:
            return
        found = violations(page, self.axe_source)
        assert found == [], f"{kind} ({page.url}): {json.dumps(found)}"
        self.checked.add(kind)

    def person(self, user: str, agency: str, role_label: str) -> Page:
        context = self.browser.new_context()
        self.contexts.append(context)
        page = context.new_page()
        page.goto(f"{self.base}/console/")
        assert page.url.startswith(f"{self.base}/console/sign-in")
        assert page.get_by_text("Development sign-in").is_visible()
        self.check(page, "sign-in")
        page.get_by_label("Account id").fill(user)
        page.get_by_label("Agency code").fill(agency)
        page.get_by_label(role_label, exact=True).check()
        follow(page, page.get_by_role("button", name="Sign in for development"))
        assert page.url == f"{self.base}/console/"
        assert f"Signed in as {user}, {agency}" in page.content()
        self.check(page, "home")
        return page

    def case(self, page: Page, case_id: str) -> None:
        page.goto(f"{self.base}/console/cases/{case_id}")
        self.check(page, "case")

    def act(self, page: Page, action: str, fill: dict[str, str], **choices: Any) -> None:
        """Opens an action's form on the case page, fills it and sends it: the case page
        (or the inbox) says it was recorded."""
        form = page.locator(f"#action-{action}")
        form.locator("summary").click()
        for label, value in fill.items():
            form.get_by_label(label, exact=True).fill(value)
        for label, value in choices.get("select", {}).items():
            form.get_by_label(label, exact=True).select_option(value)
        for label in choices.get("check", ()):
            form.get_by_label(label, exact=True).check()
        follow(page, form.get_by_role("button"))
        assert page.get_by_role("status").filter(has_text="Recorded.").is_visible(), page.locator(
            "main"
        ).inner_text()

    def close(self) -> None:
        for context in self.contexts:
            context.close()


def intake(world: World, base: str) -> str:
    answer = httpx.post(
        f"{base}/v1/cases",
        json={
            "received_at": RECENTLY,
            "channel": "hotline",
            "complainant_role": "survivor",
            "immediate_safety_risk": True,
            "narrative": "CANARYSTORY: a distribution worker asked for sex for food.",
            "survivor": {"name": NAME, "phone": PHONE},
        },
        headers=world.headers("intake_operator"),
    )
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


def sees_no_personal_data(page: Page) -> None:
    html = page.content()
    assert NAME not in html and PHONE not in html and "CANARYSTORY" not in html


def test_a_case_from_intake_to_closure_across_two_agencies(
    browser: Browser, console: tuple[World, str], axe_source: str
) -> None:
    world, base = console
    walk = Walk(browser, base, axe_source)
    started = time.monotonic()
    try:
        case_id = intake(world, base)
        project(world)

        # 1. unhcr's focal point: the inbox, the case with the survivor's details, assessment,
        #    consents, an assistance referral, then the transfer to the implicated agency
        fp = walk.person("fp-unhcr", "unhcr", "Focal point")
        follow(fp, fp.get_by_role("navigation", name="Console").get_by_role("link", name="Inbox"))
        walk.check(fp, "inbox")
        row = fp.locator("tr", has=fp.locator(f'a[href="/console/cases/{case_id}"]'))
        assert "Urgent: safety risk" in row.inner_text()
        follow(fp, row.get_by_role("link").first)
        walk.check(fp, "case")
        assert NAME in fp.content() and PHONE in fp.content()
        walk.act(
            fp,
            "assess",
            {},
            select={
                "Category": "sea_allegation",
                "Type of allegation": "sexual_exploitation",
                "Implicated agency (the perpetrator's employer or contractor)": "wfp",
                "Personnel category": "un_staff",
                "Victim's sex": "female",
                "Victim's age": "18+",
            },
        )
        walk.act(
            fp, "consent", {}, select={"Consent": "assistance_referral", "Given by": "survivor"}
        )
        walk.act(
            fp,
            "assistance_referral",
            {"Area (code)": "SO22"},
            select={"Service": "medical", "Provider": "med-a"},
        )
        walk.act(
            fp,
            "transfer",
            {},
            select={"To the agency": "wfp", "Reason": "implicated_agency_custody"},
            check=["Allegation summary"],
        )
        assert fp.url.startswith(f"{base}/console/inbox")  # no longer unhcr's case
        assert "your last change may not show here yet" in fp.content()  # not projected yet
        fp.goto(f"{base}/console/cases/{case_id}")
        assert "There is no such case" in fp.content()
        walk.check(fp, "refused")

        # 2. the service provider the referral went to: no case page, no personal data
        provider = walk.person("prov-med", "med-a", "Service provider")
        provider.goto(f"{base}/console/cases/{case_id}")
        assert "There is no such case" in provider.content()
        sees_no_personal_data(provider)

        # 3. wfp's focal point: the case without the survivor's identity, the investigation
        #    referral and feedback
        project(world)
        wfp = walk.person("fp-wfp", "wfp", "Focal point")
        follow(wfp, wfp.get_by_role("navigation", name="Console").get_by_role("link", name="Inbox"))
        assert case_id[:8] in wfp.content()
        walk.case(wfp, case_id)
        assert "Held by" in wfp.content() and "Sexual exploitation" in wfp.content()
        sees_no_personal_data(wfp)
        walk.act(
            wfp,
            "investigation_referral",
            {"Investigating entity (code)": "wfp-oig"},
            check=["Allegation summary"],
        )
        walk.act(
            wfp,
            "feedback",
            {"Message to the complainant (personal data)": "Your report was received."},
            select={"Channel": "phone"},
        )

        # 4. wfp's investigating entity: the allegation, not the survivor; acknowledgement
        #    and outcome
        inv = walk.person("inv-wfp", "wfp", "Investigating entity")
        walk.case(inv, case_id)
        sees_no_personal_data(inv)
        assert "Close the case" not in inv.content()
        walk.act(inv, "acknowledge", {})
        walk.act(inv, "outcome", {}, select={"Outcome": "substantiated"})

        # 5. wfp's focal point closes it
        walk.case(wfp, case_id)
        walk.act(wfp, "closure", {}, select={"Reason": "investigation_concluded"})
        assert "Reopen the case" in wfp.content()

        # 6. the coordinator sees the case, no personal data; 7. an auditor its custody trail
        coordinator = walk.person("coord-1", "ocha", "PSEA coordinator")
        walk.case(coordinator, case_id)
        assert "Investigation concluded" in coordinator.content()
        sees_no_personal_data(coordinator)
        auditor = walk.person("aud-1", "ocha", "Auditor")
        auditor.goto(f"{base}/console/cases/{case_id}/trail")
        walk.check(auditor, "trail")
        trail = auditor.content()
        assert "read of personal data" in trail and "Chain position" in trail
        assert "fp-unhcr" in trail and "inv-wfp" in trail
        sees_no_personal_data(auditor)
        print(f"\nconsole walk: {time.monotonic() - started:.1f} s")
    finally:
        walk.close()


def test_two_browsers_editing_one_case_get_the_conflict_message(
    browser: Browser, console: tuple[World, str], axe_source: str
) -> None:
    world, base = console
    walk = Walk(browser, base, axe_source)
    try:
        case_id = intake(world, base)
        first = walk.person("fp-unhcr", "unhcr", "Focal point")
        second = walk.person("fp-unhcr-1", "unhcr", "Focal point")
        walk.case(first, case_id)
        walk.case(second, case_id)
        walk.act(
            first,
            "feedback",
            {"Message to the complainant (personal data)": "First."},
            select={"Channel": "phone"},
        )
        form = second.locator("#action-feedback")
        form.locator("summary").click()
        form.get_by_label("Message to the complainant (personal data)", exact=True).fill("Second.")
        form.get_by_label("Channel", exact=True).select_option("sms")
        follow(second, form.get_by_role("button"))
        alert = second.get_by_role("alert")
        assert "Someone else changed this case while you were working on it" in alert.inner_text()
        assert second.locator("#action-feedback").get_attribute("open") is not None
        assert "Second." in second.locator("#action-feedback textarea").input_value()
        walk.check(second, "conflict")
    finally:
        walk.close()


def test_staff_sign_in_in_chromium_through_a_provider_on_another_site(
    browser: Browser, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The provider is another site (``localhost``; the console is ``127.0.0.1``): the
    Strict session cookie set on the way back must reach the console's next page."""
    port = free_port()
    console = f"http://127.0.0.1:{port}"
    accounts: dict[str, dict[str, object]] = {
        "fp-unhcr": {"agency": "unhcr", "roles": ["focal_point"]}
    }
    with oidc_provider(f"{console}/console/sign-in/callback", accounts, host="localhost") as issuer:
        data = tmp_path_factory.mktemp("console-oidc-browser")
        mechanism = complaint_mechanism(
            Settings(data_dir=data, event_store=f"sqlite:///{data / 'events.sqlite3'}")
        )
        world = make_world(data, mechanism, **oidc_settings(issuer, console))
        config = server_config(world.api, "127.0.0.1", port)
        config.timeout_graceful_shutdown = 1
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        context = browser.new_context()
        try:
            while not server.started:
                assert thread.is_alive(), "the console did not start"
                time.sleep(0.02)
            page = context.new_page()
            page.goto(f"{console}/console/inbox")
            assert "Development sign-in" not in page.content()
            follow(page, page.get_by_role("link", name="Sign in with your organisation's account"))
            assert page.url.startswith(issuer)
            page.fill('input[name="login"]', "fp-unhcr")
            page.fill('input[name="password"]', "any")
            page.locator('button[type="submit"]').click()
            page.wait_for_url(f"{console}/console/inbox")
            assert "Signed in as fp-unhcr, unhcr" in page.content()
            cookie = next(c for c in context.cookies() if c["name"] == "cbcm-console")
            assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        finally:
            context.close()
            server.should_exit = True
            thread.join(10)
            mechanism.close()


def test_a_link_from_another_site_opens_the_case_in_the_existing_session(
    browser: Browser, console: tuple[World, str], axe_source: str
) -> None:
    """A link in an e-mail or another site's page: the browser withholds the Strict session
    cookie on that navigation; the console asks again from its own site and the signed-in
    focal point lands on the case, not on the sign-in."""
    world, base = console
    walk = Walk(browser, base, axe_source)
    try:
        case_id = intake(world, base)
        page = walk.person("fp-unhcr", "unhcr", "Focal point")
        page.context.route(
            "http://elsewhere.test/",
            lambda route: route.fulfill(
                content_type="text/html",
                body=f'<!doctype html><a href="{base}/console/cases/{case_id}">the case</a>',
            ),
        )
        page.goto("http://elsewhere.test/")
        page.get_by_role("link", name="the case").click()
        page.get_by_role("heading", name="What was reported").wait_for()
        assert page.url == f"{base}/console/cases/{case_id}"
        assert NAME in page.content()
    finally:
        walk.close()
