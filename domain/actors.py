"""Who acts: every event records the acting user, their agency and the role they acted in."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from domain.errors import InvalidCode

CODE_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
USER_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
"""Account identifiers: no spaces and no '@', so a name or an e-mail address is refused."""
"""Agency, provider and entity codes. They appear in NATS subjects, so only safe characters."""


def validate_code(kind: str, code: str) -> str:
    """Return ``code`` if it is a valid agency, provider or entity code, else raise."""
    if not CODE_PATTERN.fullmatch(code):
        raise InvalidCode(kind, code)
    return code


class Role(StrEnum):
    INTAKE_OPERATOR = "intake_operator"
    FOCAL_POINT = "focal_point"
    COORDINATOR = "coordinator"
    INVESTIGATING_ENTITY = "investigating_entity"
    SERVICE_PROVIDER = "service_provider"
    AUDITOR = "auditor"
    STATISTICS_READER = "statistics_reader"
    INTAKE_SERVICE = "intake_service"
    """An integration's service account (a client-credentials token): it records complaints
    and community feedback for its agency, and may do and see nothing else."""


@dataclass(frozen=True)
class Actor:
    """A user acting for an agency (or a provider, or an investigating entity) in one role.

    ``user`` is an account identifier issued by the network, never a person's name.
    """

    user: str
    agency: str
    role: Role

    def __post_init__(self) -> None:
        validate_user(self.user)
        validate_code("agency", self.agency)


def validate_user(user: str) -> str:
    """Return ``user`` if it is an account identifier (not a name or address), else raise."""
    if not USER_PATTERN.fullmatch(user):
        raise InvalidCode("user", user)
    return user
