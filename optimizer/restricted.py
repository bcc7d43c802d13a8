"""A large LP solved on a few of its columns, the rest priced in (column generation).

At 64 regions the planner's LP has 77,000 columns, and GLOP's cost per solve grows with
them even when a re-solve takes a few dozen iterations. Most columns cannot be in any
optimal solution: a group served by the 64th cheapest region while 63 cheaper ones have
room. So ``plan`` starts from a *shortlist* of columns (``shortlist``: per demand group its
``SHORTLIST_REGIONS`` cheapest regions, and every voucher column) with every row of the
whole LP, solves, prices every column left out with the duals (its reduced cost, one numpy
expression over all of them) and adds those that would lower the objective, until none
would. The result is an optimal solution of the whole LP (no column left out has a
negative reduced cost): the same value, the same prices up to the choice among optimal
bases. What is added depends on sizes and duals only, never on time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from suanli.optimizer.columns import ColumnArrays
from suanli.optimizer.lp import LpRows, solution

if TYPE_CHECKING:
    from ortools.linear_solver.pywraplp import Solver

__all__ = ["SHORTLIST_REGIONS", "Restricted", "shortlist"]

SHORTLIST_REGIONS = 4  # cheapest candidate regions per demand group in the first restricted LP
_TOLERANCE = 1e-9  # a reduced cost below -this yuan brings its column in


def shortlist(cols: ColumnArrays, regions: int | None = None) -> np.ndarray:
    """Mask of the columns to start from: every voucher column, and the cash columns of
    each group's ``regions`` (default ``SHORTLIST_REGIONS``) cheapest candidates (cheapest
    slot's cash; ties by config order)."""
    regions = SHORTLIST_REGIONS if regions is None else regions
    n_regions = max(len(cols.regions), 1)
    cash = cols.voucher < 0
    pair = cols.demand * n_regions + cols.region  # (group, region)
    at = np.flatnonzero(cash)
    keys, first = np.unique(pair[at], return_inverse=True)
    cheapest = np.full(keys.size, np.inf)
    np.minimum.at(cheapest, first, cols.cash[at])
    group, region = keys // n_regions, keys % n_regions
    order = np.lexsort((region, cheapest, group))  # by group, then cash, then config order
    starts = np.searchsorted(group[order], group[order], side="left")
    rank = np.empty(keys.size, dtype=np.int64)
    rank[order] = np.arange(keys.size) - starts
    chosen = np.zeros(keys.size, dtype=bool)
    chosen[rank < regions] = True
    keep = ~cash
    keep[at] = chosen[first]
    return keep


@dataclass(slots=True)
class Restricted:
    """The solver's model over the columns ``in_model`` of ``cols`` (the rest priced in)."""

    solver: Solver
    cols: ColumnArrays
    rows: LpRows
    objective: np.ndarray  # every column's objective coefficient
    in_model: np.ndarray  # mask over cols
    var_of: np.ndarray  # column -> its variable (-1: not in the model)
    n_groups: int
    added: int = 0  # columns priced in so far

    @classmethod
    def start(cls, solver: Solver, cols: ColumnArrays, rows: LpRows, objective: np.ndarray,
              keep: np.ndarray) -> Restricted:  # fmt: skip
        """The model ``build_model(..., keep=keep)`` made: kept columns first, then z."""
        var_of = np.full(len(cols), -1, dtype=np.int64)
        var_of[keep] = np.arange(int(keep.sum()))
        return cls(solver, cols, rows, objective, keep.copy(), var_of, rows.n_groups)

    def price_in(self) -> int:
        """Add every column left out whose reduced cost is negative; how many were added."""
        _, duals = solution(self.solver)
        assert self.rows.columns is not None  # built with ``keep``
        rc = self.rows.columns.reduced_costs(self.cols, self.objective, duals)
        new = np.flatnonzero((rc < -_TOLERANCE) & ~self.in_model)
        if new.size == 0:
            return 0
        solver, cols, where = self.solver, self.cols, self.rows.columns
        every = solver.constraints()
        objective = solver.Objective()
        n_vars = solver.NumVariables()
        for n in new.tolist():
            x = solver.NumVar(0.0, 1.0, "")
            objective.SetCoefficient(x, float(self.objective[n]))
            every[int(cols.demand[n])].SetCoefficient(x, 1.0)
            tokens, requests, units = float(cols.tokens[n]), float(cols.requests[n]), float(cols.units[n])
            for row, coef in (
                (where.tpm[n], tokens),
                (where.rpm[n], requests),
                (where.minute_tpm[n], tokens),
                (where.minute_rpm[n], requests),
                (where.voucher[n], units),
            ):
                if row >= 0 and coef != 0:
                    every[int(row)].SetCoefficient(x, coef)
            self.var_of[n] = n_vars
            n_vars += 1
        self.in_model[new] = True
        self.added += int(new.size)
        return int(new.size)

    def values(self) -> tuple[np.ndarray, np.ndarray]:
        """Variable values as the whole LP lays them out (every column, then z) and row duals."""
        values, duals = solution(self.solver)
        out = np.zeros(len(self.cols) + self.n_groups)
        held = np.flatnonzero(self.in_model)
        out[held] = values[self.var_of[held]]
        n_kept = int((self.var_of >= 0).sum()) - self.added
        out[len(self.cols) :] = values[n_kept : n_kept + self.n_groups]
        return out, duals
