"""The online forecast: recent level, working-day shape, config priors, the end of a trace."""

from __future__ import annotations

from datetime import datetime

import pytest

from suanli.optimizer import Forecast, slot_edges
from tests.unit.optimizer.tiny import START, make_config, region

T0 = datetime.fromisoformat(START).timestamp()  # local midnight
HOUR = 3600.0
KIND = ("interactive", "east", "m")
FLAT = (1.0,) * 24


def _feed(forecast: Forecast, *, per_hour: float, start_h: float, end_h: float) -> None:
    step = HOUR / per_hour
    t = T0 + start_h * HOUR
    while t < T0 + end_h * HOUR:
        forecast.observe(KIND, input_tokens=800, output_tokens=200, window_s=0.0, at_s=t)
        t += step


def test_the_recent_rate_leads_when_traffic_ramps_up_within_a_day() -> None:
    forecast = Forecast(make_config([region("a", "east")]), start_s=T0, shape=FLAT)
    _feed(forecast, per_hour=60, start_h=0, end_h=6)
    _feed(forecast, per_hour=600, start_h=6, end_h=8)
    now = T0 + 8 * HOUR
    ahead = forecast.rate_per_s(KIND, now + 2 * HOUR, now) * HOUR
    day_average = (60 * 6 + 600 * 2) / 8
    assert ahead > 2 * day_average
    assert ahead == pytest.approx(600, rel=0.35)


def test_the_working_day_shape_expects_a_busier_day_than_the_night_seen() -> None:
    forecast = Forecast(make_config([region("a", "east")]), start_s=T0)
    _feed(forecast, per_hour=60, start_h=0, end_h=3)
    now = T0 + 3 * HOUR
    night = forecast.rate_per_s(KIND, T0 + 4 * HOUR, now)
    day = forecast.rate_per_s(KIND, T0 + 10 * HOUR, now)
    assert day > 2.5 * night  # a night says nothing yet against office hours: even odds
    flat = Forecast(make_config([region("a", "east")]), start_s=T0, shape=FLAT)
    _feed(flat, per_hour=60, start_h=0, end_h=3)
    assert flat.rate_per_s(KIND, T0 + 10 * HOUR, now) == pytest.approx(
        flat.rate_per_s(KIND, T0 + 4 * HOUR, now)
    )


def test_traffic_without_office_hours_is_soon_forecast_flat() -> None:
    forecast = Forecast(make_config([region("a", "east")]), start_s=T0)
    _feed(forecast, per_hour=120, start_h=0, end_h=10)
    now = T0 + 10 * HOUR
    assert forecast.rate_per_s(KIND, T0 + 20 * HOUR, now) * HOUR == pytest.approx(120, rel=0.1)
    assert forecast.rate_per_s(KIND, T0 + 14 * HOUR, now) * HOUR == pytest.approx(120, rel=0.1)


def test_a_config_prior_without_hourly_weights_is_flat() -> None:
    prior = [{"class": "interactive", "model": "m", "requests_per_hour": 60}]
    forecast = Forecast(make_config([region("a", "east")], demand=prior), start_s=T0)
    night = forecast.rate_per_s(KIND, T0 + 3 * HOUR, T0)
    day = forecast.rate_per_s(KIND, T0 + 12 * HOUR, T0)
    assert night == pytest.approx(day) == pytest.approx(60 / HOUR)


def test_no_demand_is_expected_after_the_end_of_a_trace() -> None:
    config = make_config([region("a", "east")])
    forecast = Forecast(config, start_s=T0, end_s=T0 + 12 * HOUR)
    _feed(forecast, per_hour=100, start_h=0, end_h=10)
    now = T0 + 10 * HOUR
    demand = forecast.demand(slot_edges(config, now, now + 24 * HOUR), now)
    assert demand and max(d.earliest for d in demand) < T0 + 12 * HOUR
    assert sum(d.requests for d in demand) == pytest.approx(
        2 * forecast.rate_per_s(KIND, now, now) * HOUR, rel=0.3
    )


def test_one_training_job_in_the_first_hour_is_not_a_rate_of_twenty_a_day() -> None:
    # A batch kind seen once in its first hour is forecast at about one an hour; a
    # training job, few and large, at about one a day (its rate never read off less
    # than a day's exposure): the vouchers are not kept for a stream of jobs that
    # one sighting implies.
    config = make_config([region("a", "west")])
    edges = slot_edges(config, T0 + HOUR, T0 + 24 * HOUR)
    expected = {}
    for work_class in ("batch", "training"):
        forecast = Forecast(config, start_s=T0, shape=FLAT, lead_decay_s=float("inf"))
        kind = (work_class, "east", "m")
        forecast.observe(kind, input_tokens=800_000, output_tokens=0, window_s=3600.0, at_s=T0 + 0.5 * HOUR)
        demand = forecast.demand(edges, T0 + HOUR)
        expected[work_class] = sum(d.requests for d in demand if d.work_class == work_class)
    assert expected["batch"] > 10
    assert expected["training"] == pytest.approx(23 / 24, rel=0.05)


def test_a_training_job_seen_at_night_is_not_read_as_four_a_day() -> None:
    # Against the working-day shape, one arrival in a quiet night hour counts as several
    # office-hour ones; a rare kind is forecast flat, at one a day whenever it came.
    config = make_config([region("a", "west")])
    forecast = Forecast(config, start_s=T0, lead_decay_s=float("inf"))
    kind = ("training", "east", "m")
    forecast.observe(kind, input_tokens=800_000, output_tokens=0, window_s=3600.0, at_s=T0 + 3 * HOUR)
    now = T0 + 4 * HOUR
    assert forecast.rate_per_s(kind, T0 + 10 * HOUR, now) * 86400 == pytest.approx(1.0)
    assert forecast.rate_per_s(kind, T0 + 3.5 * HOUR, now) == forecast.rate_per_s(kind, T0 + 10 * HOUR, now)
    assert forecast.arrivals(kind, now, T0 + 24 * HOUR, now) == pytest.approx(20 / 24)
    assert forecast.sizes("training") == [(kind, 800_000, 3600.0)]


def test_batch_demand_half_a_day_out_counts_half() -> None:
    # A day's shape is a guess until its hours are seen (an evening peak read against office
    # hours expected twice the night that came): far demand of work that may wait is trusted
    # less by default, so a voucher is not kept for it while the work in hand could spend it.
    config = make_config([region("a", "east")])
    batch = ("batch", "east", "m")
    forecast = Forecast(config, start_s=T0, shape=FLAT)
    _feed(forecast, per_hour=100, start_h=0, end_h=4)
    forecast.observe(batch, input_tokens=800, output_tokens=200, window_s=3600.0, at_s=T0 + 4 * HOUR - 1)
    now = T0 + 4 * HOUR
    rate = forecast.rate_per_s(batch, now + 0.5 * HOUR, now)
    assert forecast.rate_per_s(batch, now + 12.5 * HOUR, now) == rate  # the rate is the same, its weight not
    near = forecast.arrivals(batch, now, now + HOUR, now)
    far = forecast.arrivals(batch, now + 12 * HOUR, now + 13 * HOUR, now)
    assert far == pytest.approx(near * (1 + 0.5 / 12) / (1 + 12.5 / 12))
    # interactive demand keeps its weight: it needs room in the minute it comes
    assert forecast.arrivals(KIND, now + 12 * HOUR, now + 13 * HOUR, now) == pytest.approx(
        forecast.arrivals(KIND, now, now + HOUR, now)
    )
