"""The console's views in real Chromium (issue #21, #22): statistics releases, the network
registry, referrals, the auditor's view and prevention work, each walked by the role it is
for, signed in through the development sign-in; axe-core finds no WCAG 2.1 A or AA violation
on any of them; the charts are read as the browser renders them; a provider accepts its
referral and the coordinator appoints a focal point by clicking through the forms, with no
script on the page."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from playwright.sync_api import Browser, Page

from domain.actors import Role
from services.bootstrap import complaint_mechanism
from services.settings import Settings
from services.statistics.releases import ledger_path, open_ledger, release_due
from tests.api_world import World, make_world
from tests.browser.conftest import follow, served
from tests.browser.test_public_pages_in_chromium import NARROW, accessibility_violations
from tests.console_signing import project
from tests.integration.test_api_access import CANARY, Clock, referral, referred
from tests.statistics_cases import model, store
from tests.unit.test_statistics_releases import CASES, POLICY
from tests.world import COORDINATOR

SITE: dict[str, Any] = {}


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[World, str]]:
    data = tmp_path_factory.mktemp("console-views-browser")
    mechanism = complaint_mechanism(
        Settings(data_dir=data, event_store=f"sqlite:///{data / 'events.sqlite3'}")
    )
    world = make_world(data, mechanism)
    db = model(5)
    store(db, CASES, 0)
    with open_ledger(ledger_path(data)) as ledger:
        release_due(db, ledger, POLICY, datetime(2026, 8, 15, tzinfo=UTC))
    clock = Clock()
    SITE["referral"] = referral(mechanism, clock)
    SITE["case"] = mechanism.get_referral(SITE["referral"]).case_id
    SITE["investigated"] = referred(mechanism, clock)
    mechanism.appoint_alternate(actor=COORDINATOR, agency="unhcr", user="alt-unhcr", at=clock())
    project(world)
    with served(world.api) as (host, port):
        yield world, f"http://{host}:{port}"
    mechanism.close()


def signed_in(browser: Browser, base: str, user: str, agency: str, role: Role) -> Page:
    """A page of a fresh browser context with JavaScript off (the console needs none),
    signed in through the development sign-in form."""
    context = browser.new_context(java_script_enabled=False, viewport=NARROW)
    page = context.new_page()
    page.goto(f"{base}/console/sign-in")
    page.fill("#user", user)
    page.fill("#agency", agency)
    page.check(f'input[name="role"][value="{role.value}"]')
    follow(page, page.locator("button[type=submit] >> text=Sign in for development"))
    assert page.url.endswith("/console/"), page.url
    return page


def accessible(page: Page, browser: Browser, axe_source: str) -> None:
    """axe-core's A and AA rules on the page as Chromium rendered it (with scripts off the
    page is copied into a context where axe can run, as the public pages' test does), every
    folded form opened."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        copy = context.new_page()
        copy.set_content(page.content())
        # the forms folded in <details> are checked too
        copy.evaluate("document.querySelectorAll('details').forEach(d => { d.open = true; })")
        violations = accessibility_violations(copy, axe_source)
    finally:
        context.close()
    assert violations == [], f"{page.url}: {violations}"


WALKS = [
    (
        ("stat-1", "ocha", Role.STATISTICS_READER),
        [
            "/console/statistics",
            "/console/statistics/2026-q1-v1",
            "/console/prevention",
            f"/console/prevention/report/{datetime.now(UTC).year}-Q1?format=html",
        ],
    ),
    (
        ("coord-1", "ocha", Role.COORDINATOR),
        ["/console/registry", "/console/prevention"],
    ),
    (("prov-med", "med-a", Role.SERVICE_PROVIDER), ["/console/referrals", "/console/registry"]),
    (("inv-wfp", "wfp", Role.INVESTIGATING_ENTITY), ["/console/referrals"]),
    (("aud-1", "ocha", Role.AUDITOR), ["/console/audit"]),
    (("fp-unhcr", "unhcr", Role.FOCAL_POINT), ["/console/prevention", "/console/statistics"]),
]


def test_each_role_walks_its_pages_and_axe_finds_no_violation(
    console: tuple[World, str], browser: Browser, axe_source: str
) -> None:
    _world, base = console
    extra = {
        Role.SERVICE_PROVIDER: [f"/console/referrals/{SITE['referral']}"],
        Role.INVESTIGATING_ENTITY: [f"/console/investigations/{SITE['investigated']}"],
        Role.AUDITOR: [f"/console/audit/cases/{SITE['case']}"],
        Role.COORDINATOR: [f"/console/audit-grants?case={SITE['case']}"],
    }
    for (user, agency, role), paths in WALKS:
        page = signed_in(browser, base, user, agency, role)
        try:
            for path in [*paths, *extra.get(role, [])]:
                answer = page.goto(f"{base}{path}")
                assert answer is not None and answer.status == 200, (role, path)
                assert page.locator("h1").count() == 1
                accessible(page, browser, axe_source)
                if role is not Role.SERVICE_PROVIDER:
                    assert CANARY not in page.content(), (role, path)
        finally:
            page.context.close()


def test_the_charts_chromium_draws_carry_the_releases_numbers(
    console: tuple[World, str], browser: Browser
) -> None:
    _world, base = console
    page = signed_in(browser, base, "stat-1", "ocha", Role.STATISTICS_READER)
    try:
        page.goto(f"{base}/console/statistics/2026-q1-v1")
        charts = page.locator("svg.chart")
        assert charts.count() > 0
        # every chart is an image with a name and a description, and its bars are visible
        for i in range(charts.count()):
            chart = charts.nth(i)
            assert chart.get_attribute("role") == "img"
            labelled = (chart.get_attribute("aria-labelledby") or "").split()
            assert len(labelled) == 2
            box = chart.bounding_box()
            assert box is not None and 0 < box["width"] <= NARROW["width"]
        first = charts.nth(0)
        values = [g.get_attribute("data-value") for g in first.locator("g.bar").all()]
        written = [t.text_content() for t in first.locator("g.bar > text:nth-of-type(2)").all()]
        assert values and all(w == (v or "withheld") for v, w in zip(values, written, strict=True))
        # the CSV downloads as a file
        with page.expect_download() as download:
            page.click("text=CSV >> nth=0")
        assert download.value.suggested_filename == "cbcm-stats-2026-q1-v1.csv"
    finally:
        page.context.close()


def test_a_provider_accepts_and_the_coordinator_appoints_by_clicking(
    console: tuple[World, str], browser: Browser
) -> None:
    world, base = console
    page = signed_in(browser, base, "prov-med", "med-a", Role.SERVICE_PROVIDER)
    try:
        page.goto(f"{base}/console/referrals")
        page.click(f'a[href="/console/referrals/{SITE["referral"]}"]')
        assert f"{CANARY} phone" in page.content()  # the contact the survivor shared
        page.click("text=Accept the referral")
        assert page.locator("p.notice").text_content() == "Recorded."
        assert str(world.mechanism.get_referral(SITE["referral"]).status) == "accepted"
    finally:
        page.context.close()
    page = signed_in(browser, base, "coord-1", "ocha", Role.COORDINATOR)
    try:
        page.goto(f"{base}/console/registry")
        page.click("summary >> text=Appoint a focal point")
        page.select_option("#fp-agency", "wfp")
        page.fill("#fp-user", "fp-wfp-clicked")
        page.click("button >> text=Appoint")
        assert re.search(r"/console/registry\?done=1$", page.url)
        assert "fp-wfp-clicked" in world.mechanism.network().agencies["wfp"].focal_points
        assert "fp-wfp-clicked" in page.content()
    finally:
        page.context.close()


def test_a_focal_point_records_a_training_by_clicking_and_sees_it_counted(
    console: tuple[World, str], browser: Browser
) -> None:
    _world, base = console
    page = signed_in(browser, base, "fp-unhcr", "unhcr", Role.FOCAL_POINT)
    try:
        page.goto(f"{base}/console/prevention")
        page.click("summary >> text=A training session")
        page.fill("#tr-day", datetime.now(UTC).date().isoformat())
        page.fill("#tr-area", "SO2201")
        page.select_option("#tr-aud", "staff")
        page.fill("#tr-f", "5")
        page.fill("#tr-m", "6")
        page.click("button >> text=Record the training")
        assert page.locator("p.notice").text_content() == "Recorded."
        bar = page.locator('#main svg.chart g.bar[data-label="unhcr"]').first
        assert bar.get_attribute("data-value") == "11"
    finally:
        page.context.close()
