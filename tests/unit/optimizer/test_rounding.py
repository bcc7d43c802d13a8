"""Hindsight's per-minute rounding: whole requests, each minute's limits, least cash."""

from __future__ import annotations

from suanli.optimizer import CapacityBook
from suanli.optimizer.rounding import round_interactive
from suanli.router.simulate.cli import decision_lines
from suanli.router.simulate.engine import replay
from suanli.router.simulate.trace import parse_trace
from tests.unit.optimizer.checker import check_decisions
from tests.unit.optimizer.tiny import make_config, make_trace, region


def _config():  # noqa: ANN202
    # "cheap" holds 1000 tokens a minute; "dear" costs twice as much and has no limit
    cheap = region("cheap", "east", price=1.0, limits={"tpm": 1000})
    return make_config([cheap, region("dear", "east", price=2.0)])


def _lines() -> list[str]:
    # Arrival order: the 600-token request first. Taking requests as they come puts it on
    # "cheap" and both 500-token ones on "dear"; the two 500s fill "cheap" exactly.
    return make_trace(
        [
            {"t": 1, "input": 300, "output": 300},
            {"t": 2, "input": 250, "output": 250},
            {"t": 3, "input": 250, "output": 250},
        ]
    )


def test_a_minute_is_packed_better_than_in_arrival_order() -> None:
    config = _config()
    trace = parse_trace(_lines(), config)
    book = CapacityBook(config)
    placed = round_interactive(config, trace.jobs, used=book.used, voucher_price={}, balances={})
    assert [placed[j.index].region for j in trace.jobs] == ["dear", "cheap", "cheap"]


def test_hindsight_replay_rounds_per_minute_and_keeps_the_rules() -> None:
    config = _config()
    lines = _lines()
    result = replay(config, parse_trace(lines, config), "hindsight")
    assert [d.region for d in result.decisions] == ["dear", "cheap", "cheap"]
    cash = sum(d.cash_yuan for d in result.decisions)
    assert abs(cash - (600 * 2.0 + 1000 * 1.0) / 1e6) < 1e-12  # naive rounding: 600 + 2000
    greedy = replay(config, parse_trace(lines, config), "greedy")
    assert sum(d.cash_yuan for d in greedy.decisions) > cash
    assert check_decisions(config, lines, decision_lines(result)).violations == []


def test_requests_with_no_room_anywhere_are_rejected() -> None:
    config = make_config([region("only", "east", limits={"tpm": 1000})])
    trace = parse_trace(make_trace([{"t": 1, "input": 400, "output": 400}] * 2), config)
    book = CapacityBook(config)
    placed = round_interactive(config, trace.jobs, used=book.used, voucher_price={}, balances={})
    assert sorted(p is None for p in placed.values()) == [False, True]
