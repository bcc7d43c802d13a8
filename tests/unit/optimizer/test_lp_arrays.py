"""The array-built LP has the columns of ``columns_of``, figure for figure, in its order."""

from __future__ import annotations

from pathlib import Path

from benchmarks.scenario_gen import write_scenario
from suanli.config import load_config
from suanli.optimizer import Snapshot, slot_edges
from suanli.optimizer.columns import column_arrays, columns_of
from suanli.router.simulate.trace import load_trace
from tests.unit.optimizer.learned import learned_forecast


def _snapshot(seed: int, tmp_path: Path) -> tuple[Snapshot, tuple[float, ...]]:
    # a forecast learned from a generated day's first four hours, planned from there
    day = write_scenario(tmp_path / "day", seed, requests=600, hours=8, shocks=False)
    config = load_config(day / "config.yaml")
    trace = load_trace(day / "trace.jsonl", config)
    forecast, now = learned_forecast(config, trace)
    horizon = config.planner.horizon_h * 3600.0
    edges = tuple(slot_edges(config, now, now + horizon))
    balances = {v.id: v.amount for v in config.vouchers}
    return Snapshot(config, now, horizon, balances, forecast.demand(edges, now)), edges


def test_column_arrays_match_columns_of(tmp_path: Path) -> None:
    for seed in (3, 12):
        snapshot, edges = _snapshot(seed, tmp_path / str(seed))
        cols = list(columns_of(snapshot, edges))
        arrays = column_arrays(snapshot, edges)
        assert len(arrays) == len(cols) > 0
        for n, col in enumerate(cols):
            voucher = arrays.vouchers[arrays.voucher[n]] if arrays.voucher[n] >= 0 else None
            got = (int(arrays.demand[n]), arrays.regions[arrays.region[n]], int(arrays.slot[n]), voucher)
            assert got == (col.demand, col.region, col.slot, col.voucher)
            figures = (arrays.cash[n], arrays.units[n], arrays.tokens[n], arrays.requests[n])
            assert tuple(float(f) for f in figures) == (col.cash, col.units, col.tokens, col.requests)
            assert bool(arrays.interactive[n]) == col.interactive


def test_alike_vouchers_are_pooled_in_a_forecast_plan_and_priced_alike() -> None:
    # Credits alike in everything but their id and amount (more than the 20 from which a
    # forecast's plan pools): one row in the forecast's LP, the same price for each; the
    # plan of known demand keeps them apart.
    from suanli.optimizer import Demand, plan
    from tests.unit.optimizer.tiny import make_config, region

    vouchers = [{"id": f"c{n}", "region": "a", "kind": "credit", "amount": 0.1 + n / 100} for n in range(22)]
    config = make_config([region("a", "east", price=1.0), region("b", "east", price=2.0)], vouchers)
    start = 1796054400.0  # 2026-12-01T00:00:00+08:00
    demand = (Demand("batch", "east", "m", start, start + 7200, 100.0, 2e7, 1e7),)
    balances = {v["id"]: v["amount"] for v in vouchers}
    pooled = plan(Snapshot(config, start, 7200.0, balances, demand))
    apart = plan(Snapshot(config, start, 7200.0, balances, demand), demand_scenarios=())
    assert len(set(pooled.voucher_price.values())) == 1
    assert pooled.voucher_price["c0"] > 0
    assert abs(pooled.cash_yuan - apart.cash_yuan) < 1e-9
    assert {f.voucher for f in pooled.flows} == {"c0", None}
    assert len({f.voucher for f in apart.flows}) > 2
