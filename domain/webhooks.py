"""The network's webhook endpoints: where an agency without NATS consumers receives its events.

One ``WebhookRegistry`` per event store, kept by the coordinator. An endpoint belongs to one
agency and receives only that agency's events (the same need-to-know as its NATS account),
of the types registered for it, signed with its secret. The registry is in the event log
because it decides where a case's events go: who pointed them at which URL, when, and when
an endpoint stopped receiving them are custody facts an auditor replays. The secret is
personal-data-like (whoever holds it can forge deliveries), so it is marked ``PersonalText``
and the store seals it at rest like a name (ADR 8, ADR 17): the log never holds it in clear.
Each endpoint's secret is kept in a record of its own (``WebhookSecret``), so that it is
sealed under a data key of its own: removing the endpoint destroys that key (crypto-
shredding), and nobody, with every copy of the database and the key ring, reads it again.
The registry's events say that a secret was set or rotated, never what it is.

The domain checks the shape of things (who acts, the agency is a member, the URL, the
secret's form); which message types exist is the published language's business and is
checked by the application before it calls in.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from urllib.parse import urlsplit
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.actors import Actor, Role
from domain.errors import ActionNotPermitted, InvalidCommand, NotFound, UnknownAgency
from domain.network import Network
from domain.personal_data import PersonalText
from domain.recording import RecordedAggregate

WEBHOOK_REGISTRY_ID = uuid5(UUID("3c1f9b0a-6d2e-4f4b-8a51-0e7d2c9b4a17"), "cbcm:webhooks")
"""The one webhook registry of an event store."""

SECRET_PREFIX = "whsec_"  # noqa: S105 - the form of a secret, not one
"""Standard Webhooks secrets are written ``whsec_`` + standard base64 of the key bytes."""

SECRET_BYTES = (24, 64)
"""The Standard Webhooks specification asks for 24 to 64 random bytes."""

MOST_EVENT_TYPES = 64
LONGEST_URL = 2048


def webhook_secret_id(endpoint_id: UUID) -> UUID:
    """The id of the record that keeps the endpoint's secret."""
    return uuid5(WEBHOOK_REGISTRY_ID, f"secret:{endpoint_id}")


def webhook_endpoint_id(registered_version: int) -> UUID:
    """The id of the endpoint the registry's event ``registered_version`` registered: derived,
    so that a retried registration is answered with the same id without a look-up."""
    return uuid5(WEBHOOK_REGISTRY_ID, f"endpoint:{registered_version}")


class DisableReason(StrEnum):
    FAILING = "failing"
    """It failed every delivery for longer than the deliverer's limit."""
    COORDINATOR = "coordinator"
    """The coordinator switched it off."""


@dataclass(frozen=True)
class WebhookEndpoint:
    """One registered endpoint. ``registered_version``: the registry's version that
    registered it (its position in the log bounds what it receives: events after it)."""

    endpoint_id: UUID
    agency: str
    url: str
    secret: str | None = field(repr=False)  # never in a log line or a traceback
    """None in the registry itself since secrets are kept apart (``WebhookSecret``); the
    application's ``webhook_endpoints`` gives it. A registration recorded before that keeps
    its first secret here."""
    event_types: frozenset[str]
    registered_version: int
    enabled: bool = True
    disabled_reason: DisableReason | None = None
    secret_version: int = 1
    previous_secret: str | None = field(default=None, repr=False)
    """The secret before the last rotation: deliveries are signed with both for a while, so
    a receiver is not refused between the rotation and its own update."""
    rotated_at: datetime | None = None


def check_secret(secret: str) -> str:
    """``secret`` if it is ``whsec_`` + standard base64 of 24 to 64 bytes, else
    ``InvalidCommand`` (the value is never echoed)."""
    if not secret.startswith(SECRET_PREFIX):
        raise InvalidCommand("a webhook secret is 'whsec_' followed by base64 of 24-64 bytes")
    try:
        raw = base64.b64decode(secret[len(SECRET_PREFIX) :].encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise InvalidCommand(
            "a webhook secret is 'whsec_' followed by base64 of 24-64 bytes"
        ) from None
    low, high = SECRET_BYTES
    if not low <= len(raw) <= high:
        raise InvalidCommand("a webhook secret is 'whsec_' followed by base64 of 24-64 bytes")
    return secret


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _internal(host: str) -> bool:
    """A literal address that is not on the public internet (the deliverer refuses those
    whatever name leads to them; a literal one is refused at once)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host == "localhost" or host.endswith((".localhost", ".internal", ".local"))
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not address.is_global


_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
"""One label of a host name (RFC 1123; ``urlsplit`` gives the host in lower case)."""


def _ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def check_url(url: str) -> str:
    """``url`` if events may be sent there: ``https://`` with a host, or ``http://`` on the
    loopback interface only (a receiver on the same machine, as in development). No user
    name or password in it (they would sit in the log in clear), no fragment."""
    if len(url) > LONGEST_URL or any(c.isspace() for c in url):
        raise InvalidCommand("a webhook URL is at most 2048 characters, without spaces")
    try:
        parts = urlsplit(url)  # raises on a malformed IPv6 literal ('https://[/')
        host = parts.hostname
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise InvalidCommand("a webhook URL needs a valid host and port") from None
    if not host:
        raise InvalidCommand("a webhook URL needs a host")
    if not _ip_literal(host) and not all(_LABEL.fullmatch(label) for label in host.split(".")):
        # what the deliverer's HTTP client cannot send to would never be tried, so never
        # disabled for failing, and nobody told: refused here
        raise InvalidCommand(
            "a webhook URL's host is an IP address or a DNS name of letters, digits and "
            "hyphens (an internationalised name in its xn-- form)"
        )
    if parts.username is not None or parts.password is not None or parts.fragment:
        raise InvalidCommand("a webhook URL carries no user name, password or fragment")
    if parts.scheme == "https" and _internal(host):
        raise InvalidCommand(
            "a webhook URL names a host on the public internet, not a private, loopback or "
            "link-local address"
        )
    if parts.scheme == "https" or (parts.scheme == "http" and _loopback(host)):
        return url
    raise InvalidCommand("a webhook URL is https:// (http:// only on the loopback interface)")


def _check_types(event_types: tuple[str, ...]) -> frozenset[str]:
    types = frozenset(event_types)
    if not types:
        raise InvalidCommand("an endpoint receives at least one event type")
    if len(types) > MOST_EVENT_TYPES:
        raise InvalidCommand(f"an endpoint receives at most {MOST_EVENT_TYPES} event types")
    return types


def _require_coordinator(actor: Actor) -> None:
    if actor.role is not Role.COORDINATOR:
        raise ActionNotPermitted("only the network coordinator registers webhook endpoints")


class WebhookRegistry(RecordedAggregate):
    """Every webhook endpoint of the network, enabled or not."""

    class Started(Aggregate.Created):
        pass

    class EndpointRegistered(Aggregate.Event):
        actor: Actor
        endpoint_id: UUID
        agency: str
        url: str
        secret: PersonalText | None
        """None: kept in the endpoint's ``WebhookSecret`` (every registration since it exists)."""
        event_types: tuple[str, ...]

    class EndpointSecretRotated(Aggregate.Event):
        actor: Actor
        endpoint_id: UUID
        secret: PersonalText | None
        """None: the new secret is in the endpoint's ``WebhookSecret``."""

    class EndpointEventTypesSet(Aggregate.Event):
        actor: Actor
        endpoint_id: UUID
        event_types: tuple[str, ...]

    class EndpointDisabled(Aggregate.Event):
        actor: Actor | None
        """None: the deliverer disabled it, by the rule below, for failing too long."""
        endpoint_id: UUID
        reason: DisableReason
        failing_since: datetime | None

    class EndpointEnabled(Aggregate.Event):
        actor: Actor
        endpoint_id: UUID

    class EndpointRemoved(Aggregate.Event):
        actor: Actor
        endpoint_id: UUID

    @classmethod
    def start(cls, *, at: datetime) -> WebhookRegistry:
        """The empty registry, created with the first registration."""
        return cls(timestamp=at)

    @staticmethod
    def create_id(**_: object) -> UUID:
        return WEBHOOK_REGISTRY_ID

    @event(Started)
    def __init__(self, *, timestamp: datetime) -> None:
        self.endpoints: dict[UUID, WebhookEndpoint] = {}

    def endpoint(self, endpoint_id: UUID) -> WebhookEndpoint:
        """The endpoint, or ``NotFound`` (a removed one is gone)."""
        found = self.endpoints.get(endpoint_id)
        if found is None:
            raise NotFound(f"no webhook endpoint {endpoint_id}")
        return found

    # ------------------------------------------------------------------ commands

    def register(
        self,
        network: Network,
        /,
        *,
        actor: Actor,
        agency: str,
        url: str,
        secret: str,
        event_types: tuple[str, ...],
        at: datetime,
    ) -> UUID:
        """Register an endpoint of a member ``agency`` for ``event_types`` (already checked
        to be message types an agency receives); its id (``webhook_endpoint_id``)."""
        _require_coordinator(actor)
        if agency not in network.agencies:
            raise UnknownAgency(agency)
        endpoint_id = webhook_endpoint_id(self.version + 1)
        checked_url = check_url(url)
        check_secret(secret)
        self._registered(
            actor=actor,
            endpoint_id=endpoint_id,
            agency=agency,
            url=checked_url,
            secret=None,  # kept in the endpoint's WebhookSecret (checked above)
            event_types=tuple(sorted(_check_types(event_types))),
            timestamp=at,
        )
        return endpoint_id

    def rotate_secret(self, *, actor: Actor, endpoint_id: UUID, secret: str, at: datetime) -> None:
        """Replace the endpoint's secret (deliveries from now on are signed with the new one)."""
        _require_coordinator(actor)
        self.endpoint(endpoint_id)
        check_secret(secret)
        self._secret_rotated(
            actor=actor,
            endpoint_id=endpoint_id,
            secret=None,  # the new one is kept in the endpoint's WebhookSecret
            timestamp=at,
        )

    def set_event_types(
        self, *, actor: Actor, endpoint_id: UUID, event_types: tuple[str, ...], at: datetime
    ) -> None:
        """Replace the types the endpoint receives (from the next event on)."""
        _require_coordinator(actor)
        self.endpoint(endpoint_id)
        self._event_types_set(
            actor=actor,
            endpoint_id=endpoint_id,
            event_types=tuple(sorted(_check_types(event_types))),
            timestamp=at,
        )

    def disable(self, *, actor: Actor, endpoint_id: UUID, at: datetime) -> None:
        """The coordinator stops deliveries to the endpoint; its events wait in its queue."""
        _require_coordinator(actor)
        if not self.endpoint(endpoint_id).enabled:
            raise InvalidCommand(f"webhook endpoint {endpoint_id} is already disabled")
        self._disabled(
            actor=actor,
            endpoint_id=endpoint_id,
            reason=DisableReason.COORDINATOR,
            failing_since=None,
            timestamp=at,
        )

    def disable_failing(
        self, *, endpoint_id: UUID, failing_since: datetime, limit: timedelta, at: datetime
    ) -> None:
        """The deliverer disables an endpoint that has failed every delivery since
        ``failing_since`` for at least ``limit`` (the network's setting). Recorded with no
        actor: the coordinator reads it in the log and is told of it."""
        found = self.endpoint(endpoint_id)
        if not found.enabled:
            raise InvalidCommand(f"webhook endpoint {endpoint_id} is already disabled")
        if limit <= timedelta(0) or at - failing_since < limit:
            raise InvalidCommand("the endpoint has not been failing long enough to disable it")
        self._disabled(
            actor=None,
            endpoint_id=endpoint_id,
            reason=DisableReason.FAILING,
            failing_since=failing_since,
            timestamp=at,
        )

    def enable(self, *, actor: Actor, endpoint_id: UUID, at: datetime) -> None:
        """Deliveries start again, with what waited in the endpoint's queue first."""
        _require_coordinator(actor)
        if self.endpoint(endpoint_id).enabled:
            raise InvalidCommand(f"webhook endpoint {endpoint_id} is already enabled")
        self._enabled(actor=actor, endpoint_id=endpoint_id, timestamp=at)

    def remove(self, *, actor: Actor, endpoint_id: UUID, at: datetime) -> None:
        """Remove the endpoint for good: nothing more is queued or sent to it."""
        _require_coordinator(actor)
        self.endpoint(endpoint_id)
        self._removed(actor=actor, endpoint_id=endpoint_id, timestamp=at)

    # ------------------------------------------------------------------ recorded facts

    @event(EndpointRegistered)
    def _registered(
        self,
        *,
        actor: Actor,
        endpoint_id: UUID,
        agency: str,
        url: str,
        secret: str | None,
        event_types: tuple[str, ...],
        timestamp: datetime,
    ) -> None:
        self.endpoints[endpoint_id] = WebhookEndpoint(
            endpoint_id=endpoint_id,
            agency=agency,
            url=url,
            secret=secret,
            event_types=frozenset(event_types),
            registered_version=self.version + 1,  # the library counts it after this body
        )

    @event(EndpointSecretRotated)
    def _secret_rotated(
        self, *, actor: Actor, endpoint_id: UUID, secret: str | None, timestamp: datetime
    ) -> None:
        old = self.endpoints[endpoint_id]
        self.endpoints[endpoint_id] = _replace(
            old,
            secret=secret,
            secret_version=old.secret_version + 1,
            previous_secret=old.secret,
            rotated_at=timestamp,
        )

    @event(EndpointEventTypesSet)
    def _event_types_set(
        self, *, actor: Actor, endpoint_id: UUID, event_types: tuple[str, ...], timestamp: datetime
    ) -> None:
        self.endpoints[endpoint_id] = _replace(
            self.endpoints[endpoint_id], event_types=frozenset(event_types)
        )

    @event(EndpointDisabled)
    def _disabled(
        self,
        *,
        actor: Actor | None,
        endpoint_id: UUID,
        reason: DisableReason,
        failing_since: datetime | None,
        timestamp: datetime,
    ) -> None:
        self.endpoints[endpoint_id] = _replace(
            self.endpoints[endpoint_id], enabled=False, disabled_reason=reason
        )

    @event(EndpointEnabled)
    def _enabled(self, *, actor: Actor, endpoint_id: UUID, timestamp: datetime) -> None:
        self.endpoints[endpoint_id] = _replace(
            self.endpoints[endpoint_id], enabled=True, disabled_reason=None
        )

    @event(EndpointRemoved)
    def _removed(self, *, actor: Actor, endpoint_id: UUID, timestamp: datetime) -> None:
        del self.endpoints[endpoint_id]


class WebhookSecret(RecordedAggregate):
    """One endpoint's signing secret, and the one before its last rotation, in a record of
    their own: sealed at rest under this record's data key, which ``erase`` destroys."""

    class Kept(Aggregate.Created):
        endpoint_id: UUID
        secret: PersonalText

    class Rotated(Aggregate.Event):
        secret: PersonalText

    class Erased(Aggregate.Event):
        """The record's data key is destroyed with this event: its secrets are gone."""

        actor: Actor

    @staticmethod
    def create_id(endpoint_id: UUID, **_: object) -> UUID:
        return webhook_secret_id(endpoint_id)

    @classmethod
    def keep(cls, *, endpoint_id: UUID, secret: str, at: datetime) -> WebhookSecret:
        return cls(endpoint_id=endpoint_id, secret=check_secret(secret), timestamp=at)

    @event(Kept)
    def __init__(self, *, endpoint_id: UUID, secret: str, timestamp: datetime) -> None:
        self.endpoint_id = endpoint_id
        self.secret: str | None = secret
        self.previous: str | None = None
        self.erased = False

    def __repr__(self) -> str:  # never the secret in a log line or a traceback
        return f"WebhookSecret({self.endpoint_id}, erased={self.erased})"

    def rotate(self, *, secret: str, at: datetime) -> None:
        if self.erased:
            raise InvalidCommand(f"the secret of webhook endpoint {self.endpoint_id} is erased")
        self._rotated(secret=check_secret(secret), timestamp=at)

    def erase(self, *, actor: Actor, at: datetime) -> None:
        """Destroy the secrets for good (the endpoint is removed)."""
        _require_coordinator(actor)
        if self.erased:
            raise InvalidCommand(f"the secret of webhook endpoint {self.endpoint_id} is erased")
        self._erased(actor=actor, timestamp=at)

    @event(Rotated)
    def _rotated(self, *, secret: str, timestamp: datetime) -> None:
        self.previous, self.secret = self.secret, secret

    @event(Erased)
    def _erased(self, *, actor: Actor, timestamp: datetime) -> None:
        self.secret = self.previous = None
        self.erased = True


def _replace(endpoint: WebhookEndpoint, **changes: object) -> WebhookEndpoint:
    return replace(endpoint, **changes)  # type: ignore[arg-type]
