"""Stored events encoded with msgspec, through eventsourcing's Transcoder and Mapper.

The stored state is compact JSON. Decoding is typed: after any upcasting, the state is
converted into the event class itself (UUIDs, datetimes, enums and nested dataclasses come
back as what they were), and a state that does not fit the class is an error, not a silently
half-built event.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, cast
from uuid import UUID

import msgspec
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import (
    Mapper,
    MapperDeserialisationError,
    StoredEvent,
    Transcoder,
)
from eventsourcing.utils import get_topic, resolve_topic

from services.event_store.personal_data.data_keys import DataKeyMissing, DataKeys, KeyRef
from services.event_store.personal_data.kek import KeyRingError
from services.event_store.personal_data.sealing import (
    SealBroken,
    erasures_of,
    leave_sealed,
    open_sealed,
    seal,
    sealed_refs,
)


def _uuid(value: object) -> UUID:
    return value if isinstance(value, UUID) else UUID(str(value))


class MsgspecTranscoder(Transcoder):
    """JSON bytes <-> plain Python values (dataclasses, enums, UUIDs encoded natively)."""

    def __init__(self) -> None:
        self._encoder = msgspec.json.Encoder()
        self._decoder = msgspec.json.Decoder()

    def encode(self, obj: Any) -> bytes:
        return self._encoder.encode(obj)

    def decode(self, data: bytes) -> Any:
        return self._decoder.decode(data)


class MsgspecMapper(Mapper[Any]):
    """The library's mapper, with typed decoding of each event class's fields and, once the
    application gives it ``data_keys``, personal fields sealed at rest (ADR 8)."""

    data_keys: DataKeys | None = None

    def to_stored_event(self, domain_event: DomainEventProtocol[Any]) -> StoredEvent:
        keys = self.data_keys
        if keys is None:
            return super().to_stored_event(domain_event)
        cls = type(domain_event)
        topic = get_topic(cls)
        event_state = dict(vars(domain_event))
        originator_id = event_state.pop("originator_id")
        originator_version = event_state.pop("originator_version")
        class_version = getattr(cls, "class_version", 1)
        if class_version > 1:
            event_state["class_version"] = class_version
        event_state = seal(
            event_state,
            cls,
            scope=originator_id,
            version=originator_version,
            topic=topic,
            keys=keys,
        )
        erased = erasures_of(domain_event)
        if erased:
            keys.erase_with_write(erased)
        stored_state = self.transcoder.encode(event_state)
        if self.compressor:
            stored_state = self.compressor.compress(stored_state)
        if self.cipher:
            stored_state = self.cipher.encrypt(stored_state)
        return StoredEvent(
            originator_id=originator_id,
            originator_version=originator_version,
            topic=topic,
            state=stored_state,
        )

    def to_domain_event(self, stored_event: StoredEvent) -> DomainEventProtocol[Any]:
        cls = resolve_topic(stored_event.topic)
        try:
            return self._event_from(stored_event, cls, self._state_of(stored_event), True)
        except _UNDECODABLE as e:
            raise _undecodable(stored_event, e) from e

    def decode_states(
        self, stored_events: Iterable[StoredEvent], opened: Callable[[type[Any]], bool]
    ) -> DecodedStates:
        """Step one of decoding many events (a reader of the log, the relay): each stored
        state decrypted, decompressed and parsed once, without opening anything, and the data
        keys its sealed fields need if ``opened(event class)``; then ``keys.prefetch(refs)``
        (or nothing) and ``event_of`` each, in order.

        Personal fields of a class ``opened`` refuses are left sealed (never decrypted): they
        hold ``UNOPENED`` in the event, which is only for a reader that never looks at them
        (the relay's translation withholds every personal field; its derived flags and the
        shares read them, and their classes are opened)."""
        items: list[_Decoded | Exception] = []
        refs: list[KeyRef] = []
        for stored_event in stored_events:
            # an error is raised by event_of, at this event's turn, as to_domain_event would
            try:
                cls = resolve_topic(stored_event.topic)
            except Exception as e:
                items.append(e)
                continue
            try:
                state = self._state_of(stored_event)
            except _UNDECODABLE as e:
                items.append(_undecodable(stored_event, e))
                continue
            except Exception as e:
                items.append(e)
                continue
            opens = opened(cls)
            if opens and self.data_keys is not None:
                refs.extend(sealed_refs(state, _uuid(stored_event.originator_id)))
            items.append(_Decoded(cls, state, opens))
        return DecodedStates(items, refs)

    def event_of(self, stored_event: StoredEvent, item: _Decoded | Exception) -> Any:
        """The domain event of ``stored_event`` from its ``decode_states`` item; raises what
        ``to_domain_event`` would raise for it."""
        if isinstance(item, Exception):
            raise item
        try:
            return self._event_from(stored_event, item.cls, item.state, item.opened)
        except _UNDECODABLE as e:
            raise _undecodable(stored_event, e) from e

    def _state_of(self, stored_event: StoredEvent) -> dict[str, Any]:
        state = stored_event.state
        if self.cipher:
            state = self.cipher.decrypt(state)
        if self.compressor:
            state = self.compressor.decompress(state)
        decoded: dict[str, Any] = self.transcoder.decode(state)
        return decoded

    def _event_from(
        self, stored_event: StoredEvent, cls: type[Any], event_state: dict[str, Any], opened: bool
    ) -> DomainEventProtocol[Any]:
        if opened:
            open_sealed(
                event_state,
                scope=_uuid(stored_event.originator_id),
                version=stored_event.originator_version,
                topic=stored_event.topic,
                keys=self.data_keys,
            )
        else:
            leave_sealed(event_state, UNOPENED)
        event_state["originator_id"] = stored_event.originator_id
        event_state["originator_version"] = stored_event.originator_version
        class_version = getattr(cls, "class_version", 1)
        from_version = event_state.pop("class_version", 1)
        while from_version < class_version:
            getattr(cls, f"upcast_v{from_version}_v{from_version + 1}")(event_state)
            from_version += 1
        return cast(DomainEventProtocol[Any], msgspec.convert(event_state, type=cls))


UNOPENED: Final = "\u2327unopened\u2327"
"""What a personal field holds in an event decoded without opening it (``decode_states``):
not its value, which was never decrypted."""

_UNDECODABLE = (
    msgspec.ValidationError,
    msgspec.DecodeError,
    ValueError,
    SealBroken,
    DataKeyMissing,
    KeyRingError,
)


def _undecodable(stored_event: StoredEvent, e: BaseException) -> MapperDeserialisationError:
    msg = (
        f"stored event {stored_event.originator_id} v{stored_event.originator_version} "
        f"({stored_event.topic}) does not decode: {e}"
    )
    error = MapperDeserialisationError(msg)
    error.__cause__ = e
    return error


@dataclass(frozen=True, slots=True)
class _Decoded:
    cls: type[Any]
    state: dict[str, Any]
    opened: bool


@dataclass(frozen=True, slots=True)
class DecodedStates:
    """What ``MsgspecMapper.decode_states`` made of a batch: per stored event, its parsed
    state (or the error decoding it), and the data keys the opened ones need."""

    items: list[_Decoded | Exception]
    refs: list[KeyRef]
