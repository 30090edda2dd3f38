"""Small-count suppression: what is withheld can be computed back from nothing published."""

from __future__ import annotations

import random
from fractions import Fraction

from projections.stats.suppression import (
    SuppressedTable,
    _find_bridge,
    _one_equation_fixpoint,
    extend,
    suppress,
    suppression_mask,
)

K = 5


# ----------------------------------------------------------------------------- attackers


def _equations(n_rows: int, n_cols: int) -> list[list[tuple[tuple[int, int], int]]]:
    """Each row and column of an extended table as (cell, sign) terms summing to zero:
    the cells of a row minus its total, the row totals minus the grand total, ..."""
    equations = []
    for i in range(n_rows):
        equations.append([((i, j), -1 if j == n_cols - 1 else 1) for j in range(n_cols)])
    for j in range(n_cols):
        equations.append([((i, j), -1 if i == n_rows - 1 else 1) for i in range(n_rows)])
    return equations


def recover_by_single_equations(published: SuppressedTable) -> dict[tuple[int, int], int]:
    """What an attacker with a pencil gets: any equation with one unknown gives it away,
    and each value found may open another equation."""
    values = [list(row) for row in published.values]
    n_rows, n_cols = len(values), len(values[0])
    found: dict[tuple[int, int], int] = {}
    progress = True
    while progress:
        progress = False
        for terms in _equations(n_rows, n_cols):
            unknown = [(cell, sign) for cell, sign in terms if values[cell[0]][cell[1]] is None]
            if len(unknown) != 1:
                continue
            (i, j), sign = unknown[0]
            known = sum(s * v for (a, b), s in terms if (v := values[a][b]) is not None)
            values[i][j] = found[(i, j)] = -known * sign
            progress = True
    return found


def recoverable_by_linear_algebra(published: SuppressedTable) -> set[tuple[int, int]]:
    """What an attacker with a computer gets: the withheld values that any combination of
    the equations pins down exactly (Gaussian elimination over the rationals)."""
    values = published.values
    n_rows, n_cols = len(values), len(values[0])
    unknowns = [(i, j) for i in range(n_rows) for j in range(n_cols) if values[i][j] is None]
    index = {cell: n for n, cell in enumerate(unknowns)}
    matrix: list[list[Fraction]] = []
    for terms in _equations(n_rows, n_cols):
        row = [Fraction(0)] * len(unknowns)
        for cell, sign in terms:
            if cell in index:
                row[index[cell]] += sign
        if any(row):
            matrix.append(row)
    pivot_row = 0
    for column in range(len(unknowns)):
        pivot = next((r for r in range(pivot_row, len(matrix)) if matrix[r][column]), None)
        if pivot is None:
            continue
        matrix[pivot_row], matrix[pivot] = matrix[pivot], matrix[pivot_row]
        lead = matrix[pivot_row][column]
        matrix[pivot_row] = [x / lead for x in matrix[pivot_row]]
        for r in range(len(matrix)):
            if r != pivot_row and matrix[r][column]:
                factor = matrix[r][column]
                matrix[r] = [
                    x - factor * y for x, y in zip(matrix[r], matrix[pivot_row], strict=True)
                ]
        pivot_row += 1
    # A withheld value is determined exactly when a reduced row mentions it alone.
    return {
        unknowns[row.index(next(x for x in row if x))]
        for row in matrix[:pivot_row]
        if sum(1 for x in row if x) == 1
    }


def _random_table(rng: random.Random) -> list[list[int]]:
    n_rows, n_cols = rng.randint(1, 7), rng.randint(1, 9)
    style = rng.choice(("sparse", "small", "mixed", "large"))
    pools = {
        "sparse": [0, 0, 0, 0, 1, 2, 6, 15],
        "small": [0, 1, 2, 3, 4, 5, 6],
        "mixed": [0, 1, 3, 5, 7, 9, 12, 30],
        "large": [0, 4, 10, 25, 60, 200],
    }
    return [[rng.choice(pools[style]) for _ in range(n_cols)] for _ in range(n_rows)]


def _check_protected(counts: list[list[int]], published: SuppressedTable, k: int) -> None:
    extended = extend(counts)
    for i, row in enumerate(extended):
        for j, value in enumerate(row):
            if 0 < value < k:
                assert published.suppressed[i][j], f"small count at {(i, j)} published"
            if value == 0:
                assert not published.suppressed[i][j], f"zero at {(i, j)} withheld"
            if published.suppressed[i][j]:
                assert published.values[i][j] is None
            else:
                assert published.values[i][j] == value
    n_rows, n_cols = len(extended), len(extended[0])
    for terms in _equations(n_rows, n_cols):
        hidden = sum(1 for (i, j), _ in terms if published.suppressed[i][j])
        assert hidden in (0,) or hidden >= 2, f"equation {terms} has {hidden} withheld"
    assert recover_by_single_equations(published) == {}
    assert recoverable_by_linear_algebra(published) == set()


# ----------------------------------------------------------------------------- behaviour


def test_a_count_of_three_is_withheld_and_cannot_be_computed_from_the_totals() -> None:
    # given a table with one cell of 3 and a threshold of 5
    counts = [
        [3, 12, 20],
        [8, 9, 10],
        [7, 6, 30],
    ]

    # when it is suppressed
    published = suppress(counts, K)

    # then the 3 is withheld, published as null with its flag
    assert published.values[0][0] is None
    assert published.suppressed[0][0] is True
    # ... every row, column and total equation with a withheld value has two or more
    # ... and neither single equations nor their combinations give any of them back
    _check_protected(counts, published, K)


def test_a_small_row_total_is_withheld_with_what_would_reveal_it() -> None:
    # given a row whose cells are zero or small, so its total is small too
    counts = [[1, 0, 2], [10, 20, 30], [15, 6, 9]]

    # when it is suppressed
    published = suppress(counts, K)

    # then the row total (3) is withheld, and nothing withheld can be recovered
    assert published.suppressed[0][3] is True
    _check_protected(counts, published, K)


def test_a_small_grand_total_withholds_every_non_zero_value() -> None:
    # given a table of four reports in all
    counts = [[1, 0], [2, 1]]

    # when it is suppressed
    published = suppress(counts, K)

    # then no non-zero value is shown at all
    extended = extend(counts)
    for i, row in enumerate(extended):
        for j, value in enumerate(row):
            assert published.suppressed[i][j] is (value > 0)


def test_a_table_without_small_counts_is_published_whole() -> None:
    # given many random tables whose counts are all zero or at least k
    rng = random.Random(20261123)
    for _ in range(300):
        k = rng.randint(2, 10)
        n_rows, n_cols = rng.randint(1, 6), rng.randint(1, 8)
        counts = [
            [rng.choice((0, rng.randint(k, 5 * k))) for _ in range(n_cols)] for _ in range(n_rows)
        ]

        # when each is suppressed
        published = suppress(counts, k)

        # then nothing is withheld: no count >= k is suppressed unnecessarily
        assert not any(any(row) for row in published.suppressed), counts
        assert [list(row) for row in published.values] == extend(counts)


def test_in_many_random_tables_no_withheld_value_can_be_recovered() -> None:
    # given many random tables of varied shapes and densities, and thresholds
    rng = random.Random(3)
    for _ in range(400):
        counts = _random_table(rng)
        k = rng.choice((2, 3, 5, 10))

        # when each is suppressed
        published = suppress(counts, k)

        # then small counts are withheld, zeros and other counts shown as they are, and no
        # withheld value can be computed back
        _check_protected(counts, published, k)


def test_suppression_is_deterministic() -> None:
    # given a table with ties between candidate complementary cells
    counts = [[2, 7, 7, 7], [7, 7, 7, 2]]

    # when it is suppressed twice
    first, second = suppress(counts, K), suppress(counts, K)

    # then the same values are withheld, and totals are spared when inner cells do
    assert first == second
    assert not first.suppressed[2][4]


def test_combined_equations_are_closed_even_where_each_equation_holds_two_withheld() -> None:
    # given masks where the one-equation rule leaves a value that combined equations
    # would pin down (a bridge between two blocks of withheld cells), found by search
    rng = random.Random(7)
    bridged = 0
    for _ in range(3000):
        counts = _random_table(rng)
        extended = extend(counts)
        hidden = [[0 < v < K for v in row] for row in extended]
        _one_equation_fixpoint([list(r) for r in extended], hidden)
        if _find_bridge(hidden) is None:
            continue
        bridged += 1

        # when the full suppression runs
        mask = suppression_mask(extended, K)
        published = SuppressedTable(
            values=tuple(
                tuple(None if mask[i][j] else v for j, v in enumerate(row))
                for i, row in enumerate(extended)
            ),
            suppressed=mask,
        )

        # then the combinations give nothing back either
        assert recoverable_by_linear_algebra(published) == set()
    # (the search must actually have met such tables, or this test tests nothing)
    assert bridged > 0


def test_the_attackers_do_recover_values_that_are_left_exposed() -> None:
    # given a table where only the small cell is withheld (a naive suppression)
    counts = [[3, 12], [8, 9]]
    extended = extend(counts)
    naive = SuppressedTable(
        values=tuple(
            tuple(None if (i, j) == (0, 0) else v for j, v in enumerate(row))
            for i, row in enumerate(extended)
        ),
        suppressed=tuple(tuple((i, j) == (0, 0) for j in range(3)) for i in range(3)),
    )

    # when the attackers in these tests look at it
    # then both find the 3: they are able to catch a leak
    assert recover_by_single_equations(naive) == {(0, 0): 3}
    assert recoverable_by_linear_algebra(naive) == {(0, 0)}
