"""Who acted, as messages tell it."""

from __future__ import annotations

import msgspec

from contracts.vocabulary import Role


class ActorRef(msgspec.Struct, frozen=True, kw_only=True):
    """The user who recorded a fact, the agency they acted for and the role they acted in.

    ``user`` is an account identifier issued by the network, never a person's name.
    ``agency`` is an agency, service-provider or investigating-entity code.
    """

    user: str
    agency: str
    role: Role
