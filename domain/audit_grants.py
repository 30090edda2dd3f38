"""Auditors' grants: which auditors may see one case's personal data, and why.

An auditor replays any case's history with personal data redacted. To check, say, that the
survivor's identity went only where consent allowed, an auditor may need the values: the
network coordinator then grants that auditor (an account id) access to that one case's
personal data, giving a reason, and revokes it when the audit is done. Every grant and
revocation is a step of the case's custody trail; every read made under a grant is recorded
like any other (``PersonalDataReads``).

Like the read log, the grants live in an aggregate of their own per case (id derived from the
case id), so granting never changes the case's version.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.actors import Actor, Role, validate_user
from domain.errors import ActionNotPermitted, InvalidCommand
from domain.personal_data import PersonalText
from domain.recording import RecordedAggregate

GRANTS_NAMESPACE = UUID("0b6f4c2e-8d1a-4e57-9c3b-7a2e5f91d4c8")


def audit_grants_id(case_id: UUID) -> UUID:
    """The id of a case's auditors' grants."""
    return uuid5(GRANTS_NAMESPACE, f"audit-grants:{case_id}")


class AuditGrants(RecordedAggregate):
    """The auditors who may see one case's personal data."""

    class Started(Aggregate.Created):
        case_id: UUID

    class Granted(Aggregate.Event):
        actor: Actor
        auditor: str
        reason: PersonalText

    class Revoked(Aggregate.Event):
        actor: Actor
        auditor: str

    @classmethod
    def start(cls, *, case_id: UUID, at: datetime) -> AuditGrants:
        """The (empty) grants of a case, created with its first grant."""
        return cls(case_id=case_id, timestamp=at)

    @staticmethod
    def create_id(case_id: UUID, **_: object) -> UUID:
        return audit_grants_id(case_id)

    @event(Started)
    def __init__(self, *, case_id: UUID, timestamp: datetime) -> None:
        self.case_id = case_id
        self.grantees: frozenset[str] = frozenset()

    @staticmethod
    def _require_coordinator(actor: Actor) -> None:
        if actor.role is not Role.COORDINATOR:
            raise ActionNotPermitted(
                "only the network coordinator grants or revokes auditors' access to personal data"
            )

    def grant(self, *, actor: Actor, auditor: str, reason: str, at: datetime) -> None:
        """Let ``auditor`` (an account id) see this case's personal data, for ``reason``."""
        self._require_coordinator(actor)
        validate_user(auditor)
        if not reason.strip():
            raise InvalidCommand("a grant of access to personal data says why")
        if auditor in self.grantees:
            raise InvalidCommand(f"auditor {auditor} already holds a grant for case {self.case_id}")
        self._granted(actor=actor, auditor=auditor, reason=reason, timestamp=at)

    def revoke(self, *, actor: Actor, auditor: str, at: datetime) -> None:
        """End ``auditor``'s access to this case's personal data."""
        self._require_coordinator(actor)
        validate_user(auditor)
        if auditor not in self.grantees:
            raise InvalidCommand(f"auditor {auditor} holds no grant for case {self.case_id}")
        self._revoked(actor=actor, auditor=auditor, timestamp=at)

    @event(Granted)
    def _granted(self, *, actor: Actor, auditor: str, reason: str, timestamp: datetime) -> None:
        self.grantees = self.grantees | {auditor}

    @event(Revoked)
    def _revoked(self, *, actor: Actor, auditor: str, timestamp: datetime) -> None:
        self.grantees = self.grantees - {auditor}
