"""``verify`` on every core (issue #15): the log cut into ranges, each verified in a process.

Each range starts from what is stored just before it (the chain's link, and for the Merkle
tree the tiles it holds), so no range waits for another: a range ``[a, b]`` checks each
position against the link stored before it, as the single-process ``verify`` does, and holds
the level-0 tiles whose leaves start in it to their links. Ranges are cut at tile boundaries
when tiles are stored, so each tile is checked once. The main process then merges the
findings and runs what needs the whole log: the tiles above level 0 and the witnessed tree
heads (a few tiles each).

Findings are the same as a single ``verify`` gives, but for the words of a *changed*
checkpoint at the start of a range (named from the last checkpoint before the range, which
the range before checks).
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from eventsourcing.persistence import InfrastructureFactory
from eventsourcing.utils import Environment

from services.audit.verify import (
    Attested,
    Context,
    Finding,
    Report,
    TileFeed,
    TreeAttested,
    check_tiles,
    check_tree_heads,
    check_upper_tiles,
    verify,
)
from services.event_store.chain import head
from services.event_store.tiles import TileStore

if TYPE_CHECKING:
    from services.audit.custody import Custody

__all__ = ["MIN_RANGE", "verify_parallel", "workers"]

MIN_RANGE = 200_000
"""Positions below which a process of its own costs more than it saves."""


def workers() -> int:
    """The cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def start_method() -> str:
    """How the range processes start: forked when this process runs one thread (each range
    process then starts with the modules already imported: a spawned one spent about 0.9 s
    of CPU importing them, several seconds of wall on a loaded machine); spawned otherwise
    (forking a process with other threads may copy a lock one of them holds)."""
    if threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods():
        return "fork"
    return "spawn"


@dataclass(frozen=True)
class _Range:
    first: int
    last: int
    tiles: tuple[int, int]
    checkpoints: tuple[Attested, ...]
    last_good: int


def _open(application: str, env: dict[str, str]) -> Any:
    env = {**env, "CREATE_TABLE": "false"}
    factory = InfrastructureFactory.construct(Environment(application, env))
    return factory.application_recorder()


def _verify_range(
    application: str, env: dict[str, str], part: _Range
) -> tuple[list[Finding], int, int | None, int]:
    """One range, in a process of its own. It imports this module and what ``verify`` needs,
    not the application (``application`` is its name, for the store's environment): a
    spawned range process spent about 0.3 s of its CPU importing the application's modules
    (the domain, its commands and read models) that it never ran."""
    recorder = _open(application, env)
    try:
        feed = TileFeed(recorder, *part.tiles)
        report = verify(
            recorder,
            start=part.first,
            stop=part.last,
            checkpoints=part.checkpoints,
            checks=(),
            last_good_checkpoint=part.last_good,
            tile_feed=feed,
        )
        # the tiles the links read by the fast path did not vouch for, checked as before
        rest = (feed.next, part.tiles[1])
        context = Context(start=part.first, stop=part.last, tree_heads=[], tiles=rest)
        report.findings.extend(check_tiles(recorder, report, context))
        return report.findings, report.checked, report.covered_to, report.bulk
    finally:
        recorder.datastore.close()


def _cuts(
    recorder: Any, start: int, top: int, parts: int
) -> list[tuple[int, int, tuple[int, int]]]:
    """``parts`` ranges (first, last position, level-0 tiles first..end) from ``start`` to
    ``top``, cut at tile boundaries when tiles are stored."""
    store = TileStore(recorder)
    tiles = store.counts().get(0, 0)
    if not tiles:
        bounds = [start + (top - start + 1) * i // parts for i in range(parts)] + [top + 1]
        return [(bounds[i], bounds[i + 1] - 1, (0, 0)) for i in range(parts)]
    at_start = store.tile_at_position(start)
    first_tile = 0 if start <= 1 else (tiles if at_start is None else at_start.number)
    cuts = [(start, first_tile)]
    for i in range(1, parts):
        index = first_tile + (tiles - first_tile) * i // parts
        found = store.tiles(0, index, index + 1)
        if found and found[0].first_position > cuts[-1][0] and index > cuts[-1][1]:
            cuts.append((found[0].first_position, index))
    cuts.append((top + 1, 1 << 62))
    return [
        (cuts[i][0], cuts[i + 1][0] - 1, (cuts[i][1], cuts[i + 1][1])) for i in range(len(cuts) - 1)
    ]


def verify_parallel(
    recorder: Any,
    env: dict[str, str],
    *,
    start: int = 1,
    checkpoints: Iterable[Attested] = (),
    tree_heads: Iterable[TreeAttested] = (),
    processes: int | None = None,
    min_range: int = MIN_RANGE,
    progress: Callable[[int], None] | None = None,
    custody: Custody | None = None,
) -> Report:
    """``verify`` of the whole log from ``start`` (``env``: the persistence environment each
    process opens the store with), over ``processes`` processes (default: every core).
    ``custody``'s checks (issue #15's other half: writer marks, the key table against the log)
    run once, in this process, over the whole range."""
    processes = processes or workers()
    top_row = head(recorder)
    top = 0 if top_row is None else top_row.position
    heads = list(tree_heads)
    attested = sorted(checkpoints, key=lambda c: c.position)
    if processes <= 1 or top - start + 1 < 2 * min_range:
        return verify(
            recorder,
            start=start,
            checkpoints=attested,
            tree_heads=heads,
            progress=progress,
            custody=custody,
        )
    parts = min(processes, max(1, (top - start + 1) // min_range))
    cuts = _cuts(recorder, start, top, parts)
    jobs = []
    for first, last, tiles in cuts:
        before = [c.position for c in attested if c.position < first]
        jobs.append(
            _Range(
                first,
                last,
                tiles,
                tuple(c for c in attested if first <= c.position <= last),
                before[-1] if before else first - 1,
            )
        )
    report = Report(start=start, head=top or None, checkpoints=len(attested))
    from services.application.mechanism import ComplaintMechanism  # noqa: PLC0415 - not in the range processes

    context = multiprocessing.get_context(start_method())
    with ProcessPoolExecutor(max_workers=len(jobs), mp_context=context) as pool:
        futures = [pool.submit(_verify_range, ComplaintMechanism.name, env, job) for job in jobs]
        for job, future in zip(jobs, futures, strict=True):
            findings, checked, covered, bulk = future.result()
            report.findings.extend(findings)
            report.checked += checked
            report.bulk += bulk
            if covered is not None:
                report.covered_to = max(report.covered_to or 0, covered)
            if progress is not None:
                progress(job.last)
    # one TRUNCATED (a checkpoint past the head) is found by each range: keep one
    seen: set[tuple[str, int]] = set()
    unique = []
    for finding in report.findings:
        key = (str(finding.kind), finding.position)
        if key not in seen:
            seen.add(key)
            unique.append(finding)
    report.findings = unique
    whole = Context(start=start, stop=None, tree_heads=sorted(heads, key=lambda t: t.size))
    report.findings.extend(check_upper_tiles(recorder, report, whole))
    report.findings.extend(check_tree_heads(recorder, report, whole))
    if custody is not None:
        report.findings.extend(custody.findings(start, None))
    return report
