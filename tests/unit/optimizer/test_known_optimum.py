"""Tiny scenarios whose optimum is known by hand: the planner and chooser must find it."""

from __future__ import annotations

from datetime import datetime

from suanli.optimizer import Ask, State, hindsight_plan, rank
from suanli.router.simulate.engine import replay
from suanli.router.simulate.trace import parse_trace
from tests.unit.optimizer.checker import check_decisions
from tests.unit.optimizer.tiny import START, make_config, make_trace, region


def _run(config, lines, policy):  # noqa: ANN001, ANN202
    trace = parse_trace(lines, config)
    result = replay(config, trace, policy)
    decisions = [
        f'{{"i": {d.i}, "region": {_js(d.region)}, "start": {_js(d.start)}, '
        f'"voucher": {_js(d.voucher)}, "cash_yuan": {d.cash_yuan!r}}}'
        for d in result.decisions
    ]
    check = check_decisions(config, lines, decisions)
    assert check.violations == []
    return result


def _js(value):  # noqa: ANN001, ANN202
    if value is None:
        return "null"
    return f'"{value}"' if isinstance(value, str) else repr(value)


def test_expiring_voucher_is_spent_first() -> None:
    vouchers = [
        {
            "id": "late",
            "region": "a",
            "kind": "tokens",
            "amount": 1000,
            "expires": "2026-12-31T00:00:00+08:00",
        },
        {
            "id": "soon",
            "region": "a",
            "kind": "tokens",
            "amount": 1000,
            "expires": "2026-12-01T01:00:00+08:00",
        },
    ]
    config = make_config([region("a", "east")], vouchers)
    lines = make_trace([{"t": 10, "input": 500, "output": 500}, {"t": 7200, "input": 500, "output": 500}])
    trace = parse_trace(lines, config)
    plan = hindsight_plan(config, trace.jobs)
    assert plan.voucher_price["late"] > plan.voucher_price.get("soon", 0.0)
    ask = Ask("m", "interactive", "east", 500, 500)
    first = rank(
        config, ask, State(balances={"late": 1000, "soon": 1000}), datetime.fromisoformat(START), plan=plan
    )
    assert first[0].voucher is not None and first[0].voucher.id == "soon"
    result = _run(config, lines, "hindsight")
    assert [d.voucher for d in result.decisions] == ["soon", "late"]
    assert sum(d.cash_yuan for d in result.decisions) == 0.0
    greedy = _run(config, lines, "greedy")
    assert sum(d.cash_yuan for d in greedy.decisions) > 0.0


def test_east_capacity_is_kept_for_interactive_while_batch_goes_west() -> None:
    regions = [region("east1", "east", price=1.0, limits={"tpm": 3000}), region("west1", "west", price=2.0)]
    config = make_config(regions)
    lines = make_trace(
        [
            {"t": 1, "class": "batch", "input": 1000, "output": 1000, "deadline_s": 30},
            {"t": 2, "input": 1000, "output": 1000},
        ]
    )
    greedy = _run(config, lines, "greedy")
    assert greedy.rejected == 1
    best = _run(config, lines, "hindsight")
    assert best.rejected == 0
    assert [d.region for d in best.decisions] == ["west1", "east1"]


def test_prior_keeps_east_free_for_interactive_online() -> None:
    regions = [region("east1", "east", price=1.0, limits={"tpm": 3000}), region("west1", "west", price=2.0)]
    prior = [
        {
            "class": "interactive",
            "model": "m",
            "requests_per_hour": 60,
            "input_tokens": 1000,
            "output_tokens": 1000,
        }
    ]
    config = make_config(regions, demand=prior)
    lines = make_trace(
        [
            {"t": 1, "class": "batch", "input": 1000, "output": 1000, "deadline_s": 30},
            {"t": 2, "input": 1000, "output": 1000},
        ]
    )
    result = _run(config, lines, "optimizer")
    assert result.rejected == 0
    assert [d.region for d in result.decisions] == ["west1", "east1"]


def test_batch_waits_for_the_off_peak_window_when_its_deadline_allows() -> None:
    cheap_hours = {"window": "02:00-06:00", "discount": 0.5}
    config = make_config([region("w", "west", price=10.0, off_peak=cheap_hours)])
    lines = make_trace(
        [
            {"t": 60, "class": "batch", "input": 1000, "output": 1000, "deadline_s": 8 * 3600},
            {"t": 120, "class": "batch", "input": 1000, "output": 1000, "deadline_s": 600},
        ]
    )
    for policy in ("optimizer", "hindsight"):
        result = _run(config, lines, policy)
        waited, urgent = result.decisions
        assert 2 * 3600 <= waited.start < 6 * 3600
        assert waited.cash_yuan == 0.01  # 2000 tokens x 10 yuan/M x 0.5
        assert urgent.start <= 720 and urgent.cash_yuan == 0.02
    greedy = _run(config, lines, "greedy")
    assert greedy.decisions[0].start == 60


def test_lower_token_price_with_higher_token_ratio_loses() -> None:
    # a: 1.0 yuan/M but 1.5 tokens per reference token (1.5 per reference M); b: 1.2 yuan/M at ratio 1.
    config = make_config([region("a", "east", price=1.0, ratio=1.5), region("b", "east", price=1.2)])
    ask = Ask("m", "interactive", "east", 1000, 1000)
    options = rank(config, ask, State(balances={}), datetime.fromisoformat(START))
    assert [o.region.id for o in options] == ["b", "a"]
    assert options[0].charge.cash_yuan < options[1].charge.cash_yuan
    lines = make_trace(
        [{"t": 5, "input": 1000, "output": 1000}, {"t": 6, "class": "batch", "input": 10, "output": 0}]
    )
    for policy in ("optimizer", "greedy", "hindsight"):
        assert _run(config, lines, policy).decisions[0].region == "b"
