"""Per-region rpm, tpm and concurrency limits: non-blocking leases."""

from __future__ import annotations

import math
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


def test_tpm_counts_the_tokens_started_in_each_clock_minute_corrected_by_real_use():
    now = [30.0]  # half-way through clock minute 0
    limits = _limits(lambda: now[0], tpm=600)
    lease = limits.acquire("r", 500)
    assert isinstance(lease, Lease)
    wait = limits.acquire("r", 200)
    assert wait == pytest.approx(30.0)  # no refill within the minute: the next one starts at 60 s
    lease.release(100)  # estimated 500, used 100: the minute counts 100
    assert limits.stats("r")["tpm_used"] == 100
    assert isinstance(limits.acquire("r", 500), Lease)
    assert isinstance(limits.acquire("r", 1), float)  # 600 of 600 started this minute
    now[0] = 60.0
    assert limits.stats("r")["tpm_used"] == 0
    late = limits.acquire("r", 400)
    assert isinstance(late, Lease) and isinstance(limits.acquire("r", 200), Lease)
    assert isinstance(limits.acquire("r", 1), float)


def test_tpm_never_lets_a_clock_minute_start_more_than_its_limit():
    # DESIGN.md's capacity rule, which simulate keeps: a bucket full at the minute's start and
    # refilling within it took up to twice the tpm in one minute
    now = [0.0]
    limits = _limits(lambda: now[0], tpm=1000)
    started: dict[int, int] = {}
    while now[0] < 180.0:
        lease = limits.acquire("r", 90)
        if isinstance(lease, Lease):
            minute = int(now[0] // 60)
            started[minute] = started.get(minute, 0) + 90
            lease.release(90)
        now[0] += 0.5
    assert started == {0: 990, 1: 990, 2: 990}


def test_a_correction_after_its_minute_leaves_the_new_minute_alone():
    now = [59.0]
    limits = _limits(lambda: now[0], tpm=1000)
    lease = limits.acquire("r", 800)
    now[0] = 61.0
    assert isinstance(limits.acquire("r", 900), Lease)
    lease.release(10)  # its minute is over: minute 1 still counts its 900
    assert limits.stats("r")["tpm_used"] == 900


def test_a_request_bigger_than_the_tpm_never_goes_there():
    # as simulate: no clock minute may start more tokens than the tpm, even one request alone
    now = [0.0]
    limits = _limits(lambda: now[0], tpm=100)
    assert limits.acquire("r", 101) == math.inf  # no wait helps: the client gets a 413
    assert limits.too_large("r", 101) and not limits.too_large("r", 100)
    assert limits.stats("r")["tpm_used"] == 0
    assert isinstance(limits.acquire("r", 100), Lease)
    now[0] = 60.0
    assert isinstance(limits.acquire("r", 101), float)


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
