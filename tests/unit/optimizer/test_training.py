"""Hindsight's exact search over a few training jobs."""

from __future__ import annotations

from suanli.optimizer.training import place_training
from suanli.router.simulate.cli import decision_lines
from suanli.router.simulate.engine import replay
from suanli.router.simulate.trace import parse_trace
from tests.unit.optimizer.checker import check_decisions
from tests.unit.optimizer.tiny import make_config, make_trace, region

_VOUCHER = {
    "id": "z-train",
    "region": "z",
    "kind": "tokens",
    "amount": 800_000,
    "classes": ["training"],
    "valid_from": "2026-11-01T00:00:00+08:00",
    "expires": "2026-12-31T00:00:00+08:00",
}


def _case():  # noqa: ANN202
    # z: 10 yuan/M with an 800k-token voucher; q: 9 yuan/M, half price 00:30-08:30.
    # The first job (900k) takes the voucher if decided alone (1.0 + 3.15 yuan); the
    # cheaper whole is the 700k job on the voucher and the 900k one off-peak (4.05 + 0).
    config = make_config(
        [
            region("z", "west", price=10.0),
            region("q", "west", price=9.0, off_peak={"window": "00:30-08:30", "discount": 0.5}),
        ],
        [_VOUCHER],
    )
    lines = make_trace(
        [
            {"t": 36000, "class": "training", "input": 900_000, "output": 0, "deadline_s": 172800},
            {"t": 36060, "class": "training", "input": 700_000, "output": 0, "deadline_s": 172800},
        ]
    )
    return config, lines


def test_exact_search_finds_the_cheapest_combination() -> None:
    config, lines = _case()
    trace = parse_trace(lines, config)
    placed = place_training(config, trace.jobs, balances={"z-train": 800_000}, voucher_price={})
    assert placed is not None
    first, second = (placed[j.index] for j in trace.jobs)
    assert (first.region, first.voucher) == ("q", None)
    assert (second.region, second.voucher) == ("z", "z-train")
    assert first.start_s >= trace.jobs[0].arrival_s


def test_hindsight_replay_with_training_booked_ahead_keeps_the_rules() -> None:
    config, lines = _case()
    result = replay(config, parse_trace(lines, config), "hindsight")
    assert check_decisions(config, lines, decision_lines(result)).violations == []
    assert abs(sum(d.cash_yuan for d in result.decisions) - 4.05) < 1e-9


def test_many_jobs_are_left_to_the_scheduler() -> None:
    config, _ = _case()
    lines = make_trace(
        [{"t": 60 * n, "class": "training", "input": 1000, "output": 0, "deadline_s": 3600} for n in range(9)]
    )
    trace = parse_trace(lines, config)
    assert place_training(config, trace.jobs, balances={}, voucher_price={}) is None


def test_hindsight_spends_a_voucher_training_shares_with_batch() -> None:
    # A voucher batch may use too, and no batch comes: the plan prices it at what the
    # training jobs themselves save with it, which made each job indifferent and the
    # search paid cash for both (14.4 yuan) while 800k tokens expired unspent. Its price
    # for the search is what the other jobs would pay for it: nothing here.
    shared = {**_VOUCHER, "id": "z-shared", "classes": ["batch", "training"]}
    config = make_config([region("z", "west", price=10.0), region("q", "west", price=9.0)], [shared])
    lines = make_trace(
        [
            {"t": 36000, "class": "training", "input": 900_000, "output": 0, "deadline_s": 3600},
            {"t": 36060, "class": "training", "input": 700_000, "output": 0, "deadline_s": 3600},
        ]
    )
    trace = parse_trace(lines, config)
    result = replay(config, trace, "hindsight")
    assert check_decisions(config, lines, decision_lines(result)).violations == []
    first, second = result.decisions
    # 900k on the voucher (100k cash at z), 700k in cash at q: the bound's own figure
    assert (first.region, first.voucher) == ("z", "z-shared")
    assert abs(sum(d.cash_yuan for d in result.decisions) - 7.3) < 1e-6
    assert result.bound_cash_yuan is not None and abs(result.bound_cash_yuan - 7.3) < 1e-6
    greedy = replay(config, trace, "greedy")
    assert sum(d.cash_yuan for d in result.decisions) <= sum(d.cash_yuan for d in greedy.decisions) + 1e-9
