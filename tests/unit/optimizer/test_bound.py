"""The hindsight bound is a lower bound on what checker-verified decisions pay."""

from __future__ import annotations

import json

import pytest

from suanli.config import Config
from suanli.optimizer import hindsight_bound, hindsight_plan
from suanli.router.simulate.cli import decision_lines
from suanli.router.simulate.engine import replay
from suanli.router.simulate.trace import parse_trace
from tests.unit.optimizer.checker import check_decisions
from tests.unit.optimizer.tiny import make_config, make_trace, region


def _chatty_and_terse():  # noqa: ANN202
    # Output tokens cost 4x input ones; a tokens voucher of 100 tokens pays for one of
    # two requests in the same output-share band (0.39 and 0.30 of 100 tokens each).
    east = region("a", "east")
    east["models"][0]["price"] = {"input": 1.0, "output": 4.0, "train": 1.0}
    config = make_config([east], [{"id": "v", "region": "a", "kind": "tokens", "amount": 100}])
    lines = make_trace([{"t": 10, "input": 61, "output": 39}, {"t": 20, "input": 70, "output": 30}])
    return config, lines


def test_bound_is_below_decisions_that_spend_a_tokens_voucher_on_the_chatty_request() -> None:
    config, lines = _chatty_and_terse()
    decisions = [
        json.dumps({"i": 0, "region": "a", "start": 10, "voucher": "v", "cash_yuan": 0.0}),
        json.dumps({"i": 1, "region": "a", "start": 20, "voucher": None, "cash_yuan": 190e-6}),
    ]
    check = check_decisions(config, lines, decisions)
    assert check.violations == []
    assert check.cash_yuan == pytest.approx(190e-6, abs=1e-12)
    trace = parse_trace(lines, config)
    # The LP of the averaged group prices every voucher token at the group's mean yuan
    # per token: 203.5e-6, more than these decisions pay. The bound must not be.
    found = hindsight_plan(config, trace.jobs, by_minute=True)
    assert found.cash_yuan > check.cash_yuan
    bound = hindsight_bound(config, trace.jobs, found, by_minute=True)
    assert bound <= check.cash_yuan + 1e-12
    assert bound == pytest.approx(190e-6, abs=1e-9)  # and tight: the LP's price splits the two
    result = replay(config, trace, "hindsight")
    assert result.bound_cash_yuan is not None
    assert result.bound_cash_yuan <= check.cash_yuan + 1e-12
    assert sum(d.cash_yuan for d in result.decisions) >= result.bound_cash_yuan - 1e-12


def test_bound_is_the_lp_value_when_a_group_s_requests_are_alike() -> None:
    config, _ = _chatty_and_terse()
    lines = make_trace([{"t": 10, "input": 60, "output": 40}, {"t": 20, "input": 60, "output": 40}])
    trace = parse_trace(lines, config)
    found = hindsight_plan(config, trace.jobs, by_minute=True)
    bound = hindsight_bound(config, trace.jobs, found, by_minute=True)
    assert bound == pytest.approx(found.cash_yuan, abs=1e-9)
    assert bound == pytest.approx(220e-6, abs=1e-9)


def test_bound_does_not_split_a_training_job_across_a_training_voucher_and_another_region() -> None:
    # One job of 1 M tokens; a 0.5 M training voucher at a (10 yuan / M), b at 6 yuan / M.
    # The LP sends half the job to the voucher and half to b (3 yuan); a job is one start
    # in one region with at most one voucher: 5 yuan at a (half covered), or 6 at b.
    config = make_config(
        [region("a", "east", price=10.0), region("b", "east", price=6.0)],
        [{"id": "t", "region": "a", "kind": "tokens", "amount": 500_000, "classes": ["training"]}],
    )
    lines = make_trace([{"t": 60, "class": "training", "input": 1_000_000, "output": 0, "deadline_s": 3600}])
    trace = parse_trace(lines, config)
    found = hindsight_plan(config, trace.jobs, by_minute=True)
    assert found.cash_yuan == pytest.approx(3.0, abs=1e-6)
    bound = hindsight_bound(config, trace.jobs, found, by_minute=True)
    assert bound == pytest.approx(5.0, abs=1e-6)
    result = replay(config, trace, "hindsight")
    check = check_decisions(config, lines, decision_lines(result))
    assert check.violations == []
    assert check.cash_yuan == pytest.approx(5.0, abs=1e-6)


@pytest.mark.parametrize("seed", range(12))
def test_bound_with_training_vouchers_stays_below_checked_decisions(seed: int) -> None:
    # Random small days of training jobs beside training-only and shared vouchers (tokens
    # and credit), off-peak windows and a validity opening late: the bound, which keeps the
    # training-only vouchers' rows, is below what hindsight's decisions pay (checked), and
    # below greedy's.
    import random

    rng = random.Random(seed)
    regions = [
        region(
            "a",
            "east",
            price=rng.choice([8.0, 10.0, 12.0]),
            off_peak={"window": "00:00-06:00", "discount": 0.5},
        ),
        region("b", "east", price=rng.choice([6.0, 9.0, 11.0]), ratio=rng.choice([1.0, 1.2])),
    ]
    vouchers = []
    for n in range(rng.randint(1, 3)):
        voucher = {
            "id": f"t{n}",
            "region": rng.choice("ab"),
            "kind": "tokens",
            "amount": rng.randint(2, 12) * 100_000,
        }
        voucher["classes"] = ["training"]
        if rng.random() < 0.3:
            voucher["valid_from"] = "2026-12-01T03:00:00+08:00"
        vouchers.append(voucher)
    if rng.random() < 0.5:
        vouchers.append(
            {"id": "shared", "region": rng.choice("ab"), "kind": "credit", "amount": rng.choice([1.0, 4.0])}
        )
    config = make_config(regions, vouchers)
    jobs = [
        {"t": rng.randint(1, 300) * 60, "class": "training", "input": rng.randint(2, 9) * 100_000,
         "output": 0, "deadline_s": rng.choice([3600, 14400, 43200])}
        for _ in range(rng.randint(1, 4))
    ]  # fmt: skip
    jobs += [{"t": rng.randint(1, 300) * 60, "input": 2000, "output": 500} for _ in range(5)]
    lines = make_trace(sorted(jobs, key=lambda r: r["t"]))
    trace = parse_trace(lines, config)
    found = hindsight_plan(config, trace.jobs, by_minute=True)
    bound = hindsight_bound(config, trace.jobs, found, by_minute=True)
    for policy in ("hindsight", "greedy"):
        check = check_decisions(config, lines, decision_lines(replay(config, trace, policy)))
        assert check.violations == []
        assert bound <= check.cash_yuan + 1e-9


def _lp_bound_and_paid(config: Config, lines: list[str], policy: str) -> tuple[float, float, float]:
    """Hindsight's LP cash, its bound, and what ``policy`` pays replayed (no rule broken)."""
    trace = parse_trace(lines, config)
    found = hindsight_plan(config, trace.jobs, by_minute=True)
    bound = hindsight_bound(config, trace.jobs, found, by_minute=True)
    check = check_decisions(config, lines, decision_lines(replay(config, trace, policy)))
    assert check.violations == []
    return found.cash_yuan, bound, check.cash_yuan


def test_bound_starts_each_job_in_its_own_window_not_its_group_s() -> None:
    # Two 1 M-token jobs arrive in the same slot; only the one with a 6-hour deadline can
    # wait for the off-peak half price from 04:00. The group's window reaches it for both:
    # 10 yuan at the group's columns, but every policy pays 10 + 5.
    night = {"window": "04:00-06:00", "discount": 0.5}
    config = make_config([region("a", "east", price=10.0, off_peak=night)])
    lines = make_trace(
        [
            {"t": 60, "class": "training", "input": 1_000_000, "output": 0, "deadline_s": 3600},
            {"t": 120, "class": "training", "input": 1_000_000, "output": 0, "deadline_s": 21600},
        ]
    )
    lp_cash, bound, paid = _lp_bound_and_paid(config, lines, "hindsight")
    assert lp_cash == pytest.approx(10.0, abs=1e-6)
    assert bound == pytest.approx(15.0, abs=1e-6)
    assert paid == pytest.approx(15.0, abs=1e-6)


def test_bound_prices_alike_vouchers_for_one_request_each() -> None:
    # Four alike credits of 1 yuan, two jobs of 10 yuan hours apart and two chat requests of
    # 0.01: a job takes one credit, the chats the others (18 yuan in all). The LP splits each
    # job over two credits (16.02 yuan) and prices them at 1 yuan per yuan, so at its prices the
    # bound is 16; at a price of 0 it is 18. (Chat keeps the credits off ``bound_training``.)
    credits = [{"id": f"c{n}", "region": "a", "kind": "credit", "amount": 1.0} for n in range(4)]
    config = make_config([region("a", "east", price=10.0)], credits)
    lines = make_trace(
        [
            {"t": 60, "class": "training", "input": 1_000_000, "output": 0, "deadline_s": 3600},
            {"t": 600, "input": 500, "output": 500},
            {"t": 700, "input": 500, "output": 500},
            {"t": 36000, "class": "training", "input": 1_000_000, "output": 0, "deadline_s": 3600},
        ]
    )
    lp_cash, bound, paid = _lp_bound_and_paid(config, lines, "greedy")
    assert lp_cash == pytest.approx(16.02, abs=1e-6)
    assert bound == pytest.approx(18.0, abs=1e-6)
    assert paid == pytest.approx(18.0, abs=1e-6)
