"""Staff contact addresses and notification preferences (issue #18)."""

from __future__ import annotations

from datetime import time

from pydantic import BaseModel, ConfigDict, Field

from domain.actors import Role
from domain.vocabulary import NotificationChannel, NotificationDelivery
from services.api.schemas.common import CODE


class QuietHoursIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: time = Field(description="local time quiet hours begin (HH:MM)")
    end: time = Field(description="local time they end; before start: across midnight")
    zone: str = Field(default="UTC", max_length=64, description="IANA time zone")


class NotificationPreferencesIn(BaseModel):
    """How and when to be told. The addresses are personal data: kept sealed, never shown
    to anyone but the person, never in a log or a message on the bus."""

    model_config = ConfigDict(extra="forbid")

    email: str | None = Field(default=None, max_length=254)
    phone: str | None = Field(default=None, max_length=16, description="E.164: +243...")
    channels: list[NotificationChannel] = Field(min_length=1, max_length=2)
    quiet_hours: QuietHoursIn | None = Field(
        default=None, description="only urgent notices are sent during these hours"
    )
    delivery: NotificationDelivery = Field(
        default=NotificationDelivery.IMMEDIATE,
        description="immediate, or one daily digest (urgent notices always at once)",
    )


class StaffNotificationsIn(NotificationPreferencesIn):
    """The coordinator registering someone: also for which organisation and role."""

    organisation: str = Field(pattern=CODE, description="agency, entity or provider code")
    role: Role


class NotificationPreferencesOut(BaseModel):
    """The person's own record (their addresses, shown to them alone)."""

    user: str
    organisation: str
    role: Role
    email: str | None
    phone: str | None
    channels: list[NotificationChannel]
    quiet_hours: QuietHoursIn | None
    delivery: NotificationDelivery
    erased: bool
    version: int
