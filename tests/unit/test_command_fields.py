"""A command's body reaches the application field for field, by name (``command_fields``):
the API's routes and the console's forms no longer spell each command's parameters, so a
body field the command does not take would fail at run time. These tests hold every body the
console's tables pair with a command to the command's parameters, and check what
``command_fields`` hands on."""

from __future__ import annotations

import inspect
import operator
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import BaseModel

from domain.vocabulary import SharedItem, TransferReason
from services.api.console.case import ACTIONS
from services.api.console.referrals import (
    INVESTIGATION_COMMANDS,
    REFERRAL_BODIES,
    REFERRAL_COMMANDS,
)
from services.api.schemas.cases import (
    AcknowledgementIn,
    FeedbackToComplainantIn,
    FocalPointsIn,
    OutcomeIn,
    TransferIn,
)
from services.api.writes import command_fields
from services.application.mechanism import ComplaintMechanism


class _Names:
    """Stands for the application: ``lambda app: app.give_feedback`` answers its name."""

    def __getattr__(self, name: str) -> str:
        return name


def _parameters(command: Callable[[Any], Any]) -> set[str]:
    """The keyword parameters of the application's command (a declared decision: its domain
    method's)."""
    name = command(_Names())
    declared = inspect.getattr_static(ComplaintMechanism, name)
    method = getattr(declared, "decide", declared)
    return {
        p.name
        for p in inspect.signature(method).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }


def _unknown(model: type[BaseModel], command: Callable[[Any], Any], *extra: str) -> set[str]:
    fields = {*model.model_fields, *extra} - {"expected_version"}
    return fields - _parameters(command)


PAIRS = [
    *((f"case:{a.name}", a.model, a.command) for a in ACTIONS.values()),
    *((f"referral:{n}", REFERRAL_BODIES[n], c) for n, c in REFERRAL_COMMANDS.items()),
    ("investigation:acknowledgement", AcknowledgementIn, INVESTIGATION_COMMANDS["acknowledgement"]),
    ("investigation:outcome", OutcomeIn, INVESTIGATION_COMMANDS["outcome"]),
]


@pytest.mark.parametrize(("model", "command"), [p[1:] for p in PAIRS], ids=[p[0] for p in PAIRS])
def test_every_field_of_a_body_is_a_parameter_of_its_command(
    model: type[BaseModel], command: Callable[[Any], Any]
) -> None:
    assert _unknown(model, command) == set()


def test_a_field_the_command_does_not_take_is_caught() -> None:
    # the check itself: a body with one field too many for give_feedback
    class Stray(FeedbackToComplainantIn):
        urgency: int = 1

    assert _unknown(Stray, lambda app: app.give_feedback) == {"urgency"}
    assert _unknown(FocalPointsIn, lambda app: app.give_feedback) == {"focal_points"}


def test_the_body_is_handed_on_with_lists_as_tuples_and_without_its_version() -> None:
    body = TransferIn(
        to_agency="wfp",
        reason=TransferReason.CAPACITY,
        shared=[SharedItem.NARRATIVE],
        expected_version=3,
    )

    assert command_fields(body) == {
        "to_agency": "wfp",
        "reason": body.reason,
        "shared": (body.shared[0],),
        "note": None,
    }
    assert command_fields(body, "note") == {
        "to_agency": "wfp",
        "reason": body.reason,
        "shared": (body.shared[0],),
    }


def test_a_body_cannot_set_or_lose_an_argument_the_server_gives() -> None:
    """Attack review of the commands-as-data change: a body field named like an argument the
    server gives (the actor, the time, the target's) or given twice must never be merged in
    silently; and a body's expected_version must be on its target, never dropped."""
    from uuid import uuid4  # noqa: PLC0415

    from pydantic import BaseModel  # noqa: PLC0415

    from services.api.writes import calling, merged  # noqa: PLC0415
    from services.application.commands import expecting  # noqa: PLC0415

    with pytest.raises(TypeError, match="reserved"):
        merged({"at": 1})
    with pytest.raises(TypeError, match="reserved"):
        merged({"note": "x"}, {"actor": "someone"})
    with pytest.raises(TypeError, match="twice"):
        merged({"agency": "wfp"}, {"agency": "unhcr"})
    assert merged({"note": "x"}, {"agency": "unhcr"}) == {"note": "x", "agency": "unhcr"}

    class Versioned(BaseModel):
        note: str
        expected_version: int | None = None

    record = uuid4()
    actor: Any = object()
    command: Any = operator.attrgetter("give_consent")
    with pytest.raises(TypeError, match="expected_version"):
        calling(command, Versioned(note="x", expected_version=3), record, actor=actor)
    # on its target: accepted
    calling(command, Versioned(note="x", expected_version=3), expecting(record, 3), actor=actor)
