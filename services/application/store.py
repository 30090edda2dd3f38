"""The application's footing on the event store: how it encodes, seals, loads and records.

``StoredApplication`` is the library's ``Application`` with our encoding (msgspec), the store's
data keys for personal data at rest (ADR 8), and one way of recording a command: load the
aggregate, let the domain decide, save everything it changed in one transaction, and answer
with the position of its last published event, also when the database's answer was lost
(a commit that went through after all is recognised, not repeated).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, Protocol, Self, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate, DomainEventProtocol
from eventsourcing.persistence import (
    ApplicationRecorder,
    IntegrityError,
    Mapper,
    OperationalError,
    Transcoder,
)

from domain.audit_grants import AuditGrants
from domain.case_notices import CaseNotices
from domain.custody import WriterKeyRotation
from domain.errors import InvalidCommand, NotFound, VersionConflict
from domain.personal_data_reads import PersonalDataReads
from domain.receipt import Receipt
from domain.webhooks import WebhookRegistry, WebhookSecret
from services.application.commands import (
    Target,
    Written,
    unpack,
)
from services.application.idempotency import IdempotentRequest
from services.event_store.chain import (
    ChainedPostgresRecorder,
    ChainedSQLiteRecorder,
    attach_writer,
)
from services.event_store.encoding import MsgspecMapper, MsgspecTranscoder
from services.event_store.errors import EventStoreUnavailable, OutcomeUnknown
from services.event_store.personal_data.config import personal_data_keys
from services.event_store.personal_data.data_keys import DataKeyErased, DataKeys
from services.event_store.positions import position_of

A = TypeVar("A", bound=Aggregate)


INTERNAL_AGGREGATES: tuple[type[Aggregate], ...] = (
    Receipt,
    PersonalDataReads,
    IdempotentRequest,
    AuditGrants,
    WebhookRegistry,
    CaseNotices,
    WebhookSecret,
    WriterKeyRotation,
)
"""Aggregates kept for the mechanism itself (receipt verifiers, the log of personal-data
reads, answers to retried requests, auditors' grants, the webhook endpoints and their
secrets, each case's index of its notices, the writer key's rotations): never
published, so a write's ``position`` (what read models are asked to reach) is that of its
last published event."""


_INTERNAL_EVENTS: tuple[type[Any], ...] = tuple(cls.Event for cls in INTERNAL_AGGREGATES)


def is_published(event: object) -> bool:
    """Whether a stored event goes on the bus (everything but the internal aggregates')."""
    return not isinstance(event, _INTERNAL_EVENTS)


class StoreConnections(Protocol):
    """What the application asks of the guard on its PostgreSQL store's connections."""

    def activity(self) -> tuple[int, int]:
        """This thread's connections so far: how many it was handed, and how many calls
        failed on theirs."""
        ...


class DuplicateRequest(RuntimeError):
    """Another request with the same Idempotency-Key was saved first; nothing was recorded."""


class StoredApplication(Application[UUID]):
    """An eventsourcing application on our store: msgspec encoding, personal data sealed at
    rest, and commands recorded each in one transaction whose outcome is known even when the
    database's answer was lost (``decide_on``, ``_commit``). The complaint mechanism's
    commands are on ``services.application.mechanism.ComplaintMechanism``."""

    def construct_transcoder(self) -> Transcoder:
        return MsgspecTranscoder()

    def construct_mapper(self) -> Mapper[UUID]:
        return self.factory.mapper(
            transcoder=self.construct_transcoder(), mapper_class=MsgspecMapper
        )

    store_connections: StoreConnections | None = None
    """Set by the wiring on a PostgreSQL store (``services.event_store.config.OutageGuard``): tells
    whether a failed commit got as far as the database (and so may have gone through). On
    SQLite, whose commit is local and all or nothing, a failed commit recorded nothing."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self._also: Callable[[Written], Aggregate] | None = None
        self._view = False
        self.data_keys: DataKeys | None = None
        try:
            super().__init__(env=env)
        except OperationalError as e:
            raise EventStoreUnavailable(str(e)) from e

    def construct_recorder(self) -> ApplicationRecorder:
        recorder = super().construct_recorder()
        # Personal fields are sealed in every store that keeps them at rest (ADR 8): the mapper
        # seals and opens them with the store's data keys, the recorder writes new keys in the
        # transaction of the events they seal. Both are ours and declare the attribute.
        self.data_keys = personal_data_keys(self.env, recorder)
        if isinstance(self.mapper, MsgspecMapper):
            self.mapper.data_keys = self.data_keys
        if isinstance(recorder, ChainedSQLiteRecorder | ChainedPostgresRecorder):
            recorder.data_keys = self.data_keys
        attach_writer(self.env, recorder)  # every commit marked with the writer key (issue 15)
        if self.data_keys is not None:
            self.data_keys.start()  # the erasure ledger held to the log (ADR 23)
        return recorder

    # ------------------------------------------------------------------ plumbing

    def save(self, *objs: Any, **kwargs: Any) -> Any:
        try:
            return super().save(*objs, **kwargs)
        finally:
            # A save that failed before reaching the recorder must leave nothing of its data
            # keys behind for the next write on this thread.
            if self.data_keys is not None:
                self.data_keys.discarded()

    def _load(self, cls: type[A], aggregate_id: UUID, version: int | None = None) -> A:
        try:
            aggregate: object = self.repository.get(aggregate_id, version=version)
        except AggregateNotFoundError:
            raise NotFound(f"no {cls.__name__} {aggregate_id}") from None
        except OperationalError as e:
            raise EventStoreUnavailable(str(e)) from e
        if not isinstance(aggregate, cls):
            raise NotFound(f"no {cls.__name__} {aggregate_id}")
        return aggregate

    def also_saving(self, make: Callable[[Written], Aggregate]) -> Self:
        """This application, for one command whose transaction also saves ``make(answer)``
        (an Idempotency-Key's record goes in with what the command records). A shallow copy:
        it shares the store, the caches and the data keys, and is dropped after the command."""
        scoped = copy.copy(self)
        scoped._also = make
        scoped._view = True
        return scoped

    def close(self) -> None:
        # A view made by ``also_saving`` shares its application's store: dropping the view
        # (the library closes an application when it is collected) must not close it.
        if not self._view:
            super().close()

    def _commit(self, *aggregates: Aggregate, answer: Aggregate | None = None) -> Written:
        first = aggregates[0]
        named = answer or first
        loaded = first.version - len(first.pending_events)
        make = self._also
        if not any(a.pending_events for a in aggregates):
            raise InvalidCommand("the command changed nothing")
        extra = () if make is None else (make(Written(named.id, named.version, 0)),)
        # The last event of the first aggregate: one look tells whether the transaction landed.
        ours = first.pending_events[-1] if first.pending_events else None
        used, failed = self._store_activity()
        try:
            recordings = self.save(*aggregates, *extra)
        except IntegrityError:
            # The library retries a commit that failed on its connection; if the failed one
            # went through after all (its answer lost), the retry collides with it.
            if self._store_activity()[1] > failed and self._landed(ours) is True:
                return self._written_after_all(named, aggregates)
            if extra and self._current_version(extra[0].id):
                raise DuplicateRequest(str(extra[0].id)) from None
            current = self._current_version(first.id)
            raise VersionConflict(first.id, expected=loaded, current=current) from None
        except (OperationalError, EventStoreUnavailable) as e:
            if self._store_activity()[0] == used:
                # No try reached PostgreSQL (or the store is SQLite, whose commit is local
                # and all or nothing): nothing can have been committed.
                raise EventStoreUnavailable(str(e)) from e
            landed = self._landed(ours)
            if landed is None:
                raise OutcomeUnknown(str(e)) from e
            if landed:
                return self._written_after_all(named, aggregates)
            raise EventStoreUnavailable(str(e)) from e
        except DataKeyErased:
            # Another process erased personal data of this record since it was read here.
            current = self._current_version(first.id)
            raise VersionConflict(first.id, expected=loaded, current=current) from None
        if not recordings:
            raise InvalidCommand("the command changed nothing")
        published = [r.notification.id for r in recordings if is_published(r.domain_event)]
        return Written(
            id=named.id,
            version=named.version,
            position=max(published or [r.notification.id for r in recordings]),
        )

    def _store_activity(self) -> tuple[int, int]:
        guard = self.store_connections
        return (0, 0) if guard is None else guard.activity()

    def _landed(self, ours: DomainEventProtocol[UUID] | None) -> bool | None:
        """Whether the transaction that recorded ``ours`` was committed after all (its answer
        lost): the stored event at its aggregate's version is ``ours``, every field equal
        (a concurrent writer's event at that version differs at least in its time or its
        content). ``None`` when the store cannot be asked (yet)."""
        if ours is None:
            return False
        try:
            stored = self.recorder.select_events(
                ours.originator_id,
                gt=ours.originator_version - 1,
                lte=ours.originator_version,
            )
            if not stored:
                return False
            found = self.mapper.to_domain_event(stored[0])
        except (OperationalError, EventStoreUnavailable):
            return None
        return type(found) is type(ours) and found == ours

    def _written_after_all(self, named: Aggregate, aggregates: tuple[Aggregate, ...]) -> Written:
        """The answer to a command whose commit went through though its answer was lost (as
        ``_commit`` answers: the position of its last published event)."""
        published = [a for a in aggregates if not isinstance(a, INTERNAL_AGGREGATES)]
        try:
            position = max(self.position_of(a.id, a.version) for a in published or aggregates)
        except EventStoreUnavailable as e:
            raise OutcomeUnknown(str(e)) from e
        return Written(id=named.id, version=named.version, position=position)

    def _current_version(self, aggregate_id: UUID) -> int:
        try:
            stored = self.recorder.select_events(aggregate_id, desc=True, limit=1)
        except OperationalError as e:
            raise EventStoreUnavailable(str(e)) from e
        return stored[0].originator_version if stored else 0

    def decide_on(
        self,
        cls: type[A],
        target: Target,
        decide: Callable[[A], object],
        *,
        opens: bool = False,
    ) -> Written:
        """Load the aggregate ``target`` names, let ``decide`` change it, and save it with
        whatever aggregates ``decide`` returns (one, or a tuple) in one transaction. Refused
        if the caller expected a version the aggregate has moved past. With ``opens``, the
        answer names the aggregate ``decide`` opened."""
        aggregate_id, expected_version = unpack(target)
        aggregate = self._load(cls, aggregate_id)
        if expected_version is not None and aggregate.version != expected_version:
            raise VersionConflict(aggregate_id, expected_version, aggregate.version)
        made = decide(aggregate)
        if isinstance(made, Aggregate):
            others: tuple[Aggregate, ...] = (made,)
        elif isinstance(made, tuple):
            others = tuple(a for a in made if isinstance(a, Aggregate))
        else:
            others = ()
        return self._commit(aggregate, *others, answer=others[0] if opens else None)

    def position_of(self, aggregate_id: UUID, version: int) -> int:
        """The store position of one event (the answer replayed to a retried request)."""
        try:
            return position_of(self.recorder, aggregate_id, version)
        except OperationalError as e:
            raise EventStoreUnavailable(str(e)) from e
