"""The Merkle tree over the store's hash chain (issue #15), read from its stored tiles.

Leaf ``i`` is the ``i``-th chain row in position order; its entry is that row's 32-byte link
(which covers the event's bytes and every link before it), so the leaf hash is
``SHA-256(0x00 || link)``. Tiles (``services.event_store.tiles``) hold every full group of 256
nodes at heights 0, 8, 16...; what the tiles do not hold yet (the right edge) is summed from
the links and the tiles' roots. A proof for any tree size then reads a few tiles, never the
whole log.

:func:`extend` stores the tiles the log has filled since the last call: the checkpoint
publisher runs it before it signs. Nothing here is trusted alone: ``cbcm audit verify`` holds
every stored tile to the links (:func:`check_tiles`), and every proof is checked against a
signed root by whoever receives it.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass
from hashlib import sha256
from typing import Any

from services.audit.merkle import (
    EMPTY_ROOT,
    MemoryTree,
    ProofError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    tree_hash,
)
from services.event_store.tiles import TILE_WIDTH, Tile, TileStore

__all__ = ["StoredTree", "Tile", "TileMismatch", "check_tiles", "extend", "tree_hash"]

HEIGHT = 8
_STAND_IN = bytes(32)
"""A hash while :meth:`StoredTree.prefetch` only learns which tiles proofs need."""
READ_LINKS = 64 * TILE_WIDTH


def _hashes(blob: bytes) -> list[bytes]:
    return [blob[i : i + 32] for i in range(0, len(blob), 32)]


def extend(recorder: Any) -> int:
    """Store every full tile the log now fills; the number of leaves the tiles cover."""
    store = TileStore(recorder)
    counts = store.counts()
    level0 = counts.get(0, 0)
    last = store.tiles(0, level0 - 1, level0)
    after = last[0].last_position if last else 0
    new: list[Tile] = []
    while True:
        links = store.links_after(after, READ_LINKS)
        full = len(links) - len(links) % TILE_WIDTH
        for at in range(0, full, TILE_WIDTH):
            group = links[at : at + TILE_WIDTH]
            leaves = [leaf_hash(link) for _, link in group]
            new.append(
                Tile(0, level0, b"".join(leaves), tree_hash(leaves), group[0][0], group[-1][0])
            )
            level0 += 1
        if full:
            after = links[full - 1][0]
        if len(new) >= 256 or len(links) < READ_LINKS:
            store.append(new)
            new = []
        if len(links) < READ_LINKS:
            break
    level = 1
    below = level0
    while below >= TILE_WIDTH:
        have = counts.get(level, 0)
        made: list[Tile] = []
        while (have + 1) * TILE_WIDTH <= below:
            children = store.tiles(level - 1, have * TILE_WIDTH, (have + 1) * TILE_WIDTH)
            roots = [c.root for c in children]
            made.append(
                Tile(
                    level,
                    have,
                    b"".join(roots),
                    tree_hash(roots),
                    children[0].first_position,
                    children[-1].last_position,
                )
            )
            have += 1
        store.append(made)
        below = have
        level += 1
    return level0 * TILE_WIDTH


class TileMismatch(ValueError):
    """A stored tile that its links (or the tiles below it) do not produce."""

    def __init__(self, tile: Tile, why: str) -> None:
        super().__init__(why)
        self.tile = tile


def check_tiles(recorder: Any, level: int, first: int, end: int) -> list[TileMismatch]:
    """Hold the stored tiles ``first <= index < end`` of ``level`` to what they summarise:
    level 0 to the chain's links (the tile's 256 leaves are the 256 links that follow the
    previous tile's, and its first and last positions are theirs), a higher level to the
    roots of the tiles below it. Read in batches of 64 tiles."""
    store = TileStore(recorder)
    found: list[TileMismatch] = []
    batch = 64
    after: int | None = None
    if level == 0:
        before = store.tiles(0, first - 1, first) if first > 0 else []
        after = before[0].last_position if before else 0
    at = first
    while at < end:
        tiles = store.tiles(level, at, min(end, at + batch))
        if not tiles:
            break
        if level == 0:
            assert after is not None
            links = store.links_after(after, len(tiles) * TILE_WIDTH)
        for k, tile in enumerate(tiles):
            if level == 0:
                group = links[k * TILE_WIDTH : (k + 1) * TILE_WIDTH]
                if (
                    len(group) != TILE_WIDTH
                    or group[0][0] != tile.first_position
                    or group[-1][0] != tile.last_position
                ):
                    found.append(TileMismatch(tile, "the tile's positions do not hold its leaves"))
                    # the tiles after it are held to the links after its own positions
                    links = store.links_after(tile.last_position, (len(tiles) - k - 1) * 256)
                    links = [(0, b"")] * ((k + 1) * TILE_WIDTH) + links
                    continue
                leaves = [sha256(b"\x00" + link).digest() for _, link in group]
            else:
                leaves = store.roots(
                    level - 1, tile.number * TILE_WIDTH, (tile.number + 1) * TILE_WIDTH
                )
            if b"".join(leaves) != tile.hashes or tree_hash(leaves) != tile.root:
                found.append(TileMismatch(tile, "the tile does not hold what it summarises"))
        if level == 0:
            after = tiles[-1].last_position
        at += len(tiles)
    return found


@dataclass
class _Edge:
    """The leaves after the last stored level-0 tile."""

    after_position: int
    positions: list[int]
    leaves: list[bytes]


class StoredTree:
    """The tree as the store holds it now: its size, roots, leaf indexes and proofs."""

    def __init__(self, recorder: Any) -> None:
        self.store = TileStore(recorder)
        self.counts, tiled_to, links = self.store.summary_and_edge(READ_LINKS)
        self._tiles: dict[tuple[int, int], Tile] = {}
        self._root_cache: dict[tuple[int, int], bytes] = {}
        self._memo: dict[tuple[int, int], bytes] = {}
        self._tile_positions: dict[int, list[int]] = {}
        self._inner: dict[tuple[int, int], MemoryTree] = {}
        self._dry: tuple[set[tuple[int, int]], set[tuple[int, int]]] | None = None
        """While :meth:`prefetch` looks for what proofs need: the tiles and roots asked."""
        level0 = self.counts.get(0, 0)
        batch = links
        while len(batch) == READ_LINKS:  # a long edge (tiles not extended for a while)
            batch = self.store.links_after(batch[-1][0], READ_LINKS)
            links.extend(batch)
        self.edge = _Edge(
            tiled_to,
            [p for p, _ in links],
            [leaf_hash(link) for _, link in links],
        )
        self.size = level0 * TILE_WIDTH + len(links)

    # --------------------------------------------------------------- nodes

    def _tile(self, level: int, index: int) -> Tile | None:
        if index >= self.counts.get(level, 0):
            return None
        key = (level, index)
        if key not in self._tiles and self._dry is not None:
            self._dry[0].add(key)
            return Tile(level, index, b"", _STAND_IN, 0, 0)
        if key not in self._tiles:
            for tile in self.store.tiles(level, index, index + 1):
                self._tiles[key] = tile
        return self._tiles.get(key)

    def _nodes(self, level: int, lo: int, hi: int) -> list[bytes]:
        """Hashes of the complete nodes of height ``8 * level``, indexes ``lo..hi``."""
        out: list[bytes] = []
        index = lo
        while index < hi:
            tile = self._tile(level, index // TILE_WIDTH)
            if tile is not None:
                start = index % TILE_WIDTH
                take = min(hi - index, TILE_WIDTH - start)
                if self._dry is not None:  # only which tiles: no hash is used
                    out.extend([_STAND_IN] * take)
                else:
                    out.extend(_hashes(tile.hashes[start * 32 : (start + take) * 32]))
                index += take
                continue
            if level == 0:
                base = self.counts.get(0, 0) * TILE_WIDTH
                out.extend(self.edge.leaves[index - base : hi - base])
                if len(out) != hi - lo:
                    raise ProofError("the tree is smaller than asked")
                return out
            stored = self.counts.get(level - 1, 0)
            if index < stored:  # roots of stored tiles below, in one read
                upto = min(hi, stored)
                out.extend(self._roots(level - 1, index, upto))
                index = upto
                continue
            out.append(
                tree_hash(self._nodes(level - 1, index * TILE_WIDTH, (index + 1) * TILE_WIDTH))
            )
            index += 1
        return out

    def _whole_tile(self, level: int, index: int) -> MemoryTree | None:
        """The stored tile of ``level`` holding node ``index``, as a tree of its 256
        hashes (None: not stored, or not read yet)."""
        key = (level, index // TILE_WIDTH)
        found = self._inner.get(key)
        if found is None and key in self._tiles:
            found = self._inner[key] = MemoryTree(_hashes(self._tiles[key].hashes))
        return found

    def _roots(self, level: int, lo: int, hi: int) -> list[bytes]:
        missing = [i for i in range(lo, hi) if (level, i) not in self._root_cache]
        if missing and self._dry is not None:
            self._dry[1].update((level, i) for i in missing)
            return [_STAND_IN] * (hi - lo)
        if missing:
            for i, root in enumerate(self.store.roots(level, missing[0], missing[-1] + 1)):
                self._root_cache[(level, missing[0] + i)] = root
        return [self._root_cache[(level, i)] for i in range(lo, hi)]

    def subtree(self, lo: int, hi: int) -> bytes:
        """MTH of leaves ``lo..hi`` (remembered: the proofs of one case share most nodes)."""
        found = self._memo.get((lo, hi))
        if found is None:
            found = self._memo[(lo, hi)] = self._subtree(lo, hi)
        return found

    def _subtree(self, lo: int, hi: int) -> bytes:
        n = hi - lo
        if n <= 0:
            return EMPTY_ROOT
        if hi > self.size:
            raise ProofError(f"the tree holds {self.size} leaves, not {hi}")
        if n & (n - 1) == 0 and lo % n == 0:
            height = n.bit_length() - 1
            level = height // HEIGHT
            width = 1 << (height - level * HEIGHT)
            first = lo >> (level * HEIGHT)
            tile = None if self._dry is not None else self._whole_tile(level, first)
            if tile is not None:  # inside one stored tile: its inner nodes, hashed once
                offset = first % TILE_WIDTH
                return tile.subtree(offset, offset + width)
            nodes = self._nodes(level, first, first + width)
            return _STAND_IN if self._dry is not None else tree_hash(nodes)
        k = 1 << ((n - 1).bit_length() - 1)
        return node_hash(self.subtree(lo, lo + k), self.subtree(lo + k, hi))

    def root(self, size: int | None = None) -> bytes:
        return self.subtree(0, self.size if size is None else size)

    # --------------------------------------------------------------- positions

    def leaf_index(self, position: int) -> int | None:
        """The leaf of the chain row at ``position`` (None: no chain row there)."""
        if position > self.edge.after_position:
            from bisect import bisect_left  # noqa: PLC0415

            at = bisect_left(self.edge.positions, position)
            if at == len(self.edge.positions) or self.edge.positions[at] != position:
                return None
            return self.counts.get(0, 0) * TILE_WIDTH + at
        number = next(
            (n for n, ps in self._tile_positions.items() if ps and ps[0] <= position <= ps[-1]),
            None,
        )
        if number is None:
            tile = self.store.tile_at_position(position)
            if tile is None:
                return None
            number = tile.number
            links = self.store.links_between(tile.first_position, tile.last_position)
            self._tile_positions[number] = [p for p, _ in links]
        positions = self._tile_positions[number]
        from bisect import bisect_left  # noqa: PLC0415

        offset = bisect_left(positions, position)
        if offset == len(positions) or positions[offset] != position:
            return None
        return number * TILE_WIDTH + offset

    def size_at(self, position: int) -> int:
        """How many leaves the tree had when its head was at ``position`` (a chain row)."""
        index = self.leaf_index(position)
        if index is None:
            raise ProofError(f"no chain row at position {position}")
        return index + 1

    def position_of(self, index: int) -> int:
        """The store position of leaf ``index``."""
        base = self.counts.get(0, 0) * TILE_WIDTH
        if index >= base:
            return self.edge.positions[index - base]
        tile = self._tile(0, index // TILE_WIDTH)
        assert tile is not None
        links = self.store.links_between(tile.first_position, tile.last_position)
        return links[index % TILE_WIDTH][0]

    # --------------------------------------------------------------- proofs

    def prefetch(self, indexes: Iterable[int], size: int) -> None:
        """Read, in one query, every tile and tile root that the inclusion proofs of the
        leaves ``indexes`` in the tree of ``size`` leaves will ask for. Which nodes a proof
        needs depends on the indexes and sizes alone, so the proofs are first walked with
        stand-in hashes to learn it (none of them is kept)."""
        wanted: tuple[set[tuple[int, int]], set[tuple[int, int]]] = (set(), set())
        self._dry = wanted
        try:
            for index in indexes:
                inclusion_proof(index, size, self)
        finally:
            self._dry = None
            self._memo.clear()
        whole, roots = wanted
        ranges: list[tuple[int, int, int]] = []
        for level, index in sorted(roots - whole):
            if ranges and ranges[-1][0] == level and ranges[-1][2] == index:
                ranges[-1] = (level, ranges[-1][1], index + 1)
            else:
                ranges.append((level, index, index + 1))
        for tile in self.store.fetch(sorted(whole), ranges):
            if tile.hashes:
                self._tiles[(tile.level, tile.number)] = tile
            self._root_cache[(tile.level, tile.number)] = tile.root

    def leaf_indexes(self, positions: Iterable[int]) -> dict[int, int]:
        """The leaf of each of ``positions`` that a chain row holds (others are left out),
        with one query for those the stored tiles cover."""
        found: dict[int, int] = {}
        tiled = []
        for position in positions:
            if position > self.edge.after_position:
                index = self.leaf_index(position)
                if index is not None:
                    found[position] = index
            else:
                tiled.append(position)
        for position, (number, offset) in self.store.leaf_offsets(tiled).items():
            found[position] = number * TILE_WIDTH + offset
        return found

    def record_leaf_indexes(self, positions: Iterable[int]) -> dict[int, int | None]:
        """The leaf of every event of the records whose events stand at ``positions`` (a
        case's records whole, as the export holds them), by position, in one query; None
        for an event no chain row holds."""
        found: dict[int, int | None] = {}
        base = self.counts.get(0, 0) * TILE_WIDTH
        for position, offset in self.store.record_leaf_offsets(sorted(set(positions))).items():
            if offset is not None:
                found[position] = offset[0] * TILE_WIDTH + offset[1]
            elif position > self.edge.after_position:
                at = bisect_left(self.edge.positions, position)
                hit = at < len(self.edge.positions) and self.edge.positions[at] == position
                found[position] = base + at if hit else None
            else:
                found[position] = None
        return found

    def inclusion(self, index: int, size: int) -> list[bytes]:
        return inclusion_proof(index, size, self)

    def consistency(self, old: int, new: int) -> list[bytes]:
        return consistency_proof(old, new, self)
