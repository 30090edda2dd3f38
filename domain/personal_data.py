"""Personal data is marked in the type, so encryption and redaction find it from the types.

A field that identifies a person (a name, contact details, the free-text narrative, an exact
place, any free text a user typed about people) is annotated ``PersonalText`` or holds a
``PersonDetails``. Nothing keeps a hand-written list of such fields: ``personal_data_paths``
reads the annotations of an event class.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any, Final, Union


class PersonalData:
    """Marker placed in ``Annotated[...]`` on every field that holds personal data."""

    def __repr__(self) -> str:
        return "PERSONAL"


PERSONAL: Final = PersonalData()

PersonalText = Annotated[str, PERSONAL]
"""Free text or an identifier that can point to a person."""

ERASED: Final = "\u2327erased\u2327"
"""What a personal-data field holds once its data key was destroyed (crypto-shredding): the
value can no longer be read by anyone. Views show such a field as erased, never this text."""


def is_erased(value: object) -> bool:
    """Whether a personal-data value was erased."""
    return value == ERASED


@dataclass(frozen=True)
class PersonDetails:
    """Who someone is and how to reach them. Every field is personal data."""

    name: PersonalText | None = None
    phone: PersonalText | None = None
    email: PersonalText | None = None
    address: PersonalText | None = None


def _is_personal(annotation: Any) -> bool:
    if typing.get_origin(annotation) is Annotated:
        return any(isinstance(m, PersonalData) for m in annotation.__metadata__)
    return False


def _members(annotation: Any) -> tuple[Any, ...]:
    origin = typing.get_origin(annotation)
    if origin is Union or origin is types.UnionType:
        return typing.get_args(annotation)
    if origin in (tuple, list, frozenset, set):
        return typing.get_args(annotation)
    return (annotation,)


@cache
def personal_data_paths(cls: type) -> tuple[str, ...]:
    """Dotted paths of every personal-data field of a dataclass, nested ones included.

    >>> personal_data_paths(PersonDetails)
    ('name', 'phone', 'email', 'address')
    """
    paths: list[str] = []
    hints = typing.get_type_hints(cls, include_extras=True)
    for field in dataclasses.fields(cls):
        annotation = hints[field.name]
        for member in _members(annotation):
            if _is_personal(member):
                paths.append(field.name)
                break
            inner = typing.get_args(member)[0] if typing.get_origin(member) is Annotated else member
            if isinstance(inner, type) and dataclasses.is_dataclass(inner):
                paths.extend(f"{field.name}.{sub}" for sub in personal_data_paths(inner))
                break
    return tuple(paths)
