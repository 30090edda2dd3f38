"""Linked secondary cell suppression: no withheld value can be narrowed by linear programming.

The problem is stated over *variables*: every distinct count of a release version (a count
shown in several tables is one variable), and every count of the earlier versions of the same
period. *Equations* say that a count is the sum of others (a row total, a month inside a
quarter, the SEA row of the complaint categories equal to every SEA table's grand total, ...).

The attacker (the standard one of statistical disclosure control, as tau-ARGUS and sdcTable
model it) knows every value ever published, every equation and that counts are not negative,
and computes for a withheld value the minimum and the maximum that these allow. The guarantee:
for every withheld value ``a``, that maximum is at least ``a + upper`` and that minimum at
most ``a - min(lower, a)``: the attacker can neither recover it nor pin it into an interval
narrower than the protection level. The same holds for the *difference* of a count between
two versions of a release (a revision) when that difference is below the threshold: it is
what a late case, or a duplicate found late, would give away.

The method is the classic incremental one (Fischetti and Salazar's attacker subproblems,
solved as linear programs by HiGHS): for each withheld value and each direction, find the
cheapest *deviation* of the table (a change of counts that keeps every equation, keeps every
count non-negative and leaves every value published before unchanged) that moves the value by
the protection level; withhold every value that deviation changes. Once those are withheld, the
deviation is open to the attacker too, so the bound holds; withholding more later only widens
what the attacker must consider, so it keeps holding. Values withheld that way are protected
in turn, until nothing new is withheld. The published result is checked independently by the
attacker test (``tests/unit/test_statistics_attacker.py``).

Zeros are never withheld (a zero identifies nobody); deviations may still raise a withheld
value from or lower it to zero.
"""

from __future__ import annotations

import enum
import os
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import highspy
import numpy as np
import numpy.typing as npt

_EPSILON = 1e-6


class State(enum.Enum):
    """What the attacker already holds of a variable."""

    SHOWN_BEFORE = "shown_before"
    """Published by an earlier release version: known, fixed."""
    HIDDEN_BEFORE = "hidden_before"
    """Withheld by an earlier release version: unknown to the attacker."""
    NEW = "new"
    """A value of the version being protected: shown unless this module withholds it."""


@dataclass(frozen=True)
class Equation:
    """``total`` equals the sum of ``parts`` (variable indexes)."""

    total: int
    parts: tuple[int, ...]


@dataclass(frozen=True)
class Inequality:
    """``whole`` is at least the sum of ``parts`` (a rule of the domain, not a published
    sum: a subtype's allegation type counts at least its subtypes)."""

    whole: int
    parts: tuple[int, ...]


@dataclass(frozen=True)
class Difference:
    """The change of one count from an earlier version (``before``) to this one (``now``)."""

    now: int
    before: int


@dataclass(frozen=True)
class Protection:
    """The values to withhold, and what could not be protected otherwise."""

    withheld: frozenset[int]
    everything_withheld: bool
    """True when a deviation could not be found (numerically) and every non-zero new value
    was withheld instead: the release then holds those tables back."""
    solves: int


class LinkedProtection:
    """The linear programs of one protection problem (one release version and its past)."""

    def __init__(
        self,
        values: Sequence[int],
        states: Sequence[State],
        equations: Sequence[Equation],
        *,
        threshold: int,
        upper: int,
        lower: int,
        inequalities: Sequence[Inequality] = (),
    ) -> None:
        if len(values) != len(states):
            raise ValueError("one state per value")
        if threshold < 1 or upper < 1 or lower < 1:
            raise ValueError("threshold and protection levels must be at least 1")
        self.values = np.asarray(values, dtype=float)
        self.states = list(states)
        self.equations = list(equations)
        self.inequalities = list(inequalities)
        self.k = threshold
        self.upper = upper
        self.lower = lower
        self.n = len(values)
        self._highs = _quiet_highs()
        self._item_row = len(self.equations) + len(self.inequalities)
        self._item_columns: list[int] = []
        self._pass_model()
        self.solves = 0

    # ------------------------------------------------------------------ the model

    def _pass_model(self) -> None:
        """Columns ``p_j`` (0..n-1) and ``m_j`` (n..2n-1): the deviation of value j is
        ``p_j - m_j``. Rows: one per equation (deviations keep it), one per inequality (the
        deviated counts keep it: the deviation may use no more than its slack), then the item
        row."""
        n = self.n
        entries: list[list[tuple[int, float]]] = [[] for _ in range(2 * n)]
        sums = [(e.total, e.parts) for e in self.equations]
        sums += [(i.whole, i.parts) for i in self.inequalities]
        slack: list[float] = []
        for whole, parts in sums[len(self.equations) :]:
            slack.append(float(self.values[whole] - sum(self.values[p] for p in parts)))
            if slack[-1] < 0:
                raise ValueError("the counts break a rule of the domain they must obey")
        for row, (whole, parts) in enumerate(sums):
            for var, coefficient in [(whole, 1.0)] + [(p, -1.0) for p in parts]:
                entries[var].append((row, coefficient))
                entries[n + var].append((row, -coefficient))
        starts = [0]
        index: list[int] = []
        value: list[float] = []
        for column in entries:
            merged: dict[int, float] = {}
            for row, coefficient in column:
                merged[row] = merged.get(row, 0.0) + coefficient
            for row in sorted(merged):
                if merged[row] != 0.0:
                    index.append(row)
                    value.append(merged[row])
            starts.append(len(index))
        lp = highspy.HighsLp()
        lp.num_col_ = 2 * n
        lp.num_row_ = len(sums) + 1
        lower = np.zeros(2 * n)
        upper = np.full(2 * n, highspy.kHighsInf)
        for j, state in enumerate(self.states):
            if state is State.SHOWN_BEFORE:
                upper[j] = 0.0
                upper[n + j] = 0.0
            else:
                upper[n + j] = self.values[j]  # a count cannot go below zero
        lp.col_cost_ = np.zeros(2 * n)
        lp.col_lower_ = lower
        lp.col_upper_ = upper
        lp.row_lower_ = np.array(
            [0.0] * len(self.equations) + [-s for s in slack] + [-highspy.kHighsInf]
        )
        lp.row_upper_ = np.array(
            [0.0] * len(self.equations) + [highspy.kHighsInf] * len(slack) + [highspy.kHighsInf]
        )
        lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        lp.a_matrix_.start_ = np.asarray(starts, dtype=np.int32)
        lp.a_matrix_.index_ = np.asarray(index, dtype=np.int32)
        lp.a_matrix_.value_ = np.asarray(value, dtype=float)
        self._highs.passModel(lp)

    def _set_costs(self, hidden: set[int], allowed: npt.NDArray[np.bool_]) -> None:
        """A withheld or unknown value moves for free; a shown new value costs its count
        plus one to withhold; a zero or a value shown before cannot move."""
        n = self.n
        cost = np.zeros(2 * n)
        col_upper_p = np.full(n, highspy.kHighsInf)
        for j in range(n):
            if self.states[j] is State.SHOWN_BEFORE or not allowed[j]:
                col_upper_p[j] = 0.0
            elif self.states[j] is State.NEW and j not in hidden:
                cost[j] = cost[n + j] = 1.0 + self.values[j]
        self._highs.changeColsCost(2 * n, np.arange(2 * n, dtype=np.int32), cost)
        m_upper = np.where(col_upper_p == 0.0, 0.0, self.values)
        self._highs.changeColsBounds(
            2 * n,
            np.arange(2 * n, dtype=np.int32),
            np.zeros(2 * n),
            np.concatenate([col_upper_p, m_upper]),
        )

    def _deviation(
        self, coefficients: dict[int, float], up: bool, target: float
    ) -> npt.NDArray[np.float64] | None:
        """The cheapest deviation moving ``sum(coefficients[j] * x_j)`` by ``target`` up
        (or down), or None when the solver finds none."""
        n = self.n
        for column in self._item_columns:
            self._highs.changeCoeff(self._item_row, column, 0.0)
            self._highs.changeCoeff(self._item_row, n + column, 0.0)
        self._item_columns = list(coefficients)
        for column, coefficient in coefficients.items():
            self._highs.changeCoeff(self._item_row, column, coefficient)
            self._highs.changeCoeff(self._item_row, n + column, -coefficient)
        if up:
            self._highs.changeRowBounds(self._item_row, target, highspy.kHighsInf)
        else:
            self._highs.changeRowBounds(self._item_row, -highspy.kHighsInf, -target)
        self.solves += 1
        self._highs.run()
        if self._highs.getModelStatus() == highspy.HighsModelStatus.kUnknown:
            # a warm start gone astray after many solves: solve again from scratch
            self._highs.clearSolver()
            self._highs.run()
        if self._highs.getModelStatus() != highspy.HighsModelStatus.kOptimal:
            return None
        x: npt.NDArray[np.float64] = np.asarray(self._highs.getSolution().col_value, dtype=float)
        return x[:n] - x[n:]

    # ------------------------------------------------------------------ protecting

    def protect(self, differences: Sequence[Difference] = ()) -> Protection:
        """Which new values to withhold (see the module docstring)."""
        n = self.n
        new = [j for j in range(n) if self.states[j] is State.NEW]
        search = _Search(
            hidden={j for j in new if 0 < self.values[j] < self.k},
            allowed=np.array(
                [self.values[j] > 0 or self.states[j] is not State.NEW for j in range(n)]
            ),
        )
        items: list[tuple[dict[int, float], int]] = []  # (expression, index of its "now")
        for d in differences:
            change = self.values[d.now] - self.values[d.before]
            if change != 0 and abs(change) < self.k:
                if self.states[d.before] is State.SHOWN_BEFORE and self.values[d.now] > 0:
                    search.hidden.add(d.now)
                items.append(({d.now: 1.0, d.before: -1.0}, d.now))
        search.queue = [({j: 1.0}, j) for j in sorted(search.hidden)] + items
        search.queued = set(search.hidden)
        while search.queue:
            expression, now = search.queue.pop(0)
            if len(expression) == 1:
                # A withheld value: up by the upper level, down by the lower (to zero at most).
                goals = [
                    [(True, float(self.upper))],
                    [(False, float(min(self.lower, self.values[now])))],
                ]
            else:
                # A change between versions: an interval at least as wide as the upper level,
                # upwards if the counts allow it, else downwards.
                goals = [[(True, float(self.upper)), (False, float(self.upper))]]
            for alternatives in goals:
                if not self._reach(expression, alternatives, search):
                    every = {j for j in new if self.values[j] > 0}
                    return Protection(frozenset(every), True, self.solves)
        return Protection(frozenset(search.hidden), False, self.solves)

    def _reach(
        self, expression: dict[int, float], alternatives: list[tuple[bool, float]], search: _Search
    ) -> bool:
        """Make one of ``alternatives`` (direction, distance) open to the attacker: withhold
        the values of the cheapest deviation that reaches it. False if none can be."""
        for up, target in alternatives:
            if target <= 0 or _covered(search.found, expression, up, target):
                return True
        for up, target in alternatives:
            self._set_costs(search.hidden, search.allowed)
            deviation = self._deviation(expression, up, target - _EPSILON)
            if deviation is None:
                continue
            search.found.append(deviation)
            for moved in np.flatnonzero(np.abs(deviation) > _EPSILON):
                j = int(moved)
                if self.states[j] is State.NEW and j not in search.hidden:
                    search.hidden.add(j)
                    if j not in search.queued:
                        search.queued.add(j)
                        search.queue.append(({j: 1.0}, j))
            return True
        return False


@dataclass
class _Search:
    """The state of one protection: what is withheld, what is left to protect, and the
    deviations found so far (each still open to the attacker)."""

    hidden: set[int]
    allowed: npt.NDArray[np.bool_]
    queue: list[tuple[dict[int, float], int]] = field(default_factory=list)
    queued: set[int] = field(default_factory=set)
    found: list[npt.NDArray[np.float64]] = field(default_factory=list)


def _covered(
    found: list[npt.NDArray[np.float64]], expression: dict[int, float], up: bool, target: float
) -> bool:
    """Whether a deviation found before (still open to the attacker: the values it moves are
    all withheld or unknown) already moves ``expression`` by ``target``."""
    for deviation in found:
        moved = sum(c * deviation[j] for j, c in expression.items())
        if (moved if up else -moved) >= target - 1e-6:
            return True
    return False


_first = threading.Lock()
_banner_shown = False


def _quiet_highs() -> highspy.Highs:
    """A HiGHS instance that writes nothing. The first one in a process prints a banner on
    file descriptor 1 from C++, before any option can be set; ``cbcm stats release export``
    writes its export there, so that first construction has descriptor 1 on /dev/null."""
    global _banner_shown  # noqa: PLW0603 - once per process
    with _first:
        if _banner_shown:
            highs = highspy.Highs()  # type: ignore[no-untyped-call]
        else:
            sys.stdout.flush()
            saved = os.dup(1)
            try:
                with open(os.devnull, "wb") as null:
                    os.dup2(null.fileno(), 1)
                    highs = highspy.Highs()  # type: ignore[no-untyped-call]
            finally:
                os.dup2(saved, 1)
                os.close(saved)
            _banner_shown = True
    highs.setOptionValue("output_flag", False)
    return highs
