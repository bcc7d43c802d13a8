"""The scenario generator draws the tariffs too, and their replays are exact with the bound below.

Small days (a few hours, a few hundred requests) of ``benchmarks/scenario_gen.py`` with weekday
peak bands, sessions with cached prefixes and packages with daily caps, replayed under every
policy: every decision passes the independent checker and hindsight's bound stays at or below
each policy's cash.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.scenario_gen import TARIFFS, generate, write_scenario
from suanli.config import load_config
from suanli.router.simulate.cli import decision_lines
from suanli.router.simulate.engine import POLICIES, replay
from suanli.router.simulate.trace import load_trace
from tests.unit.optimizer.checker import check_decisions


def test_forced_tariffs_are_drawn():
    config, _, lines = generate(5, requests=300, shocks=False, hours=6, tariffs=set(TARIFFS))
    offers = [o for r in config["regions"] for o in r["models"]]
    assert any("bands" in o for o in offers)
    assert any("cached_input" in o["price"] for o in offers)
    follow_ups = [row for row in lines if row.get("cached", 0) > 0]
    assert follow_ups and all(row["cached"] < row["input"] for row in follow_ups)
    periods = {v.get("period") for v in config["vouchers"]}
    assert {"month", "day"} <= periods and any("daily_cap" in v for v in config["vouchers"])


def test_tariffs_leave_the_other_draws_alone():
    plain, _, plain_lines = generate(9, requests=200, shocks=False, hours=4, tariffs=set())
    drawn, _, drawn_lines = generate(9, requests=200, shocks=False, hours=4, tariffs={"packages"})
    assert [r["id"] for r in plain["regions"]] == [r["id"] for r in drawn["regions"]]
    assert plain_lines == drawn_lines


@pytest.mark.parametrize("seed", [21, 22])
def test_a_tariff_day_replays_exactly_under_every_policy(tmp_path: Path, seed: int):
    day = write_scenario(tmp_path / "day", seed, requests=300, hours=5, shocks=False, tariffs=set(TARIFFS))
    config = load_config(day / "config.yaml")
    lines = (day / "trace.jsonl").read_text(encoding="utf-8").splitlines()
    trace = load_trace(day / "trace.jsonl", config)
    cash = {}
    bound = None
    for policy in POLICIES:
        result = replay(config, trace, policy)
        check = check_decisions(config, lines, decision_lines(result))
        assert check.violations == [], (policy, check.violations[:3])
        cash[policy] = check.cash_yuan
        bound = result.bound_cash_yuan if result.bound_cash_yuan is not None else bound
    assert bound is not None
    for policy, paid in cash.items():
        assert bound <= paid + 1e-6, (policy, paid, bound)
