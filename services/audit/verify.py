"""``cbcm audit verify``: recompute the chain over the store and hold it to the checkpoints.

Local damage shows in the chain itself: an event whose bytes changed no longer hashes to its
link (*changed*), or hashes to a neighbour's (*reordered*); a link whose event is gone, or a
link naming a predecessor that is gone (*missing*); an event without a link, or a link naming
an older predecessor than the event before it (*inserted*). Each row is checked against the
link stored before it, so one damaged row does not hide the rows after it.

Damage done with every link recomputed, or a cut-off tail, leaves a consistent chain: only the
signed checkpoints that witnesses hold show it (a checkpoint's link differs from the store's
at its position: *changed*; a checkpoint beyond the store's head: *truncated*).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import takewhile
from typing import Any

from services.audit.chain import GENESIS, LogRow, head, link_before, read_log

NEIGHBOURS = 8
"""How far from a mismatching row a moved event is looked for."""


class Damage(StrEnum):
    CHANGED = "changed"
    MISSING = "missing"
    REORDERED = "reordered"
    INSERTED = "inserted"
    TRUNCATED = "truncated"


@dataclass(frozen=True)
class Finding:
    kind: Damage
    position: int
    detail: str


@dataclass(frozen=True)
class Attested:
    """A checkpoint as verification needs it: the link the network signed at a position."""

    position: int
    link: bytes
    signed_at: str = ""


@dataclass
class Report:
    start: int
    checked: int = 0
    head: int | None = None
    checkpoints: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.findings

    @property
    def first(self) -> Finding | None:
        return min(self.findings, key=lambda f: f.position) if self.findings else None


def _window(rows: Iterable[LogRow], size: int) -> Iterator[tuple[LogRow, list[LogRow]]]:
    """Each row with the rows that follow it (up to ``size``)."""
    ahead: deque[LogRow] = deque()
    iterator = iter(rows)
    for row in iterator:
        ahead.append(row)
        if len(ahead) > size:
            current = ahead.popleft()
            yield current, list(ahead)
    while ahead:
        current = ahead.popleft()
        yield current, list(ahead)


def _moved(row: LogRow, previous: bytes, candidates: Iterable[LogRow]) -> LogRow | None:
    """A neighbour whose event, at this row's position, hashes to this row's link."""
    assert row.chain is not None
    for other in candidates:
        if not other.has_event or other.position == row.position:
            continue
        moved = LogRow(
            row.position, other.originator_id, other.version, other.topic, other.state, None
        )
        if moved.link_from(previous) == row.chain.link:
            return other
    return None


def verify(
    recorder: Any,
    *,
    start: int = 1,
    stop: int | None = None,
    checkpoints: Iterable[Attested] = (),
    progress: Callable[[int], None] | None = None,
) -> Report:
    """Recompute the chain from ``start`` (to ``stop``, default: the head) and compare it
    with ``checkpoints``."""
    report = Report(start=start)
    attested = {
        c.position: c
        for c in checkpoints
        if c.position >= start and (stop is None or c.position <= stop)
    }
    report.checkpoints = len(attested)
    last = link_before(recorder, start)
    previous_position, previous = (0, GENESIS) if last is None else (last.position, last.link)
    recent: dict[int, bytes] = {previous_position: previous}
    behind: deque[LogRow] = deque(maxlen=NEIGHBOURS)
    last_good_checkpoint = start - 1

    def found(kind: Damage, position: int, detail: str) -> None:
        report.findings.append(Finding(kind, position, detail))

    rows = read_log(recorder, start)
    if stop is not None:
        rows = takewhile(lambda r: r.position <= stop, rows)
    for row, ahead in _window(rows, NEIGHBOURS):
        report.checked += 1
        if progress is not None:
            progress(row.position)
        chain = row.chain
        if chain is None:
            found(Damage.INSERTED, row.position, "an event that is not linked into the chain")
            behind.append(row)
            continue
        if not row.has_event:
            found(Damage.MISSING, row.position, "the chain links an event the store no longer has")
        if chain.previous_position > previous_position:
            found(
                Damage.MISSING,
                previous_position + 1,
                f"position {row.position} links to {chain.previous_position}: the store no "
                f"longer has it (event and link removed), nor whatever stood after "
                f"{previous_position}",
            )
        elif chain.previous_position < previous_position:
            found(
                Damage.INSERTED,
                previous_position,
                f"position {row.position} links to {chain.previous_position}: positions after "
                f"it, up to {previous_position}, were put in later",
            )
        base = recent.get(chain.previous_position)
        if row.has_event and base is not None and row.link_from(base) != chain.link:
            moved = _moved(row, base, [*behind, *ahead])
            if moved is not None:
                found(
                    Damage.REORDERED,
                    row.position,
                    f"the event stored at {moved.position} was chained at {row.position}",
                )
            else:
                found(Damage.CHANGED, row.position, "the stored event does not hash to its link")
        checkpoint = attested.get(row.position)
        if checkpoint is not None:
            if checkpoint.link != chain.link:
                found(
                    Damage.CHANGED,
                    last_good_checkpoint + 1,
                    f"the chain at {row.position} differs from the checkpoint signed "
                    f"{checkpoint.signed_at or 'by the network'}: the history from "
                    f"{last_good_checkpoint + 1} on was rewritten (links recomputed)",
                )
            else:
                last_good_checkpoint = row.position
        previous_position, previous = row.position, chain.link
        recent[previous_position] = previous
        if len(recent) > 4 * NEIGHBOURS:
            recent.pop(next(iter(recent)))
        behind.append(row)

    _beyond_the_head(recorder, report, attested, start)
    return report


def _beyond_the_head(
    recorder: Any, report: Report, attested: dict[int, Attested], start: int
) -> None:
    """Checkpoints the store cannot show: past its head (truncated), or at a position it
    has no link for."""
    top = head(recorder)
    report.head = None if top is None else top.position
    end = report.head or 0
    beyond = sorted(p for p in attested if p > end)
    if beyond:
        report.findings.append(
            Finding(
                Damage.TRUNCATED,
                end + 1,
                f"the network signed position {beyond[-1]}, but the store ends at {end}",
            )
        )
    for position in sorted(p for p in attested if start <= p <= end):
        if not _has_link(recorder, position):
            report.findings.append(
                Finding(
                    Damage.MISSING,
                    position,
                    "a signed checkpoint's position has no link in the store",
                )
            )


def _has_link(recorder: Any, position: int) -> bool:
    from services.audit.chain import link_at  # noqa: PLC0415

    return link_at(recorder, position) is not None
