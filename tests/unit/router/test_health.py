"""Outlier ejection, cool-down and half-open trials on an injected clock."""

from __future__ import annotations

from suanli.config import HealthSettings
from suanli.router.core.health import Health

SETTINGS = HealthSettings.model_validate(
    {"ejection": {"consecutive_5xx": 3, "consecutive_gateway_failures": 2, "base_ejection_s": 10,
                  "max_ejection_s": 25, "max_ejected_share": 0.5}}
)
REGIONS = ["a", "b", "c", "d"]


def test_consecutive_5xx_eject_for_the_base_time_then_half_open_trial_brings_it_back():
    health = Health(REGIONS, SETTINGS)
    for _ in range(2):
        health.failure("a", 503, 100.0)
    assert health.blocked(100.0) == frozenset()
    health.failure("a", 503, 100.0)
    assert health.blocked(100.0) == {"a"}
    assert health.state("a", 100.0)["state"] == "ejected"
    assert health.wait_s("a", 105.0) == 5.0
    assert health.blocked(109.9) == {"a"}
    # Ejection over: half-open, one trial may go, the others wait for its verdict.
    assert health.blocked(110.0) == frozenset()
    health.sending("a", 110.0)
    assert health.blocked(110.0) == {"a"}
    health.success("a", 110.5)
    assert health.blocked(110.5) == frozenset()
    assert health.state("a", 110.5) == {"state": "ok", "ejected_until": None, "ejections": 1}


def test_a_failed_trial_ejects_again_for_longer_capped():
    health = Health(REGIONS, SETTINGS)
    for _ in range(2):
        health.failure("a", 0, 0.0)  # connect errors
    assert health.regions["a"].ejected_until == 10.0
    health.sending("a", 10.0)
    health.failure("a", 502, 10.0)
    assert health.regions["a"].ejected_until == 30.0  # 2 x base
    health.failure("a", 0, 30.0)
    assert health.regions["a"].ejected_until == 55.0  # 3 x base = 30, capped at 25
    assert health.regions["a"].ejections == 3


def test_success_resets_the_consecutive_count():
    health = Health(REGIONS, SETTINGS)
    for _ in range(10):
        health.failure("a", 500, 0.0)
        health.failure("a", 500, 0.0)
        health.success("a", 0.0)
    assert health.blocked(0.0) == frozenset()


def test_never_more_than_the_share_of_regions_ejected():
    health = Health(REGIONS, SETTINGS)
    for rid in REGIONS:
        for _ in range(3):
            health.failure(rid, 500, 0.0)
    assert len(health.blocked(0.0)) == 2  # 50% of 4


def test_429_cools_down_for_retry_after_and_client_errors_do_not_count():
    health = Health(REGIONS, SETTINGS)
    health.failure("b", 429, 50.0, retry_after_s=7)
    assert health.blocked(56.9) == {"b"}
    assert health.state("b", 56.9)["state"] == "cooling"
    assert health.blocked(57.0) == frozenset()
    for _ in range(10):
        health.failure("c", 400, 0.0)
    assert health.blocked(0.0) == frozenset()


def test_a_trial_whose_caller_went_away_frees_the_region_for_another():
    health = Health(REGIONS, SETTINGS)
    for _ in range(2):
        health.failure("a", 0, 0.0)
    health.sending("a", 10.0)
    assert "a" in health.blocked(10.0)
    health.released("a")
    assert "a" not in health.blocked(10.0)
