"""The console's views (issue #21, #22): statistics releases, the network registry, the
auditor's view, referrals and prevention work, through the real app, for each role: what each
role sees, what it may not see or do, and that personal data shows only where the API would
show it."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pytest
from fastapi.testclient import TestClient

from domain.actors import Actor, Role
from domain.vocabulary import SharedItem, TransferReason
from services.bootstrap import complaint_mechanism
from services.settings import Settings
from services.statistics.releases import ledger_path, open_ledger, release_due
from tests.api_world import CALLERS, World, make_world
from tests.console_signing import ON_THIS_MACHINE, project
from tests.console_signing import sign_in as console_sign_in
from tests.integration.test_api_access import CANARY, Clock, received, referral, referred
from tests.statistics_cases import model, store
from tests.unit.test_statistics_releases import CASES, POLICY
from tests.world import COORDINATOR


def sign_in(world: World, caller: str, lang: str = "en") -> tuple[TestClient, str]:
    """A browser-like client signed in to the console as ``caller`` (one of the API tests'
    callers) through the development sign-in, and its form token."""
    user, agency, role = CALLERS[caller]
    client = TestClient(
        world.api, base_url="http://testserver", follow_redirects=False, client=ON_THIS_MACHINE
    )
    return client, console_sign_in(client, user, agency, role, lang=lang)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    data_dir = tmp_path_factory.mktemp("console-views")
    mechanism = complaint_mechanism(
        Settings(data_dir=data_dir, event_store=f"sqlite:///{data_dir / 'events.sqlite3'}")
    )
    world = make_world(data_dir, mechanism)
    db = model(5)
    store(db, CASES, 0)
    with open_ledger(ledger_path(data_dir)) as ledger:
        release_due(db, ledger, POLICY, datetime(2026, 8, 15, tzinfo=UTC))
    clock = Clock()
    app = world.mechanism
    STANDARD["referral"] = referral(app, clock)
    STANDARD["referral_case"] = app.get_referral(STANDARD["referral"]).case_id
    STANDARD["investigated"] = referred(app, clock)
    app.appoint_alternate(actor=COORDINATOR, agency="unhcr", user="alt-unhcr", at=clock())
    project(world)
    yield world
    mechanism.close()


STANDARD: dict[str, Any] = {}
"""The cases every test reads: an assistance referral to med-a with the survivor's contact
shared (its case), and a case referred for investigation to wfp's entity; every personal
field of both holds CANARY."""


def text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


# ------------------------------------------------------------------ statistics releases

SVG_NS = "{http://www.w3.org/2000/svg}"


def _charts(html: str) -> dict[str, list[tuple[str, str]]]:
    """Each chart on the page by its id: (label, value) of every bar, read from the SVG."""
    charts = {}
    for svg in re.findall(r"<svg .*?</svg>", html, flags=re.S):
        root = ET.fromstring(svg)
        title = root.find(f"{SVG_NS}title")
        assert title is not None
        charts[title.attrib["id"].removesuffix("-title")] = [
            (g.attrib["data-label"], g.attrib["data-value"]) for g in root.iter(f"{SVG_NS}g")
        ]
    return charts


def test_a_release_page_draws_exactly_the_released_totals_and_offers_its_files(
    world: World,
) -> None:
    # given a published release, as the API gives it to a statistics reader
    client, _ = sign_in(world, "statistics_reader")
    api = client.get("/v1/stats/releases/2026-q1-v1", headers=world.headers("statistics_reader"))
    document = api.json()
    # when the reader opens the list and the release
    listed = client.get("/console/statistics")
    assert listed.status_code == 200, listed.text
    assert "2026-q1-v1" in listed.text and "2026-q2-v1" in listed.text
    page = client.get("/console/statistics/2026-q1-v1")
    assert page.status_code == 200, page.text
    # then every report is a chart whose bars are the release's row totals (withheld ones
    # without a value), each chart labelled for assistive technology
    charts = _charts(page.text)
    assert set(charts) == {f"chart-{name}" for name in document["reports"]}
    withheld = 0
    for name, report in document["reports"].items():
        expected = [
            (row, "" if total["suppressed"] else str(total["value"]))
            for row, total in zip(report["rows"], report["row_totals"], strict=True)
        ]
        assert charts[f"chart-{name}"] == expected
        grid = [c for row in report["cells"] for c in row]
        grid += [*report["row_totals"], *report["column_totals"], report["total"]]
        withheld += sum(1 for c in grid if c["suppressed"])
    # and each withheld value of the tables is written "withheld", never a number
    assert withheld > 0
    assert page.text.count('<span class="withheld">withheld</span>') == withheld
    assert 'aria-labelledby="chart-' in page.text
    # and the files are the API's own
    csv = client.get("/console/statistics/2026-q1-v1/download/csv")
    assert csv.status_code == 200
    assert (
        csv.text
        == client.get(
            "/v1/stats/releases/2026-q1-v1?format=csv", headers=world.headers("statistics_reader")
        ).text
    )
    xlsx = client.get("/console/statistics/2026-q1-v1/download/xlsx")
    assert xlsx.content[:2] == b"PK" and "attachment" in xlsx.headers["content-disposition"]
    assert xlsx.headers["cache-control"] == "no-store"


def test_statistics_are_refused_to_roles_the_api_refuses_and_unknown_releases_are_a_page(
    world: World,
) -> None:
    for caller in ("provider_own", "investigator_own"):
        client, _ = sign_in(world, caller)
        for path in ("/console/statistics", "/console/statistics/2026-q1-v1/download/csv"):
            answer = client.get(path)
            assert answer.status_code == 403, (caller, path)
            assert "text/html" in answer.headers["content-type"]
        assert 'href="/console/statistics"' not in client.get("/console/").text
    client, _ = sign_in(world, "statistics_reader")
    missing = client.get("/console/statistics/2031-q1-v1")
    assert missing.status_code == 404 and "no such statistics release" in missing.text


# ------------------------------------------------------------------ the network registry


def test_the_coordinator_appoints_and_withdraws_a_focal_point_through_the_forms(
    world: World,
) -> None:
    client, csrf = sign_in(world, "coordinator")
    page = client.get("/console/registry")
    assert page.status_code == 200 and 'action="/console/registry/focal-points"' in page.text
    # when the coordinator appoints a focal point of wfp
    done = client.post(
        "/console/registry/focal-points",
        data={"csrf": csrf, "agency": "wfp", "user": "fp-wfp-new"},
    )
    assert done.status_code == 303, done.text
    assert "fp-wfp-new" in world.mechanism.network().agencies["wfp"].focal_points
    assert "Recorded." in client.get(done.headers["location"]).text
    # and withdraws the appointment again
    done = client.post(
        "/console/registry/focal-points/withdrawal",
        data={"csrf": csrf, "agency": "wfp", "user": "fp-wfp-new"},
    )
    assert done.status_code == 303
    assert "fp-wfp-new" not in world.mechanism.network().agencies["wfp"].focal_points
    # a bad account id is a readable refusal, nothing recorded
    version = world.mechanism.network().version
    bad = client.post(
        "/console/registry/focal-points", data={"csrf": csrf, "agency": "wfp", "user": "Not ok!"}
    )
    assert bad.status_code == 422 and "Please check the form" in bad.text
    assert world.mechanism.network().version == version


def test_a_provider_sees_the_registry_without_its_forms_and_cannot_post_them(
    world: World,
) -> None:
    client, csrf = sign_in(world, "provider_own")
    page = client.get("/console/registry")
    assert page.status_code == 200
    assert '<form method="post" action="/console/registry' not in page.text
    # the alternates of an agency: a count, never the account ids
    assert "alt-unhcr" not in page.text
    version = world.mechanism.network().version
    for path, data in (
        ("/console/registry/focal-points", {"agency": "wfp", "user": "fp-evil"}),
        ("/console/registry/service-providers", {"code": "evil", "name": "Evil"}),
        ("/console/registry/policy", {"suppression_threshold": "2", "expected_version": "1"}),
    ):
        answer = client.post(path, data={"csrf": csrf, **data})
        assert answer.status_code == 403, (path, answer.text)
    assert world.mechanism.network().version == version
    # the coordinator and unhcr's own focal points see the alternate's id
    for caller in ("coordinator", "focal_point_own"):
        assert "alt-unhcr" in sign_in(world, caller)[0].get("/console/registry").text
    assert "alt-unhcr" not in sign_in(world, "focal_point_other")[0].get("/console/registry").text


def test_a_registry_form_from_another_site_or_another_session_records_nothing(
    world: World,
) -> None:
    client, csrf = sign_in(world, "coordinator")
    version = world.mechanism.network().version
    data = {"agency": "wfp", "user": "fp-forged"}
    forged = client.post("/console/registry/focal-points", data={"csrf": "x" * 43, **data})
    assert forged.status_code == 403
    cross = client.post(
        "/console/registry/focal-points",
        data={"csrf": csrf, **data},
        headers={"Sec-Fetch-Site": "cross-site"},
    )
    assert cross.status_code == 403
    missing = client.post("/console/registry/focal-points", data=data)
    assert missing.status_code == 403
    assert world.mechanism.network().version == version


def test_two_coordinators_changing_the_policy_at_once_get_a_conflict_not_a_lost_update(
    world: World,
) -> None:
    # given two coordinators with the policy form open at the same version
    first, first_csrf = sign_in(world, "coordinator")
    second, second_csrf = sign_in(world, "coordinator")

    def policy_form(client: TestClient) -> dict[str, str]:
        page = client.get("/console/registry").text
        form = page[page.index('action="/console/registry/policy"') :]
        form = form[: form.index("</form>")]
        return dict(re.findall(r'name="([a-z_]+)" value="([^"]*)"', form))

    forms = [policy_form(first), policy_form(second)]
    assert forms[0]["expected_version"] == forms[1]["expected_version"]
    # when both save a different threshold
    one = {**forms[0], "csrf": first_csrf, "suppression_threshold": "7"}
    two = {**forms[1], "csrf": second_csrf, "suppression_threshold": "9"}
    for form in (one, two):
        del form["coordinator_sees_personal_data"]  # an unticked box is not sent
    assert first.post("/console/registry/policy", data=one).status_code == 303
    clash = second.post("/console/registry/policy", data=two)
    # then the second is told, and the first one's change stands
    assert clash.status_code == 409
    assert "Someone else changed this" in clash.text
    assert world.mechanism.network().policy.suppression_threshold == 7


# ------------------------------------------------------------------ referrals


def test_a_provider_takes_its_referral_and_sees_the_contact_the_survivor_shared(
    world: World,
) -> None:
    client, csrf = sign_in(world, "provider_own")
    listed = client.get("/console/referrals")
    assert listed.status_code == 200
    referral_id = str(STANDARD["referral"])
    assert referral_id in listed.text
    reads_before = len(world.mechanism.personal_data_reads(STANDARD["referral_case"]))
    page = client.get(f"/console/referrals/{referral_id}")
    assert page.status_code == 200
    # the contact, shared with consent, is shown, and the read is in the custody trail
    assert f"{CANARY} phone" in page.text
    reads = world.mechanism.personal_data_reads(STANDARD["referral_case"])
    assert len(reads) == reads_before + 1 and reads[-1].actor.user == "prov-med"
    # when it accepts
    done = client.post(f"/console/referrals/{referral_id}/acceptance", data={"csrf": csrf})
    assert done.status_code == 303, done.text
    assert str(world.mechanism.get_referral(UUID(referral_id)).status) == "accepted"
    # a second acceptance is refused in words, nothing recorded
    again = client.post(f"/console/referrals/{referral_id}/acceptance", data={"csrf": csrf})
    assert again.status_code == 409 and "Not recorded" in again.text


def test_another_provider_neither_sees_nor_answers_the_referral(world: World) -> None:
    client, csrf = sign_in(world, "provider_other")
    referral_id = str(STANDARD["referral"])
    assert referral_id not in client.get("/console/referrals?all=true").text
    assert client.get(f"/console/referrals/{referral_id}").status_code == 404
    version = world.mechanism.get_referral(UUID(referral_id)).version
    refused = client.post(
        f"/console/referrals/{referral_id}/provider-decline", data={"csrf": csrf, "reason": "x"}
    )
    assert refused.status_code == 404
    assert world.mechanism.get_referral(UUID(referral_id)).version == version


def test_the_investigating_entity_acknowledges_with_the_version_it_read(world: World) -> None:
    case_id = STANDARD["investigated"]
    other, _ = sign_in(world, "investigator_other")
    assert other.get(f"/console/investigations/{case_id}").status_code == 404
    client, csrf = sign_in(world, "investigator_own")
    found = client.get("/console/investigations", params={"case": str(case_id)})
    assert found.status_code == 303
    page = client.get(found.headers["location"])
    assert page.status_code == 200 and "wfp-oig" in page.text
    assert CANARY not in page.text
    version = re.search(r'name="expected_version" value="(\d+)"', page.text)
    assert version is not None
    # a form read before someone else changed the case is refused as a conflict
    stale = client.post(
        f"/console/investigations/{case_id}/acknowledgement",
        data={"csrf": csrf, "expected_version": str(int(version.group(1)) - 1)},
    )
    assert stale.status_code == 409 and "Someone else changed this" in stale.text
    assert world.mechanism.get_case(case_id).investigation.acknowledged_at is None
    # and one without the version (review of #21, F4: recorded blind, a lost update)
    blind = client.post(f"/console/investigations/{case_id}/acknowledgement", data={"csrf": csrf})
    assert blind.status_code == 422 and "reload it" in blind.text
    assert world.mechanism.get_case(case_id).investigation.acknowledged_at is None
    done = client.post(
        f"/console/investigations/{case_id}/acknowledgement",
        data={"csrf": csrf, "expected_version": version.group(1)},
    )
    assert done.status_code == 303, done.text
    assert world.mechanism.get_case(case_id).investigation.acknowledged_at is not None


# ------------------------------------------------------------------ the auditor


def test_the_auditor_replays_a_case_without_personal_data_until_granted(world: World) -> None:
    case_id = STANDARD["referral_case"]
    client, _ = sign_in(world, "auditor")
    page = client.get(f"/console/audit/cases/{case_id}")
    assert page.status_code == 200, page.text
    assert "hidden: you hold no grant" in page.text and CANARY not in page.text
    assert "Case.Received" in page.text or "received" in page.text.lower()
    world.mechanism.grant_audit_access(
        case_id, actor=COORDINATOR, auditor="aud-1", reason="audit", at=datetime.now(UTC)
    )
    before = len(world.mechanism.personal_data_reads(case_id))
    granted = client.get(f"/console/audit/cases/{case_id}")
    assert CANARY in granted.text
    reads = world.mechanism.personal_data_reads(case_id)
    assert len(reads) == before + 1 and reads[-1].actor.user == "aud-1"
    world.mechanism.revoke_audit_access(
        case_id, actor=COORDINATOR, auditor="aud-1", at=datetime.now(UTC)
    )
    assert CANARY not in client.get(f"/console/audit/cases/{case_id}").text


def test_only_auditors_open_the_audit_view(world: World) -> None:
    case_id = STANDARD["referral_case"]
    for caller in ("coordinator", "focal_point_own", "statistics_reader", "provider_own"):
        client, _ = sign_in(world, caller)
        assert client.get("/console/audit").status_code == 403, caller
        assert client.get(f"/console/audit/cases/{case_id}").status_code == 403, caller
        assert client.get(f"/console/audit/cases/{case_id}/bundle").status_code == 403, caller


# ------------------------------------------------------------------ prevention work


def test_a_focal_point_records_its_agencys_training_and_not_another_agencys(
    world: World,
) -> None:
    client, csrf = sign_in(world, "focal_point_own")
    today = datetime.now(UTC).date().isoformat()
    form = {
        "csrf": csrf,
        "held_on": today,
        "area": "SO2201",
        "audience": "staff",
        "topic": "sea_basics",
        "female": "4",
        "male": "3",
        "other_or_not_recorded": "0",
    }
    done = client.post("/console/prevention/trainings", data={**form, "agency": "unhcr"})
    assert done.status_code == 303, done.text
    page = client.get(done.headers["location"])
    assert "Recorded." in page.text
    charts = _charts(page.text)
    assert ("unhcr", "7") in charts["chart-compliance"]
    events = world.event_count()
    refused = client.post("/console/prevention/trainings", data={**form, "agency": "wfp"})
    assert refused.status_code in (403, 409), refused.text
    assert world.event_count() == events
    # the work plan is the coordinator's
    plan = client.post("/console/prevention/work-plans", data={"csrf": csrf, "year": "2030"})
    assert plan.status_code == 403
    assert world.event_count() == events


def test_a_statistics_reader_reads_prevention_without_forms_or_account_ids(
    world: World,
) -> None:
    client, csrf = sign_in(world, "statistics_reader")
    page = client.get("/console/prevention")
    assert page.status_code == 200
    assert 'action="/console/prevention/trainings"' not in page.text
    assert "alt-unhcr" not in page.text and "fp-unhcr" not in page.text
    events = world.event_count()
    refused = client.post(
        "/console/prevention/alternates", data={"csrf": csrf, "agency": "unhcr", "user": "x-1"}
    )
    assert refused.status_code == 403 and world.event_count() == events
    report = client.get(f"/console/prevention/report/{datetime.now(UTC).year}-Q1")
    assert report.status_code == 200 and report.content[:2] == b"PK"
    coordinator, _ = sign_in(world, "coordinator")
    assert "alt-unhcr" in coordinator.get("/console/prevention").text
    focal_point, _ = sign_in(world, "focal_point_own")
    assert (
        focal_point.get(f"/console/prevention/report/{datetime.now(UTC).year}-Q1").status_code
        == 403
    )


# ------------------------------------------------------------------ the canary


PAGES = (
    "/console/statistics",
    "/console/statistics/2026-q1-v1",
    "/console/registry",
    "/console/referrals",
    "/console/referrals?all=true",
    "/console/prevention",
    "/console/audit",
    "/console/referrals/{referral}",
    "/console/investigations/{investigated}",
    "/console/audit/cases/{referral_case}",
    "/console/audit-grants?case={referral_case}",
)


@pytest.mark.parametrize(
    "caller",
    [
        "statistics_reader",
        "auditor",
        "provider_other",
        "investigator_other",
        "investigator_own",
        "focal_point_other",
        "coordinator",
    ],
)
def test_no_personal_data_on_any_of_these_pages_for_roles_that_may_not_see_it(
    world: World, caller: str
) -> None:
    client, _ = sign_in(world, caller)
    for path in PAGES:
        answer = client.get(path.format(**{k: str(v) for k, v in STANDARD.items()}))
        assert answer.status_code in (200, 403, 404), (caller, path, answer.status_code)
        assert CANARY not in answer.text, (caller, path)


def test_the_coordinator_plans_the_year_and_an_agency_reports_progress(world: World) -> None:
    year = datetime.now(UTC).year + 2
    client, csrf = sign_in(world, "coordinator")
    opened = client.post(
        "/console/prevention/work-plans",
        data={"csrf": csrf, "year": str(year), "page_year": str(year)},
    )
    assert opened.status_code == 303, opened.text
    planned = client.post(
        "/console/prevention/activities",
        data={
            "csrf": csrf,
            "page_year": str(year),
            "year": str(year),
            "kind": "training",
            "owner_agency": "unhcr",
            "area": "",
            "target": "40",
            "due_on": f"{year}-06-30",
        },
    )
    assert planned.status_code == 303, planned.text
    # the plan cannot be opened twice: a readable refusal
    again = client.post("/console/prevention/work-plans", data={"csrf": csrf, "year": str(year)})
    assert again.status_code == 409 and "Not recorded" in again.text
    # unhcr's focal point reports progress on its activity
    focal_point, fp_csrf = sign_in(world, "focal_point_own")
    progress = focal_point.post(
        "/console/prevention/progress",
        data={
            "csrf": fp_csrf,
            "page_year": str(year),
            "year": str(year),
            "activity": "1",
            "status": "in_progress",
            "achieved": "12",
        },
    )
    assert progress.status_code == 303, progress.text
    page = focal_point.get(f"/console/prevention?year={year}").text
    assert "12 / 40" in text(page) and "in_progress" in page


def test_a_risk_assessment_and_its_mitigation_are_recorded_and_mapped(world: World) -> None:
    client, csrf = sign_in(world, "focal_point_own")
    today = datetime.now(UTC).date().isoformat()
    factors = re.findall(r'name="rating_([a-z0-9_]+)"', client.get("/console/prevention").text)
    assert factors
    done = client.post(
        "/console/prevention/risk-assessments",
        data={
            "csrf": csrf,
            "agency": "unhcr",
            "area": "SO9901",
            "sector": "food_security",
            "assessed_on": today,
            **{f"rating_{f}": "5" for f in factors},
        },
    )
    assert done.status_code == 303, done.text
    page = client.get("/console/prevention").text
    assessment = re.search(r'name="assessment" value="([0-9a-f-]{36})"', page)
    assert assessment is not None
    # an area at high risk with no training nor awareness there: flagged
    assert "risk high, coverage low</span>" in page
    agreed = client.post(
        "/console/prevention/mitigation",
        data={
            "csrf": csrf,
            "assessment": assessment.group(1),
            "measure": "complaint_channels",
            "owner_agency": "unhcr",
            "due_on": today,
        },
    )
    assert agreed.status_code == 303, agreed.text
    assert "complaint_channels" in client.get("/console/prevention").text
    # a rating outside 1-5 is refused in words, nothing recorded
    events = world.event_count()
    bad = client.post(
        "/console/prevention/risk-assessments",
        data={
            "csrf": csrf,
            "agency": "unhcr",
            "area": "SO9901",
            "sector": "food_security",
            "assessed_on": today,
            f"rating_{factors[0]}": "9",
        },
    )
    assert bad.status_code in (409, 422) and "error-summary" in bad.text
    assert world.event_count() == events


def test_the_printable_report_is_a_console_page_and_the_api_gives_the_same_report(
    world: World,
) -> None:
    period = f"{datetime.now(UTC).year}-Q1"
    client, _ = sign_in(world, "auditor")
    page = client.get(f"/console/prevention/report/{period}", params={"format": "html"})
    assert page.status_code == 200
    assert 'lang="en"' in page.text and "Training compliance" in page.text
    assert "<style>" in page.text and page.text.count("<style>") == 1  # the console's own
    assert CANARY not in page.text


def test_the_coordinator_registers_a_provider_an_agency_and_an_entity(world: World) -> None:
    client, csrf = sign_in(world, "coordinator")
    steps = [
        (
            "/console/registry/agencies",
            {"code": "ngo-x", "name": "NGO X", "agency_type": "national_ngo"},
        ),
        ("/console/registry/investigating-entity", {"agency": "ngo-x", "entity": "ngo-x-ie"}),
        (
            "/console/registry/service-providers",
            {
                "code": "legal-x",
                "name": "Legal X",
                "service_types": ["legal", "psychosocial"],
                "areas": "SO2201 SO2202",
            },
        ),
    ]
    for path, data in steps:
        answer = client.post(path, data={"csrf": csrf, **data})
        assert answer.status_code == 303, (path, answer.text)
    network = world.mechanism.network()
    assert network.agencies["ngo-x"].investigating_entity == "ngo-x-ie"
    provider = network.providers["legal-x"]
    assert sorted(provider.areas) == ["SO2201", "SO2202"] and len(provider.service_types) == 2
    page = client.get("/console/registry").text
    assert "Legal X" in page and "ngo-x-ie" in page
    # registering it again is refused in words
    again = client.post("/console/registry/agencies", data={"csrf": csrf, **steps[0][1]})
    assert again.status_code == 409 and "Not recorded" in again.text


def test_a_provider_declines_a_referral_with_its_reason(world: World) -> None:
    made = referral(world.mechanism, Clock())
    project(world)
    client, csrf = sign_in(world, "provider_own")
    assert str(made) in client.get("/console/referrals").text
    done = client.post(
        f"/console/referrals/{made}/provider-decline", data={"csrf": csrf, "reason": "no capacity"}
    )
    assert done.status_code == 303, done.text
    assert str(world.mechanism.get_referral(made).status) == "declined_by_provider"


def test_the_investigating_entity_records_the_outcome(world: World) -> None:
    case_id = referred(world.mechanism, Clock())
    client, csrf = sign_in(world, "investigator_own")
    page = client.get(f"/console/investigations/{case_id}").text
    version = re.search(r'name="expected_version" value="(\d+)"', page)
    assert version is not None
    assert (
        client.post(
            f"/console/investigations/{case_id}/acknowledgement",
            data={"csrf": csrf, "expected_version": version.group(1)},
        ).status_code
        == 303
    )
    page = client.get(f"/console/investigations/{case_id}").text
    version = re.search(r'name="expected_version" value="(\d+)"', page)
    outcome = re.search(r'<option value="([a-z_]+)"', page[page.index('name="outcome"') :])
    assert version is not None and outcome is not None
    done = client.post(
        f"/console/investigations/{case_id}/outcome",
        data={"csrf": csrf, "expected_version": version.group(1), "outcome": outcome.group(1)},
    )
    assert done.status_code == 303, done.text
    assert str(world.mechanism.get_case(case_id).investigation.outcome) == outcome.group(1)


def test_the_pages_speak_french_to_a_french_session(world: World) -> None:
    checks = {
        "statistics_reader": ("/console/statistics/2026-q1-v1", "masqué"),
        "coordinator": ("/console/registry", "Politique du réseau"),
        "provider_own": ("/console/referrals", "Orientations vers votre organisation"),
        "auditor": ("/console/audit", "Rejouer le dossier"),
        "focal_point_own": ("/console/prevention", "Conformité des formations"),
    }
    for caller, (path, words) in checks.items():
        client, _ = sign_in(world, caller, lang="fr")
        page = client.get(path)
        assert page.status_code == 200 and words in page.text, (caller, path)
        assert 'lang="fr"' in page.text


def test_names_the_coordinator_types_are_shown_as_text_never_as_markup(world: World) -> None:
    client, csrf = sign_in(world, "coordinator")
    hostile = '<script>alert("x")</script><svg onload=alert(1)>'
    answer = client.post(
        "/console/registry/service-providers",
        data={
            "csrf": csrf,
            "code": "evil-x",
            "name": hostile,
            "service_types": "legal",
            "areas": "SO2201",
        },
    )
    assert answer.status_code == 303, answer.text
    for caller in ("coordinator", "provider_own"):
        page = sign_in(world, caller)[0].get("/console/registry").text
        assert hostile not in page and "<script>" not in page
        assert "&lt;script&gt;" in page


def test_the_coordinator_grants_an_auditor_one_case_and_ends_it(world: World) -> None:
    case_id = received(world.mechanism, Clock())
    client, csrf = sign_in(world, "coordinator")
    page = client.get("/console/audit-grants", params={"case": str(case_id)})
    assert page.status_code == 200 and "No auditor holds a grant" in page.text
    done = client.post(
        f"/console/audit-grants/{case_id}/grant",
        data={"csrf": csrf, "auditor": "aud-1", "reason": f"{CANARY} reason"},
    )
    assert done.status_code == 303, done.text
    assert world.mechanism.audit_grantees(case_id) == frozenset({"aud-1"})
    page = client.get(done.headers["location"]).text
    assert "aud-1" in page and CANARY not in page  # the reason is personal data: not shown
    auditor, _ = sign_in(world, "auditor")
    assert CANARY in auditor.get(f"/console/audit/cases/{case_id}").text
    ended = client.post(
        f"/console/audit-grants/{case_id}/revocation", data={"csrf": csrf, "auditor": "aud-1"}
    )
    assert ended.status_code == 303
    assert world.mechanism.audit_grantees(case_id) == frozenset()
    # the grant's reason (personal data) is not on the auditor's page once the grant ended
    assert CANARY not in auditor.get(f"/console/audit/cases/{case_id}").text
    # nobody else may grant
    for caller in ("auditor", "focal_point_own", "statistics_reader"):
        other, other_csrf = sign_in(world, caller)
        refused = other.post(
            f"/console/audit-grants/{case_id}/grant",
            data={"csrf": other_csrf, "auditor": "aud-1", "reason": "x"},
        )
        assert refused.status_code == 403, caller
    assert world.mechanism.audit_grantees(case_id) == frozenset()


def test_the_referring_focal_point_opens_the_referral_and_follows_up_after_delivery(
    world: World,
) -> None:
    made = referral(world.mechanism, Clock(), "accepted", "delivered")
    other, _ = sign_in(world, "focal_point_other")
    assert other.get(f"/console/referrals/{made}").status_code == 404
    client, csrf = sign_in(world, "focal_point_own")
    page = client.get(f"/console/referrals/{made}")
    assert page.status_code == 200
    assert f"/console/referrals/{made}/follow-up" in page.text
    assert "Accept the referral" not in page.text  # the provider's action, not the focal point's
    done = client.post(
        f"/console/referrals/{made}/follow-up", data={"csrf": csrf, "note": "called back"}
    )
    assert done.status_code == 303, done.text
    assert str(world.mechanism.get_referral(made).status) == "followed_up"
    refused = client.post(f"/console/referrals/{made}/acceptance", data={"csrf": csrf})
    assert refused.status_code == 403


def test_two_coordinators_setting_the_prevention_policy_at_once_get_a_conflict(
    world: World,
) -> None:
    def policy_form(client: TestClient) -> dict[str, str]:
        page = client.get("/console/prevention").text
        form = page[page.index('action="/console/prevention/policy"') :]
        form = form[: form.index("</form>")]
        fields = dict(re.findall(r'name="([a-z_]+)" value="([^"]*)"', form))
        targets = re.search(r'name="training_targets">([^<]*)</textarea>', form)
        assert targets is not None
        return {**fields, "training_targets": targets.group(1)}

    first, first_csrf = sign_in(world, "coordinator")
    second, second_csrf = sign_in(world, "coordinator")
    one, two = policy_form(first), policy_form(second)
    year = datetime.now(UTC).year
    saved = first.post(
        "/console/prevention/policy",
        data={**one, "csrf": first_csrf, "training_targets": f"unhcr {year} 40\nwfp {year} 25"},
    )
    assert saved.status_code == 303, saved.text
    clash = second.post(
        "/console/prevention/policy",
        data={**two, "csrf": second_csrf, "refresher_every_days": "90"},
    )
    assert clash.status_code == 409 and "Someone else changed this" in clash.text
    policy = world.mechanism.prevention_policy()
    assert policy is not None and policy.refresher_every.days == 365
    assert {(t.agency, t.personnel) for t in policy.training_targets} == {
        ("unhcr", 40),
        ("wfp", 25),
    }
    # the target shows in the compliance chart as the mark of unhcr's bar
    assert 'data-target="40"' in first.get(f"/console/prevention?year={year}").text
    # a focal point may not set it
    focal_point, csrf = sign_in(world, "focal_point_own")
    refused = focal_point.post(
        "/console/prevention/policy", data={**policy_form(first), "csrf": csrf}
    )
    assert refused.status_code == 403


def test_a_reassessment_from_a_stale_page_is_a_conflict(world: World) -> None:
    client, csrf = sign_in(world, "focal_point_own")
    today = datetime.now(UTC).date().isoformat()
    factors = re.findall(r'name="rating_([a-z0-9_]+)"', client.get("/console/prevention").text)
    done = client.post(
        "/console/prevention/risk-assessments",
        data={
            "csrf": csrf,
            "agency": "unhcr",
            "area": "SO7701",
            "sector": "shelter",
            "assessed_on": today,
            **{f"rating_{f}": "2" for f in dict.fromkeys(factors)},
        },
    )
    assert done.status_code == 303, done.text
    page = client.get("/console/prevention").text
    section = page[page.index("SO7701 · shelter") :]
    form = section[section.index('action="/console/prevention/reassessment"') :]
    form = form[: form.index("</form>")]
    fields = dict(re.findall(r'name="([a-z_]+)" value="([^"]*)"', form))
    ratings = {n: "4" for n in re.findall(r'name="(rating_[a-z0-9_]+)"', form)}
    base = {**fields, **ratings, "csrf": csrf, "assessed_on": today}
    assert client.post("/console/prevention/reassessment", data=base).status_code == 303
    # the same form again: read at the version before the reassessment
    stale = client.post("/console/prevention/reassessment", data=base)
    assert stale.status_code == 409 and "Someone else changed this" in stale.text


def test_a_focal_point_names_and_withdraws_an_alternate_of_its_agency(world: World) -> None:
    client, csrf = sign_in(world, "focal_point_own")
    named = client.post(
        "/console/prevention/alternates", data={"csrf": csrf, "agency": "unhcr", "user": "alt-2"}
    )
    assert named.status_code == 303, named.text
    page = client.get("/console/prevention").text
    assert 'name="user" value="alt-2"' in page
    withdrawn = client.post(
        "/console/prevention/alternate-withdrawals",
        data={"csrf": csrf, "agency": "unhcr", "user": "alt-2"},
    )
    assert withdrawn.status_code == 303, withdrawn.text
    assert "alt-2" not in client.get("/console/prevention").text
    # wfp's focal point cannot withdraw unhcr's alternate
    other, other_csrf = sign_in(world, "focal_point_other")
    events = world.event_count()
    refused = other.post(
        "/console/prevention/alternate-withdrawals",
        data={"csrf": other_csrf, "agency": "unhcr", "user": "alt-unhcr"},
    )
    assert refused.status_code in (403, 409) and world.event_count() == events


@pytest.mark.parametrize(
    ("caller", "path"),
    [
        ("statistics_reader", "/console/statistics/bad!id"),
        ("statistics_reader", "/console/statistics/2026-q1-v1/download/pdf"),
        ("provider_own", "/console/referrals/not-a-uuid"),
        ("investigator_own", "/console/investigations/not-a-uuid"),
        ("coordinator", "/console/prevention?year=1900"),
        ("coordinator", "/console/prevention/report/2026-Q9"),
        ("coordinator", "/console/prevention/report/2026-Q1?format=pdf"),
        ("auditor", "/console/audit/cases/not-a-uuid"),
        ("auditor", "/console/audit?case=zzz"),
        ("coordinator", "/console/audit-grants?case=zzz"),
    ],
)
def test_a_bad_address_is_a_readable_page_not_a_problem_document(
    world: World, caller: str, path: str
) -> None:
    client, _ = sign_in(world, caller)
    answer = client.get(path)
    assert answer.status_code == 404, answer.text
    assert answer.headers["content-type"].startswith("text/html")
    assert "error-summary" in answer.text


def test_a_bad_action_posted_is_a_readable_page_and_records_nothing(world: World) -> None:
    client, csrf = sign_in(world, "coordinator")
    events = world.event_count()
    for path in (
        "/console/prevention/nonsense",
        f"/console/audit-grants/{STANDARD['referral_case']}/nonsense",
        "/console/referrals/not-a-uuid/acceptance",
    ):
        answer = client.post(path, data={"csrf": csrf})
        assert answer.status_code in (403, 404), (path, answer.status_code)
        assert answer.headers["content-type"].startswith("text/html")
    assert world.event_count() == events


def test_a_rating_sent_twice_is_refused_in_words_not_a_server_error(world: World) -> None:
    """Found by tests/integration/test_console_forms_fuzzed.py: a repeated field is a list."""
    client, csrf = sign_in(world, "focal_point_own")
    events = world.event_count()
    answer = client.post(
        "/console/prevention/risk-assessments",
        content="csrf=" + csrf + "&agency=unhcr&area=SO2201&sector=shelter"
        "&assessed_on=2026-01-01&rating_x=1&rating_x=2",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code == 422 and "Please check the form" in answer.text
    assert world.event_count() == events


def test_a_training_recorded_in_error_is_withdrawn_by_its_agency_only(world: World) -> None:
    year = datetime.now(UTC).year
    client, csrf = sign_in(world, "focal_point_own")
    recorded = client.post(
        "/console/prevention/trainings",
        data={
            "csrf": csrf,
            "agency": "unhcr",
            "held_on": datetime.now(UTC).date().isoformat(),
            "area": "SO5501",
            "audience": "contractors",
            "topic": "sea_basics",
            "female": "2",
            "male": "1",
            "other_or_not_recorded": "0",
        },
    )
    assert recorded.status_code == 303, recorded.text
    page = client.get(f"/console/prevention?year={year}").text
    rows = [
        r
        for r in re.findall(r"<tr>.*?</tr>", page, flags=re.S)
        if "SO5501" in r and "training-withdrawals" in r
    ]
    assert len(rows) == 1
    found = re.search(r'name="record" value="([0-9a-f-]{36})"', rows[0])
    assert found is not None
    record = found.group(1)
    # wfp's focal point sees no withdraw button for it, and cannot withdraw it
    other, other_csrf = sign_in(world, "focal_point_other")
    assert record not in other.get(f"/console/prevention?year={year}").text
    events = world.event_count()
    refused = other.post(
        "/console/prevention/training-withdrawals", data={"csrf": other_csrf, "record": record}
    )
    assert refused.status_code in (403, 409) and world.event_count() == events
    done = client.post(
        "/console/prevention/training-withdrawals", data={"csrf": csrf, "record": record}
    )
    assert done.status_code == 303, done.text
    assert record not in client.get(f"/console/prevention?year={year}").text


def test_after_a_transfer_sharing_no_identity_the_new_agency_reads_no_contact_on_the_referral(
    world: World,
) -> None:
    """The console's side of the attack review of #21 (F1): the referral page is no way round
    what a transfer shared."""
    made = referral(world.mechanism, Clock())
    case_id = world.mechanism.get_referral(made).case_id
    world.mechanism.transfer_case(
        case_id,
        actor=Actor("fp-unhcr", "unhcr", Role.FOCAL_POINT),
        to_agency="wfp",
        reason=TransferReason.IMPLICATED_AGENCY_CUSTODY,
        shared=(SharedItem.ALLEGATION_SUMMARY,),
        at=datetime.now(UTC),
    )
    client, _ = sign_in(world, "focal_point_other")
    page = client.get(f"/console/referrals/{made}")
    assert page.status_code == 200, page.text
    assert CANARY not in page.text
    # the provider the survivor agreed to be contacted by still reads the contact
    provider, _ = sign_in(world, "provider_own")
    assert f"{CANARY} phone" in provider.get(f"/console/referrals/{made}").text
