"""The CloudEvents 1.0 envelope that every message on the bus travels in, and type names.

A message type is ``org.psea.cbcm.<aggregate>.<event>.v<N>``: the aggregate and the event in
snake case, and the version of the ``data`` layout. A breaking change to a ``data`` layout
gets a new type (``.v2``) published alongside the old one, never an edit of ``.v1``.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Generic, Literal, NamedTuple, TypeAlias, TypeVar, get_args

import msgspec

T = TypeVar("T")

TYPE_PREFIX = "org.psea.cbcm"
"""Reverse-DNS prefix of every message type (CloudEvents recommends one)."""

AggregateName: TypeAlias = Literal[
    "case",
    "assistance_referral",
    "feedback",
    "network",
    "training_session",
    "awareness_activity",
    "focal_point_readiness",
    "risk_assessment",
    "work_plan",
    "prevention_policy",
    "staff_contact",
    "notification",
]
"""The aggregates whose events are published."""

AGGREGATES: tuple[AggregateName, ...] = get_args(AggregateName)

_EVENT_NAME = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
_MESSAGE_TYPE = re.compile(
    r"^" + re.escape(TYPE_PREFIX) + r"\.(?P<aggregate>[a-z_]+)\.(?P<event>[a-z0-9_]+)"
    r"\.v(?P<version>[1-9][0-9]*)$"
)

NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]


class EventData(msgspec.Struct, frozen=True, kw_only=True):
    """Base of every message's ``data``: immutable, fields passed by name.

    Unknown fields are ignored when decoding, so that a publisher may add an optional field
    to a ``.v1`` layout without breaking consumers.
    """


LARGEST = 2**63 - 1
"""Every integer a message carries fits a signed 64-bit column, in any consumer's store."""

Position = Annotated[
    int,
    msgspec.Meta(ge=1, le=LARGEST, description="a position in the event store's log (from 1)"),
]
Version = Annotated[
    int,
    msgspec.Meta(ge=1, le=LARGEST, description="the aggregate's version after the event (from 1)"),
]


class CloudEvent(msgspec.Struct, Generic[T], frozen=True, kw_only=True):
    """A CloudEvents 1.0 event in structured JSON mode, with typed ``data``.

    ``id`` is ``<aggregate id>:<aggregate version>``, unique within ``source``, so a consumer
    that sees the same id twice knows it is the same event. ``subject`` is the aggregate id.
    ``time`` is when the fact was recorded in the event store. ``position`` (an extension
    attribute) is the event's position in the store's notification log, when the publisher
    knows it: read models record it to answer read-your-writes queries. ``dataschema`` is
    the ``$id`` of the published JSON Schema of the message's type
    (``contracts.schema_documents.schema_id``): a consumer picks its validator by it.
    """

    specversion: Literal["1.0"] = "1.0"
    id: NonEmpty
    source: NonEmpty
    type: NonEmpty
    time: Annotated[datetime, msgspec.Meta(tz=True)]
    subject: NonEmpty
    datacontenttype: Literal["application/json"] = "application/json"
    dataschema: Annotated[str, msgspec.Meta(min_length=1)] | msgspec.UnsetType = msgspec.UNSET
    # UNSET rather than None: an absent extension attribute is left out of the JSON instead
    # of being sent as null.
    position: Position | msgspec.UnsetType = msgspec.UNSET
    data: T


class MessageTypeName(NamedTuple):
    """The parts of a message type name."""

    aggregate: AggregateName
    event: str
    version: int


def message_type(aggregate: AggregateName, event: str, version: int = 1) -> str:
    """The CloudEvents ``type`` of ``event`` (snake case) of ``aggregate``.

    >>> message_type("case", "focal_points_assigned")
    'org.psea.cbcm.case.focal_points_assigned.v1'
    """
    if aggregate not in AGGREGATES:
        raise ValueError(f"unknown aggregate {aggregate!r}: expected one of {AGGREGATES}")
    if not _EVENT_NAME.fullmatch(event):
        raise ValueError(f"event name {event!r} is not snake case")
    if version < 1:
        raise ValueError(f"message version must be 1 or more, not {version}")
    return f"{TYPE_PREFIX}.{aggregate}.{event}.v{version}"


def parse_message_type(name: str) -> MessageTypeName:
    """Split a message type into aggregate, event and version, or raise ``ValueError``.

    >>> parse_message_type("org.psea.cbcm.assistance_referral.declined_by_provider.v1")
    MessageTypeName(aggregate='assistance_referral', event='declined_by_provider', version=1)
    """
    match = _MESSAGE_TYPE.fullmatch(name)
    if match is None:
        raise ValueError(f"{name!r} is not a cbcm message type")
    aggregate = match["aggregate"]
    for known in AGGREGATES:
        if aggregate == known:
            return MessageTypeName(known, match["event"], int(match["version"]))
    raise ValueError(f"{name!r} names an unknown aggregate {aggregate!r}")
