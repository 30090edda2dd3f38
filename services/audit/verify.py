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

import hashlib
import struct
from array import array
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import takewhile
from typing import TYPE_CHECKING, Any, NamedTuple

from services.audit import tree as merkle_tree
from services.audit.hashing import rfc6962_roots, sha256_segments
from services.event_store.chain import (
    BATCH_ROWS,
    GENESIS,
    LogBatch,
    LogRow,
    LogTuple,
    batch_reader,
    head,
    link_before,
    log_ranges,
    read_log,
)
from services.event_store.log_blobs import BlobReader, blob_reader
from services.event_store.tiles import TILE_WIDTH, TileStore

if TYPE_CHECKING:
    from services.audit.custody import Custody

NEIGHBOURS = 8
"""How far from a mismatching row a moved event is looked for."""


class Damage(StrEnum):
    CHANGED = "changed"
    MISSING = "missing"
    REORDERED = "reordered"
    INSERTED = "inserted"
    TRUNCATED = "truncated"
    FORGED = "forged"
    """No valid writer mark (issue 15, ``services.audit.custody``)."""
    ERASURE = "erasure"
    """The key table contradicts the log's erasures (issue 15)."""


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


@dataclass(frozen=True)
class TreeAttested:
    """A head of the log's Merkle tree that the network signed and, per the policy, the
    witnesses cosigned (``cosigners``: their names)."""

    size: int
    root: bytes
    cosigners: tuple[str, ...] = ()
    position: int | None = None
    """The store position the checkpoint named for its last leaf (for people; the tree
    check finds the position itself)."""


@dataclass
class Report:
    start: int
    checked: int = 0
    head: int | None = None
    checkpoints: int = 0
    findings: list[Finding] = field(default_factory=list)
    tree_heads: int = 0
    """Witnessed tree heads the store's tree was held to."""
    covered_to: int | None = None
    """The last position a matching signed checkpoint (or tree head) covers."""
    leaves: int = 0
    bulk: int = 0
    """Positions the C reader vouched for (ADR 33); the rest were read as tuples or one by
    one."""

    @property
    def intact(self) -> bool:
        return not self.findings

    @property
    def uncovered(self) -> tuple[int, int] | None:
        """The positions after the last one a checkpoint covers, to the head (None: all
        covered). Their links recompute, but a rewrite of them would not show."""
        end = self.head or 0
        first = max(self.start, (self.covered_to or 0) + 1)
        return None if first > end else (first, end)

    @property
    def first(self) -> Finding | None:
        return min(self.findings, key=lambda f: f.position) if self.findings else None


@dataclass(frozen=True)
class Context:
    """What a check is given besides the store and the report so far."""

    start: int
    stop: int | None
    tree_heads: list[TreeAttested]
    tiles: tuple[int, int] | None = None
    """Level-0 tiles ``first <= index < end`` to hold to the links (None: every tile)."""


Check = Callable[[Any, Report, Context], Iterable[Finding]]
"""A check over the store: given the report so far (the chain's), it returns findings."""


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
        if not other.has_event or other.unreadable or other.position == row.position:
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
    custody: Custody | None = None,
    tree_heads: Iterable[TreeAttested] = (),
    checks: Iterable[Check] | None = None,
    last_good_checkpoint: int | None = None,
    tile_feed: TileFeed | None = None,
    bulk: bool = True,
) -> Report:
    """Recompute the chain from ``start`` (to ``stop``, default: the head) and compare it
    with ``checkpoints``.

    Two paths see every position: a fast one for intact ranges (big batches of plain tuples,
    one SHA-256 per event and nothing else per row) and the careful one that classifies
    damage. The fast path hands a range to the careful one at the first thing it cannot vouch
    for, some rows before it (so that the careful path sees the neighbours it compares with);
    the careful path hands back once a run of clean rows follows the damage. Findings are
    the careful path's alone, so they are the same as if it had read everything. ``bulk``
    (default) lets the fast path read and hash plain ranges in C
    (``services.event_store.log_blobs``, ADR 33); False reads every range as tuples.
    ``custody`` adds the checks of ``services.audit.custody``.

    Then each of ``checks`` (default :data:`CHECKS`: the Merkle tree's tiles and the
    witnessed tree heads) adds its findings."""
    report = Report(start=start)
    attested = {
        c.position: c
        for c in checkpoints
        if c.position >= start and (stop is None or c.position <= stop)
    }
    report.checkpoints = len(attested)
    scan = _Scan(recorder, report, attested=attested, start=start, stop=stop, progress=progress)
    if tile_feed is None and checks is None:
        # the level-0 tiles held to the links as the fast path reads them, as each range of
        # verify_parallel does; check_tiles then checks only what the feed did not vouch for
        tile_feed = TileFeed(recorder, TileStore(recorder).first_tile_from(start), 1 << 62)
        checks = [_after_the_feed(tile_feed) if c is check_tiles else c for c in CHECKS]
    scan.tile_feed = tile_feed
    if last_good_checkpoint is not None:
        scan.last_good_checkpoint = last_good_checkpoint
    scan.blobs = blob_reader(recorder) if bulk else None
    position: int | None = start
    while position is not None:
        looked_at = scan.fast(position)
        position = None if looked_at is None else scan.careful(*looked_at)
    report.bulk = scan.bulk_checked
    _beyond_the_head(recorder, report, attested, start)
    if attested and scan.last_good_checkpoint >= start:
        report.covered_to = scan.last_good_checkpoint
    context = Context(start=start, stop=stop, tree_heads=sorted(tree_heads, key=lambda t: t.size))
    for check in CHECKS if checks is None else checks:
        report.findings.extend(check(recorder, report, context))
    if custody is not None:  # writer marks, key table against the log (issue 15)
        report.findings.extend(custody.findings(start, stop))
    return report


RANGE_ROWS = BATCH_ROWS
"""Positions per range the fast path reads as tuples."""

BULK_RANGE_ROWS = 20_000
"""Positions per range the fast path reads as buffers (fewer, larger calls; a range that is
not vouched for is then read as tuples, whatever its size)."""

HEADER = struct.Struct(">q16sqI")
"""Position, originator id, version and topic length, as ``link_hash`` feeds them."""

LOOK_BACK = 4 * NEIGHBOURS
"""Clean rows the careful path starts before what the fast path could not vouch for: as many
links as the careful path keeps (``recent``), and more than the rows it looks back at."""

CLEAN_RUN = 2 * LOOK_BACK
"""Clean rows after the damage (and after the range handed over) before the careful path
hands back to the fast path."""


class _HandOver(NamedTuple):
    begin: int
    until: int


class _Scan:
    """What the two paths share: the report, the checkpoints, the last clean rows."""

    def __init__(
        self,
        recorder: Any,
        report: Report,
        *,
        attested: dict[int, Attested],
        start: int,
        stop: int | None,
        progress: Callable[[int], None] | None,
    ) -> None:
        self.recorder = recorder
        self.report = report
        self.attested = attested
        self.signed = sorted(attested)
        self.start = start
        self.stop = stop
        self.progress = progress
        self.last_good_checkpoint = start - 1
        self.clean: deque[int] = deque(maxlen=LOOK_BACK)
        """Positions of the last rows seen clean, by either path, with nothing between them."""
        self.fast_reading = True
        self.tile_feed: TileFeed | None = None
        self.blobs: BlobReader | None = None
        self.bulk_checked = 0
        """Positions the bulk reader vouched for."""

    def found(self, kind: Damage, position: int, detail: str) -> None:
        self.report.findings.append(Finding(kind, position, detail))

    # ------------------------------------------------------------------ the fast path

    def fast(self, position: int) -> tuple[int, int] | None:
        """Verify intact ranges from ``position``. None at the end of the log; otherwise
        (where the careful path starts, the last position it must see).

        A range goes first to the C reader (``self.blobs``: the whole range read and hashed
        in one call), which vouches for it only when it is plain and every link and
        checkpoint in it matches; any other range is read as tuples, as before, and the
        first row that does not fit hands over to the careful path."""
        read = batch_reader(self.recorder) if self.fast_reading else None
        if read is None:
            self.fast_reading = False
            return self._hand_over(position)
        last = link_before(self.recorder, position)
        previous_position, previous = (0, GENESIS) if last is None else (last.position, last.link)
        rows = BULK_RANGE_ROWS if self.blobs is not None else RANGE_ROWS
        for first, end in log_ranges(self.recorder, position, self.stop, rows):
            if self.blobs is not None:
                vouched = self._blob(first, end, previous_position, previous)
                if vouched is not None:
                    previous_position, previous = vouched
                    continue
            batch = read(self.recorder, first, end)
            looked_at = self._rows(batch, previous_position, previous)
            if isinstance(looked_at, _HandOver):
                return looked_at.begin, looked_at.until
            previous_position, previous = looked_at
        return None

    def _blob(
        self, first: int, end: int, previous_position: int, previous: bytes
    ) -> tuple[int, bytes] | None:
        """The range ``first <= p < end`` verified by the C reader: (its last position, its
        last link) when everything in it is vouched for, None when it must be read as tuples
        (nothing is recorded then)."""
        assert self.blobs is not None
        blob = self.blobs.read(first, end, previous_position, previous)
        if not blob.plain or blob.digests != blob.links:
            return None
        rows = blob.rows
        low, high, links = first, first + rows - 1, blob.links
        signed = self.signed
        matched = None
        for i in range(bisect_left(signed, low), bisect_left(signed, high + 1)):
            at = signed[i]
            if links[(at - low) * 32 : (at - low + 1) * 32] != self.attested[at].link:
                return None  # the tuple path names the checkpoint that differs
            matched = at
        if matched is not None:
            self.last_good_checkpoint = matched
        if self.tile_feed is not None:
            self.tile_feed.take_links(links, low)
        self.report.checked += rows
        self.bulk_checked += rows
        self.clean.extend(range(max(low, high - LOOK_BACK + 1), high + 1))
        if self.progress is not None:
            self.progress(high)
        return high, links[-32:]

    def _rows(
        self, batch: LogBatch, previous_position: int, previous: bytes
    ) -> tuple[int, bytes] | _HandOver:
        """A range read as tuples: (its last position, its last link) when it is clean,
        else where the careful path starts and ends."""
        sha256 = hashlib.sha256
        pack = HEADER.pack
        join = b"".join
        rows = batch.rows
        if not batch.complete:
            return _HandOver(*self._hand_over(batch.end - 1))
        bad = None
        try:
            for at, oid, version, topic, state, linked_to, link in rows:
                header = pack(at, oid, version, len(topic))
                if (
                    linked_to != previous_position
                    or sha256(join((previous, header, topic, state))).digest() != link
                ):
                    bad = at
                    break
                previous_position, previous = at, link
        except (TypeError, ValueError, struct.error):
            return _HandOver(*self._hand_over(batch.end - 1))
        bad = self._checkpoints(rows, batch.first, batch.end, bad)
        if self.tile_feed is not None:
            if bad is None:
                self.tile_feed.take(rows)
            else:
                self.tile_feed.abandon()
        done = len(rows) if bad is None else bisect_left(rows, (bad,))
        self.report.checked += done
        self.clean.extend(r[0] for r in rows[max(done - LOOK_BACK, 0) : done])
        if done and self.progress is not None:
            self.progress(rows[done - 1][0])
        if bad is not None:
            return _HandOver(*self._hand_over(bad))
        return previous_position, previous

    def _checkpoints(
        self, rows: list[LogTuple], first: int, end: int, bad: int | None
    ) -> int | None:
        """Hold the rows before ``bad`` to the checkpoints signed in ``first..end``: the
        first position whose checkpoint differs, else ``bad``."""
        signed = self.signed
        for i in range(bisect_left(signed, first), bisect_left(signed, end)):
            position = signed[i]
            if bad is not None and position >= bad:
                break
            at = bisect_left(rows, (position,))
            if at == len(rows) or rows[at][0] != position:
                continue  # no link there: _beyond_the_head names it
            if rows[at][6] != self.attested[position].link:
                return position
            self.last_good_checkpoint = position
        return bad

    def _hand_over(self, until: int) -> tuple[int, int]:
        """The careful path starts at the oldest of the last clean rows (they are checked
        again, and counted once)."""
        if self.tile_feed is not None:
            self.tile_feed.abandon()
        begin = self.clean[0] if self.clean else self.start
        self.report.checked -= len(self.clean)
        self.clean.clear()
        return begin, until

    # ------------------------------------------------------------------ the careful path

    def careful(self, begin: int, until: int) -> int | None:
        """Classify every row from ``begin``, through ``until`` and until ``CLEAN_RUN`` clean
        rows in a row. Returns where the fast path goes on, or None at the end of the log."""
        report = self.report
        last = link_before(self.recorder, begin)
        trail = _Trail(*((0, GENESIS) if last is None else (last.position, last.link)))
        clean = 0
        stop = self.stop
        rows = read_log(self.recorder, begin)
        if stop is not None:
            rows = takewhile(lambda r: r.position <= stop, rows)
        for row, ahead in _window(rows, NEIGHBOURS):
            if row.position > until and clean >= CLEAN_RUN and self.fast_reading:
                return row.position
            report.checked += 1
            if self.progress is not None:
                self.progress(row.position)
            findings = len(report.findings)
            self._classify(row, ahead, trail)
            if len(report.findings) == findings:
                clean += 1
                self.clean.append(row.position)
            else:
                clean = 0
                self.clean.clear()
        return None

    def _classify(self, row: LogRow, ahead: list[LogRow], trail: _Trail) -> None:
        """One row held to the link stored before it, its neighbours and the checkpoints."""
        found = self.found
        chain = row.chain
        if chain is None:
            found(Damage.INSERTED, row.position, "an event that is not linked into the chain")
            trail.behind.append(row)
            return
        if not row.has_event:
            found(Damage.MISSING, row.position, "the chain links an event the store no longer has")
        previous_position = trail.previous_position
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
        base = trail.recent.get(chain.previous_position)
        if row.unreadable:
            found(
                Damage.CHANGED,
                row.position,
                f"the stored event is not stored as the library writes it ({row.unreadable}): "
                "the application cannot read it back",
            )
        elif row.has_event and base is not None and row.link_from(base) != chain.link:
            moved = _moved(row, base, [*trail.behind, *ahead])
            if moved is not None:
                found(
                    Damage.REORDERED,
                    row.position,
                    f"the event stored at {moved.position} was chained at {row.position}",
                )
            else:
                found(Damage.CHANGED, row.position, "the stored event does not hash to its link")
        checkpoint = self.attested.get(row.position)
        if checkpoint is not None:
            if checkpoint.link != chain.link:
                found(
                    Damage.CHANGED,
                    self.last_good_checkpoint + 1,
                    f"the chain at {row.position} differs from the checkpoint signed "
                    f"{checkpoint.signed_at or 'by the network'}: the history from "
                    f"{self.last_good_checkpoint + 1} on was rewritten (links recomputed)",
                )
            else:
                self.last_good_checkpoint = row.position
        trail.follow(row.position, chain.link)
        trail.behind.append(row)


@dataclass
class _Trail:
    """What the careful path remembers of the rows before: the last link, the last links by
    position (``LOOK_BACK``), the last rows (``NEIGHBOURS``)."""

    previous_position: int
    previous: bytes
    recent: dict[int, bytes] = field(default_factory=dict)
    behind: deque[LogRow] = field(default_factory=lambda: deque(maxlen=NEIGHBOURS))

    def __post_init__(self) -> None:
        self.recent[self.previous_position] = self.previous

    def follow(self, position: int, link: bytes) -> None:
        self.previous_position, self.previous = position, link
        self.recent[position] = link
        if len(self.recent) > LOOK_BACK:
            self.recent.pop(next(iter(self.recent)))


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
    from services.event_store.chain import link_at  # noqa: PLC0415

    return link_at(recorder, position) is not None


# ------------------------------------------------------------------------- further checks


class TileFeed:
    """The level-0 tiles ``first <= index < end`` held to the links the fast path reads
    anyway, as it reads them (each link read once, not again by ``check_tiles``).

    It vouches only while everything fits: any tile that does not, or a range the fast
    path hands to the careful one, stops it, and ``check_tiles`` then checks the tiles from
    ``next`` on as before (naming the damage exactly)."""

    def __init__(self, recorder: Any, first: int, end: int) -> None:
        self.store = TileStore(recorder)
        self.next = first
        """The first tile not vouched for yet."""
        self.end = end
        self.stopped = False
        self._links = bytearray()
        self._positions = array("q")
        self._pending: deque[merkle_tree.Tile] = deque()
        self._exhausted = False

    def abandon(self) -> None:
        self.stopped = True
        self._links, self._positions = bytearray(), array("q")

    def take(self, rows: list[LogTuple]) -> None:
        """The rows of a clean batch, in position order, following the last ones taken."""
        if self.stopped or self._exhausted:
            return
        self._links += b"".join(r[6] for r in rows)
        self._positions.extend(r[0] for r in rows)
        self._vouch()

    def take_links(self, links: bytes, low: int) -> None:
        """The links of a clean range of consecutive positions from ``low``."""
        if self.stopped or self._exhausted:
            return
        self._links += links
        self._positions.extend(range(low, low + len(links) // 32))
        self._vouch()

    def _vouch(self) -> None:
        """Every full tile the links taken so far cover, held to its stored tile: the
        leaves ``SHA-256(0x00 || link)``, the tile's root, its first and last positions."""
        width = TILE_WIDTH
        links, positions = self._links, self._positions
        done = 0
        while len(positions) - done >= width and self.next < self.end:
            tiles = self._tiles((len(positions) - done) // width)
            if not tiles:
                self._exhausted = True  # the right edge: not tiled yet
                break
            span = len(tiles) * width
            for k, tile in enumerate(tiles):
                first = done + k * width
                if (
                    positions[first] != tile.first_position
                    or positions[first + width - 1] != tile.last_position
                ):
                    self.abandon()
                    return
            with memoryview(links) as view:
                leaves = sha256_segments(
                    view[done * 32 : (done + span) * 32],
                    array("q", range(0, span * 32 + 1, 32)),
                    b"\x00",
                )
            if leaves != b"".join(t.hashes for t in tiles) or rfc6962_roots(
                leaves, width
            ) != b"".join(t.root for t in tiles):
                self.abandon()
                return
            done += span
            self.next += len(tiles)
        del links[: done * 32]
        del positions[:done]

    def _tiles(self, most: int) -> list[merkle_tree.Tile]:
        """Up to ``most`` stored tiles from ``next``, in order (fewer at the right edge)."""
        if not self._pending:
            self._pending.extend(self.store.tiles(0, self.next, min(self.end, self.next + 64)))
        taken: list[merkle_tree.Tile] = []
        while self._pending and len(taken) < most:
            tile = self._pending.popleft()
            if tile.number != self.next + len(taken):
                self._pending.clear()
                break
            taken.append(tile)
        return taken


def check_tiles(recorder: Any, report: Report, context: Context) -> list[Finding]:
    """Every stored tile of the Merkle tree holds what it summarises: level 0 its links
    (``context.tiles``: only those tiles), the levels above the tiles below them."""
    if context.tiles is not None:
        first, end = context.tiles
    else:  # the tiles of the range verified: from the first that ends at or after ``start``
        first, end = TileStore(recorder).first_tile_from(context.start), 1 << 62
    found = [
        Finding(
            Damage.CHANGED,
            m.tile.first_position,
            f"a stored tile of the Merkle tree (level {m.tile.level}, index {m.tile.number}) "
            f"differs from the chain: {m}",
        )
        for m in merkle_tree.check_tiles(recorder, 0, first, end)
    ]
    if context.tiles is None:
        found.extend(check_upper_tiles(recorder, report, context))
    return found


def check_upper_tiles(recorder: Any, report: Report, context: Context) -> list[Finding]:
    """The stored tiles above level 0 hold the roots of the tiles below them."""
    found: list[Finding] = []
    counts = TileStore(recorder).counts()
    level = 1
    while counts.get(level, 0):
        found.extend(
            Finding(
                Damage.CHANGED,
                m.tile.first_position,
                f"a stored tile of the Merkle tree (level {m.tile.level}, index "
                f"{m.tile.number}) differs from the tiles below it",
            )
            for m in merkle_tree.check_tiles(recorder, level, 0, counts[level])
        )
        level += 1
    return found


def check_tree_heads(recorder: Any, report: Report, context: Context) -> list[Finding]:
    """The store's Merkle tree at each witnessed size has the witnessed root. A tree head
    beyond the store's tree: *truncated*; a root that differs: *changed*, named from the
    first position after the largest tree head that still matches (a whole replacement
    store differs from its first position)."""
    if not context.tree_heads:
        return []
    tree = merkle_tree.StoredTree(recorder)
    report.tree_heads = len(context.tree_heads)
    report.leaves = tree.size
    found: list[Finding] = []
    good = 0
    for signed in context.tree_heads:
        by = f" (cosigned by {', '.join(signed.cosigners)})" if signed.cosigners else ""
        if signed.size > tree.size:
            end = tree.position_of(tree.size - 1) if tree.size else 0
            found.append(
                Finding(
                    Damage.TRUNCATED,
                    end + 1,
                    f"the network signed a tree of {signed.size} events{by}, but the store "
                    f"holds {tree.size}",
                )
            )
            break
        if tree.root(signed.size) != signed.root:
            first = tree.position_of(good)
            found.append(
                Finding(
                    Damage.CHANGED,
                    first,
                    f"the store's tree of {signed.size} events differs from the one witnessed"
                    f"{by}: the history from position {first} on is not the log the "
                    "witnesses hold (rewritten, forked, or another store)",
                )
            )
            break
        good = signed.size
        report.covered_to = max(report.covered_to or 0, tree.position_of(signed.size - 1))
    return found


def _after_the_feed(feed: TileFeed) -> Check:
    """``check_tiles`` for what ``feed`` did not vouch for: the level-0 tiles from the first
    it did not, then every tile above level 0."""

    def check(recorder: Any, report: Report, context: Context) -> list[Finding]:
        rest = Context(context.start, context.stop, context.tree_heads, (feed.next, 1 << 62))
        return [*check_tiles(recorder, report, rest), *check_upper_tiles(recorder, report, rest)]

    return check


CHECKS: list[Check] = [check_tiles, check_tree_heads]
"""The checks ``verify`` runs after the chain's (issue #15); another issue appends its own."""
