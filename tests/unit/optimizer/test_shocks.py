"""Trace events in ``suanli simulate``: outages, voucher cuts and top-ups, price factors.

Each policy learns an event at its ``t``; the rules (checked by the independent checker)
hold whatever it knows: no start at a region while it is down, a price factor multiplies
the list cost of starts inside its window, a voucher delta changes the balance at ``t``.
"""

from __future__ import annotations

import json

import pytest

from suanli.optimizer.hindsight import hindsight_bound, hindsight_plan
from suanli.router.simulate.cli import decision_lines, summary
from suanli.router.simulate.engine import POLICIES, replay
from suanli.router.simulate.shocks import Shocks
from suanli.router.simulate.trace import TraceError, parse_trace
from tests.unit.optimizer.checker import check_decisions
from tests.unit.optimizer.tiny import make_config, make_trace, region


def _run(config, lines, policy):  # noqa: ANN001, ANN202
    trace = parse_trace(lines, config)
    result = replay(config, trace, policy)
    check = check_decisions(config, lines, decision_lines(result))
    assert check.violations == []
    assert abs(check.cash_yuan - sum(d.cash_yuan for d in result.decisions)) < 1e-6
    return result


def _with_events(requests: list[dict], events: list[dict]) -> list[str]:
    lines = make_trace(requests)
    rows = [json.loads(line) for line in lines[1:]] + events
    rows.sort(key=lambda r: (r["t"], "event" not in r))
    return [lines[0]] + [json.dumps(r) for r in rows]


def _two_east() -> list[dict]:
    return [region("cheap", "east", price=1.0), region("dear", "east", price=2.0)]


@pytest.mark.parametrize("policy", POLICIES)
def test_no_request_starts_at_a_region_while_it_is_down(policy: str) -> None:
    config = make_config(_two_east())
    requests = [{"t": 60.0 * n, "input": 1000, "output": 200} for n in range(1, 20)]
    lines = _with_events(requests, [{"t": 300.0, "event": "region_down", "region": "cheap", "until": 600.0}])
    result = _run(config, lines, policy)
    for d in result.decisions:
        assert d.region is not None
        if 300.0 <= d.start < 600.0:
            assert d.region == "dear"
        elif policy != "round_robin":
            assert d.region == "cheap"  # before and after the outage, the cheap one


@pytest.mark.parametrize("policy", ("optimizer", "greedy", "hindsight"))
def test_batch_booked_at_a_region_that_goes_down_is_placed_again(policy: str) -> None:
    # the batch job waits for the night window at "west"; the region goes down over it
    west = region("west", "west", price=1.0, off_peak={"window": "02:00-04:00", "discount": 0.5})
    config = make_config([region("east", "east", price=1.6), west])
    requests = [
        {"t": 10.0, "class": "batch", "input": 50000, "output": 0, "deadline_s": 6 * 3600},
        {"t": 3600.0, "input": 100, "output": 10},
    ]
    events = [{"t": 1800.0, "event": "region_down", "region": "west", "until": 5 * 3600.0}]
    result = _run(config, _with_events(requests, events), policy)
    batch = result.decisions[0]
    assert batch.region is not None
    assert not (batch.region == "west" and 1800.0 <= batch.start < 5 * 3600.0)


@pytest.mark.parametrize("policy", POLICIES)
def test_price_factor_multiplies_the_cost_in_its_window(policy: str) -> None:
    config = make_config([region("only", "east", price=1.0)])
    requests = [{"t": t, "input": 500000, "output": 500000} for t in (100.0, 400.0, 800.0)]
    events = [{"t": 300.0, "event": "price_factor", "region": "only", "factor": 3.0, "until": 600.0}]
    result = _run(config, _with_events(requests, events), policy)
    assert [round(d.cash_yuan, 9) for d in result.decisions] == [1.0, 3.0, 1.0]


def test_a_price_spike_sends_traffic_elsewhere_while_it_lasts() -> None:
    config = make_config(_two_east())
    requests = [{"t": 60.0 * n, "input": 1000, "output": 200} for n in range(1, 20)]
    events = [{"t": 300.0, "event": "price_factor", "region": "cheap", "factor": 3.0, "until": 600.0}]
    for policy in ("optimizer", "greedy"):
        result = _run(config, _with_events(requests, events), policy)
        for d in result.decisions:
            assert d.region == ("dear" if 300.0 <= d.start < 600.0 else "cheap")


@pytest.mark.parametrize("policy", POLICIES)
def test_voucher_cut_and_top_up_change_the_balance_at_their_time(policy: str) -> None:
    voucher = {"id": "v", "region": "only", "kind": "credit", "amount": 1.0}
    config = make_config([region("only", "east", price=1.0)], [voucher])
    # each request lists 0.4 yuan
    requests = [{"t": 100.0 * n, "input": 200000, "output": 200000} for n in range(1, 9)]
    events = [
        {"t": 150.0, "event": "voucher_delta", "voucher": "v", "amount": -0.9},  # 0.6 left -> 0
        {"t": 450.0, "event": "voucher_delta", "voucher": "v", "amount": 0.5},
    ]
    result = _run(config, _with_events(requests, events), policy)
    report = summary(config, result, requests=8)
    # 0.4 before the cut, 0.5 after the top-up
    assert report["voucher_spent"]["v"] == pytest.approx(0.4 + 0.5)
    assert report["voucher_unused"]["v"] == 0
    assert sum(d.cash_yuan for d in result.decisions) == pytest.approx(8 * 0.4 - 0.9)


def test_hindsight_bound_stays_below_every_policy_with_top_ups_and_price_cuts() -> None:
    voucher = {"id": "v", "region": "cheap", "kind": "tokens", "amount": 2000}
    config = make_config(_two_east(), [voucher])
    requests = [{"t": 60.0 * n, "input": 1000, "output": 200} for n in range(1, 30)]
    events = [
        {"t": 400.0, "event": "voucher_delta", "voucher": "v", "amount": 5000},
        {"t": 700.0, "event": "price_factor", "region": "dear", "factor": 0.25, "until": 1200.0},
        {"t": 900.0, "event": "region_down", "region": "cheap", "until": 1300.0},
    ]
    lines = _with_events(requests, events)
    bound = _run(config, lines, "hindsight").bound_cash_yuan
    assert bound is not None
    for policy in POLICIES:
        cash = sum(d.cash_yuan for d in _run(config, lines, policy).decisions)
        assert bound <= cash + 1e-9


def test_hindsight_bound_counts_outages_and_spikes_and_stays_below_every_policy() -> None:
    # cheap is down for ten minutes and dear spikes x3 over part of it: the interactive
    # requests of those minutes cannot escape, the batch job that arrives inside can wait
    config = make_config(_two_east())
    requests = [{"t": 60.0 * n + 5.0, "input": 100000, "output": 20000} for n in range(30)]
    requests.append({"t": 400.0, "class": "batch", "input": 300000, "output": 0, "deadline_s": 3600})
    events = [
        {"t": 300.0, "event": "region_down", "region": "cheap", "until": 900.0},
        {"t": 600.0, "event": "price_factor", "region": "dear", "factor": 3.0, "until": 1200.0},
    ]
    lines = _with_events(sorted(requests, key=lambda r: r["t"]), events)
    trace = parse_trace(lines, config)
    relaxed = Shocks(config, trace.events).relaxed()
    raw = hindsight_plan(relaxed, trace.jobs, by_minute=True)
    blind = hindsight_bound(relaxed, trace.jobs, raw, by_minute=True)  # no windows: the events unseen
    bound = _run(config, lines, "hindsight").bound_cash_yuan
    assert bound is not None
    # 5 requests at dear (x2) and 5 at dear x3 (x6) instead of cheap: 0.12 yuan each at cheap
    assert bound == pytest.approx(blind + 0.12 * (5 * 1 + 5 * 5), abs=1e-6)
    for policy in ("greedy", "optimizer", "hindsight"):
        cash = sum(d.cash_yuan for d in _run(config, lines, policy).decisions)
        assert bound <= cash + 1e-9


_CUT = {"t": 300.0, "event": "voucher_delta", "voucher": "v", "amount": -600000}
_BIG_CUT = {"t": 300.0, "event": "voucher_delta", "voucher": "v", "amount": -1000000}
_TOP_UP = {"t": 300.0, "event": "voucher_delta", "voucher": "v", "amount": 240000}


@pytest.mark.parametrize(
    ("events", "blind_yuan", "bound_yuan"),
    [
        # the 1.2 M tokens voucher pays for the five requests before the cut, which takes the
        # 0.6 M left: policies pay for the other 25 (3 yuan); blind to the cut, the bound let
        # the voucher pay for ten (2.4); the cut's row lifts it to 2.7 (requests before the
        # cut draw at half the price, the row's right-hand side is 0.6 M)
        ([_CUT], 2.4, 2.7),
        # a top-up at the cut's own time counts as after it (weight 1/6, right-hand side
        # 0.44 M): policies pay 2.76
        ([_BIG_CUT, _TOP_UP], 3.6 - 1.44, 0.1 + 3.0 - 0.44),
    ],
)
def test_hindsight_bound_counts_a_voucher_cut_and_stays_below_every_policy(
    events: list[dict], blind_yuan: float, bound_yuan: float
) -> None:
    voucher = {"id": "v", "region": "cheap", "kind": "tokens", "amount": 1200000}
    config = make_config(_two_east(), [voucher])
    requests = [{"t": 60.0 * n + 5.0, "input": 100000, "output": 20000} for n in range(30)]
    lines = _with_events(requests, events)
    trace = parse_trace(lines, config)
    relaxed = Shocks(config, trace.events).relaxed()
    raw = hindsight_plan(relaxed, trace.jobs, by_minute=True)
    blind = hindsight_bound(relaxed, trace.jobs, raw, by_minute=True)
    assert blind == pytest.approx(blind_yuan, abs=1e-6)
    bound = _run(config, lines, "hindsight").bound_cash_yuan
    assert bound == pytest.approx(bound_yuan, abs=1e-6)
    for policy in POLICIES:
        cash = sum(d.cash_yuan for d in _run(config, lines, policy).decisions)
        assert bound <= cash + 1e-9


@pytest.mark.parametrize(
    "event",
    [
        {"t": 1.0, "event": "meteor", "region": "cheap"},
        {"t": 1.0, "event": "region_down", "region": "atlantis", "until": 5.0},
        {"t": 1.0, "event": "voucher_delta", "voucher": "nope", "amount": 1},
        {"t": 9.0, "event": "region_down", "region": "cheap", "until": 5.0},
        {"t": 1.0, "event": "price_factor", "region": "cheap", "factor": -1},
    ],
)
def test_a_bad_event_line_is_a_trace_error_naming_the_line(event: dict) -> None:
    config = make_config(_two_east())
    lines = _with_events([{"t": 0.5, "input": 1, "output": 1}], [event])
    with pytest.raises(TraceError, match="line 3"):
        parse_trace(lines, config)


def test_a_later_training_job_that_saves_more_takes_a_booked_jobs_voucher() -> None:
    # A (m1, 1 yuan/M at x) waits for x's night window; B (m2, 20 yuan/M at x, 15 at y)
    # arrives after it: the voucher's million tokens are worth 20 yuan to B, 1 to A
    def ft(rid: str, prices: dict[str, float]) -> dict:
        out = region(rid, "west", price=1.0)
        out["models"] = [
            {"name": m, "price": {"input": p, "output": p, "train": p},
             "off_peak": {"window": "00:30-08:30", "discount": 0.5}}
            for m, p in prices.items()
        ]  # fmt: skip
        return out

    voucher = {"id": "v", "region": "x", "kind": "tokens", "amount": 1_000_000, "classes": ["training"]}
    voucher["valid_from"] = "2026-12-01T00:30:00+08:00"  # A is booked for later, holding it
    config = make_config([ft("x", {"m1": 1.0, "m2": 20.0}), ft("y", {"m1": 2.0, "m2": 15.0})], [voucher])
    requests = [
        {"t": 10.0, "model": "m1", "class": "training", "input": 1_000_000, "output": 0},
        {"t": 20.0, "model": "m2", "class": "training", "input": 1_000_000, "output": 0},
    ]
    result = _run(config, _with_events(requests, []), "optimizer")
    a, b = result.decisions
    assert b.voucher == "v" and b.cash_yuan == 0.0
    assert a.voucher is None and a.cash_yuan <= 1.0
