"""Training jobs that may still come: their chances before each voucher expires."""

from __future__ import annotations

from datetime import datetime

import pytest

from suanli.optimizer import Forecast, Job, index_for
from suanli.optimizer.prospects import SPREAD, Prospect, prospects
from suanli.optimizer.training import assign_training
from tests.unit.optimizer.tiny import START, make_config, region

T0 = datetime.fromisoformat(START).timestamp()
HOUR = 3600.0
KIND = ("training", "east", "m")


def _voucher(vid: str, expires: str) -> dict:
    return {
        "id": vid,
        "region": "z",
        "kind": "tokens",
        "amount": 800_000,
        "classes": ["training"],
        "valid_from": "2026-11-01T00:00:00+08:00",
        "expires": expires,
    }


def _forecast(end_h: float) -> tuple[Forecast, list]:
    vouchers = [_voucher("soon", "2026-12-01T06:00:00+08:00"), _voucher("late", "2026-12-31T00:00:00+08:00")]
    config = make_config([region("z", "west")], vouchers)
    # undecayed: the chances below are a day's rate of one job, whatever the lead
    forecast = Forecast(config, start_s=T0, end_s=T0 + end_h * HOUR, lead_decay_s=float("inf"))
    forecast.observe(KIND, input_tokens=900_000, output_tokens=0, window_s=86400.0, at_s=T0 + HOUR)
    return forecast, list(index_for(config).vouchers.values())


def test_a_voucher_expiring_soon_is_less_likely_to_meet_a_prospect() -> None:
    forecast, vouchers = _forecast(24)
    ahead = prospects(forecast, vouchers, now_s=T0 + 2 * HOUR)
    first = ahead[0]
    # one a day seen: 22 of 24 hours left, Poisson chances of one more at all and before 06:00
    assert first.chance == pytest.approx(1 - pytest.importorskip("math").exp(-22 / 24))
    assert first.by_voucher["late"] == pytest.approx(first.chance)
    assert first.by_voucher["soon"] < first.chance / 3
    assert first.job.input_tokens == 900_000 and first.job.index < 0
    assert [p.chance for p in ahead] == sorted((p.chance for p in ahead), reverse=True)


def test_no_prospect_comes_after_the_forecast_ends() -> None:
    forecast, vouchers = _forecast(3)
    assert prospects(forecast, vouchers, now_s=T0 + 3 * HOUR) == []


def _spread_case(sizes: tuple[float, ...]) -> dict:
    # g: 40 yuan/M with a 2.2 M-token training voucher; q: 8 yuan/M (what g's voucher does
    # not cover is best paid there). A 900 k job is booked on the voucher, a 1.7 M one
    # arrives, and a third of 1.3 M comes with chance 0.76.
    config = make_config(
        [region("g", "west", price=40.0), region("q", "west", price=8.0)],
        [{**_voucher("g-train", "2026-12-31T00:00:00+08:00"), "region": "g", "amount": 2_200_000}],
    )
    now = T0 + 7 * HOUR

    def job(index: int, tokens: float) -> Job:
        return Job(index, now, now + 86400.0, "m", "training", "east", tokens, 0.0)

    ahead = Prospect(job(-1, 1_300_000), 0.76, {"g-train": 0.76}, now + 17 * HOUR, sizes)
    return assign_training(
        config,
        [job(0, 900_000), job(1, 1_700_000)],
        now_s=now,
        balances={"g-train": 2_200_000},
        voucher_price={},
        prospects=[ahead],
    )


def test_a_prospect_of_spread_size_leaves_the_voucher_to_the_larger_job_in_hand() -> None:
    # Sized at its mean alone, the prospect is worth only a whole 1.3 M left (the 500 k the
    # 1.7 M job would leave is no use to it): that job pays 13.6 yuan at q to keep the
    # voucher whole, 13.6 + 0.76 x 0 against 7.2 + 0.76 x 10.4.
    alone = _spread_case(())
    assert (alone[0].voucher, alone[1].voucher) == ("g-train", None)
    # A quarter to 1.75 times the mean: the 1.3 M left would cover only its two smaller
    # sizes, and the 500 k left the smallest: 7.2 + 0.76 x 9.75 against 13.6 + 0.76 x 7.8.
    spread = _spread_case(tuple(1_300_000 * f for f in SPREAD))
    assert (spread[0].voucher, spread[1].voucher) == (None, "g-train")
    assert spread[0].region == "q"
