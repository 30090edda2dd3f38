"""The notifier's settings (``CBCM_SMTP_*``, ``CBCM_SMS_*``, ``CBCM_NOTIFY_*``).

Kept beside the notifier rather than in ``services.settings``: only ``cbcm notify`` reads
them, and the SMTP password never needs to be in reach of the other processes' settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class NotifySettings(BaseSettings):
    """Channels, retries and the SOP clock's windows of the notifier."""

    model_config = SettingsConfigDict(env_prefix="CBCM_", extra="ignore")

    smtp_host: str | None = Field(default=None, description="SMTP server; unset: no email")
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_starttls: bool = Field(
        default=True, description="upgrade with STARTTLS (refused if the server cannot)"
    )
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_from: str = Field(default="cbcm@localhost", description="the From address")
    smtp_ca_file: Path | None = Field(
        default=None, description="PEM CA bundle to verify the SMTP server with (default: system)"
    )
    smtp_timeout_seconds: float = Field(default=30.0, gt=0, le=300)

    sms_gateway_url: str | None = Field(default=None, description="SMS gateway; unset: no SMS")
    sms_gateway_style: Literal["rapidpro", "twilio"] = Field(
        default="rapidpro",
        description="rapidpro: RapidPro/TextIt JSON ({urns, text}, Token auth); twilio: "
        "Twilio-style (To, From, Body, basic auth with account:token)",
    )
    sms_gateway_token: SecretStr | None = None
    sms_gateway_account: str | None = Field(
        default=None, description="the account id (Twilio-style basic auth user)"
    )
    sms_from: str | None = Field(default=None, description="sender number (Twilio-style)")

    notify_inbox_url: str = Field(
        default="http://127.0.0.1:8080",
        description="the base URL the messages link to (the inbox is <base>/v1/inbox/<agency>)",
    )
    notify_max_attempts: int = Field(default=5, ge=1, le=100)
    notify_retry_base_seconds: float = Field(default=5.0, gt=0, le=3600)
    notify_retry_max_seconds: float = Field(default=900.0, gt=0, le=86400)
    notify_due_soon_hours: float = Field(
        default=4.0, gt=0, le=24 * 30, description="how long before a deadline 'due soon' goes"
    )
    notify_digest_hour: int = Field(
        default=6, ge=0, le=23, description="the UTC hour the daily digests go out"
    )
    notify_tick_seconds: float = Field(
        default=30.0, gt=0, le=3600, description="how often the scheduler looks at the clock"
    )
    notify_history_grace_hours: float = Field(
        default=24.0,
        ge=0,
        description="events older than this before the notifier was first started are "
        "history: no notice is sent for them (deadline reminders still are)",
    )

    @property
    def has_channel(self) -> bool:
        return self.smtp_host is not None or self.sms_gateway_url is not None
