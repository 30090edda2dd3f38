"""The complainants' pages (issue #20) through the real app: report, receipt, follow-up,
community feedback; bad input, forged or replayed forms, the limits, the headers.

Each test is its own client (an address of its own), over one world per module.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from babel.dates import format_date
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.api.app import create_app
from services.api.pages.i18n import BY_CODE, Catalogues
from services.application.receipts import ALPHABET, parse_receipt_code
from services.bootstrap import complaint_mechanism
from services.settings import Settings
from tests.api_world import World, make_world

ADDRESSES = (f"192.0.2.{n}" for n in itertools.count(10))
OVERRIDE = """msgid ""
msgstr ""
"Content-Type: text/plain; charset=utf-8\\n"

msgid "status.received"
msgstr "Tumepokea ripoti yako (maneno ya mtandao wetu)."
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    data = tmp_path_factory.mktemp("pages")
    # a network's own words for one status phrase, in Swahili
    (data / "locales" / "sw").mkdir(parents=True)
    (data / "locales" / "sw" / "policy.po").write_text(OVERRIDE, encoding="utf-8")
    mechanism = complaint_mechanism(
        Settings(data_dir=data, event_store=f"sqlite:///{data / 'events.sqlite3'}")
    )
    yield make_world(
        data,
        mechanism,
        public_pages_agency="unhcr",
        public_intake_per_client=3,
        receipt_failures_per_client=4,
    )
    mechanism.close()


@pytest.fixture
def client(world: World) -> Iterator[TestClient]:
    with TestClient(world.api, client=(next(ADDRESSES), 5000)) as test_client:
        yield test_client


def form_fields(page: str) -> dict[str, str]:
    return dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', page))


def main_text(page: str) -> str:
    body = page[page.index("<main") : page.index("</main>")]
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body)).strip()


def report(client: TestClient, lang: str = "en", **fields: str) -> httpx.Response:
    page = client.get(f"/?lang={lang}")
    assert page.status_code == 200
    data = {
        **form_fields(page.text),
        "what": "A guard at the distribution asked my sister for sex.",
        "danger": "no",
        "role": "anonymous",
        "receipt": "yes",
        **fields,
    }
    return client.post("/report", data=data)


def receipt_code(page: str) -> str:
    found = re.search(r'id="receipt-code"[^>]*>([^<]+)<', page)
    assert found, page
    return found.group(1)


def follow_up(client: TestClient, code: str, lang: str = "en") -> httpx.Response:
    page = client.get(f"/follow-up?lang={lang}")
    return client.post("/follow-up", data={**form_fields(page.text), "code": code})


def test_a_complaint_gets_a_receipt_and_its_follow_up_shows_the_focal_points_feedback(
    world: World, client: TestClient
) -> None:
    # given a complaint sent through the form, someone in danger now
    answer = report(client, danger="yes", where="Camp B, water point", when="last Tuesday")
    assert answer.status_code == 200, answer.text
    code = receipt_code(answer.text)
    parsed = parse_receipt_code(code)
    assert parsed is not None
    # then the case is received by the form's agency with the immediate-safety-risk flag,
    # and what, where and when are in its narrative
    receipt = world.mechanism.receipt(parsed.locator)
    assert receipt is not None
    case = world.mechanism.get_case(receipt.case_id)
    assert case.immediate_safety_risk is True
    assert case.receiving_agency == "unhcr"
    assert "Camp B, water point" in case.narrative and "last Tuesday" in case.narrative
    assert "Someone in danger now: yes" in case.narrative
    assert "in danger now" in main_text(answer.text)
    # when a focal point gives feedback through the API, one of it a policy template
    for message in ("MSG-1 we are looking into it", "template:assistance"):
        given = client.post(
            f"/v1/cases/{receipt.case_id}/feedback",
            json={"message": message, "channel": "receipt_code"},
            headers=world.headers("focal_point_own"),
        )
        assert given.status_code == 200, given.text
    # then the follow-up page shows the status in plain words and the feedback, the
    # template in the reader's language
    status = follow_up(client, code.lower().replace("-", " "), lang="fr")
    assert status.status_code == 200, status.text
    text = main_text(status.text)
    assert "Votre plainte a été reçue" in text
    # dates in the reader's language ("Reçue le 6 décembre 2026.")
    today = format_date(case.received_at.date(), format="long", locale="fr")
    assert f"Reçue le {today}." in text
    assert "MSG-1 we are looking into it" in text
    assert "Une aide est à votre disposition" in text
    assert "template:" not in text
    # and nothing of the case but that: no narrative, no case id
    assert "Camp B" not in status.text and str(receipt.case_id) not in status.text


def test_a_network_overrides_a_status_phrase_in_its_own_words(client: TestClient) -> None:
    code = receipt_code(report(client).text)
    text = main_text(follow_up(client, code, lang="sw").text)
    assert "Tumepokea ripoti yako (maneno ya mtandao wetu)." in text
    # the rest of the page is the shipped Swahili
    assert "Ujumbe kwa ajili yako" in text


@pytest.mark.parametrize(
    ("lang", "fields", "expected"),
    [
        ("en", {"what": "   "}, "Please tell us what happened."),
        ("fr", {"what": "   "}, "Merci de nous dire ce qui s'est passé."),
        ("ar", {"what": ""}, "يرجى إخبارنا بما حدث."),
        ("es", {"what": "x" * 20_001}, "Es demasiado largo: acórtelo, por favor."),
        ("pt", {"role": "king"}, "Indique quem é (ou que prefere não dizer)."),
        ("sw", {"phone": "+255 700 000 000"}, "Ili ubaki bila kujulikana"),
    ],
)
def test_bad_input_gets_a_readable_message_in_the_pages_language_and_nothing_is_recorded(
    world: World, client: TestClient, lang: str, fields: dict[str, str], expected: str
) -> None:
    before = world.event_count()
    answer = report(client, lang=lang, where="kept <b>as typed</b>", **fields)
    assert answer.status_code == 422
    assert f'lang="{lang}"' in answer.text
    assert expected.replace("'", "&#39;") in answer.text
    # what was typed comes back (escaped), with a fresh token to send it again
    assert "kept &lt;b&gt;as typed&lt;/b&gt;" in answer.text
    assert form_fields(answer.text)["form_nonce"]
    assert world.event_count() == before


def test_community_feedback_is_recorded_for_the_agencys_feedback_mechanism(
    world: World, client: TestClient
) -> None:
    page = client.get("/feedback?lang=es")
    before = world.event_count()
    answer = client.post(
        "/feedback",
        data={
            **form_fields(page.text),
            "category": "service_complaint",
            "sector": "wash",
            "text": "The water point has been broken for a week.",
        },
    )
    assert answer.status_code == 200, answer.text
    assert "Gracias" in answer.text
    assert world.event_count() == before + 1
    # and a wrong category is refused in the page's language, nothing recorded
    page = client.get("/feedback?lang=es")
    refused = client.post(
        "/feedback",
        data={**form_fields(page.text), "category": "bribe", "sector": "wash", "text": "x"},
    )
    assert refused.status_code == 422
    assert "Elija qué tipo de comentario es, por favor." in refused.text
    assert world.event_count() == before + 1


def test_a_form_without_its_token_from_another_client_or_sent_twice_records_nothing(
    world: World, client: TestClient
) -> None:
    before = world.event_count()
    page = client.get("/")
    fields = {**form_fields(page.text), "what": "something happened", "role": "anonymous"}
    # no token at all
    bare = {k: v for k, v in fields.items() if not k.startswith("form_")}
    assert client.post("/report", data=bare).status_code == 422
    # a token fetched by another client (an attacker's server) and posted from this one
    with TestClient(world.api, client=("198.51.100.200", 5000)) as attacker:
        stolen = form_fields(attacker.get("/").text)
    assert client.post("/report", data={**fields, **stolen}).status_code == 422
    # a forged MAC
    assert client.post("/report", data={**fields, "form_mac": "A" * 43}).status_code == 422
    # a post from another site's page
    for site in ("cross-site", "same-site"):
        cross = client.post("/report", data=fields, headers={"Sec-Fetch-Site": site})
        assert cross.status_code == 403
    assert world.event_count() == before
    # the real form goes through once; sent again (a reload, a double tap), it is not
    assert client.post("/report", data=fields).status_code == 200
    after = world.event_count()
    again = client.post("/report", data=fields)
    assert again.status_code == 409
    assert world.event_count() == after


def test_the_pages_share_the_apis_intake_limit(world: World, client: TestClient) -> None:
    # given a client that sent its 3 complaints (the limit) through the JSON form
    for _ in range(3):
        sent = client.post("/v1/public/complaints", json={"agency": "unhcr", "narrative": "x"})
        assert sent.status_code == 201
    before = world.event_count()
    # when it sends one more through the pages; then it is refused in its language
    answer = report(client, lang="fr", what="KEPT-TEXT what happened")
    assert answer.status_code == 429
    assert int(answer.headers["retry-after"]) >= 1
    assert "Rien n&#39;a été enregistré cette fois" in answer.text
    # and the form comes back with what was typed, to send later: nothing is lost
    assert "KEPT-TEXT what happened" in answer.text
    assert form_fields(answer.text)["form_nonce"]
    assert world.event_count() == before


def test_the_follow_up_refuses_a_wrong_code_and_a_client_out_of_failures(
    world: World, client: TestClient
) -> None:
    code = receipt_code(report(client).text)
    wrong = code[:-1] + (ALPHABET[0] if code[-1] != ALPHABET[0] else ALPHABET[1])
    for attempt in (wrong, "not a code", wrong, wrong):
        answer = follow_up(client, attempt, lang="pt")
        assert answer.status_code == 404
        assert "Não encontrámos nenhuma queixa com este código." in answer.text
        # the code typed is never echoed back into the page
        assert wrong not in answer.text
    # the client's 4 failures are used up: refused, even with the right code
    refused = follow_up(client, code, lang="pt")
    assert refused.status_code == 429
    assert "Aguarde antes de tentar novamente" in refused.text
    # an empty code is a readable message, not a failure
    with TestClient(world.api, client=(next(ADDRESSES), 5000)) as other:
        empty = follow_up(other, "  ")
        assert empty.status_code == 422
        assert "Please enter your code." in empty.text


def test_every_page_is_no_store_cookie_free_and_allows_only_this_site(
    client: TestClient,
) -> None:
    code = receipt_code(report(client).text)
    pages = [
        client.get("/"),
        client.get("/report"),
        client.get("/follow-up"),
        client.get("/feedback"),
        report(client, what="another thing"),
        follow_up(client, code),
    ]
    for page in pages:
        assert page.status_code == 200
        assert page.headers["cache-control"] == "no-store"
        assert "set-cookie" not in page.headers
        policy = page.headers["content-security-policy"]
        assert policy.startswith("default-src 'none';")
        assert "frame-ancestors 'none'" in policy and "form-action 'self'" in policy
        assert "http" not in policy  # no other origin
        # nothing loaded from anywhere: no src or stylesheet link in the page at all
        linked = re.findall(
            r"<(?:script|img|link|iframe)[^>]*\b(?:src|href)=\"([^\"]*)\"", page.text
        )
        assert linked == ["data:,"]  # the empty favicon, so that none is asked for
        # every form posts, and the code is in no URL of the page
        assert 'method="get"' not in page.text.lower()
        assert code not in re.findall(r'href="([^"]*)"', page.text)
    # the code appears on the receipt page only once (in the code box)
    assert pages[4].text.count(receipt_code(pages[4].text)) == 1


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("ar-EG,ar;q=0.9,en;q=0.5", "ar"),
        ("fr-CA", "fr"),
        ("de-DE,pt;q=0.8,es;q=0.9", "es"),
        ("sw;q=0.1, xx", "sw"),
        ("", "en"),
        ("*", "en"),
        ("garbage;;;q=abc,,", "en"),
    ],
)
def test_the_language_comes_from_accept_language_unless_the_picker_says(
    client: TestClient, header: str, expected: str
) -> None:
    page = client.get("/", headers={"Accept-Language": header})
    direction = "rtl" if BY_CODE[expected].rtl else "ltr"
    assert f'<html lang="{expected}" dir="{direction}">' in page.text
    picked = client.get("/?lang=pt", headers={"Accept-Language": header})
    assert '<html lang="pt" dir="ltr">' in picked.text
    # every language is offered by the picker, in its own name
    for code in BY_CODE:
        assert f'hreflang="{code}"' in page.text


def test_the_first_page_weighs_under_60_kb(client: TestClient) -> None:
    for lang in BY_CODE:
        page = client.get(f"/?lang={lang}")
        assert len(page.content) < 60 * 1024, (lang, len(page.content))


def test_the_receipt_code_in_a_url_is_not_looked_up(world: World, client: TestClient) -> None:
    code = receipt_code(report(client).text)
    # a look-up is a post: the follow-up page ignores a code in its URL
    page = client.get(f"/follow-up?code={code}")
    assert page.status_code == 200
    assert code not in page.text
    assert 'id="status"' not in page.text


def test_a_networks_catalogue_overrides_only_what_it_translates(tmp_path: Path) -> None:
    # a network's file overrides what it translates; the rest is the shipped catalogue
    (tmp_path / "fr").mkdir()
    (tmp_path / "fr" / "policy.po").write_text('msgid "status.closed"\nmsgstr "Fermé."\n')
    catalogues = Catalogues(tmp_path)
    assert catalogues.policy_words("fr", "status.closed") == "Fermé."
    assert catalogues.policy_words("fr", "status.referred").startswith("Votre plainte")


def test_before_the_network_is_set_up_the_pages_say_to_come_back_later(tmp_path: Path) -> None:
    config = Settings(data_dir=tmp_path, event_store=f"sqlite:///{tmp_path / 'e.sqlite3'}")
    mechanism = complaint_mechanism(config)
    try:
        with TestClient(create_app(config, mechanism=mechanism)) as fresh:
            for path in ("/", "/feedback"):
                page = fresh.get(f"{path}?lang=fr")
                assert page.status_code == 503
                assert page.headers["content-type"].startswith("text/html")
                assert "Merci de réessayer plus tard" in page.text
    finally:
        mechanism.close()


FIELD_TEXT = st.one_of(
    st.sampled_from(["", " ", "yes", "no", "unsure", "anonymous", "survivor", "unhcr", "wash"]),
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=2_001, max_size=2_100),
)
REPORT_FIELDS = ("what", "where", "when", "danger", "role", "name", "phone", "email", "receipt")


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(fields=st.dictionaries(st.sampled_from(REPORT_FIELDS), FIELD_TEXT, max_size=9))
def test_any_report_form_is_recorded_whole_or_answered_with_a_readable_page_and_nothing_recorded(
    world: World, fields: dict[str, str]
) -> None:
    with TestClient(world.api, client=(next(ADDRESSES), 5000)) as fresh:
        page = fresh.get("/?lang=ar")
        before = world.event_count()
        answer = fresh.post("/report", data={**form_fields(page.text), **fields})
    # never a server error, always an HTML page in the reader's language
    assert answer.status_code in (200, 422), answer.text[:500]
    assert answer.headers["content-type"].startswith("text/html")
    assert '<html lang="ar" dir="rtl">' in answer.text
    if answer.status_code == 200:
        assert world.event_count() > before
        assert fields.get("what", "").strip()
    else:
        assert world.event_count() == before
        assert 'class="error-summary"' in answer.text
