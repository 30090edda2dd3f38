"""Small-count suppression of a two-way table of counts, with its totals.

A published table shows its cells, a total per row, a total per column and a grand total.
Counts below the network's threshold ``k`` could identify a survivor in a small community,
so they are withheld (primary suppression). Withholding one value is not enough when it can
be computed back from the values that are shown: a row of ``3, 12`` with a row total of
``15`` gives the 3 away. So more values are withheld (complementary suppression) until none
of the withheld ones can be computed from what is published.

The table with its totals is seen as an *extended* table of ``(R + 1) x (C + 1)`` values:
row ``R`` holds the column totals, column ``C`` the row totals, ``(R, C)`` the grand total.
Every row and every column of the extended table is one equation (the cells of a row add up
to its total; the row totals add up to the grand total; likewise for columns).

Two rules run to a fixpoint:

1. **One equation**: an equation with exactly one withheld member would give that member
   away, so a second member is withheld: the smallest non-zero shown value, inner cells
   before totals, then by position (deterministic).
2. **Several equations**: even when every equation has two withheld members, adding and
   subtracting equations can still isolate one value. Seen as a bipartite graph (a node per
   row and per column of the extended table, an edge per withheld value), a withheld value
   can be computed exactly if and only if its edge lies on no cycle (a bridge). For each
   bridge, the cheapest set of shown non-zero values that closes a cycle through it is
   withheld too (fewest values, then fewest totals, then smallest sum).

Zeros are never withheld: a zero identifies nobody and is not below the threshold. A path
for rule 2 always exists through non-zero values, because a bridge whose every parallel
route is zero would carry a value of zero itself.

What remains knowable is ranges, not values: a withheld primary cell is known to be between
1 and ``k - 1``. That is inherent to threshold suppression and accepted by the network's
policy.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

Mask = tuple[tuple[bool, ...], ...]


@dataclass(frozen=True)
class SuppressedTable:
    """An extended table (cells, row totals in the last column, column totals in the last
    row, grand total in the corner) with the values that may be published.

    ``values[i][j]`` is ``None`` exactly where ``suppressed[i][j]`` is true: the withheld
    value is not kept, so nothing downstream can publish it by mistake.
    """

    values: tuple[tuple[int | None, ...], ...]
    suppressed: Mask


def extend(counts: Sequence[Sequence[int]], columns: int | None = None) -> list[list[int]]:
    """The extended table of ``counts``: each row followed by its total, then a row of
    column totals ending with the grand total.

    ``columns`` gives the width when ``counts`` has no rows.
    """
    width = len(counts[0]) if counts else (columns or 0)
    if any(len(row) != width for row in counts):
        raise ValueError("every row of a table must have the same number of cells")
    if any(n < 0 for row in counts for n in row):
        raise ValueError("counts cannot be negative")
    rows = [[*row, sum(row)] for row in counts]
    column_totals = [sum(row[j] for row in rows) for j in range(width + 1)]
    return [*rows, column_totals]


def suppression_mask(extended: Sequence[Sequence[int]], k: int) -> Mask:
    """Which values of an extended table (see ``extend``) must be withheld for threshold
    ``k``: the counts with ``0 < n < k`` and enough others that none of them can be
    computed from the published values."""
    if k < 1:
        raise ValueError(f"suppression threshold must be at least 1, not {k}")
    n_rows = len(extended)
    n_cols = len(extended[0]) if extended else 0
    table = [list(row) for row in extended]
    hidden = [[0 < table[i][j] < k for j in range(n_cols)] for i in range(n_rows)]
    while True:
        _one_equation_fixpoint(table, hidden)
        bridge = _find_bridge(hidden)
        if bridge is None:
            break
        _close_cycle(table, hidden, bridge)
    return tuple(tuple(row) for row in hidden)


def suppress(
    counts: Sequence[Sequence[int]], k: int, columns: int | None = None
) -> SuppressedTable:
    """Extend ``counts`` with its totals and withhold what threshold ``k`` requires."""
    extended = extend(counts, columns)
    mask = suppression_mask(extended, k)
    values = tuple(
        tuple(None if mask[i][j] else n for j, n in enumerate(row))
        for i, row in enumerate(extended)
    )
    return SuppressedTable(values=values, suppressed=mask)


# ----------------------------------------------------------------------------- rule 1


def _equations(n_rows: int, n_cols: int) -> list[list[tuple[int, int]]]:
    rows = [[(i, j) for j in range(n_cols)] for i in range(n_rows)]
    cols = [[(i, j) for i in range(n_rows)] for j in range(n_cols)]
    return rows + cols


def _one_equation_fixpoint(table: list[list[int]], hidden: list[list[bool]]) -> None:
    n_rows, n_cols = len(table), len(table[0]) if table else 0
    equations = _equations(n_rows, n_cols)
    changed = True
    while changed:
        changed = False
        for members in equations:
            withheld = [(i, j) for i, j in members if hidden[i][j]]
            if len(withheld) != 1:
                continue
            candidates = [(i, j) for i, j in members if not hidden[i][j] and table[i][j] > 0]
            # Never empty: the one withheld value is non-zero and equals a signed sum of the
            # others, so at least one of them is non-zero too.
            i, j = min(
                candidates,
                key=lambda c: (_is_total(c, n_rows, n_cols), table[c[0]][c[1]], c),
            )
            hidden[i][j] = True
            changed = True


def _is_total(cell: tuple[int, int], n_rows: int, n_cols: int) -> bool:
    return cell[0] == n_rows - 1 or cell[1] == n_cols - 1


# ----------------------------------------------------------------------------- rule 2

# Graph nodes: ("r", i) for row i, ("c", j) for column j of the extended table.
Node = tuple[str, int]
_Cost = tuple[int, int, int]


def _edge_nodes(i: int, j: int) -> tuple[Node, Node]:
    return ("r", i), ("c", j)


def _connected(
    adjacency: dict[Node, set[Node]], start: Node, goal: Node, skip: tuple[Node, Node]
) -> bool:
    seen = {start}
    stack = [start]
    while stack:
        node = stack.pop()
        if node == goal:
            return True
        for other in adjacency.get(node, ()):
            if {node, other} == set(skip) or other in seen:
                continue
            seen.add(other)
            stack.append(other)
    return False


def _find_bridge(hidden: list[list[bool]]) -> tuple[int, int] | None:
    """The first withheld value (in row-major order) whose edge is a bridge, if any."""
    adjacency: dict[Node, set[Node]] = {}
    edges = [(i, j) for i, row in enumerate(hidden) for j, is_hidden in enumerate(row) if is_hidden]
    for i, j in edges:
        a, b = _edge_nodes(i, j)
        adjacency.setdefault(a, set()).add(b)
        adjacency.setdefault(b, set()).add(a)
    # Tables are a few dozen cells: a connectivity check per edge is fast enough and much
    # easier to trust than a linear-time bridge algorithm.
    for i, j in edges:
        a, b = _edge_nodes(i, j)
        if not _connected(adjacency, a, b, (a, b)):
            return (i, j)
    return None


def _close_cycle(table: list[list[int]], hidden: list[list[bool]], bridge: tuple[int, int]) -> None:
    """Withhold the cheapest shown non-zero values that put ``bridge`` on a cycle."""
    n_rows, n_cols = len(table), len(table[0])
    start, goal = _edge_nodes(*bridge)
    # Dijkstra from the bridge's column to its row without using the bridge. Withheld
    # values cost nothing; a shown one costs (1 value, 1 if a total, its count).
    best: dict[Node, _Cost] = {goal: (0, 0, 0)}
    came_from: dict[Node, tuple[Node, tuple[int, int]]] = {}
    queue: list[tuple[_Cost, Node]] = [((0, 0, 0), goal)]
    while queue:
        cost, node = heapq.heappop(queue)
        if cost > best.get(node, cost):
            continue
        if node == start:
            break
        kind, index = node
        neighbours = (
            [(("c", j), (index, j)) for j in range(n_cols)]
            if kind == "r"
            else [(("r", i), (i, index)) for i in range(n_rows)]
        )
        for other, (i, j) in neighbours:
            if (i, j) == bridge:
                continue
            if hidden[i][j]:
                step: _Cost = (0, 0, 0)
            elif table[i][j] > 0:
                step = (1, int(_is_total((i, j), n_rows, n_cols)), table[i][j])
            else:
                continue  # a published zero is known; it cannot hide anything
            new = (cost[0] + step[0], cost[1] + step[1], cost[2] + step[2])
            if new < best.get(other, (n_rows * n_cols + 1, 0, 0)):
                best[other] = new
                came_from[other] = (node, (i, j))
                heapq.heappush(queue, (new, other))
    if start not in came_from:
        # Impossible for consistent totals (see the module docstring); refuse to publish
        # rather than publish a recoverable value.
        raise ValueError("table totals are inconsistent: cannot protect a suppressed value")
    node = start
    while node != goal:
        node, (i, j) = came_from[node]
        hidden[i][j] = True
