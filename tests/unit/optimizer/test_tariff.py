"""The time-dependent payment rules of DESIGN.md: bands, the prompt cache, package periods, daily caps."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from suanli.config import Offer, Voucher
from suanli.optimizer import (
    cache_hit,
    capped_balance,
    charge,
    charge_reported,
    list_cost_yuan,
    local_day,
    package_window,
    period_edges,
    period_start,
    price_factor,
    voucher_pays,
)

TZ = ZoneInfo("Asia/Shanghai")


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=TZ)


def _offer(**extra: object) -> Offer:
    data: dict = {"name": "m", "price": {"input": 2.0, "output": 8.0}}
    data.update(extra)
    return Offer.model_validate(data)


PEAKS = _offer(bands=[
    {"days": "weekdays", "window": "09:00-12:00", "factor": 2.0},
    {"days": "weekdays", "window": "14:00-18:00", "factor": 2.0},
    {"days": "all", "window": "00:00-24:00", "factor": 0.9},
])


@pytest.mark.parametrize(("when", "factor"), [
    ("2026-12-07T09:00:00", 2.0),  # Monday, the band's first minute
    ("2026-12-07T11:59:59", 2.0),
    ("2026-12-07T12:00:00", 0.9),  # the end is outside: the next band matches
    ("2026-12-07T14:30:00", 2.0),
    ("2026-12-05T10:00:00", 0.9),  # Saturday: weekday peaks do not apply
    ("2026-12-06T15:00:00", 0.9),  # Sunday
])
def test_first_matching_band_applies(when: str, factor: float):
    assert price_factor(PEAKS, _at(when), TZ) == factor


def test_no_band_matching_gives_factor_one():
    offer = _offer(bands=[{"days": ["sat"], "window": "10:00-11:00", "factor": 3.0}])
    assert price_factor(offer, _at("2026-12-05T10:30:00"), TZ) == 3.0
    assert price_factor(offer, _at("2026-12-05T11:00:00"), TZ) == 1.0
    assert price_factor(offer, _at("2026-12-07T10:30:00"), TZ) == 1.0


def test_band_crossing_midnight_belongs_to_the_day_it_opens():
    # Friday night's window runs into Saturday morning; Saturday's own night is not listed.
    offer = _offer(bands=[{"days": ["fri"], "window": "22:00-06:00", "factor": 0.5}])
    assert price_factor(offer, _at("2026-12-04T21:59:00"), TZ) == 1.0
    assert price_factor(offer, _at("2026-12-04T22:00:00"), TZ) == 0.5  # Friday
    assert price_factor(offer, _at("2026-12-05T05:59:00"), TZ) == 0.5  # Saturday, opened Friday
    assert price_factor(offer, _at("2026-12-05T06:00:00"), TZ) == 1.0
    assert price_factor(offer, _at("2026-12-05T23:00:00"), TZ) == 1.0  # Saturday's opening: not a band day
    assert price_factor(offer, _at("2026-12-04T03:00:00"), TZ) == 1.0  # Friday early: opened Thursday


def test_weekend_band_crossing_into_monday():
    offer = _offer(bands=[{"days": "weekends", "window": "20:00-02:00", "factor": 0.6}])
    assert price_factor(offer, _at("2026-12-07T01:00:00"), TZ) == 0.6  # Monday 01:00, opened Sunday
    assert price_factor(offer, _at("2026-12-05T01:00:00"), TZ) == 1.0  # Saturday 01:00, opened Friday


def test_start_is_read_in_the_config_timezone():
    utc = datetime.fromisoformat("2026-12-07T01:30:00+00:00")  # 09:30 in Shanghai, a Monday
    assert price_factor(PEAKS, utc, TZ) == 2.0


def test_off_peak_is_one_band_every_day():
    offer = _offer(off_peak={"window": "00:30-08:30", "discount": 0.5})
    assert price_factor(offer, _at("2026-12-05T01:00:00"), TZ) == 0.5
    assert price_factor(offer, _at("2026-12-05T08:30:00"), TZ) == 1.0


def test_band_factor_scales_the_list_cost_and_the_charge():
    offer = PEAKS
    base = list_cost_yuan(offer, 1000, 500, "interactive", factor=1.0)
    assert base == pytest.approx((1000 * 2.0 + 500 * 8.0) / 1e6)
    assert list_cost_yuan(offer, 1000, 500, "interactive", factor=2.0) == pytest.approx(2 * base)
    paid = charge(offer, input_tokens=1000, output_tokens=500, work_class="interactive", factor=2.0)
    assert paid.cash_yuan == pytest.approx(2 * base)


def test_cached_input_defaults_to_input():
    assert _offer().price.cached_input == 2.0
    assert _offer(price={"input": 2.0, "output": 8.0, "cached_input": 0.2}).price.cached_input == 0.2


def test_cached_tokens_pay_the_cached_price_times_ratio_and_factor():
    offer = _offer(price={"input": 2.0, "output": 8.0, "cached_input": 0.2}, token_ratio=1.3)
    cost = list_cost_yuan(offer, 1000, 500, "interactive", factor=2.0, cached=600)
    assert cost == pytest.approx((400 * 2.0 + 600 * 0.2 + 500 * 8.0) * 1.3 / 1e6 * 2.0)
    # tokens do not change with a hit
    paid = charge(offer, input_tokens=1000, output_tokens=500, work_class="interactive", cached=600)
    assert paid.tokens == 1950


def test_reported_cached_tokens_pay_the_cached_price():
    offer = _offer(price={"input": 2.0, "output": 8.0, "cached_input": 0.2})
    paid = charge_reported(offer, prompt_tokens=1000, completion_tokens=100, work_class="interactive",
                           cached_tokens=800, factor=0.5)
    assert paid.cost_yuan == pytest.approx((200 * 2.0 + 800 * 0.2 + 100 * 8.0) / 1e6 * 0.5)
    assert paid.tokens == 1100


@pytest.mark.parametrize(("previous", "start_s", "hit"), [
    (None, 100.0, False),  # a session's first request
    (("a", "m", 0.0), 300.0, True),  # exactly the TTL: still cached
    (("a", "m", 0.0), 300.001, False),  # past it
    (("b", "m", 0.0), 10.0, False),  # another region
    (("a", "x", 0.0), 10.0, False),  # another model
    (("a", "m", 50.0), 50.0, True),  # started together, earlier in the trace
])
def test_cache_hit_needs_same_region_model_within_ttl(previous, start_s, hit):
    assert cache_hit(_offer(), region="a", model="m", start_s=start_s, previous=previous) is hit


def _voucher(**extra: object) -> Voucher:
    data: dict = {"id": "v", "region": "a", "kind": "tokens", "amount": 1000}
    data.update(extra)
    return Voucher.model_validate(data)


def test_period_starts_at_local_midnight_monday_and_the_first():
    at = _at("2026-12-09T15:00:00")  # a Wednesday
    assert period_start("day", at, TZ) == _at("2026-12-09T00:00:00")
    assert period_start("week", at, TZ) == _at("2026-12-07T00:00:00")
    assert period_start("month", at, TZ) == _at("2026-12-01T00:00:00")
    # the boundary instant belongs to the new period, the instant before to the old one
    assert period_start("week", _at("2026-12-07T00:00:00"), TZ) == _at("2026-12-07T00:00:00")
    assert period_start("week", _at("2026-12-06T23:59:59"), TZ) == _at("2026-11-30T00:00:00")
    assert period_start("month", _at("2026-11-30T23:59:59"), TZ) == _at("2026-11-01T00:00:00")
    # read in the config's time zone: 16:30 UTC on the 30th is the 1st in Shanghai
    utc = datetime.fromisoformat("2026-11-30T16:30:00+00:00")
    assert period_start("month", utc, TZ) == _at("2026-12-01T00:00:00")


def test_package_window_is_the_period_cut_to_validity():
    v = _voucher(period="month", valid_from="2026-11-21T00:00:00+08:00", expires="2027-01-10T00:00:00+08:00")
    assert package_window(v, _at("2026-11-25T12:00:00"), TZ) == (
        _at("2026-11-21T00:00:00").timestamp(), _at("2026-12-01T00:00:00").timestamp())
    assert package_window(v, _at("2026-12-31T23:59:00"), TZ) == (
        _at("2026-12-01T00:00:00").timestamp(), _at("2027-01-01T00:00:00").timestamp())
    assert package_window(v, _at("2027-01-05T00:00:00"), TZ) == (
        _at("2027-01-01T00:00:00").timestamp(), _at("2027-01-10T00:00:00").timestamp())
    plain = _voucher(expires="2027-01-10T00:00:00+08:00")
    assert package_window(plain, _at("2026-12-05T00:00:00"), TZ)[1] == _at("2027-01-10T00:00:00").timestamp()


def test_period_edges_fall_on_local_period_starts():
    start = _at("2026-12-05T12:00:00").timestamp()
    end = _at("2026-12-15T00:00:00").timestamp()
    assert period_edges("week", start, end, TZ) == [_at("2026-12-07T00:00:00").timestamp(),
                                                    _at("2026-12-14T00:00:00").timestamp()]
    days = period_edges("day", start, end, TZ)
    assert days[0] == _at("2026-12-06T00:00:00").timestamp() and len(days) == 9
    assert period_edges("month", start, end, TZ) == []


def test_daily_cap_limits_what_a_voucher_pays_per_local_day():
    v = _voucher(kind="credit", amount=15.0, daily_cap=2.5)
    assert capped_balance(v, 15.0, 0.0) == 2.5
    assert capped_balance(v, 15.0, 2.0) == 0.5
    assert capped_balance(v, 15.0, 2.5) == 0.0
    assert capped_balance(v, 0.3, 1.0) == 0.3  # the balance is lower than what the cap leaves
    units, covered = voucher_pays(v, capped_balance(v, 15.0, 2.0), tokens=100, cost_yuan=1.2)
    assert (units, covered) == (pytest.approx(0.5), pytest.approx(0.5))
    # a day is the local day of the start: 23:59 and 00:00 fall on two days
    assert local_day(_at("2026-12-07T23:59:59"), TZ) != local_day(_at("2026-12-08T00:00:00"), TZ)
    assert capped_balance(_voucher(), 700.0, 10_000.0) == 700.0  # no cap


def test_tokens_voucher_under_a_cap_pays_pro_rata():
    v = _voucher(daily_cap=300)
    units, covered = voucher_pays(v, capped_balance(v, 1000, 100), tokens=500, cost_yuan=1.0)
    assert units == 200 and covered == pytest.approx(0.4)
