"""Which endpoint receives which event: the need-to-know of the agency's NATS account.

An agency's account is granted ``agency_event_subjects(agency)`` (``cbcm.v1.evt.<agency>.>``,
``services.nats.config``) and nothing else of ``CBCM_EVENTS``. A webhook endpoint of that
agency receives a message only if its subject falls under that same grant *and* its type is
one the endpoint was registered for: the registered types narrow what the grant allows,
never widen it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from uuid import UUID

from contracts.subjects import agency_event_subjects
from domain.webhooks import WebhookEndpoint


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` is one token, a final ``>`` one or more.

    >>> subject_matches("cbcm.v1.evt.unhcr.>", "cbcm.v1.evt.unhcr.case.received")
    True
    >>> subject_matches("cbcm.v1.evt.unhcr.>", "cbcm.v1.evt.unhcr2.case.received")
    False
    """
    wanted, given = pattern.split("."), subject.split(".")
    for index, part in enumerate(wanted):
        if part == ">" and index == len(wanted) - 1:
            return len(given) > index
        if index >= len(given):
            return False
        if part not in ("*", given[index]):
            return False
    return len(given) == len(wanted)


def agency_grant(agency: str) -> str:
    """What the agency's NATS account may read of ``CBCM_EVENTS`` (the same function the
    nats-server configuration is generated with)."""
    return agency_event_subjects(agency)


def receives(endpoint: WebhookEndpoint, subject: str, message_type: str) -> bool:
    """Whether ``endpoint`` is to receive the message published on ``subject`` with CloudEvents
    type ``message_type`` (enabled or not: a disabled endpoint's events wait in its queue)."""
    return message_type in endpoint.event_types and subject_matches(
        agency_grant(endpoint.agency), subject
    )


def recipients(
    endpoints: Iterable[WebhookEndpoint],
    registered_at: Mapping[UUID, int],
    subject: str,
    message_type: str,
    position: int,
) -> list[UUID]:
    """The endpoints a message (its subject, type and store position) is queued for: those
    that receive it and were registered before it was recorded (``registered_at``: each
    endpoint's registration position). What the deliverer's fan-out does per message."""
    return [
        e.endpoint_id
        for e in endpoints
        if position > registered_at[e.endpoint_id] and receives(e, subject, message_type)
    ]
