"""The case register in Chromium (issue #21, ADR 25): the coordinator searches, pages with
the cursor link, reads a bad filter's message and downloads an export; axe-core (WCAG 2.1 A
and AA) on the list, on a search, and on a bad filter's page."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser

from services.bootstrap import complaint_mechanism
from services.settings import Settings
from tests.api_world import World, make_world
from tests.browser.conftest import follow, served
from tests.browser.test_console_in_chromium import violations
from tests.console_signing import file_complaint
from tests.integration.test_console_register import project


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[World, str, list[str]]]:
    data = tmp_path_factory.mktemp("console-register-browser")
    mechanism = complaint_mechanism(
        Settings(data_dir=data, event_store=f"sqlite:///{data / 'events.sqlite3'}")
    )
    world = make_world(data, mechanism)
    with served(world.api) as (host, port):
        import httpx  # noqa: PLC0415

        with httpx.Client(base_url=f"http://{host}:{port}") as api:
            made = [file_complaint(api, world) for _ in range(27)]
        project(world)
        yield world, f"http://{host}:{port}", made
    mechanism.close()


def test_the_coordinator_searches_pages_and_exports_in_chromium(
    console: tuple[World, str, list[str]], browser: Browser, axe_source: str
) -> None:
    _, base, made = console
    context = browser.new_context(accept_downloads=True)
    try:
        page = context.new_page()
        page.goto(f"{base}/console/sign-in")
        page.get_by_label("Account id").fill("coord-1")
        page.get_by_label("Agency code").fill("ocha")
        page.get_by_label("PSEA coordinator", exact=True).check()
        follow(page, page.get_by_role("button", name="Sign in for development"))
        follow(
            page,
            page.get_by_role("navigation", name="Console").get_by_role(
                "link", name="Case register"
            ),
        )
        assert page.url == f"{base}/console/cases"
        assert violations(page, axe_source) == []
        # a search by status, then the next page by its cursor link
        page.get_by_label("Under preliminary assessment").check()
        page.get_by_label("Open or closed").first.select_option("open")
        follow(page, page.get_by_role("button", name="Search"))
        assert "status=under_preliminary_assessment" in page.url
        assert violations(page, axe_source) == []
        first = page.locator("tbody tr").count()
        assert first == 25
        follow(page, page.get_by_role("link", name="Next page"))
        assert page.locator("tbody tr").count() == len(made) - 25
        # the export of the search: every case of it, not just this page
        with page.expect_download() as waiting:
            page.get_by_role("button", name="Export").click()
        content = waiting.value.path().read_text(encoding="utf-8-sig")
        assert all(case_id in content for case_id in made)
        # a bad filter: a readable message, the page still usable
        page.goto(f"{base}/console/cases?received_from=2026-02-31")
        assert page.get_by_role("alert").inner_text().startswith("This search cannot be read")
        assert violations(page, axe_source) == []
    finally:
        context.close()
