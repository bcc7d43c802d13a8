"""KeyRing: what a cached key check sees when another replica on the same ledger revokes the key."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from suanli.config import load_catalog
from suanli.router.core.keys import KeyRing, new_secret, secret_sha256
from suanli.router.errors import AuthenticationError, KeyRateLimitError
from suanli.router.ledger.keys import KeyRow
from suanli.router.ledger.port import SqliteAsyncLedger
from suanli.router.ledger.sqlite.ledger import Ledger

MASTER = "sk-master-unit"


def _now() -> datetime:
    return datetime.now(UTC)


def _row(key_id: str, **fields) -> KeyRow:
    base = dict(id=key_id, name=key_id, created=0.0, revoked=None, expires=None, budget_yuan_per_day=None,
                budget_yuan_per_month=None, allowed_regions=None, allowed_zones=None, default_class=None,
                origin=None, rpm=None)
    return KeyRow(**{**base, **fields})


@pytest.fixture
def replicas(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    a, b = Ledger.open(url, [], clock=_now), Ledger.open(url, [], clock=_now)
    yield a, b
    a.close()
    b.close()


async def test_a_revoke_on_another_replica_is_seen_within_the_cache_ttl(replicas):
    a, b = replicas
    secret = new_secret()
    a.create_key(_row("key-1"), secret_sha256(secret))
    store_b = SqliteAsyncLedger(b)
    ring_b = KeyRing(load_catalog(), master_key=MASTER, keys=lambda: store_b, clock=_now, cache_ttl_s=0.2)
    assert (await ring_b.authenticate(secret)).key_id == "key-1"
    a.revoke_key("key-1", _now().timestamp())
    assert (await ring_b.authenticate(secret)).key_id == "key-1"  # still cached
    await asyncio.sleep(0.25)
    with pytest.raises(AuthenticationError, match="revoked"):
        await ring_b.authenticate(secret)


async def test_zones_become_the_regions_of_the_config_in_them(replicas):
    a, _ = replicas
    config = load_catalog()
    secret = new_secret()
    a.create_key(_row("key-east", allowed_zones=("east",)), secret_sha256(secret))
    ring = KeyRing(config, master_key=MASTER, keys=lambda: SqliteAsyncLedger(a), clock=_now)
    policy = await ring.authenticate(secret)
    assert policy.allowed_regions == {r.id for r in config.regions if r.zone == "east"}
    assert await ring.authenticate(MASTER) is None


async def test_rpm_counts_a_sliding_minute_per_key(replicas):
    a, _ = replicas
    secret = new_secret()
    a.create_key(_row("key-rpm", rpm=3), secret_sha256(secret))
    ring = KeyRing(load_catalog(), master_key=MASTER, keys=lambda: SqliteAsyncLedger(a), clock=_now)
    for _ in range(3):
        await ring.authenticate(secret)
    with pytest.raises(KeyRateLimitError) as exc:
        await ring.authenticate(secret)
    assert 59 < exc.value.retry_after_s <= 60
