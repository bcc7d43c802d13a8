"""Replicas on one PostgreSQL ledger: one planner leader, plans picked up by the others, failover."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from suanli.optimizer import Ask
from suanli.router.core.plan_board import plan_from_json, plan_to_json
from suanli.router.core.planning import Replanner
from suanli.router.core.replica import Replica
from suanli.router.ledger.postgres.ledger import PgLedger
from tests.harness import small_config
from tests.pg import drop_schema, fresh_pg_url, requires_pg

pytestmark = requires_pg


def _config(tmp_path: Path, url: str, *, replan_s: float = 3600):
    demand = [{"class": "batch", "origin": "east", "model": "deepseek-flash", "requests_per_hour": 600}]
    return small_config(tmp_path, ledger={"url": url}, planner={"replan_s": replan_s}, demand=demand)


@pytest.fixture
async def url():
    u = fresh_pg_url()
    yield u
    await drop_schema(u)


async def _replica(config) -> Replica:
    clock = lambda: datetime.now(UTC)  # noqa: E731
    ledger = await PgLedger.open(config.ledger.url, config.vouchers, clock=clock, sweep_s=None)
    available: dict[str, float] = {}
    planning = Replanner(config, clock=clock, balances=lambda: dict(available), poll_s=0.01, min_gap_s=0.0)
    return Replica(ledger, config, available, planning, period_s=3600)


async def _planned(r: Replica) -> None:
    """Step until the leader's planner thread has a plan and the step has published it."""
    for _ in range(200):
        await r.step()
        if r.plan_version:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the leader published no plan")


async def _stop(*replicas: Replica) -> None:
    for r in replicas:
        await r.stop()
        await r.ledger.close()


async def test_one_leader_plans_and_the_others_pick_its_plan_up(url: str, tmp_path: Path) -> None:
    config = _config(tmp_path, url)
    a, b = await _replica(config), await _replica(config)
    await _planned(a)
    await b.step()
    assert (a.is_leader, b.is_leader) == (True, False)
    assert a.plan is not None and a.plan_version >= 1
    assert b.plan_version == a.plan_version and b.plan == a.plan
    assert b.planning.info()["shadow_prices"] == a.planning.info()["shadow_prices"]
    # the shadow prices are in their table too, one row per priced voucher
    prices = {r["voucher_id"]: r["yuan_per_unit"] for r in await a.ledger.pool.fetch(
        "SELECT voucher_id, yuan_per_unit FROM shadow_prices")}
    assert prices == dict(a.plan.voucher_price) and "wuhan-tokens" in prices
    await _stop(a, b)


async def test_the_leader_plans_from_every_replicas_demand(url: str, tmp_path: Path) -> None:
    config = _config(tmp_path, url, replan_s=0.05).model_copy(update={"demand": ()})
    a, b = await _replica(config), await _replica(config)
    await _planned(a)
    assert sum(d.requests for d in a.plan.demand) == 0
    ask = Ask(model="deepseek-flash", work_class="batch", origin="east", input_tokens=1000, output_tokens=300,
              capability="chat")
    for _ in range(50):
        b.served(ask, completion_tokens=300, at=datetime.now(UTC))
    await b.step()  # flushes b's requests
    first = a.plan_version
    for _ in range(200):
        await a.step()
        if a.plan_version > first and sum(d.requests for d in a.plan.demand) > 0:
            break
        await asyncio.sleep(0.02)
    assert sum(d.requests for d in a.plan.demand) > 0
    await _stop(a, b)


async def test_a_new_leader_takes_over_when_the_old_ones_session_dies(url: str, tmp_path: Path) -> None:
    config = _config(tmp_path, url)
    a, b = await _replica(config), await _replica(config)
    await _planned(a)
    await b.step()
    first = a.plan_version
    a._leadership._session.terminate()  # as a killed process's connection would end
    for _ in range(200):
        await b.step()
        if b.plan_version > first:
            break
        await asyncio.sleep(0.02)
    assert b.is_leader and b.plan_version > first
    assert await b.ledger.pool.fetchval("SELECT replica FROM leader") == b.id
    assert await b.ledger.pool.fetchval("SELECT leader FROM plans ORDER BY version DESC LIMIT 1") == b.id
    a._leadership.lost()
    await a.step()
    assert not a.is_leader and a.plan_version >= b.plan_version - 1
    await _stop(a, b)


def test_a_plan_survives_its_json_round_trip(tmp_path: Path) -> None:
    from suanli.optimizer import Forecast, Snapshot, plan, slot_edges

    config = _config(tmp_path, "sqlite:///x.db")
    now_s = datetime(2026, 12, 1, tzinfo=UTC).timestamp()
    edges = slot_edges(config, now_s, now_s + 86400)
    demand = Forecast(config, start_s=now_s).demand(edges, now_s)
    plan = plan(Snapshot(config=config, now_s=now_s, horizon_s=86400, balances={"wuhan-tokens": 5e4},
                         demand=demand))
    assert plan.demand and plan_from_json(plan_to_json(plan)) == plan
