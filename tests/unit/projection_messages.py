"""Hand-built contract messages for projection unit tests, with positions and versions."""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

from contracts.actors import ActorRef
from contracts.case import AllegationV1, CaseReceivedV1
from contracts.catalogue import MESSAGE_TYPES
from contracts.envelope import CloudEvent, EventData
from contracts.network import NetworkPolicySetV1, NetworkPolicyV1
from projections.base import DEFAULT_POLICY, Projection
from services.projector.runner import apply_batch, open_projection

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
NETWORK_ID = UUID(int=1)
COORDINATOR = ActorRef(user="coord-1", agency="unhcr", role="coordinator")


def hours(h: float) -> datetime:
    return T0 + timedelta(hours=h)


def fp(agency: str, n: int = 1) -> ActorRef:
    return ActorRef(user=f"fp-{agency}-{n}", agency=agency, role="focal_point")


def allegation(**changes: Any) -> AllegationV1:
    values: dict[str, Any] = {
        "allegation_type": "sexual_exploitation",
        "subtype": "transactional_sex",
        "child_involved": False,
        "implicated_agency": "ngo-a",
        "personnel_category": "implementing_partner_personnel",
        "incident_date": None,
        "incident_area": "SS0101",
        "victim_sex": "female",
        "victim_age_band": "18+",
        "victim_category": "women",
    }
    values.update(changes)
    return AllegationV1(**values)


_BY_DATA = {data_type: name for name, data_type in MESSAGE_TYPES.items()}


class Feed:
    """Applies messages to a projection's read model, numbering positions and versions."""

    def __init__(self, projection: Projection, path: Path) -> None:
        self.projection = projection
        self.db: sqlite3.Connection = open_projection(projection, path)
        self.position = 0
        self.versions: dict[UUID, int] = defaultdict(int)

    def send(self, data_type: type[EventData], at: datetime, key: UUID, **fields: Any) -> None:
        self.versions[key] += 1
        self.position += 1
        id_field = {
            "CaseEventData": "case_id",
            "AssistanceReferralEventData": "referral_id",
            "NetworkEventData": "network_id",
            "FeedbackEventData": "feedback_id",
        }
        base = next(b.__name__ for b in data_type.__mro__ if b.__name__ in id_field)
        data = data_type(**{id_field[base]: key, "version": self.versions[key], **fields})
        message: CloudEvent[Any] = CloudEvent(
            id=f"{key}:{self.versions[key]}",
            source="test",
            type=_BY_DATA[data_type],
            time=at,
            subject=str(key),
            position=self.position,
            data=data,
        )
        apply_batch(self.projection, self.db, [(self.position, message)])

    # --- shortcuts

    def policy(self, at: datetime, policy: NetworkPolicyV1 = DEFAULT_POLICY) -> None:
        self.send(NetworkPolicySetV1, at, NETWORK_ID, actor=COORDINATOR, policy=policy)

    def receive(
        self,
        at: datetime,
        agency: str = "unhcr",
        *,
        role: str = "survivor",
        survivor_details: bool = True,
        received_at: datetime | None = None,
    ) -> UUID:
        case_id = uuid4()
        self.send(
            CaseReceivedV1,
            at,
            case_id,
            actor=ActorRef(user=f"intake-{agency}", agency=agency, role="intake_operator"),
            received_at=received_at or at,
            channel="hotline",
            complainant_role=role,
            immediate_safety_risk=False,
            has_complainant_details=role != "anonymous",
            has_survivor_details=survivor_details,
        )
        return case_id
