"""Replicas on one PostgreSQL ledger: one planner leader, plans picked up by the others, failover."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from router.ledger_pg import PgLedger
from router.plan_board import plan_from_json, plan_to_json
from router.replica import Replica
from tests.harness import small_config
from tests.pg import drop_schema, fresh_pg_url, requires_pg

pytestmark = requires_pg


def _config(tmp_path: Path, url: str):
    demand = [{"class": "batch", "origin": "east", "model": "deepseek-flash", "requests_per_hour": 600}]
    return small_config(tmp_path, ledger={"url": url}, planner={"replan_s": 0.01}, demand=demand)


@pytest.fixture
async def url():
    u = fresh_pg_url()
    yield u
    await drop_schema(u)


async def _replica(config) -> Replica:
    clock = lambda: datetime.now(UTC)  # noqa: E731
    ledger = await PgLedger.open(config.ledger.url, config.vouchers, clock=clock, sweep_s=None)
    return Replica(ledger, config, {}, period_s=3600)


async def test_one_leader_plans_and_the_others_pick_its_plan_up(url: str, tmp_path: Path) -> None:
    config = _config(tmp_path, url)
    a, b = await _replica(config), await _replica(config)
    await a.step()
    await b.step()
    assert (a.is_leader, b.is_leader) == (True, False)
    assert a.plan is not None and a.plan_version >= 1
    assert (b.plan_version, b.plan) == (a.plan_version, a.plan)
    # the shadow prices are in their table too, one row per voucher
    prices = {r["voucher_id"]: r["yuan_per_unit"] for r in await a.ledger.pool.fetch(
        "SELECT voucher_id, yuan_per_unit FROM shadow_prices")}
    assert prices == dict(a.plan.voucher_price) and "wuhan-tokens" in prices
    for r in (a, b):
        await r.stop()
        await r.ledger.close()


async def test_the_leader_plans_from_every_replicas_demand(url: str, tmp_path: Path) -> None:
    config = _config(tmp_path, url).model_copy(update={"demand": ()})
    a, b = await _replica(config), await _replica(config)
    await a.step()
    now_s = datetime.now(UTC).timestamp()
    for i in range(50):
        b.observe("batch", "east", "deepseek-flash", input_tokens=1000, output_tokens=300, window_s=86400,
                  at_s=now_s - i)
    await b.step()  # flushes b's requests
    await a.step()
    assert a.is_leader and sum(d.requests for d in a.plan.demand) > 0
    for r in (a, b):
        await r.stop()
        await r.ledger.close()


async def test_a_new_leader_takes_over_when_the_old_ones_session_dies(url: str, tmp_path: Path) -> None:
    config = _config(tmp_path, url)
    a, b = await _replica(config), await _replica(config)
    await a.step()
    await b.step()
    first = a.plan_version
    a._leadership._session.terminate()  # as a killed process's connection would end
    await b.step()
    assert b.is_leader and b.plan_version > first
    leader = await b.ledger.pool.fetchval("SELECT replica FROM leader")
    assert leader == b.id
    a._leadership.lost()
    await a.step()
    assert not a.is_leader and a.plan_version == b.plan_version
    for r in (a, b):
        await r.stop()
        await r.ledger.close()


def test_a_plan_survives_its_json_round_trip(tmp_path: Path) -> None:
    from optimizer import Forecast
    from router.replica import default_planner

    config = _config(tmp_path, "sqlite:///x.db")
    now_s = datetime(2026, 12, 1, tzinfo=UTC).timestamp()
    plan = default_planner(config)(Forecast(config, start_s=now_s), {"wuhan-tokens": 5e4}, now_s)
    assert plan.demand and plan_from_json(plan_to_json(plan)) == plan
