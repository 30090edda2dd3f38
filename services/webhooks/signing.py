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


def signed_headers(
    secret: str, webhook_id: str, at: datetime, body: bytes, *, also: str | None = None
) -> dict[str, str]:
    """The headers of one delivery of ``body`` (the CloudEvent as published on NATS); with
    ``also`` (the secret before a rotation) a second signature, space-separated, as the
    specification provides for rotating without refusals."""
    if at.tzinfo is None:
        raise ValueError("a delivery's time carries a time zone")
    # the package reads the time as UTC whatever its zone: give it UTC
    text, utc = body.decode("utf-8"), at.astimezone(UTC)
    signature = Webhook(secret).sign(webhook_id, utc, text)
    if also is not None:
        signature += " " + Webhook(also).sign(webhook_id, utc, text)
    return {
        "content-type": CONTENT_TYPE,
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature,
    }
