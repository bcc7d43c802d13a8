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


def test_measured_appears_after_min_samples_and_sims_add_their_rtt():
    tracker = LatencyTracker(_regions(), SETTINGS)
    for i in range(4):
        tracker.record("real", "m", "east", float(i), ttft_ms=100.0, total_ms=300.0, output_tokens=21)
        tracker.record("sim", "m", "east", float(i), ttft_ms=100.0)
    assert tracker.measured("m", "east", 4.0) == {}
    tracker.record("real", "m", "east", 4.0, ttft_ms=500.0, total_ms=900.0, output_tokens=21)
    tracker.record("sim", "m", "east", 4.0, ttft_ms=100.0)
    assert tracker.measured("m", "east", 4.0) == {"real": 500.0, "sim": 130.0}
    assert tracker.measured("m", "west", 4.0) == {}
    assert tracker.tokens_per_s[("real", "m", "east")].p50 == pytest.approx(100.0)
    summary = tracker.region_summary("real")
    assert summary["ttft_ms"] == {"p50": 100.0, "p95": 500.0}
    assert summary["total_ms"]["p95"] == 900.0
    assert summary["tokens_per_s"]["p50"] == pytest.approx(100.0)
    assert tracker.region_summary("nowhere")["ttft_ms"] == {"p50": None, "p95": None}


def test_old_samples_expire_so_a_slow_region_falls_back_to_its_priors():
    tracker = LatencyTracker(_regions(), SETTINGS)
    for i in range(5):
        tracker.record("real", "m", "east", float(i), ttft_ms=900.0)
    assert tracker.measured("m", "east", 10.0) == {"real": 900.0}
    assert tracker.measured("m", "east", 100.0) == {}


def test_untrusted_sims_are_left_to_their_priors():
    tracker = LatencyTracker(_regions(), SETTINGS, trust_sims=False)
    for i in range(5):
        tracker.record("sim", "m", "east", float(i), ttft_ms=1.0)
    assert tracker.measured("m", "east", 5.0) == {}
