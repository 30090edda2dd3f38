"""A country's history in bulk (issue #16): a store of millions of real events, written fast.

The demo walks cases through the application at about 300 events a second: three million
would take three hours. Here the application walks a *template* of ``template_cases()`` cases
once (``services.demo.walk``: every command checked by the domain, as for real users), in a
scratch store; then the template's events are *replicated*: each replica is the template's
case events with

- every id replaced by a fresh one (a case, its referrals, feedback items, receipts...), the
  same old id giving the same new one within a replica, and the ids the store derives from
  another (a case's notices and personal-data reads, a case's forwarded feedback item, a
  receipt's id from its locator) derived again from the new ones; a receipt's locator is a
  fresh one;
- every time and date moved on by the replica's offset, so that the replicas, one after the
  other, spread the cases over ``YEARS`` years (a country-decade), the last ending today.

Each replica's events go through the production encoder (``MsgspecMapper.to_stored_event``:
personal fields sealed under fresh data keys of the new records, as the application seals
them) and the production recorder (``insert_events``: the hash chain, the writer mark, the
new data keys in the same transaction), ``BATCH`` events a transaction. The network's own
events (before the template's first case) are written once, first. The Merkle tree's tiles
are stored at the end, as the checkpoint publisher would. The store is one ``cbcm relay``,
the projectors and ``cbcm audit verify`` read as any other: nothing is written beside the
encoder and the recorder.

``country_store(events)`` keeps the result under ``CBCM_BENCH_COUNTRY_CACHE`` (a directory),
one data directory per size (``country-<events>``: ``events.sqlite3``, the key ring and the
writer key), and reuses it on later runs; without a cache it writes into a temporary
directory of the caller's.
"""

from __future__ import annotations

import dataclasses
import os
import random
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import Any

from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import StoredEvent

from domain.case import Case
from domain.case_notices import case_notices_id
from domain.feedback import forwarded_feedback_id
from domain.personal_data_reads import reads_id
from domain.receipt import Receipt, receipt_id
from services.application.mechanism import ComplaintMechanism
from services.application.receipts import new_receipt_code
from services.audit import tree as merkle_tree
from services.bootstrap import complaint_mechanism
from services.demo.walk import DEMO_RUN_ON, DEMO_SPAN, build_demo_network, walk_cases
from services.settings import Settings


def template_cases(events: int) -> int:
    """The template's cases: ``CBCM_BENCH_TEMPLATE_CASES``, else 400 for a million events or
    more (every path of the walk many times over) and 100 below (a quicker walk)."""
    return int(os.environ.get("CBCM_BENCH_TEMPLATE_CASES", "400" if events >= 1e6 else "100"))


YEARS = 10
RECENT_YEARS = 1
"""The last year's cases are walked as the demo walks them, some left open; the older
years' were all finished (a case open for years is not what a network's history holds)."""
BATCH = 5000
CACHE_ENV = "CBCM_BENCH_COUNTRY_CACHE"


@dataclass
class Generated:
    settings: Settings
    events: int
    """Events in the store (its last position)."""
    cases: int
    template_events: int
    template_seconds: float
    """Walking the template through the application (scratch store)."""
    write_seconds: float
    """Replicating it into the store (encode, seal, chain, mark, commit) and the tiles."""
    case_ids: list[uuid.UUID]
    """A sample of the store's case ids (the last replica's)."""
    open_cases: int = 0
    reused: bool = False

    @property
    def rate(self) -> float:
        """Events written a second (the template's walk left out)."""
        return self.events / self.write_seconds if self.write_seconds else float("nan")


def _derivers() -> dict[str, Callable[[uuid.UUID], uuid.UUID]]:
    return {
        "notices": case_notices_id,
        "reads": reads_id,
        "forwarded": forwarded_feedback_id,
    }


class _Replica:
    """One replica's renaming: ids, locators, times."""

    def __init__(
        self,
        offset: timedelta,
        derived: dict[uuid.UUID, tuple[str, uuid.UUID]],
        locators: set[str],
        keep: set[uuid.UUID],
    ) -> None:
        self.offset = offset
        self.days = timedelta(days=offset.days)
        self.ids: dict[uuid.UUID, uuid.UUID] = {}
        self.derived = derived
        self.keep = keep
        self.locators: dict[str, str] = {}
        for locator in locators:
            new = new_receipt_code().locator
            self.locators[locator] = new
            self.ids[receipt_id(locator)] = receipt_id(new)
        self.derivers = _derivers()

    def uuid(self, old: uuid.UUID) -> uuid.UUID:
        new = self.ids.get(old)
        if new is not None:
            return new
        if old in self.keep:
            return old
        how = self.derived.get(old)
        new = self.derivers[how[0]](self.uuid(how[1])) if how else uuid.uuid4()
        self.ids[old] = new
        return new

    def value(self, v: Any) -> Any:
        t = type(v)
        if t is uuid.UUID:
            return self.uuid(v)
        if t is datetime:
            return v + self.offset
        if t is str:
            return self.locators.get(v, v)
        if v is None or t is int or t is bool or t is float or isinstance(v, Enum):
            return v
        if t is date:
            return v + self.days
        if t is tuple or t is list or t is frozenset or t is set:
            return t(self.value(x) for x in v)
        if t is dict:
            return {self.value(k): self.value(x) for k, x in v.items()}
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            changes = {}
            for f in dataclasses.fields(v):
                if not f.init:
                    continue
                old = getattr(v, f.name)
                new = self.value(old)
                if new is not old:
                    changes[f.name] = new
            return dataclasses.replace(v, **changes) if changes else v
        return v


OPEN_PATHS = ("left_open", "in_progress")
"""The walk's paths that leave a case open."""


def _template(
    app: ComplaintMechanism, cases: int, start: datetime
) -> tuple[int, int, set[uuid.UUID]]:
    """The network and ``cases`` cases walked by the application: the position of the last
    network event, of the last event, and the cases the walk left open."""
    build_demo_network(app, start)
    setup = app.recorder.max_notification_id() or 0
    walked = walk_cases(app, cases, random.Random(16), start + timedelta(hours=1))
    left_open = {c for c, path in walked.cases.items() if path in OPEN_PATHS}
    return setup, app.recorder.max_notification_id() or 0, left_open


def _ids_in(value: Any, out: set[uuid.UUID]) -> None:
    """Every UUID inside ``value`` (an event, and what its fields hold)."""
    if type(value) is uuid.UUID:
        out.add(value)
    elif isinstance(value, tuple | list | frozenset | set):
        for x in value:
            _ids_in(x, out)
    elif isinstance(value, dict):
        for k, x in value.items():
            _ids_in(k, out)
            _ids_in(x, out)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            _ids_in(getattr(value, f.name), out)


def _without(
    walked: list[DomainEventProtocol[Any]], left_open: set[uuid.UUID]
) -> list[DomainEventProtocol[Any]]:
    """``walked`` without the cases left open and every record that names one of them (or
    names a record dropped so), whole: the template of the older years, whose cases were
    all finished by now."""
    dropped = set(left_open)
    for case_id in left_open:
        dropped |= {derive(case_id) for derive in _derivers().values()}
    mentions: dict[uuid.UUID, set[uuid.UUID]] = {}
    for e in walked:
        ids: set[uuid.UUID] = set()
        _ids_in(e, ids)
        mentions.setdefault(e.originator_id, set()).update(ids)
    grew = True
    while grew:
        grew = False
        for record, ids in mentions.items():
            if record not in dropped and ids & dropped:
                dropped.add(record)
                grew = True
    return [e for e in walked if e.originator_id not in dropped]


def _read_all(app: ComplaintMechanism, last: int) -> Iterator[DomainEventProtocol[Any]]:
    start = 1
    while start <= last:
        batch = app.recorder.select_notifications(start, 2000, stop=last)
        if not batch:
            return
        for n in batch:
            yield app.mapper.to_domain_event(n)
        start = batch[-1].id + 1


def generate(data_dir: Path, events: int, progress: Callable[[str], None] = print) -> Generated:
    """Write a store of at least ``events`` events into ``data_dir`` (fresh)."""
    now = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    span = DEMO_SPAN + DEMO_RUN_ON + timedelta(hours=1)
    start = now - timedelta(days=365 * YEARS) - span
    scratch = data_dir.parent / f"{data_dir.name}-template"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    began = time.perf_counter()
    template_app = complaint_mechanism(
        Settings(data_dir=scratch, event_store=f"sqlite:///{scratch / 'events.sqlite3'}")
    )
    try:
        cases = template_cases(events)
        setup_last, last, left_open = _template(template_app, cases, start)
        all_events = list(_read_all(template_app, last))
    finally:
        template_app.close()
    template_seconds = time.perf_counter() - began
    shutil.rmtree(scratch, ignore_errors=True)
    setup, walked = all_events[:setup_last], all_events[setup_last:]
    progress(
        f"template: {cases} cases, {len(walked)} events (+{len(setup)} of the "
        f"network) walked by the application in {template_seconds:.0f} s"
    )

    keep = {e.originator_id for e in setup}
    case_ids = {e.originator_id for e in walked if isinstance(e, Case.Event)}
    derived: dict[uuid.UUID, tuple[str, uuid.UUID]] = {}
    for case_id in case_ids:
        for name, derive in _derivers().items():
            derived[derive(case_id)] = (name, case_id)
    locators = {e.locator for e in walked if isinstance(e, Receipt.Issued)}

    finished = _without(walked, left_open)
    # the older years' replicas hold only finished cases; the last year's, the walk as it is
    recent = max(1, round(RECENT_YEARS / YEARS * (events - len(setup)) / len(walked)))
    older = max(0, -(-(events - len(setup) - recent * len(walked)) // len(finished)))
    replicas = older + recent
    step = (timedelta(days=365 * YEARS)) / replicas
    progress(
        f"{older} replicas of {len(finished)} events (the cases finished) over the first "
        f"{YEARS - RECENT_YEARS} years, {recent} of {len(walked)} (with the {len(left_open)} "
        "cases the walk left open) over the last"
    )

    data_dir.mkdir(parents=True, exist_ok=True)
    settings = Settings(data_dir=data_dir, event_store=f"sqlite:///{data_dir / 'events.sqlite3'}")
    app = complaint_mechanism(settings)
    began = time.perf_counter()
    try:
        mapper, recorder = app.mapper, app.recorder
        batch: list[StoredEvent] = [mapper.to_stored_event(e) for e in setup]
        written = 0
        sample: list[uuid.UUID] = []
        for r in range(replicas):
            replica = _Replica(step * r, derived, locators, keep)
            template = finished if r < older else walked
            for event in template:
                batch.append(mapper.to_stored_event(replica.value(event)))
                if len(batch) >= BATCH:
                    recorder.insert_events(batch)
                    written += len(batch)
                    batch = []
            if r == replicas - 1:
                sample = [replica.uuid(c) for c in sorted(case_ids)]
            if r % 50 == 0:
                seconds = time.perf_counter() - began
                progress(
                    f"replica {r + 1}/{replicas}: {written} events in {seconds:.0f} s "
                    f"({written / max(seconds, 1e-9):.0f}/s)"
                )
        if batch:
            recorder.insert_events(batch)
        merkle_tree.extend(recorder)
        total = recorder.max_notification_id() or 0
    finally:
        app.close()
    write_seconds = time.perf_counter() - began
    return Generated(
        settings=settings,
        events=total,
        cases=len(case_ids) * recent + (len(case_ids) - len(left_open)) * older,
        open_cases=len(left_open) * recent,
        template_events=len(walked),
        template_seconds=template_seconds,
        write_seconds=write_seconds,
        case_ids=sample,
    )


_MARK = "written"


def country_store(events: int, scratch: Path, progress: Callable[[str], None] = print) -> Generated:
    """A store of ``events`` events: from the cache named by ``CBCM_BENCH_COUNTRY_CACHE`` if
    it holds one (written there first if not), else written into ``scratch``."""
    cache = os.environ.get(CACHE_ENV)
    directory = Path(cache) / f"country-{events}" if cache else scratch / f"country-{events}"
    done = directory / _MARK
    if cache and done.exists():
        import json  # noqa: PLC0415

        meta = json.loads(done.read_text())
        settings = Settings(
            data_dir=directory, event_store=f"sqlite:///{directory / 'events.sqlite3'}"
        )
        return Generated(
            settings=settings,
            events=meta["events"],
            cases=meta["cases"],
            template_events=meta["template_events"],
            template_seconds=meta["template_seconds"],
            write_seconds=meta["write_seconds"],
            case_ids=[uuid.UUID(c) for c in meta["case_ids"]],
            open_cases=meta["open_cases"],
            reused=True,
        )
    shutil.rmtree(directory, ignore_errors=True)
    made = generate(directory, events, progress)
    if cache:
        import json  # noqa: PLC0415

        done.write_text(
            json.dumps(
                {
                    "events": made.events,
                    "cases": made.cases,
                    "template_events": made.template_events,
                    "template_seconds": made.template_seconds,
                    "write_seconds": made.write_seconds,
                    "open_cases": made.open_cases,
                    "case_ids": [str(c) for c in made.case_ids],
                }
            )
        )
    return made
