"""The planner on frozen demand: minute limits for interactive groups, deferred flows."""

from __future__ import annotations

from pathlib import Path

import pytest

from suanli.optimizer import hindsight_plan
from suanli.router.simulate.trace import parse_trace
from tests.unit.optimizer.tiny import make_config, make_trace, region

CONFIG = make_config([region("a", "east", price=1.0, limits={"tpm": 1500}), region("b", "east", price=2.0)])


def test_interactive_groups_held_to_their_minute_give_a_tighter_bound() -> None:
    # Two 1,000-token requests in the first minute: the hour has room for both at a, the
    # minute for 1,500 tokens only, so 500 tokens pay b's price. (One in the next minute
    # keeps the hour's group from lying in one minute; one an hour on keeps the slot long.)
    lines = make_trace([{"t": t, "input": 500, "output": 500} for t in (5, 20, 70, 3605)])
    jobs = parse_trace(lines, CONFIG).jobs
    by_hour = hindsight_plan(CONFIG, jobs)
    by_minute = hindsight_plan(CONFIG, jobs, by_minute=True)
    assert by_hour.cash_yuan == pytest.approx(0.004)
    assert by_minute.cash_yuan == pytest.approx(0.0015 + 0.001 + 0.001 + 0.001)
    first_minute = int(jobs[0].arrival_s // 60)
    assert by_minute.minute_price[("a", first_minute)][0] == pytest.approx(1e-6)  # b's price less a's
    assert ("a", first_minute) not in by_hour.minute_price


def test_work_that_may_wait_shows_in_the_deferred_load_not_the_interactive_one() -> None:
    lines = make_trace([{"t": 5, "class": "batch", "input": 500, "output": 500, "deadline_s": 600}])
    plan = hindsight_plan(CONFIG, parse_trace(lines, CONFIG).jobs)
    assert sum(sum(v) for v in plan.deferred_tpm.values()) > 0
    assert sum(sum(v) for v in plan.interactive_tpm.values()) == 0


SPREAD = (0.5, 0.75, 4 / 3, 2.0)


def _credit_snapshot(share_of_balance: float):  # noqa: ANN202
    # One region at 1 yuan per million tokens and a credit voucher of 1 yuan: demand
    # whose list price is ``share_of_balance`` yuan, in one hour.
    from suanli.optimizer import Snapshot, known_demand, slot_edges

    config = make_config(
        [region("a", "east")],
        [{"id": "c", "region": "a", "kind": "credit", "amount": 1.0, "expires": "2026-12-31T00:00:00+08:00"}],
    )
    tokens = share_of_balance * 1_000_000
    lines = make_trace([{"t": 10, "input": tokens / 2, "output": tokens / 2}])
    jobs = parse_trace(lines, config).jobs
    edges = slot_edges(config, jobs[0].arrival_s, jobs[0].arrival_s + 3600.0)
    return Snapshot(
        config=config,
        now_s=jobs[0].arrival_s,
        horizon_s=3600.0,
        balances={"c": 1.0},
        demand=known_demand(jobs, edges),
    )


def test_voucher_price_is_averaged_over_the_demand_scenarios() -> None:
    # Forecast demand of 0.8 yuan leaves the voucher slack (price 0); scaled by 4/3 or 2 it
    # runs short and each unit saves a yuan of cash. Averaged with the forecast itself and
    # the x0.5 and x0.75 scenarios: 2 of 5 solves price it at 1.
    from suanli.optimizer import plan

    snapshot = _credit_snapshot(0.8)
    assert plan(snapshot, demand_scenarios=()).voucher_price["c"] == pytest.approx(0.0, abs=1e-6)
    averaged = plan(snapshot, demand_scenarios=SPREAD)
    assert averaged.voucher_price["c"] == pytest.approx(2 / 5, abs=1e-6)
    assert averaged.cash_yuan == pytest.approx(0.0, abs=1e-9)  # the flows are the forecast's own


def test_averaging_never_lowers_the_forecasts_own_voucher_price() -> None:
    # Forecast demand of 1.5 yuan runs the 1-yuan voucher short (price 1); only the x0.5
    # scenario leaves it slack. The mean of 4/5 would make it cheaper than the forecast's
    # own plan assumes, so the forecast's price stands.
    from suanli.optimizer import plan

    snapshot = _credit_snapshot(1.5)
    assert plan(snapshot, demand_scenarios=()).voucher_price["c"] == pytest.approx(1.0, abs=1e-6)
    assert plan(snapshot, demand_scenarios=SPREAD).voucher_price["c"] == pytest.approx(1.0, abs=1e-6)


def test_scenarios_rescale_limits_and_balances_only_for_the_voucher_prices() -> None:
    # Demand of 3 yuan against a 1-yuan voucher: short in every scenario (price 1), and
    # the plan's cash is still that of the forecast demand: 2 yuan.
    from suanli.optimizer import plan

    averaged = plan(_credit_snapshot(3.0), demand_scenarios=SPREAD)
    assert averaged.voucher_price["c"] == pytest.approx(1.0, abs=1e-6)
    assert averaged.cash_yuan == pytest.approx(2.0, abs=1e-6)


SCENARIOS = Path(__file__).resolve().parents[3] / "benchmarks" / "scenarios"


def test_hindsight_bound_is_found_where_glop_first_ends_imprecise(tmp_path: Path) -> None:
    # This variant's LP ends ABNORMAL (GLOP's IMPRECISE: the cost perturbation its last
    # phase needs is over tolerance); the planner re-solves it without presolve.
    from benchmarks.scenario_variants import write_variant
    from suanli.config import load_config
    from suanli.router.simulate.trace import load_trace

    scenario = write_variant(SCENARIOS / "expiry", "vouchers", tmp_path, seed=23)
    config = load_config(scenario / "config.yaml")
    trace = load_trace(scenario / "trace.jsonl", config)
    bound = hindsight_plan(config, trace.jobs, by_minute=True)
    assert bound.unserved_requests == pytest.approx(0.0, abs=1e-6)
    assert 30.0 < bound.cash_yuan < 40.0
