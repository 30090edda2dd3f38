"""The pages' language and words: whatever a browser sends, a language of ours; a status
code always has words (issue #20)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import cast, get_args

from hypothesis import given
from hypothesis import strategies as st

from domain.case import Case, CaseStatus
from services.api.pages.i18n import (
    CODES,
    SHIPPED,
    feedback_words,
    negotiate,
    status_words,
)
from services.api.routes.public import public_status
from services.api.schemas.public import PublicStatus


@given(requested=st.one_of(st.none(), st.text(max_size=12)), header=st.text(max_size=200))
def test_any_picker_value_and_header_give_one_of_our_languages(
    requested: str | None, header: str
) -> None:
    assert negotiate(requested, header) in CODES


def test_the_picker_wins_over_the_header_and_regional_tags_find_their_language() -> None:
    assert negotiate("sw", "fr-FR,fr;q=0.9") == "sw"
    assert negotiate("xx", "pt-BR") == "pt"
    assert negotiate(None, "zh-CN, ar-SA;q=0.2") == "ar"
    assert negotiate(None, "en;q=0, es;q=0.5") == "es"


def test_every_case_status_is_told_in_words_in_every_language() -> None:
    for status in CaseStatus:
        for closed in (False, True):
            case = cast(Case, SimpleNamespace(status=status, is_closed=closed))
            code = public_status(case)
            assert code in get_args(PublicStatus)
            assert code == "closed" if closed else code != "closed"
            for lang in CODES:
                words = status_words(code, lang)
                assert words and not words.startswith("status.")


def test_a_feedback_template_is_told_in_the_readers_language_and_anything_else_as_written() -> None:
    assert feedback_words("template:closed", "es") == SHIPPED.policy_words("es", "feedback.closed")
    assert feedback_words("template:closed", "es").startswith("El asunto")
    # an unknown template, or text around one, is shown as the focal point wrote it
    assert feedback_words("template:nothing_like_it", "fr") == "template:nothing_like_it"
    assert feedback_words("see template:closed", "fr") == "see template:closed"
