"""Sliding latency windows and the measured latency the chooser gets."""

from __future__ import annotations

import pytest

from suanli.config import HealthSettings, load_config
from suanli.router.core.latency import LatencyTracker, Window, percentile

SETTINGS = HealthSettings.model_validate({"latency": {"window": 50, "min_samples": 5, "max_age_s": 60}})


def _regions():
    config = load_config({"regions": [
        {"id": "real", "zone": "east", "provider": "openai", "base_url": "http://x/v1",
         "rtt_ms": {"east": 30},
         "models": [{"name": "m", "price": {"input": 1, "output": 1}}]},
        {"id": "sim", "zone": "west", "provider": "sim", "rtt_ms": {"east": 30},
         "models": [{"name": "m", "price": {"input": 1, "output": 1}}]},
    ]})
    return config.regions


def test_percentiles_are_nearest_rank():
    values = sorted(float(v) for v in range(1, 101))
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.95) == 95.0
    assert percentile([7.0], 0.95) == 7.0
    with pytest.raises(ValueError):
        percentile([], 0.5)


def test_window_keeps_the_last_samples_and_an_ewma():
    window = Window(size=10, alpha=0.5)
    for v in range(100):
        window.add(0.0, float(v))
    assert len(window) == 10
    assert window.p50 == 94.0 and window.p95 == 99.0
    assert window.ewma == pytest.approx(98.0, abs=0.01)


def test_estimates_start_at_the_prior_and_move_towards_the_median_and_sims_add_their_rtt():
    tracker = LatencyTracker(_regions(), SETTINGS)  # prior: ttft 300 + rtt 30 = 330 ms
    assert tracker.measured("m", "east", 0.0) == {}
    tracker.record("real", "m", "east", 0.0, ttft_ms=100.0)
    # one sample moves the prior 1/min_samples of the way: a barely measured region looks unmeasured
    assert tracker.measured("m", "east", 0.0)["real"] == pytest.approx(330 + (100 - 330) / 5)
    for i in range(1, 4):
        tracker.record("real", "m", "east", float(i), ttft_ms=100.0, total_ms=300.0, output_tokens=21)
        tracker.record("sim", "m", "east", float(i), ttft_ms=100.0)
    tracker.record("real", "m", "east", 4.0, ttft_ms=500.0, total_ms=900.0, output_tokens=21)
    measured = tracker.measured("m", "east", 4.0)
    assert measured["real"] == pytest.approx(100.0)  # min_samples reached: the median, not the slow p95
    assert measured["sim"] == pytest.approx(330 + (130 - 330) * 3 / 5)  # loopback + its rtt prior
    assert tracker.measured("m", "west", 4.0) == {}
    assert tracker.tokens_per_s[("real", "m", "east")].p50 == pytest.approx(100.0)
    summary = tracker.region_summary("real")
    assert summary["ttft_ms"] == {"p50": 100.0, "p95": 500.0}
    assert summary["total_ms"]["p95"] == 900.0
    assert summary["tokens_per_s"]["p50"] == pytest.approx(100.0)
    assert tracker.region_summary("nowhere")["ttft_ms"] == {"p50": None, "p95": None}


def test_a_whole_answers_time_is_never_its_time_to_first_token():
    tracker = LatencyTracker(_regions(), SETTINGS)
    # No pace measured yet: a 2 s answer of 500 tokens adds a total, and no TTFT sample.
    tracker.record("real", "m", "east", 0.0, ttft_ms=None, total_ms=2000.0, output_tokens=500)
    assert tracker.region_summary("real")["ttft_ms"] == {"p50": None, "p95": None}
    assert tracker.region_summary("real")["total_ms"]["p50"] == 2000.0
    assert tracker.measured("m", "east", 0.0) == {}
    # A stream shows the pace (100 ms to the first token, then 250 tokens/s) ...
    tracker.record("real", "m", "east", 1.0, ttft_ms=100.0, total_ms=100.0 + 99 * 4.0, output_tokens=100)
    # ... with which a whole answer's first token is estimated: 2000 - 499 x 4 ms = 4 ms.
    tracker.record("real", "m", "east", 2.0, ttft_ms=None, total_ms=2200.0, output_tokens=500)
    assert sorted(tracker.ttft[("real", "m", "east")].values) == pytest.approx([100.0, 204.0])
    assert tracker.tokens_per_s[("real", "m", "east")].p50 == pytest.approx(250.0)  # estimates add no pace


def test_long_whole_answers_keep_a_fast_region_within_the_slo():
    tracker = LatencyTracker(_regions(), SETTINGS)
    tracker.record("real", "m", "east", 0.0, ttft_ms=120.0, total_ms=120.0 + 199 * 5.0, output_tokens=200)
    whole_ms = 120.0 + 499 * 5.0  # 500-token answers taking 2.6 s each
    for i in range(50):
        tracker.record("real", "m", "east", 1.0 + i, ttft_ms=None, total_ms=whole_ms, output_tokens=500)
    # every whole answer is an estimate of 120 ms
    assert tracker.measured("m", "east", 60.0)["real"] == pytest.approx(120.0)


def test_old_samples_expire_so_a_slow_region_falls_back_to_its_priors():
    tracker = LatencyTracker(_regions(), SETTINGS)
    for i in range(5):
        tracker.record("real", "m", "east", float(i), ttft_ms=900.0)
    assert tracker.measured("m", "east", 10.0) == {"real": pytest.approx(900.0)}
    assert tracker.measured("m", "east", 100.0) == {}


def test_untrusted_sims_are_left_to_their_priors():
    tracker = LatencyTracker(_regions(), SETTINGS, trust_sims=False)
    for i in range(5):
        tracker.record("sim", "m", "east", float(i), ttft_ms=1.0)
    assert tracker.measured("m", "east", 5.0) == {}
