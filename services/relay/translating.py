"""The relay's translating: a batch of stored events -> the messages to publish (ADR 3, 31).

``Translator`` reads nothing by itself: it is handed a batch of the log's notifications, in
log order, and makes each published event's message (``Outgoing``): its subject (the
router), its contract message (``translation.to_cloud_event``, encoded) and, for a custody
step that shares personal data, its sealed share (the sharer). The router and the sharer are
fed every event once, in log order: a ``Translator`` must see the log's batches one after
another, without a gap or a repeat.

It runs in the relay's worker thread, or in a process of its own (``TranslatorProcess``,
``cbcm relay`` by default, ``CBCM_RELAY_TRANSLATOR_PROCESS``): that process reads the batch
itself and sends back the messages, so that the relay's process only publishes, and the two
halves of the work run on two cores instead of taking turns under one interpreter lock.
Which process translates changes no byte of what is published
(``tests/integration/test_relay_messages.py``).
"""

from __future__ import annotations

import functools
import gc
import multiprocessing
import multiprocessing.connection
import re
import signal
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

import structlog
from eventsourcing.persistence import Notification

from contracts.subjects import event_subject
from domain.case import Case
from services.application.mechanism import ComplaintMechanism
from services.application.store import is_published
from services.nats.client import TRANSIENT
from services.relay.routing import Router
from services.relay.sharing import SHARING_STEPS, Share, Sharer
from services.relay.translation import (
    DERIVED,
    PUBLISHED_AGGREGATES,
    encode,
    published_event_classes,
    to_cloud_event,
)
from services.settings import Settings

log = structlog.get_logger()


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


SUBJECT_TOKENS: dict[type[Any], tuple[str, str]] = {
    event_class: (aggregate_name, _snake(event_class.__name__))
    for aggregate, (aggregate_name, _) in PUBLISHED_AGGREGATES.items()
    for event_class in published_event_classes(aggregate)
}
"""Domain event class -> (aggregate, event) tokens of its subject."""

OPENED_EVENTS: Final[frozenset[type[Any]]] = frozenset(DERIVED) | frozenset(SHARING_STEPS)
"""The event classes whose personal fields the relay opens (decrypts) when it reads them:
their message's derived flags say whether withheld data exists (``translation.DERIVED``), or
their share carries some (``sharing.SHARING_STEPS``). Every other event's personal fields
stay sealed: its message withholds them, and nothing else the relay does reads them."""


@functools.lru_cache(maxsize=4096)
def _subject(agency: str, aggregate: str, name: str) -> str:
    """``event_subject``, its tokens checked once per (agency, aggregate, event)."""
    return event_subject(agency, aggregate, name)


@dataclass(frozen=True)
class Poison:
    """An event the relay cannot handle, in words safe to log: its position, its stored
    topic and the error's type (never the payload or the error's text, which may quote
    personal data)."""

    position: int
    message_type: str
    error: str


class Outgoing(NamedTuple):
    """One translated event, ready to publish.

    A named tuple, not a dataclass: a translating process sends every one of them to the
    relay's process (``Batch``), and a tuple is pickled and unpickled in about half the time
    of a dataclass, and made in less (on a backlog, a few microseconds of each message's)."""

    position: int
    previous: int
    """Position of the event before it in the store (see ``PREVIOUS_POSITION_HEADER``)."""
    subject: str
    payload: bytes
    share: Share | None = None
    """The sealed share of a custody step that shares personal data with another agency."""
    step: Any = None
    """The sharing step's domain event, to seal its share again right before it is sent."""
    erasure: Any = None
    """A case's erasure event: what was shared of the case is withdrawn once it is stored."""
    topic: str = ""
    """The stored event's topic (for a stall's record)."""


@dataclass
class Translated:
    """What one translation pass made of a batch of notifications."""

    out: list[Outgoing]
    read: int
    """The last position handled (translated, or an internal record passed)."""
    published: int
    poison: Poison | None = None
    transient: BaseException | None = None
    """The store became unreachable: what was translated before it is kept."""


class Translator:
    """Stored events -> messages, fed the log's batches in order (it may read the store:
    the router's and the sharer's look-ups, the data keys)."""

    def __init__(self, app: ComplaintMechanism) -> None:
        self._app = app
        self.router = Router(app)
        self.sharer = Sharer(app, self.router)

    def translate(
        self, notifications: Sequence[Notification], *, read: int, published: int, store_id: str
    ) -> Translated:
        """The messages of ``notifications`` (the batch after position ``read``; the last
        published event before it is at ``published``), in log order, up to the first that
        cannot be handled (``poison``) or the store becoming unreachable (``transient``):
        what was translated before either is kept.

        Each stored state is parsed once, and the personal fields of an event are opened
        (decrypted) only where the translation reads them (``OPENED_EVENTS``): the message
        withholds every personal field, so the rest are never decrypted nor their keys read.
        """
        source = f"urn:cbcm:store:{store_id}"
        done = Translated([], read, published)
        mapper: Any = self._app.mapper
        decode_states = getattr(mapper, "decode_states", None)
        decoded: Sequence[Any] | None = None
        try:
            if decode_states is not None:
                states = decode_states(notifications, OPENED_EVENTS.__contains__)
                decoded = states.items
                # the batch's data keys in a few queries, not one per record
                if states.refs:
                    mapper.data_keys.prefetch(states.refs)
        except TRANSIENT as e:
            done.transient = e
            return done
        except Exception as e:  # only a speed-up: each event then reads its own keys
            log.debug("relay.prefetch_failed", error=type(e).__name__)
        for i, notification in enumerate(notifications):
            try:
                if decoded is None:
                    event = mapper.to_domain_event(notification)
                else:
                    event = mapper.event_of(notification, decoded[i])
                item = self._outgoing(notification, event, done.published, source)
            except TRANSIENT as e:
                done.transient = e
                break
            except Exception as e:
                # Only the type: the text or a traceback could quote the event's personal data.
                done.poison = Poison(notification.id, notification.topic, type(e).__name__)
                break
            done.read = notification.id
            if item is not None:
                done.out.append(item)
                done.published = notification.id
        return done

    def _outgoing(
        self, notification: Notification, event: Any, previous: int, source: str
    ) -> Outgoing | None:
        """The message of one stored event (None: one of the mechanism's own records)."""
        if not is_published(event):
            # The mechanism's own records (receipt verifiers, personal-data reads,
            # retried-request answers) never leave the store; the next message's
            # previous-position link skips them.
            return None
        aggregate, name = SUBJECT_TOKENS[type(event)]
        agency = self.router.agency_of(event, notification.id)
        message = to_cloud_event(event, source=source, position=notification.id)
        subject = _subject(agency, aggregate, name)
        share = self.sharer.share_of(event, notification.id, source)
        return Outgoing(
            notification.id,
            previous,
            subject,
            encode(message),
            share,
            step=None if share is None else event,
            erasure=event if isinstance(event, Case.PersonalDataErased) else None,
            topic=notification.topic,
        )


# ---------------------------------------------------------------------------------- process


class TranslatorUnavailable(OSError):
    """The translating process could not answer: the store is unreachable from it (the
    error's type is named), or it exited. Transient: the relay backs off and asks again (a
    process that exited is started afresh: its router and sharer answer what they have not
    seen from the store as of each event's position)."""


@dataclass(frozen=True)
class Batch:
    """The translating process's answer to one request."""

    count: int
    """How many notifications it read (0: none after the position asked)."""
    last: int
    """The position of the last notification read (0: none)."""
    store_id: str | None
    translated: Translated
    transient: str | None = None
    """The type of the error that made the store unreachable (``translated.transient`` is
    then None: exceptions are not sent between processes)."""


def _serve(settings: Settings, conn: multiprocessing.connection.Connection) -> None:
    """The translating process: read and translate the batch after each position asked,
    until the relay closes the pipe.

    On a backlog (a full batch answered) it reads and translates the next batch at once,
    while the relay publishes the one it has: the answer to the next request is then ready.
    The log is append-only, so that batch is the one a later read would find. Asked for
    another position than the one it read ahead from (never, as the relay asks: it takes
    every answer whole and asks from where it ends), it drops what it read ahead and starts
    a fresh router and sharer, which must never see an event twice."""
    from services.bootstrap import complaint_mechanism  # noqa: PLC0415 - in the child only
    from services.runtime.logging import configure_logging  # noqa: PLC0415

    # The relay stops it (by closing the pipe, or by dying: the pipe closes too); a signal
    # to the whole group (a terminal's Ctrl-C, systemd's stop) is the relay's to handle.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    configure_logging(settings.log_format, "relay-translator")
    app = complaint_mechanism(settings)
    reader = _Reader(app)
    reached: int | None = None  # the position the reader's router has seen up to
    ahead: tuple[tuple[int, int, int], Batch] | None = None
    try:
        while True:
            try:
                request: tuple[int, int, int] = conn.recv()
            except (EOFError, OSError):
                return  # the relay closed the pipe, or exited
            if ahead is not None and ahead[0] == request:
                answer = ahead[1]
            else:
                if ahead is not None or (reached is not None and request[0] != reached):
                    # asked from anywhere but where the reader is: its router saw events
                    # the relay did not take (a read-ahead, a batch the relay cut at a
                    # poison), and must never see an event twice
                    reader = _Reader(app)
                answer = reader.next_batch(*request)
            ahead = None
            reached = answer.translated.read
            if not _answer(conn, answer):
                return
            batch_size = request[2]
            done = answer.translated
            if answer.count >= batch_size and answer.transient is None and done.poison is None:
                following = (done.read, done.published, batch_size)
                ahead = (following, reader.next_batch(*following))
                reached = ahead[1].translated.read
    finally:
        app.close()
        # the process ends here: the interpreter's last garbage collections would walk every
        # object of every module imported only to free memory the exit frees anyway (as
        # cbcm's entry point does, services/cli/main.py)
        gc.freeze()


class _Reader:
    """The log's batches, read and translated in order (in the translating process)."""

    def __init__(self, app: ComplaintMechanism) -> None:
        self._app = app
        self._translator = Translator(app)
        self._store_id: str | None = None

    def next_batch(self, read: int, published: int, batch_size: int) -> Batch:
        from services.event_store.store_id import store_id_of  # noqa: PLC0415

        try:
            notifications = self._app.recorder.select_notifications(
                read, batch_size, inclusive_of_start=False
            )
            fresh = [n for n in notifications if n.id > read]
            if fresh and self._store_id is None:
                self._store_id = store_id_of(self._app.recorder)
        except TRANSIENT as e:
            nothing = Translated([], read, published)
            return Batch(0, 0, self._store_id, nothing, type(e).__name__)
        last = notifications[-1].id if notifications else 0
        if not fresh or self._store_id is None:
            nothing = Translated([], read, published)
            return Batch(len(notifications), last, self._store_id, nothing)
        done = self._translator.translate(
            fresh, read=read, published=published, store_id=self._store_id
        )
        transient = None if done.transient is None else type(done.transient).__name__
        done.transient = None  # exceptions are not sent between processes
        return Batch(len(notifications), last, self._store_id, done, transient)


def _answer(conn: multiprocessing.connection.Connection, batch: Batch) -> bool:
    """Send ``batch`` to the relay; False: it is gone."""
    try:
        conn.send(batch)
    except OSError:
        return False
    return True


ANSWER_WITHIN = 120.0
"""Seconds the relay waits for the translating process's answer to one request before it
kills it and starts another: a batch takes well under a second."""

START_WITHIN = 120.0
"""Seconds more for a process's first answer, which comes after its start (its imports, the
store opened): a few seconds, over a minute on a loaded machine."""


StartContext = (
    multiprocessing.context.SpawnContext
    | multiprocessing.context.ForkServerContext
    | multiprocessing.context.ForkContext
)
"""How a translating process may be started (``multiprocessing.get_context``'s)."""


class TranslatorProcess:
    """A process that reads the log and translates it for the relay (``_serve``); one
    request at a time, in log order. Started at the first request; ``close`` ends it.

    Spawned (a fresh interpreter: the relay's process runs threads, which a fork could copy
    a held lock of), unless ``context`` says otherwise (the tests' fork server, whose
    processes start with the modules imported: ``tests/relay_stores.py``)."""

    def __init__(
        self,
        settings: Settings,
        answer_within: float = ANSWER_WITHIN,
        start_within: float = START_WITHIN,
        *,
        context: StartContext | None = None,
    ) -> None:
        self._settings = settings
        self._context = context
        self._answer_within = answer_within
        self._start_within = start_within
        self._answered = False  # whether the running process has answered once
        self._process: multiprocessing.process.BaseProcess | None = None
        self._conn: multiprocessing.connection.Connection | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the process now (it opens the store before the first request comes: a
        relay starting it early does not wait for that); a no-op if it runs."""
        with self._lock:
            self._start()

    def _start(self) -> multiprocessing.connection.Connection:
        if self._conn is None:
            context = self._context or multiprocessing.get_context("spawn")
            ours, theirs = context.Pipe()
            process = context.Process(
                target=_serve,
                args=(self._settings, theirs),
                name="cbcm-relay-translator",
                daemon=True,
            )
            process.start()
            theirs.close()
            self._process, self._conn = process, ours
        return self._conn

    def next_batch(self, read: int, published: int, batch_size: int) -> Batch:
        """The batch after position ``read`` (blocking: call it from a worker thread). What
        it translated before the store became unreachable is in it (``Batch.transient``):
        the process's router has seen those events, so they must be taken."""
        with self._lock:
            conn = self._start()
            try:
                conn.send((read, published, batch_size))
                # a process's first answer comes after its start (imports, the store opened)
                bound = self._answer_within + (0.0 if self._answered else self._start_within)
                if not conn.poll(bound):
                    # alive but silent (stopped, hung): never wait on it for good, which
                    # would hang the relay, its stop and its leadership; a fresh one starts
                    # at the next request
                    self._stop(kill=True)
                    raise TranslatorUnavailable(
                        f"the translating process did not answer in {bound:g} s"
                    )
                answer: Batch = conn.recv()
                self._answered = True
            except (EOFError, OSError) as e:
                self._stop()
                raise TranslatorUnavailable("the translating process exited") from e
        return answer

    @property
    def pid(self) -> int | None:
        """The translating process's id (None: not started, or ended)."""
        process = self._process
        return None if process is None else process.pid

    def close(self) -> None:
        with self._lock:
            self._stop()

    def _stop(self, *, kill: bool = False) -> None:
        conn, process = self._conn, self._process
        self._conn = self._process = None
        self._answered = False
        if conn is not None:
            conn.close()  # the process's recv ends: it closes its store and exits
        if process is not None:
            if kill:
                process.kill()  # SIGKILL ends a stopped process too
            process.join(10)
            if process.is_alive():
                process.kill()
                process.join()
