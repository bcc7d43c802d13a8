"""Per-region rpm, tpm and concurrency limits: non-blocking leases."""

from __future__ import annotations

import time

import pytest

from suanli.config import load_config
from suanli.router.core.limits import Lease, RequestLimits, SlidingLog


def _limits(clock, **limits):
    config = load_config({"regions": [
        {"id": "r", "zone": "east", "provider": "sim", "limits": limits,
         "models": [{"name": "m", "price": {"input": 1, "output": 1}}]},
    ]})
    return RequestLimits(config.regions, now_s=clock)


def test_rpm_admits_the_limit_then_says_how_long_to_wait():
    limits = _limits(lambda: 0.0, rpm=3)
    leases = [limits.acquire("r", 10) for _ in range(3)]
    assert all(isinstance(lease, Lease) for lease in leases)
    wait = limits.acquire("r", 10)
    assert isinstance(wait, float) and 59 < wait <= 60
    assert limits.stats("r")["rpm_used"] == 3


def test_tpm_bucket_refills_and_is_corrected_by_real_use():
    now = [0.0]
    limits = _limits(lambda: now[0], tpm=600)
    lease = limits.acquire("r", 500)
    assert isinstance(lease, Lease)
    wait = limits.acquire("r", 200)
    assert wait == pytest.approx(10.0)  # 100 missing at 10 tokens per second
    lease.release(100)  # estimated 500, used 100: 400 back
    assert limits.stats("r")["tpm_used"] == 100
    assert isinstance(limits.acquire("r", 200), Lease)
    now[0] = 60.0
    assert limits.stats("r")["tpm_used"] == 0


def test_a_request_bigger_than_the_budget_goes_when_the_bucket_is_full():
    limits = _limits(lambda: 0.0, tpm=100)
    assert isinstance(limits.acquire("r", 1000), Lease)
    assert isinstance(limits.acquire("r", 1), float)


def test_concurrency_cap_and_release_once():
    limits = _limits(lambda: 0.0, concurrency=2)
    first, second = limits.acquire("r", 1), limits.acquire("r", 1)
    assert isinstance(limits.acquire("r", 1), float)
    assert limits.stats("r")["in_flight"] == 2
    first.release()
    first.release()
    assert limits.stats("r")["in_flight"] == 1
    assert isinstance(limits.acquire("r", 1), Lease)
    second.release()


def test_sliding_log_frees_a_slot_once_the_oldest_admission_is_a_period_old():
    log = SlidingLog(2, period_s=0.05)
    log.take()
    log.take()
    assert 0 < log.wait_s() <= 0.05 and log.count() == 2
    time.sleep(0.06)
    assert log.wait_s() == 0.0 and log.count() == 0
