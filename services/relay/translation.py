"""Stored domain events -> published contract messages.

Internal events are never published as they are. Each domain event class is paired, by name,
with the contract type ``org.psea.cbcm.<aggregate>.<event>.v1`` (``Case.FocalPointsAssigned``
-> ``case.focal_points_assigned``), and its ``data`` is built from the event's public
fields by msgspec: personal fields (``PersonalText``, ``PersonDetails``, as the domain marks
them) are withheld before conversion, nested values keep only the fields their contract
Struct declares, and the few published booleans that stand in for withheld data are listed
in ``DERIVED``.

The pairing is checked field by field when this module is imported (``coverage_problems``
lists what does not fit): a domain field that is neither published, withheld as personal nor
replaced by a derived field, or a contract field that nothing fills, makes translation of
that event class fail loudly instead of publishing a message that silently lost or invented
something.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
from eventsourcing.domain import Aggregate

from contracts.catalogue import MESSAGE_TYPES, encode_message, schema_id
from contracts.envelope import AggregateName, CloudEvent, EventData, message_type
from domain.assistance import AssistanceReferral
from domain.case import Case
from domain.feedback import Feedback
from domain.network import Network
from domain.notification import Notification, StaffContact
from domain.personal_data import PersonDetails, personal_data_paths
from domain.prevention import (
    AwarenessActivity,
    FocalPointReadiness,
    PreventionPolicy,
    RiskAssessment,
    TrainingSession,
    WorkPlan,
)
from domain.vocabulary import IDENTIFYING_ITEMS

PUBLISHED_AGGREGATES: Mapping[type[Aggregate], tuple[AggregateName, str]] = {
    Case: ("case", "case_id"),
    AssistanceReferral: ("assistance_referral", "referral_id"),
    Feedback: ("feedback", "feedback_id"),
    Network: ("network", "network_id"),
    TrainingSession: ("training_session", "training_session_id"),
    AwarenessActivity: ("awareness_activity", "awareness_activity_id"),
    FocalPointReadiness: ("focal_point_readiness", "focal_point_readiness_id"),
    RiskAssessment: ("risk_assessment", "risk_assessment_id"),
    WorkPlan: ("work_plan", "work_plan_id"),
    PreventionPolicy: ("prevention_policy", "prevention_policy_id"),
    StaffContact: ("staff_contact", "contact_id"),
    Notification: ("notification", "notification_id"),
}
"""Each aggregate whose events are published: its name in types and subjects, and the name
of its id field in ``data``."""

ENVELOPE_FIELDS = frozenset({"originator_id", "originator_version", "timestamp"})
"""Event fields that go to the envelope (id, version, time) rather than into ``data``."""

# The class of the aggregate's created-event; the type name already says which aggregate.
_INTERNAL_FIELDS = frozenset({"originator_topic"})


def _given(text: str | None) -> bool:
    return text is not None and bool(text.strip())


def _has_details(details: PersonDetails | None) -> bool:
    return details is not None and any(
        _given(getattr(details, f.name)) for f in dataclasses.fields(details)
    )


DERIVED: Mapping[type[Any], Mapping[str, Callable[[Any], object]]] = {
    Case.Received: {
        "has_complainant_details": lambda e: _has_details(e.complainant),
        "has_survivor_details": lambda e: _has_details(e.survivor),
    },
    Case.Transferred: {"has_note": lambda e: _given(e.note)},
    Case.ReferredForInvestigation: {
        # The rule of what identifies a survivor is the domain's; publishing its verdict
        # spares every consumer from re-implementing it.
        "identity_shared": lambda e: bool(IDENTIFYING_ITEMS.intersection(e.shared)),
    },
    Case.Closed: {
        "no_outcome_reason_given": lambda e: _given(e.no_outcome_reason),
        "no_feedback_reason_given": lambda e: _given(e.no_feedback_reason),
    },
    AssistanceReferral.DeclinedByProvider: {"reason_given": lambda e: _given(e.reason)},
    AssistanceReferral.FollowedUp: {"has_note": lambda e: _given(e.note)},
    StaffContact.Registered: {
        "has_email": lambda e: _given(e.email),
        "has_phone": lambda e: _given(e.phone),
    },
    StaffContact.Changed: {
        "has_email": lambda e: _given(e.email),
        "has_phone": lambda e: _given(e.phone),
    },
}
"""Published fields computed from an event (mostly: whether withheld personal data exists)."""


class NoContractForEvent(LookupError):
    """A stored event has no published contract message (or its contract does not fit it)."""


@dataclass(frozen=True)
class Translation:
    """How one domain event class becomes one contract message."""

    event_class: type[Any]
    message_type: str
    data_type: type[EventData]
    id_field: str
    copied: tuple[str, ...]
    withheld: tuple[str, ...]
    derived: Mapping[str, Callable[[Any], object]]
    problems: tuple[str, ...]


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def published_event_classes(aggregate: type[Aggregate]) -> list[type[Any]]:
    """The event classes declared in ``aggregate``'s body, in declaration order.

    ``Event`` and ``Created`` are the bases the library adds to every aggregate; nothing is
    recorded as them in this domain.
    """
    return [
        member
        for name, member in vars(aggregate).items()
        if isinstance(member, type)
        and issubclass(member, Aggregate.Event)
        and name not in ("Event", "Created")
    ]


def _withheld_fields(event_class: type[Any]) -> tuple[str, ...]:
    """Top-level fields whose whole value is personal data."""
    paths = personal_data_paths(event_class)
    direct = {path for path in paths if "." not in path}
    hints = typing.get_type_hints(event_class)
    for f in dataclasses.fields(event_class):
        annotation = hints[f.name]
        is_union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
        members = typing.get_args(annotation) if is_union else (annotation,)
        if PersonDetails in members:
            direct.add(f.name)
    return tuple(f.name for f in dataclasses.fields(event_class) if f.name in direct)


def _translation(aggregate: type[Aggregate], event_class: type[Any]) -> Translation:
    aggregate_name, id_field = PUBLISHED_AGGREGATES[aggregate]
    name = message_type(aggregate_name, _snake(event_class.__name__))
    data_type = MESSAGE_TYPES.get(name)
    fields = [f.name for f in dataclasses.fields(event_class)]
    withheld = _withheld_fields(event_class)
    derived = DERIVED.get(event_class, {})
    copied = tuple(
        f for f in fields if f not in ENVELOPE_FIELDS | _INTERNAL_FIELDS and f not in withheld
    )
    problems: list[str] = []
    if data_type is None:
        problems.append(f"{event_class.__qualname__}: no contract type {name} in the catalogue")
        data_type = EventData
    else:
        filled = {id_field, "version", *copied, *derived}
        declared = set(data_type.__struct_fields__)
        problems.extend(
            f"{event_class.__qualname__}.{f} is neither published in {data_type.__name__} "
            "nor marked personal"
            for f in sorted(filled - declared)
        )
        problems.extend(
            f"{data_type.__name__}.{f} is filled by nothing in {event_class.__qualname__}"
            for f in sorted(declared - filled)
        )
        problems.extend(
            f"{data_type.__name__}.{f} publishes personal data of {event_class.__qualname__}"
            for f in sorted(declared.intersection(withheld))
        )
    return Translation(
        event_class=event_class,
        message_type=name,
        data_type=data_type,
        id_field=id_field,
        copied=copied,
        withheld=withheld,
        derived=derived,
        problems=tuple(problems),
    )


TRANSLATIONS: Mapping[type[Any], Translation] = {
    event_class: _translation(aggregate, event_class)
    for aggregate in PUBLISHED_AGGREGATES
    for event_class in published_event_classes(aggregate)
}
"""Domain event class -> its translation. Keyed by the exact class: a subclass of a
published event is a different fact and needs its own contract."""


def coverage_problems() -> list[str]:
    """Every mismatch between domain events and contract messages (empty when they fit),
    including contract types that no domain event produces."""
    problems = [p for t in TRANSLATIONS.values() for p in t.problems]
    produced = {t.message_type for t in TRANSLATIONS.values()}
    problems.extend(
        f"contract type {name} is produced by no domain event"
        for name in sorted(set(MESSAGE_TYPES) - produced)
    )
    return problems


def translation_of(event_class: type[Any]) -> Translation:
    """The translation of a domain event class, or ``NoContractForEvent``."""
    translation = TRANSLATIONS.get(event_class)
    if translation is None:
        raise NoContractForEvent(
            f"{event_class.__module__}.{event_class.__qualname__} has no published contract: "
            "add its data Struct to contracts/ and to contracts.catalogue.MESSAGE_TYPES"
        )
    if translation.problems:
        raise NoContractForEvent("; ".join(translation.problems))
    return translation


def to_cloud_event(event: Any, *, source: str, position: int | None = None) -> CloudEvent[Any]:
    """The contract message of a stored domain event (as the application's mapper returns it).

    ``source`` names the event store (CloudEvents ``source``); ``position`` is the event's
    notification id in that store, when known. ``dataschema`` names the published JSON
    Schema of the type (its ``$id``).
    """
    translation = translation_of(type(event))
    if event.timestamp.tzinfo is None:
        raise ValueError(
            f"event {event.originator_id} v{event.originator_version} has a timestamp "
            "without a time zone; CloudEvents time must be RFC 3339 with an offset"
        )
    payload: dict[str, Any] = {
        translation.id_field: event.originator_id,
        "version": event.originator_version,
    }
    payload.update((f, getattr(event, f)) for f in translation.copied)
    payload.update((f, derive(event)) for f, derive in translation.derived.items())
    # from_attributes lets nested domain values (Actor, Allegation, NetworkPolicy) become
    # their contract Structs by reading only the attributes the Struct declares, so
    # personal fields nested in them are never read.
    data = msgspec.convert(payload, type=translation.data_type, from_attributes=True)
    subject = str(event.originator_id)
    return CloudEvent(
        id=f"{subject}:{event.originator_version}",
        source=source,
        type=translation.message_type,
        time=event.timestamp,
        subject=subject,
        dataschema=schema_id(translation.message_type),
        position=msgspec.UNSET if position is None else position,
        data=data,
    )


def encode(cloud_event: CloudEvent[Any]) -> bytes:
    """The message as CloudEvents structured-mode JSON bytes."""
    return encode_message(cloud_event)
