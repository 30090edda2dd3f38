"""A receipt: how an anonymous complainant follows a complaint without giving a name.

The complainant holds a code made of a public locator and a secret. The store keeps only the
locator (in the receipt's id) and a slow, salted verifier of the secret, so neither the
database nor its backups can be used to read a complainant's feedback.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.actors import Actor, Role
from domain.errors import ActionNotPermitted, InvalidCommand
from domain.recording import RecordedAggregate

RECEIPTS_NAMESPACE = UUID("0b7f1f5e-8f5e-4b8e-9a59-7c1d7a2f4e21")


def receipt_id(locator: str) -> UUID:
    """The id of the receipt with this locator (found without any index)."""
    return uuid5(RECEIPTS_NAMESPACE, f"receipt:{locator}")


class Receipt(RecordedAggregate):
    """The receipt given at intake for one case."""

    class Issued(Aggregate.Created):
        actor: Actor
        case_id: UUID
        locator: str
        verifier: str

    @classmethod
    def issue(
        cls, *, actor: Actor, case_id: UUID, locator: str, verifier: str, at: datetime
    ) -> Receipt:
        """Issue a receipt for a case being received (``verifier``: of the code's secret)."""
        if actor.role not in (
            Role.INTAKE_OPERATOR,
            Role.INTAKE_SERVICE,
            Role.FOCAL_POINT,
            Role.COORDINATOR,
        ):
            raise ActionNotPermitted(f"a {actor.role} does not issue receipts")
        if not verifier:
            raise InvalidCommand("a receipt needs the verifier of its secret")
        return cls(actor=actor, case_id=case_id, locator=locator, verifier=verifier, timestamp=at)

    @staticmethod
    def create_id(locator: str, **_: object) -> UUID:
        return receipt_id(locator)

    @event(Issued)
    def __init__(
        self, *, actor: Actor, case_id: UUID, locator: str, verifier: str, timestamp: datetime
    ) -> None:
        self.case_id = case_id
        self.locator = locator
        self.verifier = verifier
        self.issued_at = timestamp
