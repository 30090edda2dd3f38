"""The console's case register pages (issue #21, ADR 25), through the app as a browser uses
it: the list holds exactly the cases the reader may get; its cursor pages neither repeat nor
skip; bad filters come back readable, in the reader's language; the export is a form with
the session's token, and every case in the file shows it in its custody trail (the
console's own trail page), while a forged post exports nothing."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from domain.actors import Role
from projections.register import RegisterProjection
from services.bootstrap import complaint_mechanism
from services.settings import Settings
from tests.api_world import World, make_world, project_into
from tests.console_signing import ON_THIS_MACHINE, file_complaint, sign_in

NAME = "Amina CANARYNAME"
CASE_LINK = re.compile(r'href="/console/cases/([0-9a-f-]{36})"')
NEXT = re.compile(r'<a href="([^"]+)" rel="next">')


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    data: Path = tmp_path_factory.mktemp("console-register")
    mechanism = complaint_mechanism(
        Settings(data_dir=data, event_store=f"sqlite:///{data / 'events.sqlite3'}")
    )
    yield make_world(data, mechanism)
    mechanism.close()


@pytest.fixture(scope="module")
def api(world: World) -> TestClient:
    return TestClient(world.api)


def project(world: World) -> None:
    """Bring the register up to the store, as relay and projector would."""
    project_into(world, RegisterProjection())


@pytest.fixture(scope="module")
def cases(api: TestClient, world: World) -> list[str]:
    made = [file_complaint(api, world, survivor={"name": NAME}) for _ in range(30)]
    project(world)
    return made


def person(
    world: World, user: str, agency: str, *roles: Role, lang: str = "en"
) -> tuple[TestClient, str]:
    browser = TestClient(world.api, client=ON_THIS_MACHINE, follow_redirects=False)
    return browser, sign_in(browser, user, agency, *roles, lang=lang)


def every_page(browser: TestClient, url: str) -> list[str]:
    ids: list[str] = []
    next_url: str | None = url
    while next_url is not None:
        page = browser.get(next_url.replace("&amp;", "&"))
        assert page.status_code == 200, page.text
        ids += CASE_LINK.findall(page.text)
        found = NEXT.search(page.text)
        next_url = None if found is None else found.group(1)
    return ids


@pytest.mark.parametrize(
    ("user", "agency", "role", "sees_them"),
    [
        ("fp-unhcr", "unhcr", Role.FOCAL_POINT, True),
        ("fp-wfp", "wfp", Role.FOCAL_POINT, False),
        ("coord-1", "ocha", Role.COORDINATOR, True),
        ("inv-wfp", "wfp", Role.INVESTIGATING_ENTITY, False),
        ("aud-1", "ocha", Role.AUDITOR, True),
    ],
)
def test_the_register_page_lists_exactly_what_the_reader_may_get(
    world: World, cases: list[str], user: str, agency: str, role: Role, sees_them: bool
) -> None:
    browser, _ = person(world, user, agency, role)
    listed = every_page(browser, "/console/cases")
    # every case once, pages of 25 followed by their cursor links
    assert len(listed) == len(set(listed))
    assert (set(cases) <= set(listed)) if sees_them else not set(cases) & set(listed)
    first = browser.get("/console/cases").text
    assert NAME not in first  # the register holds no personal data


def test_a_provider_is_told_the_register_is_not_theirs(world: World) -> None:
    browser, _ = person(world, "prov-med", "med-a", Role.SERVICE_PROVIDER)
    page = browser.get("/console/cases")
    assert page.status_code == 403
    assert "The case register is for focal points" in page.text


@pytest.mark.parametrize(
    ("lang", "words"),
    [("en", "This search cannot be read"), ("fr", "Cette recherche ne peut pas être lue")],
)
def test_a_bad_filter_comes_back_readable_in_the_readers_language(
    world: World, cases: list[str], lang: str, words: str
) -> None:
    browser, _ = person(world, "fp-unhcr", "unhcr", Role.FOCAL_POINT, lang=lang)
    page = browser.get("/console/cases?received_from=2026-02-31")
    assert page.status_code == 400
    assert words in page.text
    assert not CASE_LINK.findall(page.text)


def test_filters_narrow_the_page(world: World, cases: list[str]) -> None:
    browser, _ = person(world, "fp-unhcr", "unhcr", Role.FOCAL_POINT)
    assert every_page(browser, "/console/cases?open=closed") == []
    assert set(cases) <= set(
        every_page(browser, "/console/cases?open=open&status=under_preliminary_assessment")
    )


def test_an_export_from_the_console_is_in_every_case_trail(world: World, cases: list[str]) -> None:
    browser, csrf = person(world, "fp-unhcr", "unhcr", Role.FOCAL_POINT)
    answer = browser.post(
        "/console/cases/export", data={"csrf": csrf, "format": "csv", "open": "open"}
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-disposition"].startswith("attachment;")
    export_id = answer.headers["x-cbcm-export"]
    rows = list(csv.reader(io.StringIO(answer.content.decode("utf-8-sig"))))
    exported = {r[0] for r in rows[1:]}
    assert set(cases) <= exported
    for case_id in cases[:3]:
        trail = browser.get(f"/console/cases/{case_id}/trail")
        assert trail.status_code == 200
        assert export_id in trail.text


def test_a_forged_export_post_exports_nothing(world: World, cases: list[str]) -> None:
    browser, _ = person(world, "fp-unhcr", "unhcr", Role.FOCAL_POINT)
    before = sum(len(world.mechanism.personal_data_reads(_uuid(c))) for c in cases)
    answer = browser.post("/console/cases/export", data={"csrf": "forged", "format": "csv"})
    assert answer.status_code == 403
    assert not any(c in answer.text for c in cases)
    assert before == sum(len(world.mechanism.personal_data_reads(_uuid(c))) for c in cases)


def _uuid(text: str) -> object:
    from uuid import UUID  # noqa: PLC0415

    return UUID(text)
