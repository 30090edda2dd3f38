"""Commands as data: a command that is one domain decision on one aggregate is declared, not
written out.

``assess_case = Decision(Case, Case.assess, consults=the_network)`` says everything the
application adds to the domain method ``Case.assess``: which aggregate it loads (by the id the
caller names, optionally at the version the caller last read), what the method consults
besides its own arguments (the network's registry, the case's holder), and what it answers.
The caller's arguments are the domain method's own, checked by the type checker against its
signature (``ParamSpec``); nothing re-spells them. The application then saves the aggregate
and whatever the method opened or changed besides (a referral, the referrals a withdrawn
consent stops) in one transaction.

Commands that coordinate several aggregates in ways of their own (receiving a complaint with
its receipt, erasing personal data across a case's records, forwarding to a CFM) stay written
out in ``services.application.mechanism``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, TypeVar, overload
from uuid import UUID

from eventsourcing.domain import Aggregate

from domain.network import NETWORK_ID, Network

if TYPE_CHECKING:
    from services.application.mechanism import ComplaintMechanism

A = TypeVar("A", bound=Aggregate)
C = TypeVar("C")
P = ParamSpec("P")


@dataclass(frozen=True)
class Written:
    """What a command recorded: the aggregate, its new version, and the store position of
    its last event (read models can be asked to wait for that position)."""

    id: UUID
    version: int
    position: int


@dataclass(frozen=True)
class Expected:
    """An aggregate named with the version its caller last read: the command is refused with
    ``VersionConflict`` if the aggregate has moved on since."""

    id: UUID
    version: int


Target = UUID | Expected
"""What a command names: an aggregate, or an aggregate at the version its caller decided on."""


def expecting(aggregate_id: UUID, version: int | None) -> Target:
    """``aggregate_id``, at ``version`` when the caller gave one."""
    return aggregate_id if version is None else Expected(aggregate_id, version)


def unpack(target: Target) -> tuple[UUID, int | None]:
    """The aggregate id a command names, and the version its caller expects (if any)."""
    if isinstance(target, Expected):
        return target.id, target.version
    return target, None


class Decision(Generic[A, P]):
    """A command that is ``decide`` (a domain method) on an aggregate of ``cls``. With
    ``opens``, the decision opens a new aggregate (a referral, a feedback item) and the answer
    names that one rather than the one the command was given.

    On the application it reads as a method: ``app.give_consent(case_id, actor=..., ...)``,
    or ``app.give_consent(Expected(case_id, 4), ...)``.
    """

    def __init__(
        self, cls: type[A], decide: Callable[Concatenate[A, P], object], *, opens: bool = False
    ) -> None:
        self.cls = cls
        self.decide = decide
        self.opens = opens

    @overload
    def __get__(self, app: None, owner: type[Any]) -> Decision[A, P]: ...

    @overload
    def __get__(
        self, app: ComplaintMechanism, owner: type[Any]
    ) -> Callable[Concatenate[Target, P], Written]: ...

    def __get__(
        self, app: ComplaintMechanism | None, owner: type[Any]
    ) -> Decision[A, P] | Callable[Concatenate[Target, P], Written]:
        if app is None:
            return self
        mechanism = app

        def command(target: Target, /, *args: P.args, **kwargs: P.kwargs) -> Written:
            return mechanism.decide_on(
                self.cls,
                target,
                lambda aggregate: self.decide(aggregate, *args, **kwargs),
                opens=self.opens,
            )

        return command


class DecisionConsulting(Generic[A, C, P]):
    """A command that is ``decide`` on an aggregate of ``cls``, given what ``consults`` finds
    (for instance the network's registry) as the domain method's first argument."""

    def __init__(
        self,
        cls: type[A],
        decide: Callable[Concatenate[A, C, P], object],
        *,
        consults: Callable[[ComplaintMechanism, A], C],
        opens: bool = False,
    ) -> None:
        self.cls = cls
        self.decide = decide
        self.consults = consults
        self.opens = opens

    @overload
    def __get__(self, app: None, owner: type[Any]) -> DecisionConsulting[A, C, P]: ...

    @overload
    def __get__(
        self, app: ComplaintMechanism, owner: type[Any]
    ) -> Callable[Concatenate[Target, P], Written]: ...

    def __get__(
        self, app: ComplaintMechanism | None, owner: type[Any]
    ) -> DecisionConsulting[A, C, P] | Callable[Concatenate[Target, P], Written]:
        if app is None:
            return self
        mechanism = app

        def command(target: Target, /, *args: P.args, **kwargs: P.kwargs) -> Written:
            return mechanism.decide_on(
                self.cls,
                target,
                lambda aggregate: self.decide(
                    aggregate, self.consults(mechanism, aggregate), *args, **kwargs
                ),
                opens=self.opens,
            )

        return command


class NetworkDecision(Generic[P]):
    """A command that is ``decide`` (a method of the network aggregate) on the network's one
    registry: it names no aggregate. ``app.register_agency(actor=..., code=..., ...)``."""

    def __init__(self, decide: Callable[Concatenate[Network, P], object]) -> None:
        self.decide = decide

    @overload
    def __get__(self, app: None, owner: type[Any]) -> NetworkDecision[P]: ...

    @overload
    def __get__(self, app: ComplaintMechanism, owner: type[Any]) -> Callable[P, Written]: ...

    def __get__(
        self, app: ComplaintMechanism | None, owner: type[Any]
    ) -> NetworkDecision[P] | Callable[P, Written]:
        if app is None:
            return self
        mechanism = app

        def command(*args: P.args, **kwargs: P.kwargs) -> Written:
            return mechanism.decide_on(
                Network, NETWORK_ID, lambda network: self.decide(network, *args, **kwargs)
            )

        return command


class NetworkOpening(Generic[A, P]):
    """A command that opens a new aggregate: ``opens`` (the domain's factory) given the
    network's registry first. ``record_training = NetworkOpening(TrainingSession.record)``
    reads ``app.record_training(actor=..., agency=..., ...)``, with the factory's arguments."""

    def __init__(self, opens: Callable[Concatenate[Network, P], A]) -> None:
        self.opens = opens

    @overload
    def __get__(self, app: None, owner: type[Any]) -> NetworkOpening[A, P]: ...

    @overload
    def __get__(self, app: ComplaintMechanism, owner: type[Any]) -> Callable[P, Written]: ...

    def __get__(
        self, app: ComplaintMechanism | None, owner: type[Any]
    ) -> NetworkOpening[A, P] | Callable[P, Written]:
        if app is None:
            return self
        mechanism = app

        def command(*args: P.args, **kwargs: P.kwargs) -> Written:
            return mechanism._commit(self.opens(mechanism.network(), *args, **kwargs))

        return command
