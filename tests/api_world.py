"""A small network behind the HTTP API, and tokens for every kind of caller.

The network is the one test network of ``tests.world``; the callers below are its people:
agencies ``unhcr`` and ``wfp``, providers ``med-a`` and ``psy-b`` in area ``SO22``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import argon2
from fastapi import FastAPI

from domain.actors import Role
from services.api.app import create_app
from services.application.mechanism import ComplaintMechanism
from services.application.receipts import ReceiptHasher
from services.application.store import is_published
from services.identity.tokens import issue_token
from services.projector.runner import apply_batch, open_projection, read_model_path
from services.relay.translation import to_cloud_event
from services.settings import Settings
from tests.world import establish

CHEAP_ARGON2 = argon2.Parameters(
    type=argon2.Type.ID,
    version=19,
    salt_len=16,
    hash_len=32,
    time_cost=1,
    memory_cost=8,
    parallelism=1,
)
"""Tests hash many receipts: the production profile (64 MiB per hash) is tested on its own."""


RECENTLY = (datetime.now(UTC) - timedelta(hours=2)).replace(microsecond=0).isoformat()
"""A complaint's ``received_at`` the API takes on any day the suite runs: the network's policy
refuses one received more than a year before it is recorded (a fixed date would expire)."""


def cheap_hasher() -> ReceiptHasher:
    return ReceiptHasher(CHEAP_ARGON2)


def build_network(app: ComplaintMechanism, at: datetime | None = None) -> None:
    """The registry every API test starts from: the one test network (``tests.world``)."""
    establish(app, at or datetime.now(UTC) - timedelta(days=1))


CALLERS: dict[str, tuple[str, str, Role]] = {
    "intake_operator": ("op-unhcr", "unhcr", Role.INTAKE_OPERATOR),
    "focal_point_own": ("fp-unhcr", "unhcr", Role.FOCAL_POINT),
    "focal_point_other": ("fp-wfp", "wfp", Role.FOCAL_POINT),
    "coordinator": ("coord-1", "ocha", Role.COORDINATOR),
    "investigator_own": ("inv-wfp", "wfp", Role.INVESTIGATING_ENTITY),
    "investigator_other": ("inv-unhcr", "unhcr", Role.INVESTIGATING_ENTITY),
    "provider_own": ("prov-med", "med-a", Role.SERVICE_PROVIDER),
    "provider_other": ("prov-psy", "psy-b", Role.SERVICE_PROVIDER),
    "auditor": ("aud-1", "ocha", Role.AUDITOR),
    "statistics_reader": ("stat-1", "ocha", Role.STATISTICS_READER),
    "intake_service": ("svc-hotline-unhcr", "unhcr", Role.INTAKE_SERVICE),
}
"""Every kind of caller. "own" and "other" are relative to the standard case of these tests:
held by unhcr, implicating wfp, referred to provider med-a."""


@dataclass
class World:
    settings: Settings
    mechanism: ComplaintMechanism
    api: FastAPI
    tokens: dict[str, str] = field(default_factory=dict)

    def headers(self, caller: str, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[caller]}", **extra}

    def event_count(self) -> int:
        return int(self.mechanism.recorder.max_notification_id() or 0)


def make_world(data_dir: Path, mechanism: ComplaintMechanism, **settings: Any) -> World:
    """The API over ``mechanism`` (network built), with a token for every caller."""
    config = Settings(data_dir=data_dir, **settings)
    build_network(mechanism)
    api = create_app(config, mechanism=mechanism, receipt_hasher=cheap_hasher())
    tokens = {
        name: issue_token(data_dir, user=user, agency=agency, roles=[role])
        for name, (user, agency, role) in CALLERS.items()
    }
    return World(settings=config, mechanism=mechanism, api=api, tokens=tokens)


def project_into(world: World, *projections: Any) -> None:
    """Bring each of ``projections``' read models (its file in the world's data dir) up to
    the store, as the relay and the projectors would: every published event, in position
    order, each with the position before it (the stream itself is tested in the relay and
    projector tests)."""
    messages = []
    previous: dict[int, int] = {}
    last = 0
    for notification in world.mechanism.recorder.select_notifications(1, 10**6):
        event = world.mechanism.mapper.to_domain_event(notification)
        if not is_published(event):
            continue
        messages.append(
            (notification.id, to_cloud_event(event, source="test", position=notification.id))
        )
        previous[notification.id] = last
        last = notification.id
    for projection in projections:
        db = open_projection(projection, read_model_path(world.settings.data_dir, projection.name))
        try:
            apply_batch(projection, db, messages, previous)
        finally:
            db.close()
