"""The planner's LP as arrays: ``plan``'s model built without a Python object per column.

``columns.column_arrays`` gives the columns; here their rows are found with numpy (first
appearance order, the order ``plan`` has always created them in: the order of rows and
columns can change which optimal basis GLOP ends at) and the model is handed to OR-Tools
as one ``MPModelProto``: the variables serialized straight from arrays, each row's terms
added with one ``extend``. The solution and the duals come back as arrays too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from suanli.optimizer.columns import ColumnArrays
from suanli.optimizer.slots import slot_index
from suanli.optimizer.snapshot import Snapshot
from suanli.optimizer.wire import constraints_bytes, variables_bytes

if TYPE_CHECKING:
    from ortools.linear_solver.linear_solver_pb2 import MPModelProto

__all__ = ["ColumnRows", "LpRows", "build_model", "column_objective", "solution"]


@dataclass(frozen=True, slots=True)
class LpRows:
    """Where each kind of row of ``plan``'s LP sits (row indices into the model)."""

    n_groups: int  # demand rows are 0 .. n_groups - 1; z of group d is column n_columns + d
    tpm: dict[tuple[str, int], int]  # (region, slot) -> row
    rpm: dict[tuple[str, int], int]
    minute: dict[tuple[str, int], tuple[int, int]]  # (region, clock minute) -> (tpm row, rpm row); -1: none
    voucher: dict[str, int]  # voucher id -> row
    columns: ColumnRows | None = None


@dataclass(frozen=True, slots=True)
class ColumnRows:
    """Per column (all of them, in the model or not): the rows it has a term in (-1: none).

    With the duals of a solve, what each column would cost at the margin (its reduced
    cost) in one numpy expression: ``plan`` prices the columns left out of a restricted LP.
    """

    tpm: np.ndarray
    rpm: np.ndarray
    minute_tpm: np.ndarray
    minute_rpm: np.ndarray
    voucher: np.ndarray

    def reduced_costs(self, cols: ColumnArrays, objective: np.ndarray, duals: np.ndarray) -> np.ndarray:
        """``objective - A^T duals`` of every column (the demand row's dual included)."""
        y = np.append(duals, 0.0)  # row -1 (none) reads the 0 at the end
        rc = objective - y[cols.demand]
        rc -= cols.tokens * (y[self.tpm] + y[self.minute_tpm])
        rc -= cols.requests * (y[self.rpm] + y[self.minute_rpm])
        rc -= cols.units * y[self.voucher]
        return rc


def build_model(
    snapshot: Snapshot,
    edges: tuple[float, ...],
    cols: ColumnArrays,
    *,
    delay_yuan: float,
    unserved_yuan: float,
    keep: np.ndarray | None = None,
) -> tuple[MPModelProto, LpRows]:
    """The LP of ``plan``'s docstring for these columns, and where its rows are.

    With ``keep`` (a mask over ``cols``) only the kept columns are variables (in order,
    then z), but every row of the whole LP is there, so that a column left out can be
    added later; ``LpRows.columns`` says where each column's terms go.
    """
    from ortools.linear_solver import linear_solver_pb2  # lazy: keeps ``import optimizer`` fast

    n_all, n_groups = len(cols), len(snapshot.demand)
    kept = np.ones(n_all, dtype=bool) if keep is None else keep
    var = np.cumsum(kept) - 1  # column -> its variable
    n_cols = int(kept.sum())
    upper: list[float] = [1.0] * n_groups  # (demand) rows first: = 1
    regions = cols.regions
    limits = {r.id: r.limits for r in snapshot.config.regions}
    n_slots = len(edges) - 1

    # (tpm), (rpm) per (region, slot), in order of first appearance among the columns
    tpm_rows: dict[tuple[str, int], int] = {}
    rpm_rows: dict[tuple[str, int], int] = {}
    booked = _booked_per_slot(snapshot, edges)
    capacity = np.flatnonzero((cols.tokens > 0) | (cols.requests > 0))
    keys, rank = _first_appearance(cols.region[capacity] * n_slots + cols.slot[capacity])
    tpm_of, rpm_of = np.full(keys.size, -1, dtype=np.int64), np.full(keys.size, -1, dtype=np.int64)
    for q, key in enumerate(keys.tolist()):
        region, slot = regions[key // n_slots], key % n_slots
        minutes = math.ceil(edges[slot + 1] / 60.0) - math.floor(edges[slot] / 60.0)
        used_tokens, used_requests = booked.get((region, slot), (0.0, 0.0))
        for limit, used, out, of in (
            (limits[region].tpm, used_tokens, tpm_rows, tpm_of),
            (limits[region].rpm, used_requests, rpm_rows, rpm_of),
        ):
            if limit is not None:
                out[(region, slot)] = of[q] = len(upper)
                upper.append(max(limit * minutes - used, 0.0))
    at_tpm, at_rpm = np.full(n_all, -1, dtype=np.int64), np.full(n_all, -1, dtype=np.int64)
    at_tpm[capacity], at_rpm[capacity] = tpm_of[rank], rpm_of[rank]

    # (minute) interactive groups whose window lies in one clock minute
    minute_of_group = np.full(max(n_groups, 1), -1, dtype=np.int64)
    for n, d in enumerate(snapshot.demand):
        if d.work_class == "interactive" and math.floor(d.earliest / 60.0) == math.floor(d.latest / 60.0):
            minute_of_group[n] = math.floor(d.earliest / 60.0)
    minute_rows: dict[tuple[str, int], tuple[int, int]] = {}
    at_mt, at_mr = np.full(n_all, -1, dtype=np.int64), np.full(n_all, -1, dtype=np.int64)
    if (minute_of_group >= 0).any() and n_all:
        col_minute = minute_of_group[cols.demand]
        held = np.flatnonzero((col_minute >= 0) & (cols.tokens > 0))
        keys, rank = _first_appearance(col_minute[held] * len(regions) + cols.region[held])
        mt_of, mr_of = np.full(keys.size, -1, dtype=np.int64), np.full(keys.size, -1, dtype=np.int64)
        for q, key in enumerate(keys.tolist()):
            region, minute = regions[key % len(regions)], key // len(regions)
            used_tokens, used_requests = snapshot.booked.get((region, minute), (0.0, 0.0))
            for limit, used, of in (
                (limits[region].tpm, used_tokens, mt_of),
                (limits[region].rpm, used_requests, mr_of),
            ):
                if limit is not None:
                    of[q] = len(upper)
                    upper.append(max(limit - used, 0.0))
            minute_rows[(region, minute)] = (int(mt_of[q]), int(mr_of[q]))
        at_mt[held], at_mr[held] = mt_of[rank], mr_of[rank]

    # (voucher) rows
    voucher_rows: dict[str, int] = {}
    paid = np.flatnonzero(cols.voucher >= 0)
    keys, rank = _first_appearance(cols.voucher[paid])
    v_of = np.arange(len(upper), len(upper) + keys.size)
    for key in keys.tolist():
        vid = cols.vouchers[key]
        voucher_rows[vid] = len(upper)
        upper.append(sum(max(snapshot.balances.get(m, 0.0), 0.0) for m in cols.members.get(vid, (vid,))))
    at_v = np.full(n_all, -1, dtype=np.int64)
    at_v[paid] = v_of[rank]

    # every term (row, variable, coefficient), sorted by row, then variable (z first)
    columns = ColumnRows(at_tpm, at_rpm, at_mt, at_mr, at_v)
    terms_row, terms_var, terms_coef = (
        [np.arange(n_groups)],
        [np.arange(n_cols, n_cols + n_groups)],
        [np.ones(n_groups)],
    )
    for rows_at, coef in (
        (cols.demand, np.ones(n_all)),
        (at_tpm, cols.tokens),
        (at_rpm, cols.requests),
        (at_mt, cols.tokens),
        (at_mr, cols.requests),
        (at_v, cols.units),
    ):
        used = np.flatnonzero((rows_at >= 0) & (coef != 0) & kept)  # zero terms left out
        terms_row.append(rows_at[used])
        terms_var.append(var[used])
        terms_coef.append(coef[used])
    row, index, coef = np.concatenate(terms_row), np.concatenate(terms_var), np.concatenate(terms_coef)
    order = np.argsort(row, kind="stable")  # a row's terms come from one kind, in variable order
    counts = np.bincount(row, minlength=len(upper))
    lower = np.full(len(upper), -math.inf)
    lower[:n_groups] = 1.0
    objective = np.concatenate(
        (
            column_objective(cols, delay_yuan)[kept],
            np.array([unserved_yuan * max(d.requests, 1e-6) for d in snapshot.demand]),
        )
    )
    model = linear_solver_pb2.MPModelProto()
    model.MergeFromString(
        variables_bytes(objective)
        + constraints_bytes(lower, np.array(upper), counts, index[order], coef[order])
    )
    return model, LpRows(n_groups, tpm_rows, rpm_rows, minute_rows, voucher_rows, columns)


def column_objective(cols: ColumnArrays, delay_yuan: float) -> np.ndarray:
    """Each column's objective coefficient: the cash it leaves to pay, and the delay tie-break."""
    return cols.cash + delay_yuan * cols.slot


def solution(solver: object) -> tuple[np.ndarray, np.ndarray]:
    """The solved model's variable values and row duals, as arrays."""
    from ortools.linear_solver import linear_solver_pb2

    response = linear_solver_pb2.MPSolutionResponse()
    solver.FillSolutionResponseProto(response)  # type: ignore[attr-defined]
    return np.array(response.variable_value, dtype=float), np.array(response.dual_value, dtype=float)


def _first_appearance(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # the distinct keys in order of first appearance, and each key's place among them
    distinct, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    place = np.empty(distinct.size, dtype=np.int64)
    place[order] = np.arange(distinct.size)
    return distinct[order], place[inverse.reshape(-1)]


def _booked_per_slot(
    snapshot: Snapshot, edges: tuple[float, ...]
) -> dict[tuple[str, int], tuple[float, float]]:
    # (region, slot) -> (model tokens, requests) already committed
    out: dict[tuple[str, int], tuple[float, float]] = {}
    for (region, minute), (tokens, requests) in snapshot.booked.items():
        start = minute * 60.0
        if start + 60.0 <= edges[0] or start >= edges[-1]:
            continue
        key = (region, slot_index(edges, max(start, edges[0])))
        have = out.get(key, (0.0, 0.0))
        out[key] = (have[0] + tokens, have[1] + requests)
    return out
