"""The planner: a linear program over the horizon whose duals price vouchers and capacity.

Sets
    K        slots ``[e_k, e_{k+1})`` from ``slot_edges`` (prices and validity constant
             inside each); ``m'_k`` is the number of clock minutes the slot touches.
    D        demand groups ``d``: class, origin, model, start window ``[a_d, b_d]``,
             ``n_d`` requests, ``I_d``/``O_d`` reference tokens.
    R(d)     regions that serve d's model, have the capability (training: fine_tuning),
             are not blocked and, for interactive d, meet the latency SLO.
    K(d)     slots overlapping d's start window.
    P(d,r,k) payments: cash, and every voucher of region r usable for d's model and
             class, valid in slot k, with a positive balance.

Parameters
    c[d,r,k]   list yuan of d at r in k (off-peak factor of slot k applied);
    tau[d,r]   model tokens of d at r: (I_d + O_d) x ratio (training: I_d x ratio);
    u[d,r,k,p] voucher units p draws (tokens voucher: tau; credit: c; discount: rate c);
    g[d,r,k,p] cash left to pay (cash: c; tokens and credit: 0; discount: (1 - rate) c);
    B_v        voucher balance; TPM_r, RPM_r limits; bt[r,k], bq[r,k] already booked.

Variables
    x[d,r,k,p] in [0, 1]   share of d served at r, starting in k, paid by p;
    z[d] in [0, 1]         share of d left unserved.

Objective
    min  sum g x  +  M sum n_d z_d   (+ a tie-break of 1e-9 yuan per slot of delay)

Constraints
    (demand)   sum_{r,k,p} x[d,r,k,p] + z[d] = 1                       for all d
    (tpm)      sum_{d,p} tau[d,r] x[d,r,k,p] <= TPM_r m'_k - bt[r,k]     for all r, k  (no training)
    (rpm)      sum_{d,p} n_d x[d,r,k,p]      <= RPM_r m'_k - bq[r,k]     for all r, k  (no training)
    (minute)   the same per clock minute, for interactive groups whose window is one minute
    (voucher)  sum u[d,r,k,v] x[d,r,k,v]     <= B_v                      for all v

The voucher rows' duals are the shadow prices (yuan per unit) and the capacity rows'
duals the capacity prices (yuan per model token, per request) the chooser adds to cash.

Splitting a request between a voucher and cash relaxes "at most one voucher, the rest
in cash" (the voucher pays ``min(balance, need)``), so the value is a lower bound on
what any policy pays for demand shaped exactly as the groups; whole requests of one group
differ, and a policy can beat their average (``optimizer.bound`` gives the valid bound).

Averaging (forecast demand only)
    A voucher's dual jumps between 0 and its full cash value as the forecast demand for it
    crosses its balance, so one wrong forecast prices it badly. The LP is also solved with
    every n_d (and so every coefficient of x) scaled by each factor f in
    ``demand_scenarios`` (default ``FORECAST_SPREAD``). Shares stay shares, so that is
    the same LP with every (tpm), (rpm), (minute) and (voucher) right-hand side divided
    by f, and its duals keep their units; GLOP re-solves it from the basis it has. A
    voucher's shadow price is the mean of its duals over the forecast and the scenarios
    solved to optimality, but never below the forecast's own dual: averaging only raises
    a price. The flows, cash and capacity prices are the forecast's own, and a voucher
    priced below them would draw traffic onto its region that the forecast's plan (and
    so its capacity prices) never reserved room for; a raised price only sends traffic
    to cash elsewhere, as greedy would. Known demand (hindsight, a batch file) passes
    ``()``: the plain LP.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from suanli.optimizer.columns import ColumnArrays, column_arrays
from suanli.optimizer.errors import InfeasibleError
from suanli.optimizer.lp import LpRows, build_model, column_objective, solution
from suanli.optimizer.restricted import Restricted, shortlist
from suanli.optimizer.slots import slot_edges
from suanli.optimizer.snapshot import Flow, Plan, Snapshot

if TYPE_CHECKING:  # OR-Tools loads on the first solve: ``import optimizer`` stays fast
    from ortools.linear_solver.pywraplp import Solver

__all__ = ["FORECAST_SPREAD", "NO_LIMIT", "POOL_FROM_VOUCHERS", "UNSERVED_YUAN", "plan"]

NO_LIMIT = math.inf  # ``plan(time_limit_s=NO_LIMIT)``: solve to completion

# M: yuan per request left unserved, far above any real price. The one penalty for
# leaving a request out: the LP's, the bound's and hindsight's rounding's.
UNSERVED_YUAN = 1000.0
_DELAY_YUAN = 1e-9  # per slot of delay per share: among equal costs, start earlier
# A forecast is often off by a factor of two, and a voucher's price jumps between 0
# (enough for all its demand) and its full cash value (short) as the demand crosses its
# balance: the price averaged over demand factors degrades gently when the forecast is
# wrong. Only raised, never lowered: a plain mean made the shanghai credit cheaper on
# `scarcity`, drew deepseek traffic there, and a minute's burst of qwen-plus then found
# no east room (1 interactive rejection where greedy has none).
FORECAST_SPREAD: tuple[float, ...] = (0.5, 0.75, 4 / 3, 2.0)
# Pooling alike vouchers and re-solving the scenarios from the last basis give the same LP
# values, but GLOP may end at another optimal basis, and other duals: random day 31 paid
# 1.6% more with warm re-solves. Both are kept for the sizes where they pay: many
# vouchers, large LPs (deterministic thresholds: no clock decides).
POOL_FROM_VOUCHERS = 20
_WARM_FROM_COLUMNS = 40_000
# A forecast's plan from these sizes on solves every LP warm (no presolve, dual simplex:
# a re-solve after the scenarios' right-hand sides change starts from the basis it has and
# stays dual feasible) and, from ``_RESTRICT_FROM_COLUMNS`` columns, on a shortlist of its
# columns with the rest priced in (``optimizer.restricted``). Sizes, not times, decide.
# Package instances count as vouchers: tariff-all's 8 make 21-23, and warm solves there made
# it 0.06% dearer, so the warm path starts well above that.
FAST_FROM_REGIONS = 12
FAST_FROM_VOUCHERS = 40
_RESTRICT_FROM_COLUMNS = 20_000
_FAST = "use_preprocessing: false use_dual_simplex: true"


@dataclass(frozen=True, slots=True)
class _Lp:
    """The LP of the module docstring as ``_build`` made it: its solver, columns and rows."""

    solver: Solver
    cols: ColumnArrays
    rows: LpRows
    params: str = ""  # GLOP's parameters for every solve of this LP
    restricted: Restricted | None = None  # a shortlist of the columns, the rest priced in


def plan(
    snapshot: Snapshot,
    *,
    time_limit_s: float | None = None,
    demand_scenarios: Sequence[float] = FORECAST_SPREAD,
) -> Plan:
    """Solve the LP of this module's docstring for ``snapshot`` (raises ``InfeasibleError``).

    ``time_limit_s`` overrides ``config.planner.time_limit_s`` (an offline bound may take longer);
    ``NO_LIMIT`` solves to completion: no wall clock decides the plan (a replay's, whose
    LPs are bounded in size, so that the same inputs give the same plan on any machine).
    ``demand_scenarios`` are the factors the demand is also scaled by to average voucher
    prices over; pass ``()`` when the demand is known exactly.
    """
    config = snapshot.config
    edges = slot_edges(config, snapshot.now_s, snapshot.now_s + snapshot.horizon_s)
    limit = config.planner.time_limit_s if time_limit_s is None else time_limit_s
    # Alike vouchers are pooled in a forecast's plan with many vouchers; known demand's plan
    # keeps them apart (hindsight's rounding reads each voucher's flows).
    pool = bool(demand_scenarios) and len(config.vouchers) > POOL_FROM_VOUCHERS
    fast = bool(demand_scenarios) and (
        len(config.regions) >= FAST_FROM_REGIONS or len(config.vouchers) > FAST_FROM_VOUCHERS
    )
    lp = _build(snapshot, edges, limit, pool=pool, fast=fast)
    _solve(lp)
    found = _read(snapshot, edges, lp)
    if demand_scenarios and lp.rows.voucher:
        found = _average(lp, found, demand_scenarios)
    if lp.cols.members:
        prices = dict(found.voucher_price)
        for first, members in lp.cols.members.items():
            if first in prices:  # a pool with no columns has no row, and no price
                for vid in members:
                    prices[vid] = prices[first]
        found = dataclasses.replace(found, voucher_price=prices)
    return found


def _build(
    snapshot: Snapshot, edges: tuple[float, ...], time_limit_s: float, *, pool: bool, fast: bool = False
) -> _Lp:
    # Variables (x per column, then z per group), objective and rows in the docstring's
    # order, from arrays (``optimizer.lp``); the order of rows and columns can change
    # which optimal basis GLOP ends at, so it stays as it is.
    from ortools.linear_solver import pywraplp  # lazy: keeps ``import optimizer`` fast

    cols = column_arrays(snapshot, edges, pool=pool)
    keep = shortlist(cols) if fast and len(cols) >= _RESTRICT_FROM_COLUMNS else None
    model, rows = build_model(
        snapshot, edges, cols, delay_yuan=_DELAY_YUAN, unserved_yuan=UNSERVED_YUAN, keep=keep
    )
    solver = pywraplp.Solver.CreateSolver("GLOP")
    if solver is None:  # pragma: no cover - GLOP ships with ortools
        raise InfeasibleError("NO_SOLVER", "OR-Tools has no GLOP solver")
    error = solver.LoadModelFromProto(model)
    if error:  # pragma: no cover - the model is ours
        raise InfeasibleError("BAD_MODEL", error)
    if math.isfinite(time_limit_s):
        solver.SetTimeLimit(int(time_limit_s * 1000))
    params = _FAST if fast else ""
    if params:
        solver.SetSolverSpecificParametersAsString(params)
    restricted = None
    if keep is not None:
        restricted = Restricted.start(solver, cols, rows, column_objective(cols, _DELAY_YUAN), keep)
    return _Lp(solver, cols, rows, params, restricted)


def _solve(lp: _Lp) -> None:
    # Solve to optimality or raise: a plan from any other status prices nothing right.
    from ortools.linear_solver import pywraplp

    status = _solve_priced(lp)
    if status != pywraplp.Solver.OPTIMAL:
        names = {
            pywraplp.Solver.INFEASIBLE: "INFEASIBLE",
            pywraplp.Solver.UNBOUNDED: "UNBOUNDED",
            pywraplp.Solver.FEASIBLE: "FEASIBLE",
            pywraplp.Solver.ABNORMAL: "ABNORMAL",
            pywraplp.Solver.NOT_SOLVED: "NOT_SOLVED",
        }
        raise InfeasibleError(names.get(status, str(status)))


def _solve_priced(lp: _Lp) -> int:
    # A restricted LP is solved until no column left out would lower its objective.
    from ortools.linear_solver import pywraplp

    while True:
        status = _solve_status(lp.solver, lp.params)
        if status != pywraplp.Solver.OPTIMAL or lp.restricted is None or not lp.restricted.price_in():
            return status


def _solve_status(solver: Solver, params: str = "") -> int:
    # GLOP reports ABNORMAL (its IMPRECISE) when the cost perturbation its last phase
    # needed exceeds its tolerance: cash of 1e-3 yuan beside the unserved penalty of
    # 1e3 yuan per request makes that happen on some large LPs. Without presolve the
    # same LP usually ends OPTIMAL, from the basis already found.
    from ortools.linear_solver import pywraplp

    status = solver.Solve()
    if status != pywraplp.Solver.ABNORMAL:
        return status
    solver.SetSolverSpecificParametersAsString("use_preprocessing: false")  # primal, on the fast path
    status = solver.Solve()
    solver.SetSolverSpecificParametersAsString(params)
    return status


def _read(snapshot: Snapshot, edges: tuple[float, ...], lp: _Lp) -> Plan:
    # The solved LP's flows and cash, and its rows' duals as prices (>= 0, yuan per unit).
    values, duals = solution(lp.solver) if lp.restricted is None else lp.restricted.values()
    cols, rows = lp.cols, lp.rows
    n_slots = len(edges) - 1
    token_price: dict[str, list[float]] = defaultdict(lambda: [0.0] * n_slots)
    request_price: dict[str, list[float]] = defaultdict(lambda: [0.0] * n_slots)
    for (region, k), row in rows.tpm.items():
        token_price[region][k] = max(0.0, -float(duals[row]))
    for (region, k), row in rows.rpm.items():
        request_price[region][k] = max(0.0, -float(duals[row]))
    interactive_tpm: dict[str, list[float]] = defaultdict(lambda: [0.0] * n_slots)
    interactive_rpm: dict[str, list[float]] = defaultdict(lambda: [0.0] * n_slots)
    deferred_tpm: dict[str, list[float]] = defaultdict(lambda: [0.0] * n_slots)
    flows: list[Flow] = []
    cash = 0.0
    n_cols = len(cols)
    # Python floats, summed in column order: the same figures as a column-by-column read
    for n in np.flatnonzero(values[:n_cols] > 1e-9).tolist():
        share = float(values[n])
        region, slot, tokens = cols.regions[cols.region[n]], int(cols.slot[n]), float(cols.tokens[n])
        voucher = cols.vouchers[cols.voucher[n]] if cols.voucher[n] >= 0 else None
        cash += float(cols.cash[n]) * share
        flows.append(Flow(int(cols.demand[n]), region, slot, voucher, share))
        minutes = (edges[slot + 1] - edges[slot]) / 60.0
        if cols.interactive[n]:
            interactive_tpm[region][slot] += tokens * share / minutes
            interactive_rpm[region][slot] += float(cols.requests[n]) * share / minutes
        elif tokens > 0:
            deferred_tpm[region][slot] += tokens * share / minutes
    unserved = 0.0
    for z, d in zip(values[n_cols:].tolist(), snapshot.demand, strict=True):
        unserved += z * d.requests
    return Plan(
        edges=edges,
        voucher_price={v: max(0.0, -float(duals[row])) for v, row in rows.voucher.items()},
        token_price={r: tuple(p) for r, p in token_price.items()},
        request_price={r: tuple(p) for r, p in request_price.items()},
        interactive_tpm={r: tuple(p) for r, p in interactive_tpm.items()},
        interactive_rpm={r: tuple(p) for r, p in interactive_rpm.items()},
        deferred_tpm={r: tuple(p) for r, p in deferred_tpm.items()},
        cash_yuan=cash,
        unserved_requests=unserved,
        demand=snapshot.demand,
        flows=tuple(flows),
        minute_price={
            key: tuple(max(0.0, -float(duals[row])) if row >= 0 else 0.0 for row in pair)
            for key, pair in rows.minute.items()
        },
    )


def _average(lp: _Lp, found: Plan, demand_scenarios: Sequence[float]) -> Plan:
    # (averaging) demand x f is the same LP with every limit and balance / f (shares stay
    # shares; the duals keep their units), so only right-hand sides change and GLOP
    # re-solves from the basis it has.
    from ortools.linear_solver import pywraplp

    every = lp.solver.constraints()
    at = [*lp.rows.tpm.values(), *lp.rows.rpm.values(), *lp.rows.voucher.values()]
    at += [row for pair in lp.rows.minute.values() for row in pair if row >= 0]
    rows = [every[n] for n in at]
    bounds = [row.ub() for row in rows]
    vouchers = [(v, every[n]) for v, n in lp.rows.voucher.items()]
    totals = dict(found.voucher_price)
    solved = 1
    if not lp.params and len(lp.cols) > _WARM_FROM_COLUMNS:
        # Without presolve GLOP starts each scenario from the last basis: tens of
        # iterations where a presolved re-solve starts over (at 160 vouchers 0.2 s, not 6).
        lp.solver.SetSolverSpecificParametersAsString("use_preprocessing: false")
    for factor in demand_scenarios:
        for row, ub in zip(rows, bounds, strict=True):
            row.SetUb(ub / factor)
        if _solve_priced(lp) != pywraplp.Solver.OPTIMAL:
            continue  # a scenario the solver gives up on does not vote
        solved += 1
        for v, row in vouchers:
            totals[v] += max(0.0, -row.dual_value())
    own = found.voucher_price
    return dataclasses.replace(found, voucher_price={v: max(own[v], t / solved) for v, t in totals.items()})
