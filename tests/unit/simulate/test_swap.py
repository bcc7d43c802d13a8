"""Training jobs placed together with those booked but not started (``router.simulate.swap``)."""

from __future__ import annotations

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


def _replayed(config, rows: list[dict]):  # noqa: ANN001, ANN202
    # the optimizer's replay of ``rows``, and the checker's reading of its decisions
    lines = make_trace(rows)
    result = replay(config, parse_trace(lines, config), "optimizer")
    return result, check_decisions(config, lines, decision_lines(result))


def test_a_held_voucher_goes_to_the_later_job_that_saves_more() -> None:
    # z: 10 yuan/M with a 1M-token training voucher; q: 9 yuan/M, half price 00:30-08:30.
    # Alone, the 600k job takes the voucher. Started at once, it left 400k to the 1M job
    # behind it, which paid 4.5 yuan off-peak at q. Waiting to start costs it nothing, so
    # when the 1M job arrives the two are placed together: the 1M job on the voucher, the
    # 600k one off-peak at q (2.7 yuan, the cheapest pair).
    voucher = {**_VOUCHER, "amount": 1_000_000}
    config = make_config(
        [
            region("z", "west", price=10.0),
            region("q", "west", price=9.0, off_peak={"window": "00:30-08:30", "discount": 0.5}),
        ],
        [voucher],
    )
    result, check = _replayed(
        config,
        [
            {"t": 3600, "class": "training", "input": 600_000, "output": 0, "deadline_s": 86400},
            {"t": 5400, "class": "training", "input": 1_000_000, "output": 0, "deadline_s": 86400},
        ],
    )
    assert check.violations == [] and check.deadline_misses == 0
    first, second = result.decisions
    assert (first.region, first.voucher) == ("q", None)
    assert (second.region, second.voucher) == ("z", "z-train")
    assert abs(check.cash_yuan - 2.7) < 1e-9


def test_a_job_on_a_voucher_starts_no_later_than_the_voucher_allows() -> None:
    # Waiting keeps the voucher open to later jobs, but only while it is valid and the
    # price holds: the job still starts on the voucher, before it expires.
    expiring = {**_VOUCHER, "expires": "2026-12-01T12:00:00+08:00"}
    config = make_config([region("z", "west", price=10.0)], [expiring])
    job = {"t": 36000, "class": "training", "input": 500_000, "output": 0, "deadline_s": 172800}
    result, check = _replayed(config, [job])
    assert check.violations == []
    (only,) = result.decisions
    assert only.voucher == "z-train" and only.cash_yuan == 0.0
    assert 36000 <= only.start < 43200


def test_a_daily_training_package_pays_a_later_job_from_the_next_day() -> None:
    # A 500k-token package renewed each local day: two 500k jobs the same day, each free
    # to start within two days, both ride it (the second on tomorrow's instance) and pay
    # nothing; the search sees each day's instance as a voucher of its own.
    package = {**_VOUCHER, "amount": 500_000, "period": "day"}
    config = make_config([region("z", "west", price=10.0)], [package])
    result, check = _replayed(
        config,
        [
            {"t": 36000, "class": "training", "input": 500_000, "output": 0, "deadline_s": 172800},
            {"t": 39600, "class": "training", "input": 500_000, "output": 0, "deadline_s": 172800},
        ],
    )
    assert check.violations == [] and check.deadline_misses == 0
    assert [d.voucher for d in result.decisions] == ["z-train", "z-train"]
    assert check.cash_yuan == 0.0
