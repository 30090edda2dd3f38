"""The API's list of a case's personal fields follows the domain's marks, so a personal field
added to the domain cannot reach a reader without a redaction rule."""

from __future__ import annotations

from domain.case import Allegation, Case, Closure
from domain.need_to_know import CASE_PERSONAL_FIELDS, PERSON_FIELDS
from domain.personal_data import PersonDetails, personal_data_paths


def test_every_personal_field_the_domain_marks_is_redactable() -> None:
    marked = {
        *(f"allegation.{p}" for p in personal_data_paths(Allegation)),
        *(f"complainant.{p}" for p in personal_data_paths(PersonDetails)),
        *(f"survivor.{p}" for p in personal_data_paths(PersonDetails)),
        *(
            p
            for p in personal_data_paths(Case.Received)
            if not p.startswith(("complainant", "survivor"))
        ),
    }
    assert marked <= set(CASE_PERSONAL_FIELDS)
    assert set(PERSON_FIELDS) == set(personal_data_paths(PersonDetails))


def test_closure_reasons_typed_by_users_are_redactable() -> None:
    free_text = {"no_outcome_reason", "no_feedback_reason"}
    assert free_text <= set(Closure.__dataclass_fields__)
    assert {f"closure.{f}" for f in free_text} <= set(CASE_PERSONAL_FIELDS)
