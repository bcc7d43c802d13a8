"""Key budgets and the audit on the PostgreSQL ledger: held with the voucher, released by any replica."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from suanli.config import Voucher, load_catalog
from suanli.router.core.keys import KeyRing, load_policy, new_secret, secret_sha256
from suanli.router.errors import AuthenticationError, BudgetExceededError
from suanli.router.ledger.audit import verify
from suanli.router.ledger.keys import KeyBudgetHold, KeyRow
from suanli.router.ledger.postgres.audit import snapshot_of
from suanli.router.ledger.postgres.ledger import PgLedger
from suanli.router.ledger.sqlite.ledger import HoldRequest, Settlement
from tests.pg import drop_schema, fresh_pg_url, requires_pg

pytestmark = requires_pg

START = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
VOUCHER = Voucher(id="v", region="wuhan", kind="tokens", amount=1000)
DAY, MONTH = "day:2026-12-01", "month:2026-12"


def _ask(request_id: str, *, amount: float = 1.0, day: float | None = 10.0, month: float | None = None,
         units: float = 10) -> HoldRequest:
    budget = KeyBudgetHold(key_id="k1", day=DAY, month=MONTH, amount_yuan=amount, day_limit_yuan=day,
                           month_limit_yuan=month)
    return HoldRequest(request_id, "wuhan", "m", "batch", "east", "v", units, key_id="k1", key_budget=budget)


def _done(cost: float, units: float = 10) -> Settlement:
    return Settlement(prompt_tokens=5, completion_tokens=5, tokens=10, cost_yuan=cost, cash_yuan=0.0,
                      voucher_units=units, voucher_yuan=cost, latency_ms=1.0, ttft_ms=None, attempts=1,
                      status=200)


@pytest.fixture
async def url():
    u = fresh_pg_url()
    yield u
    await drop_schema(u)


async def _open(url: str, at: datetime = START) -> PgLedger:
    return await PgLedger.open(url, [VOUCHER], clock=lambda: at, sweep_s=None)


async def test_settle_posts_the_cost_void_releases_and_a_refusal_holds_no_voucher(url: str) -> None:
    led = await _open(url)
    first = await led.reserve(_ask("a", amount=4.0))
    second = await led.reserve(_ask("b", amount=4.0))
    assert await led.key_spend("k1", [DAY, MONTH]) == {DAY: (0.0, 8.0), MONTH: (0.0, 8.0)}
    with pytest.raises(BudgetExceededError, match="budget of 10 yuan today"):
        await led.reserve(_ask("c", amount=4.0))
    assert await led.balances() == {"v": 1000 - 20}  # the refused request took no voucher units
    await led.settle(first.id, _done(3.0))
    await led.settle(first.id, _done(3.0))  # a retried settle posts nothing twice
    await led.void(second.id)
    await led.void(second.id)
    assert await led.key_spend("k1", [DAY, MONTH]) == {DAY: (3.0, 0.0), MONTH: (3.0, 0.0)}
    with pytest.raises(BudgetExceededError, match="this month"):
        await led.reserve(_ask("d", amount=2.0, day=None, month=4.0))
    await led.close()


async def test_concurrent_holds_on_two_replicas_never_pass_the_budget(url: str) -> None:
    a, b = await _open(url), await _open(url)

    async def one(i: int) -> bool:
        try:
            hold = await (a if i % 2 else b).reserve(_ask(f"r{i}", amount=1.0, day=25.0, units=1))
        except BudgetExceededError:
            return False
        await (b if i % 2 else a).settle(hold.id, _done(1.0, units=1))  # settled by the other replica
        return True

    outcomes = await asyncio.gather(*(one(i) for i in range(120)))
    assert sum(outcomes) == 25
    assert await a.key_spend("k1", [DAY]) == {DAY: (25.0, 0.0)}
    await a.close()
    await b.close()


async def test_a_dead_replicas_key_holds_are_released_by_another_replicas_sweep(url: str) -> None:
    # alive's clock runs past the dead one's last heartbeat plus ledger.liveness_grace_s (10 s)
    dead, alive = await _open(url), await _open(url, START + timedelta(seconds=11))
    await dead.reserve(_ask("a", amount=6.0))
    await dead._owner.session.close()  # its server session ends, as when the process is killed
    assert await alive.key_spend("k1", [DAY]) == {DAY: (0.0, 6.0)}
    assert await alive.sweep() == 1
    assert await alive.key_spend("k1", [DAY]) == {DAY: (0.0, 0.0)}
    await alive.reserve(_ask("b", amount=10.0))  # the budget is whole again
    await alive.close()
    await dead._pool.close()


async def test_the_audit_snapshot_names_edited_deleted_and_forged_rows(url: str) -> None:
    led = await _open(url)
    for i in range(4):
        await led.settle((await led.reserve(_ask(f"r{i}", amount=0.1))).id, _done(0.1))
    async with led.pool.acquire() as conn:
        report = verify(await snapshot_of(conn))
        assert report.ok and report.rows == 4 and report.head_id == 4
        await conn.execute("UPDATE usage SET tokens = 1 WHERE id = 2")
        report = verify(await snapshot_of(conn))
        assert (report.problem, report.row_id) == ("changed", 2)
        await conn.execute("UPDATE usage SET tokens = 10 WHERE id = 2")
        assert verify(await snapshot_of(conn)).ok
        await conn.execute("DELETE FROM usage WHERE id = 4")
        report = verify(await snapshot_of(conn))
        assert (report.problem, report.row_id) == ("deleted", 4)
    await led.close()


async def test_a_key_revoked_on_one_replica_is_refused_on_another_within_the_cache_ttl(url: str) -> None:
    a, b = await _open(url), await _open(url)
    secret = new_secret()
    row = KeyRow(id="key-1", name="team", created=0.0, revoked=None, expires=None, budget_yuan_per_day=2.0,
                 budget_yuan_per_month=None, allowed_regions=("wuhan",), allowed_zones=None,
                 default_class=None, origin=None, rpm=None)
    await a.create_key(row, secret_sha256(secret))
    ring = KeyRing(load_catalog(), master_key="sk-master", keys=lambda: b,
                   clock=lambda: START, cache_ttl_s=0.2)
    policy = await ring.authenticate(secret)
    assert policy is not None and policy.allowed_regions == {"wuhan"} and policy.budget_yuan_per_day == 2.0
    with pytest.raises(AuthenticationError):
        await ring.authenticate("sk-suanli-wrong")
    assert [k.id for k in await b.keys()] == ["key-1"]
    await a.revoke_key("key-1", 5.0)
    assert (await ring.authenticate(secret)).key_id == "key-1"  # still cached
    await asyncio.sleep(0.25)
    with pytest.raises(AuthenticationError, match="revoked"):
        await ring.authenticate(secret)
    assert (await b.key("key-1")).revoked == 5.0
    # Work that runs later (a batch's lines after a restart) reads the policy back from PostgreSQL.
    stored = await load_policy(b, load_catalog(), "key-1")
    assert stored is not None and stored.allowed_regions == {"wuhan"}
    assert await load_policy(b, load_catalog(), "key-nope") is None
    await a.close()
    await b.close()
