"""The application's commands on the webhook registry (issue #19, ADR 17).

The domain (``domain.webhooks``) decides who may register what; this layer adds what only
the published language knows: which message types exist, and which of them can ever reach
an agency's subjects (``AGENCY_EVENT_TYPES``: an agency's NATS account receives the events
of the cases, referrals and feedback it holds, never the network's registry events, so its
webhook cannot be registered for those either).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from uuid import UUID

from contracts.catalogue import MESSAGE_TYPES
from contracts.envelope import parse_message_type
from contracts.subjects import NETWORK_AGGREGATES
from domain.actors import Actor
from domain.errors import InvalidCommand, NotFound
from domain.network import Network
from domain.webhooks import (
    WEBHOOK_REGISTRY_ID,
    DisableReason,
    WebhookEndpoint,
    WebhookRegistry,
    WebhookSecret,
    webhook_secret_id,
)
from services.application.commands import Written
from services.application.store import StoredApplication

AGENCY_EVENT_TYPES: frozenset[str] = frozenset(
    name for name in MESSAGE_TYPES if parse_message_type(name).aggregate not in NETWORK_AGGREGATES
)
"""The CloudEvents types that travel on an agency's subjects (``cbcm.v1.evt.<agency>.>``)."""


def check_event_types(event_types: tuple[str, ...]) -> tuple[str, ...]:
    """``event_types`` if each is a type an agency receives, else ``InvalidCommand`` naming
    the first that is not (a type name is not personal data)."""
    for name in event_types:
        if name not in AGENCY_EVENT_TYPES:
            raise InvalidCommand(
                f"{name!r} is not an event type an agency receives: see the contracts' "
                "message types (the network's own events are not delivered to agencies)"
            )
    return event_types


@dataclass(frozen=True)
class EndpointDisabling:
    """One ``EndpointDisabled`` of the registry, as the notifier tells it: ids, the agency
    whose endpoint it is and a reason code (never the URL or the secret)."""

    version: int
    """The registry's version that recorded it (a second disabling after an enabling is
    another one)."""
    endpoint_id: UUID
    agency: str
    reason: DisableReason
    at: datetime


class WebhookCommands(StoredApplication):
    """Registering, changing and disabling webhook endpoints; mixed into the mechanism."""

    def network(self) -> Network:  # the mechanism's, with its cache
        raise NotImplementedError

    def webhook_registry(self) -> WebhookRegistry | None:
        """The registry as it is now (None before the first registration)."""
        if not self._current_version(WEBHOOK_REGISTRY_ID):
            return None
        return self._load(WebhookRegistry, WEBHOOK_REGISTRY_ID)

    def webhook_registry_version(self) -> int:
        """The registry's version (0 before the first registration): cheap, for caches."""
        return self._current_version(WEBHOOK_REGISTRY_ID)

    def webhook_disablings(self, after: int) -> tuple[int, list[EndpointDisabling]]:
        """The registry's version now, and its disablings recorded after version ``after``
        (what ``services.notify.webhooks`` tells, read here from the log: the registry is an
        internal aggregate, never on NATS)."""
        agencies: dict[UUID, str] = {}
        found: list[EndpointDisabling] = []
        version = 0
        if not self._current_version(WEBHOOK_REGISTRY_ID):
            return 0, found
        for stored in self.events.get(WEBHOOK_REGISTRY_ID):
            version = stored.originator_version
            if isinstance(stored, WebhookRegistry.EndpointRegistered):
                agencies[stored.endpoint_id] = stored.agency
            elif isinstance(stored, WebhookRegistry.EndpointDisabled) and version > after:
                found.append(
                    EndpointDisabling(
                        version=version,
                        endpoint_id=stored.endpoint_id,
                        agency=agencies[stored.endpoint_id],
                        reason=DisableReason(stored.reason),
                        at=stored.timestamp,
                    )
                )
        return version, found

    def webhook_endpoints(self) -> list[WebhookEndpoint]:
        """Every endpoint, each with its secrets (from its ``WebhookSecret``)."""
        registry = self.webhook_registry()
        if registry is None:
            return []
        found = sorted(registry.endpoints.values(), key=lambda e: (e.agency, str(e.endpoint_id)))
        return [self._with_secret(e) for e in found]

    def webhook_endpoint(self, endpoint_id: UUID) -> WebhookEndpoint:
        registry = self.webhook_registry()
        if registry is None:
            raise NotFound(f"no webhook endpoint {endpoint_id}")
        return self._with_secret(registry.endpoint(endpoint_id))

    def webhook_secret(self, endpoint_id: UUID) -> WebhookSecret | None:
        """The record keeping the endpoint's secret (None for one registered before secrets
        were kept apart: the registry's key seals its first secret)."""
        secret_id = webhook_secret_id(endpoint_id)
        if not self._current_version(secret_id):
            return None
        return self._load(WebhookSecret, secret_id)

    def _with_secret(self, endpoint: WebhookEndpoint) -> WebhookEndpoint:
        kept = self.webhook_secret(endpoint.endpoint_id)
        if kept is None:
            return endpoint
        return replace(
            endpoint,
            secret=kept.secret,
            previous_secret=kept.previous or endpoint.previous_secret,
        )

    def register_webhook(
        self,
        *,
        actor: Actor,
        agency: str,
        url: str,
        secret: str,
        event_types: tuple[str, ...],
        at: datetime,
    ) -> Written:
        """Register an endpoint; the answer's ``id`` is the registry's, its version the
        registration's (``domain.webhooks.webhook_endpoint_id(version)`` is the endpoint's)."""
        check_event_types(event_types)
        registry = self.webhook_registry()
        if registry is None:
            registry = WebhookRegistry.start(at=at)
        at = max(at, registry.modified_on)
        endpoint_id = registry.register(
            self.network(),
            actor=actor,
            agency=agency,
            url=url,
            secret=secret,
            event_types=event_types,
            at=at,
        )
        kept = WebhookSecret.keep(endpoint_id=endpoint_id, secret=secret, at=at)
        return self._commit(registry, kept)

    def _on_registry(self, decide: object) -> Written:
        assert callable(decide)
        return self.decide_on(WebhookRegistry, WEBHOOK_REGISTRY_ID, decide)

    def rotate_webhook_secret(
        self, endpoint_id: UUID, *, actor: Actor, secret: str, at: datetime
    ) -> Written:
        """The registry records the rotation, the endpoint's ``WebhookSecret`` the secret (a
        record made now for an endpoint registered before they existed), in one commit."""

        def decide(registry: WebhookRegistry) -> WebhookSecret:
            registry.rotate_secret(actor=actor, endpoint_id=endpoint_id, secret=secret, at=at)
            kept = self.webhook_secret(endpoint_id)
            if kept is None:
                return WebhookSecret.keep(endpoint_id=endpoint_id, secret=secret, at=at)
            kept.rotate(secret=secret, at=max(at, kept.modified_on))
            return kept

        return self._on_registry(decide)

    def set_webhook_event_types(
        self, endpoint_id: UUID, *, actor: Actor, event_types: tuple[str, ...], at: datetime
    ) -> Written:
        check_event_types(event_types)
        return self._on_registry(
            lambda r: r.set_event_types(
                actor=actor, endpoint_id=endpoint_id, event_types=event_types, at=at
            )
        )

    def disable_webhook(self, endpoint_id: UUID, *, actor: Actor, at: datetime) -> Written:
        return self._on_registry(lambda r: r.disable(actor=actor, endpoint_id=endpoint_id, at=at))

    def disable_failing_webhook(
        self, endpoint_id: UUID, *, failing_since: datetime, limit: timedelta, at: datetime
    ) -> Written:
        """The deliverer's own command: no actor (the rule and its limit decide)."""
        return self._on_registry(
            lambda r: r.disable_failing(
                endpoint_id=endpoint_id, failing_since=failing_since, limit=limit, at=at
            )
        )

    def enable_webhook(self, endpoint_id: UUID, *, actor: Actor, at: datetime) -> Written:
        return self._on_registry(lambda r: r.enable(actor=actor, endpoint_id=endpoint_id, at=at))

    def remove_webhook(self, endpoint_id: UUID, *, actor: Actor, at: datetime) -> Written:
        """Remove the endpoint and destroy its secrets' data key, in one commit: nobody, with
        any copy of the database and the key ring, reads them again (crypto-shredding). A
        secret recorded in the registry itself (registrations older than ``WebhookSecret``)
        is sealed under the registry's key and stays: rotate it first, then remove."""

        def decide(registry: WebhookRegistry) -> tuple[WebhookSecret, ...]:
            registry.remove(actor=actor, endpoint_id=endpoint_id, at=at)
            kept = self.webhook_secret(endpoint_id)
            if kept is None or kept.erased:
                return ()
            kept.erase(actor=actor, at=max(at, kept.modified_on))
            return (kept,)

        return self._on_registry(decide)
