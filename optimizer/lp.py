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

if TYPE_CHECKING:
    from ortools.linear_solver.linear_solver_pb2 import MPModelProto

__all__ = ["LpRows", "build_model", "solution"]

# One MPVariableProto inside MPModelProto.variable (field 3), as protobuf writes it:
# tag 0x1a, length 27, then lower_bound (0x09), upper_bound (0x11), objective (0x19).
_VARIABLE = np.dtype(
    [("tag", "u1"), ("size", "u1"), ("t_lb", "u1"), ("lb", "<f8"), ("t_ub", "u1"), ("ub", "<f8"),
     ("t_obj", "u1"), ("obj", "<f8")]
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class LpRows:
    """Where each kind of row of ``plan``'s LP sits (row indices into the model)."""

    n_groups: int  # demand rows are 0 .. n_groups - 1; z of group d is column n_columns + d
    tpm: dict[tuple[str, int], int]  # (region, slot) -> row
    rpm: dict[tuple[str, int], int]
    minute: dict[tuple[str, int], tuple[int, int]]  # (region, clock minute) -> (tpm row, rpm row); -1: none
    voucher: dict[str, int]  # voucher id -> row


def build_model(
    snapshot: Snapshot,
    edges: tuple[float, ...],
    cols: ColumnArrays,
    *,
    delay_yuan: float,
    unserved_yuan: float,
) -> tuple[MPModelProto, LpRows]:
    """The LP of ``plan``'s docstring for these columns, and where its rows are."""
    from ortools.linear_solver import linear_solver_pb2  # lazy: keeps ``import optimizer`` fast

    model = linear_solver_pb2.MPModelProto()
    n_cols, n_groups = len(cols), len(snapshot.demand)
    rows: list[tuple[float, float, np.ndarray, np.ndarray]] = []  # (lb, ub, var indices, coefficients)

    # (demand) z first, then the group's columns
    order = np.argsort(cols.demand, kind="stable")
    bounds = np.searchsorted(cols.demand[order], np.arange(n_groups + 1))
    for d in range(n_groups):
        members = order[bounds[d] : bounds[d + 1]]
        idx = np.concatenate(([n_cols + d], members))
        rows.append((1.0, 1.0, idx, np.ones(idx.size)))

    regions = cols.regions
    limits = {r.id: r.limits for r in snapshot.config.regions}
    n_slots = len(edges) - 1
    tpm_rows: dict[tuple[str, int], int] = {}
    rpm_rows: dict[tuple[str, int], int] = {}
    booked = _booked_per_slot(snapshot, edges)
    capacity = np.flatnonzero((cols.tokens > 0) | (cols.requests > 0))
    keys = cols.region[capacity] * n_slots + cols.slot[capacity]
    for key, members in _by_first_appearance(keys, capacity):
        region, slot = regions[key // n_slots], int(key % n_slots)
        minutes = math.ceil(edges[slot + 1] / 60.0) - math.floor(edges[slot] / 60.0)
        used_tokens, used_requests = booked.get((region, slot), (0.0, 0.0))
        for limit, used, coef, out in (
            (limits[region].tpm, used_tokens, cols.tokens, tpm_rows),
            (limits[region].rpm, used_requests, cols.requests, rpm_rows),
        ):
            if limit is not None:
                out[(region, slot)] = len(rows)
                rows.append(_row(max(limit * minutes - used, 0.0), members, coef[members]))

    # (minute) interactive groups whose window lies in one clock minute
    minute_of_group = np.full(max(n_groups, 1), -1, dtype=np.int64)
    for n, d in enumerate(snapshot.demand):
        if d.work_class == "interactive" and math.floor(d.earliest / 60.0) == math.floor(d.latest / 60.0):
            minute_of_group[n] = math.floor(d.earliest / 60.0)
    minute_rows: dict[tuple[str, int], tuple[int, int]] = {}
    if (minute_of_group >= 0).any() and n_cols:
        col_minute = minute_of_group[cols.demand]
        held = np.flatnonzero((col_minute >= 0) & (cols.tokens > 0))
        keys = col_minute[held] * len(regions) + cols.region[held]
        for key, members in _by_first_appearance(keys, held):
            region, minute = regions[key % len(regions)], int(key // len(regions))
            used_tokens, used_requests = snapshot.booked.get((region, minute), (0.0, 0.0))
            pair = []
            for limit, used, coef in (
                (limits[region].tpm, used_tokens, cols.tokens),
                (limits[region].rpm, used_requests, cols.requests),
            ):
                if limit is None:
                    pair.append(-1)
                    continue
                pair.append(len(rows))
                rows.append(_row(max(limit - used, 0.0), members, coef[members]))
            minute_rows[(region, minute)] = (pair[0], pair[1])

    voucher_rows: dict[str, int] = {}
    paid = np.flatnonzero(cols.voucher >= 0)
    for key, members in _by_first_appearance(cols.voucher[paid], paid):
        vid = cols.vouchers[key]
        voucher_rows[vid] = len(rows)
        balance = sum(max(snapshot.balances.get(m, 0.0), 0.0) for m in cols.members.get(vid, (vid,)))
        rows.append(_row(balance, members, cols.units[members]))

    for lb, ub, idx, coef in rows:
        row = model.constraint.add(lower_bound=lb, upper_bound=ub)
        row.var_index.extend(idx.tolist())
        row.coefficient.extend(coef.tolist())
    objective = np.concatenate(
        (
            cols.cash + delay_yuan * cols.slot,
            np.array([unserved_yuan * max(d.requests, 1e-6) for d in snapshot.demand]),
        )
    )
    variables = np.zeros(n_cols + n_groups, dtype=_VARIABLE)
    variables["tag"], variables["size"] = 0x1A, 27
    variables["t_lb"], variables["t_ub"], variables["t_obj"] = 0x09, 0x11, 0x19
    variables["ub"] = 1.0
    variables["obj"] = objective
    model.MergeFromString(variables.tobytes())
    return model, LpRows(n_groups, tpm_rows, rpm_rows, minute_rows, voucher_rows)


def solution(solver: object) -> tuple[np.ndarray, np.ndarray]:
    """The solved model's variable values and row duals, as arrays."""
    from ortools.linear_solver import linear_solver_pb2

    response = linear_solver_pb2.MPSolutionResponse()
    solver.FillSolutionResponseProto(response)  # type: ignore[attr-defined]
    return np.array(response.variable_value, dtype=float), np.array(response.dual_value, dtype=float)


def _row(ub: float, members: np.ndarray, coef: np.ndarray) -> tuple[float, float, np.ndarray, np.ndarray]:
    # a <= row; zero terms left out (the solver drops them anyway)
    keep = coef != 0
    return (-math.inf, ub, members[keep], coef[keep])


def _by_first_appearance(keys: np.ndarray, members: np.ndarray) -> list[tuple[int, np.ndarray]]:
    # (key, its members in order) for each distinct key, keys in order of first appearance
    if keys.size == 0:
        return []
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
    stops = np.append(starts[1:], ordered.size)
    groups = [
        (int(ordered[s]), members[order[s:e]], int(order[s])) for s, e in zip(starts, stops, strict=True)
    ]
    groups.sort(key=lambda g: g[2])
    return [(key, found) for key, found, _ in groups]


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
