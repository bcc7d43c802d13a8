"""Region limits across replicas: Redis-shared tallies, or each replica's 1/n share."""

from __future__ import annotations

import secrets
import socket

import pytest

from suanli.config import Region
from suanli.router.core.limits import Lease, RequestLimits
from suanli.router.core.limits_shared import RedisLimits, apply_share

REDIS_URL = "redis://127.0.0.1:6379/0"


def _redis_up() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=0.5).close()
    except OSError:
        return False
    return True


requires_redis = pytest.mark.skipif(not _redis_up(), reason="needs Redis on 127.0.0.1:6379")


def region(**limits: int) -> Region:
    return Region.model_validate({
        "id": "wuhan", "zone": "east", "provider": "sim", "limits": limits,
        "models": [{"name": "m", "price": {"input": 1, "output": 1}}],
    })


def admitted(limits: RequestLimits, n: int, tokens: int = 10) -> int:
    return sum(isinstance(limits.acquire("wuhan", tokens), Lease) for _ in range(n))


def test_each_replica_takes_its_share_of_the_limits() -> None:
    r = region(rpm=10, tpm=1000, concurrency=4)
    limits = RequestLimits([r])
    apply_share(limits, [r], 2)
    assert admitted(limits, 10) == 2  # concurrency 4 // 2
    limits = RequestLimits([r])
    apply_share(limits, [r], 2)
    leases = []
    for _ in range(10):
        lease = limits.acquire("wuhan", 10)
        if isinstance(lease, Lease):
            leases.append(lease)
            lease.release(10)
    assert len(leases) == 5  # rpm 10 // 2
    apply_share(limits, [r], 1)  # the other replica left: the whole limit again
    assert admitted(limits, 10) == 4  # the rpm log holds 5 of 10, concurrency caps at 4


@requires_redis
async def test_replicas_share_one_rpm_limit_through_redis() -> None:
    r = region(rpm=10)
    namespace = secrets.token_hex(6)
    a = RedisLimits([r], url=REDIS_URL, namespace=namespace, replica_id="a")
    b = RedisLimits([r], url=REDIS_URL, namespace=namespace, replica_id="b")
    await a.start()
    await b.start()
    try:
        assert admitted(a, 7) == 7
        await a.sync()
        await b.sync()
        assert b.others() == {"wuhan": (7, 70, 7)}
        assert admitted(b, 10) == 3  # 10 a minute between both
        await b.sync()
        await a.sync()
        assert admitted(a, 5) == 0
    finally:
        await a.stop()
        await b.stop()


@requires_redis
async def test_a_replica_that_leaves_frees_its_share() -> None:
    r = region(tpm=1000)
    namespace = secrets.token_hex(6)
    a = RedisLimits([r], url=REDIS_URL, namespace=namespace, replica_id="a")
    b = RedisLimits([r], url=REDIS_URL, namespace=namespace, replica_id="b")
    await a.start()
    await b.start()
    assert admitted(a, 1, tokens=900) == 1
    await a.sync()
    await b.sync()
    assert admitted(b, 1, tokens=200) == 0
    await a.stop()
    await b.sync()
    assert b.others() == {}
    assert admitted(b, 1, tokens=200) == 1
    await b.stop()


def test_a_replica_share_below_a_request_still_serves_it_alone_in_a_minute() -> None:
    # two replicas each keep 500 of a 1,000 tpm: a 700-token request goes alone in an empty minute
    # at one of them, as the region may take it; one over the region's own 1,000 never goes
    now = [0.0]
    r = region(tpm=1000)
    limits = RequestLimits([r], now_s=lambda: now[0])
    apply_share(limits, [r], 2)
    assert isinstance(limits.acquire("wuhan", 700), Lease)
    assert isinstance(limits.acquire("wuhan", 10), float)  # the minute is past its share
    now[0] = 60.0
    assert isinstance(limits.acquire("wuhan", 1001), float)
    assert isinstance(limits.acquire("wuhan", 400), Lease) and isinstance(limits.acquire("wuhan", 200), float)
