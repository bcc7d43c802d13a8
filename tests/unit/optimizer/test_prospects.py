"""Training jobs that may still come: their chances before each voucher expires."""

from __future__ import annotations

from datetime import datetime

import pytest

from suanli.optimizer import Forecast, index_for
from suanli.optimizer.prospects import prospects
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
