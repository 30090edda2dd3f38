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
from enum import StrEnum
from functools import cache
from typing import Annotated, Any, Final, Union


class PersonalData:
    """Marker placed in ``Annotated[...]`` on every field that holds personal data."""

    def __repr__(self) -> str:
        return "PERSONAL"


PERSONAL: Final = PersonalData()


class DataSubject(StrEnum):
    """Whose personal data a field holds: each person in a case has a data key of their own,
    so one person's data can be erased without another's."""

    COMPLAINANT = "complainant"
    SURVIVOR = "survivor"
    ALLEGED_PERPETRATOR = "alleged_perpetrator"
    CASE = "case"
    """Free text staff wrote about the case (notes, reasons): it may name anyone in it."""


PersonalText = Annotated[str, PERSONAL]
"""Free text or an identifier that can point to a person (whose: the enclosing field's
``DataSubject``, else ``DataSubject.CASE``)."""

SurvivorText = Annotated[str, PERSONAL, DataSubject.SURVIVOR]
"""Personal text about the survivor (what happened, where)."""

ComplainantText = Annotated[str, PERSONAL, DataSubject.COMPLAINANT]
"""Personal text exchanged with the complainant."""

PerpetratorText = Annotated[str, PERSONAL, DataSubject.ALLEGED_PERPETRATOR]
"""Who the alleged perpetrator is."""

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

    def erased(self) -> PersonDetails:
        """The same details with every given value erased."""
        return PersonDetails(
            *(None if getattr(self, f.name) is None else ERASED for f in dataclasses.fields(self))
        )


def _metadata(annotation: Any) -> tuple[Any, tuple[Any, ...]]:
    """The annotated type and its metadata (none for a plain type)."""
    if typing.get_origin(annotation) is Annotated:
        return typing.get_args(annotation)[0], tuple(annotation.__metadata__)
    return annotation, ()


def _members(annotation: Any) -> tuple[Any, ...]:
    origin = typing.get_origin(annotation)
    if origin is Union or origin is types.UnionType:
        return typing.get_args(annotation)
    if origin in (tuple, list, frozenset, set):
        return typing.get_args(annotation)
    return (annotation,)


def _subject(metadata: tuple[Any, ...], inherited: DataSubject | None) -> DataSubject | None:
    for m in metadata:
        if isinstance(m, DataSubject):
            return m
    return inherited


@cache
def _fields(cls: type, inherited: DataSubject | None) -> tuple[tuple[str, DataSubject], ...]:
    found: list[tuple[str, DataSubject]] = []
    hints = typing.get_type_hints(cls, include_extras=True)
    for field in dataclasses.fields(cls):
        outer, outer_meta = _metadata(hints[field.name])
        subject = _subject(outer_meta, inherited)
        for member in _members(outer):
            inner, meta = _metadata(member)
            if any(isinstance(m, PersonalData) for m in (*outer_meta, *meta)):
                found.append((field.name, _subject(meta, subject) or DataSubject.CASE))
                break
            if isinstance(inner, type) and dataclasses.is_dataclass(inner):
                found.extend(
                    (f"{field.name}.{sub}", who)
                    for sub, who in _fields(inner, _subject(meta, subject))
                )
                break
    return tuple(found)


def personal_data_fields(cls: type) -> tuple[tuple[str, DataSubject], ...]:
    """Dotted path and data subject of every personal-data field of a dataclass.

    >>> personal_data_fields(PersonDetails)[0]
    ('name', <DataSubject.CASE: 'case'>)
    """
    return _fields(cls, None)


def personal_data_paths(cls: type) -> tuple[str, ...]:
    """Dotted paths of every personal-data field of a dataclass, nested ones included.

    >>> personal_data_paths(PersonDetails)
    ('name', 'phone', 'email', 'address')
    """
    return tuple(path for path, _ in personal_data_fields(cls))
