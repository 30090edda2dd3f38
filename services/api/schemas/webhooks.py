"""Webhook endpoints: what the coordinator registers, and what is read back (never a secret)."""

from __future__ import annotations

from uuid import UUID

from pydantic import BaseModel, Field

from services.api.schemas.common import Body, Code

SECRET = r"^whsec_[A-Za-z0-9+/]+={0,2}$"  # noqa: S105 - the form of a secret

EventType = str


class WebhookIn(Body):
    """An agency's endpoint: where, with which secret, which of its events."""

    agency: Code = Field(description="the agency receiving the events (its own subjects only)")
    url: str = Field(
        min_length=8,
        max_length=2048,
        description="https://... (http:// only on the loopback interface)",
        examples=["https://cfm.example.org/cbcm/webhook"],
    )
    secret: str = Field(
        pattern=SECRET,
        max_length=100,
        description="the Standard Webhooks secret: whsec_ + base64 of 24-64 random bytes; "
        "sealed at rest, never read back",
    )
    event_types: list[EventType] = Field(
        min_length=1,
        max_length=64,
        description="CloudEvents types to deliver (GET /v1/webhooks/event-types)",
        examples=[["org.psea.cbcm.case.received.v1", "org.psea.cbcm.case.assessed.v1"]],
    )


class WebhookSecretIn(Body):
    secret: str = Field(pattern=SECRET, max_length=100)


class WebhookTypesIn(Body):
    event_types: list[EventType] = Field(min_length=1, max_length=64)


class WebhookOut(BaseModel):
    endpoint_id: UUID
    agency: str
    url: str
    event_types: list[str]
    enabled: bool
    disabled_reason: str | None = Field(
        description="'failing' (the deliverer gave up after the configured days) or "
        "'coordinator'; null while enabled"
    )
    secret_version: int = Field(description="1, then one more at each rotation")


class WebhookWrittenOut(BaseModel):
    """A registration's answer: the endpoint's id, and the registry's event."""

    endpoint_id: UUID
    id: UUID = Field(description="the webhook registry")
    version: int
    position: int
