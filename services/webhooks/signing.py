"""Standard Webhooks signatures (https://www.standardwebhooks.com), with the reference
``standardwebhooks`` package.

Each delivery carries ``webhook-id`` (the CloudEvent's ``id``: the same on every retry of one
event, so a receiver can drop a repeat), ``webhook-timestamp`` (seconds since the epoch, of
this attempt) and ``webhook-signature``: ``v1,`` + base64 HMAC-SHA256, keyed with the
endpoint's secret, over ``{id}.{timestamp}.{body}``.
"""

from __future__ import annotations

from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook

CONTENT_TYPE = "application/cloudevents+json"
"""CloudEvents structured mode over HTTP (the HTTP protocol binding, section 3.2)."""


def signed_headers(secret: str, webhook_id: str, at: datetime, body: bytes) -> dict[str, str]:
    """The headers of one delivery of ``body`` (the CloudEvent as published on NATS)."""
    if at.tzinfo is None:
        raise ValueError("a delivery's time carries a time zone")
    # the package reads the time as UTC whatever its zone: give it UTC
    signature = Webhook(secret).sign(webhook_id, at.astimezone(UTC), body.decode("utf-8"))
    return {
        "content-type": CONTENT_TYPE,
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature,
    }
