"""The planner's LP at scale: the model written from arrays is the LP of ``plan``'s docstring
built a row at a time from ``columns_of``, byte for byte; a forecast's LP solved on a shortlist
of its columns, the rest priced in, has the value of the whole LP."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from benchmarks.scale import stretch
from benchmarks.scenario_gen import generate
from suanli.config import load_config
from suanli.optimizer import FORECAST_SPREAD, Snapshot, plan, slot_edges, slot_index
from suanli.optimizer.columns import Column, column_arrays, columns_of
from suanli.optimizer.lp import build_model
from suanli.router.simulate.trace import parse_trace
from tests.unit.optimizer.learned import learned_forecast

_DELAY, _UNSERVED = 1e-9, 1000.0


def _snapshot(seed: int, regions: int, vouchers: int, *, tariffs: set[str] | None = None) -> Snapshot:
    # a generated day stretched to this size, its forecast learned from the first four hours
    raw, header, lines = generate(seed, requests=800, hours=8, shocks=False, tariffs=tariffs)
    config = load_config(stretch(raw, regions, vouchers, seed))
    trace = parse_trace([json.dumps(header)] + [json.dumps(line) for line in lines], config)
    forecast, now = learned_forecast(config, trace)
    horizon = config.planner.horizon_h * 3600.0
    edges = slot_edges(config, now, now + horizon)
    balances = {v.id: v.amount for v in config.vouchers}
    busy = config.regions[0].id  # one minute already partly booked: its room is what is left
    booked = {(busy, math.floor(now / 60.0) + 3): (5000.0, 4.0)}
    return Snapshot(config, now, horizon, balances, forecast.demand(edges, now), booked=booked)


def _object_lp(snapshot: Snapshot, edges: tuple[float, ...], cols: list[Column]) -> bytes:
    # The docstring's LP a row at a time: variables x (cash + delay) then z; (demand) rows,
    # z first; (tpm)/(rpm) per (region, slot) and (minute) per (region, clock minute), in the
    # order the columns first name them; (voucher) rows; zero terms left out.
    from ortools.linear_solver import linear_solver_pb2

    model = linear_solver_pb2.MPModelProto()
    for c in cols:
        model.variable.add(lower_bound=0.0, upper_bound=1.0, objective_coefficient=c.cash + _DELAY * c.slot)
    for d in snapshot.demand:
        model.variable.add(
            lower_bound=0.0, upper_bound=1.0, objective_coefficient=_UNSERVED * max(d.requests, 1e-6)
        )
    n = len(cols)
    for g in range(len(snapshot.demand)):
        row = model.constraint.add(lower_bound=1.0, upper_bound=1.0)
        row.var_index.extend([n + g] + [j for j, c in enumerate(cols) if c.demand == g])
        row.coefficient.extend([1.0] * len(row.var_index))
    limits = {r.id: r.limits for r in snapshot.config.regions}

    def rows(keys: dict, bounds: dict) -> None:
        for key, members in keys.items():
            for name, coef in (("tpm", "tokens"), ("rpm", "requests")):
                limit = getattr(limits[key[0]], name)
                if limit is None:
                    continue
                row = model.constraint.add(
                    lower_bound=-math.inf, upper_bound=max(bounds[key][name](limit), 0.0)
                )
                terms = [(j, getattr(cols[j], coef)) for j in members if getattr(cols[j], coef) != 0]
                row.var_index.extend([j for j, _ in terms])
                row.coefficient.extend([v for _, v in terms])

    slots: dict[tuple[str, int], list[int]] = {}
    for j, c in enumerate(cols):
        if c.tokens > 0 or c.requests > 0:
            slots.setdefault((c.region, c.slot), []).append(j)
    used: dict[tuple[str, int], list[float]] = {}
    for (region, minute), (tokens, requests) in snapshot.booked.items():
        have = used.setdefault((region, slot_index(edges, minute * 60.0)), [0.0, 0.0])
        have[0], have[1] = have[0] + tokens, have[1] + requests
    bounds = {}
    for key in slots:
        k = key[1]
        minutes = math.ceil(edges[k + 1] / 60.0) - math.floor(edges[k] / 60.0)
        t, q = used.get(key, (0.0, 0.0))
        bounds[key] = {
            "tpm": lambda lim, m=minutes, t=t: lim * m - t,
            "rpm": lambda lim, m=minutes, q=q: lim * m - q,
        }
    rows(slots, bounds)
    held: dict[tuple[str, int], list[int]] = {}
    for j, c in enumerate(cols):
        d = snapshot.demand[c.demand]
        one = math.floor(d.earliest / 60.0) == math.floor(d.latest / 60.0)
        if d.work_class == "interactive" and one and c.tokens > 0:
            held.setdefault((c.region, math.floor(d.earliest / 60.0)), []).append(j)
    bounds = {}
    for key in held:
        t, q = snapshot.booked.get(key, (0.0, 0.0))
        bounds[key] = {"tpm": lambda lim, t=t: lim - t, "rpm": lambda lim, q=q: lim - q}
    rows(held, bounds)
    paid: dict[str, list[int]] = {}
    for j, c in enumerate(cols):
        if c.voucher is not None:
            paid.setdefault(c.voucher, []).append(j)
    for vid, members in paid.items():
        row = model.constraint.add(lower_bound=-math.inf, upper_bound=max(snapshot.balances[vid], 0.0))
        terms = [(j, cols[j].units) for j in members if cols[j].units != 0]
        row.var_index.extend([j for j, _ in terms])
        row.coefficient.extend([v for _, v in terms])
    return model.SerializeToString()


@pytest.mark.parametrize(
    ("seed", "regions", "vouchers", "tariffs"), [(3, 8, 5, None), (12, 16, 9, {"sessions"})]
)
def test_model_from_arrays_is_the_object_lp(
    seed: int, regions: int, vouchers: int, tariffs: set[str] | None
) -> None:
    snapshot = _snapshot(seed, regions, vouchers, tariffs=tariffs)
    if tariffs:  # a third of the interactive input expected from sessions' prompt caches
        cached = tuple(
            dataclasses.replace(d, cached_tokens=d.input_tokens / 3) if d.work_class == "interactive" else d
            for d in snapshot.demand
        )
        snapshot = dataclasses.replace(snapshot, demand=cached)
    edges = slot_edges(snapshot.config, snapshot.now_s, snapshot.now_s + snapshot.horizon_s)
    cols = list(columns_of(snapshot, edges))
    arrays = column_arrays(snapshot, edges)
    assert len(arrays) == len(cols) > 0
    model, rows = build_model(snapshot, edges, arrays, delay_yuan=_DELAY, unserved_yuan=_UNSERVED)
    assert model.SerializeToString() == _object_lp(snapshot, edges, cols)
    assert len(rows.tpm) + len(rows.rpm) > 0 and rows.voucher


def test_a_shortlist_with_the_rest_priced_in_has_the_whole_lps_value(monkeypatch: pytest.MonkeyPatch) -> None:
    # 24 regions, one candidate region per group to start from: the cheap ones fill up, and
    # pricing must bring in the rest; the plan's cash and what it leaves unserved are those
    # of the whole LP solved by the same solver, and no column left out would lower it.
    import sys

    from suanli.optimizer.restricted import Restricted, shortlist

    plan_module = sys.modules["suanli.optimizer.plan"]
    snapshot = _snapshot(5, 24, 5)
    heavy = tuple(
        dataclasses.replace(
            d, requests=d.requests * 6, input_tokens=d.input_tokens * 6, output_tokens=d.output_tokens * 6
        )
        for d in snapshot.demand
    )
    snapshot = dataclasses.replace(snapshot, demand=heavy)
    monkeypatch.setattr(plan_module, "FAST_FROM_REGIONS", 1)
    monkeypatch.setattr(plan_module, "_RESTRICT_FROM_COLUMNS", math.inf)
    whole = plan(snapshot, demand_scenarios=FORECAST_SPREAD)
    added: list[int] = []
    price_in = Restricted.price_in

    def spy(self: Restricted) -> int:
        added.append(price_in(self))
        return added[-1]

    monkeypatch.setattr(Restricted, "price_in", spy)
    monkeypatch.setattr(plan_module, "_RESTRICT_FROM_COLUMNS", 0)
    monkeypatch.setattr("suanli.optimizer.restricted.SHORTLIST_REGIONS", 1)
    priced = plan(snapshot, demand_scenarios=FORECAST_SPREAD)
    assert sum(added) > 0 and added[-1] == 0
    assert priced.cash_yuan == pytest.approx(whole.cash_yuan, rel=1e-7, abs=1e-7)
    assert priced.unserved_requests == pytest.approx(whole.unserved_requests, abs=1e-6)
    assert set(priced.voucher_price) == set(whole.voucher_price)
    edges = slot_edges(snapshot.config, snapshot.now_s, snapshot.now_s + snapshot.horizon_s)
    cols = column_arrays(snapshot, edges)
    first = shortlist(cols, 1)
    listed = {(int(d), cols.regions[r]) for d, r in zip(cols.demand[first], cols.region[first], strict=True)}
    assert any((f.demand, f.region) not in listed for f in priced.flows)  # served beyond the shortlist
