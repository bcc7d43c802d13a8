"""The plan board: where the planner leader publishes plans and every replica reads them.

A plan is stored whole as JSON in ``plans`` (versioned, newest wins) and its voucher shadow
prices once more, one row per voucher, in ``shadow_prices``, for operators and for anything
that wants only the prices. Readers poll the newest version (one indexed read a second).
"""

from __future__ import annotations

import dataclasses

import asyncpg
import orjson

from suanli.optimizer import Demand, Flow, Plan

__all__ = ["PlanBoard", "plan_from_json", "plan_to_json"]

_KEEP = 10  # versions kept for inspection; older ones are deleted on publish

_SERIES = ("token_price", "request_price", "interactive_tpm", "interactive_rpm")


def plan_to_json(plan: Plan) -> str:
    """A Plan as JSON text (floats round-trip exactly)."""
    data = dataclasses.asdict(plan)
    # JSON keys are strings: (region, minute) becomes "region|minute"
    data["minute_price"] = {f"{region}|{minute}": v for (region, minute), v in plan.minute_price.items()}
    return orjson.dumps(data).decode()


def _minute_key(text: str) -> tuple[str, int]:
    region, minute = text.rsplit("|", 1)
    return region, int(minute)


def plan_from_json(text: str) -> Plan:
    """The Plan ``plan_to_json`` wrote."""
    data = orjson.loads(text)
    return Plan(
        edges=tuple(data["edges"]),
        voucher_price=dict(data["voucher_price"]),
        **{name: {k: tuple(v) for k, v in data[name].items()} for name in _SERIES},
        cash_yuan=data["cash_yuan"],
        unserved_requests=data["unserved_requests"],
        demand=tuple(Demand(**d) for d in data["demand"]),
        flows=tuple(Flow(**f) for f in data["flows"]),
        deferred_tpm={k: tuple(v) for k, v in data.get("deferred_tpm", {}).items()},
        minute_price={_minute_key(k): tuple(v) for k, v in data.get("minute_price", {}).items()},
    )


class PlanBoard:
    """Publish and read plans in the ledger's schema."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def publish(self, plan: Plan, *, leader: str, now_s: float) -> int:
        """Store ``plan`` as the newest version and its shadow prices; the version."""
        async with self._pool.acquire() as c, c.transaction():
            version = await c.fetchval(
                "INSERT INTO plans (leader, published, plan) VALUES ($1, $2, $3) RETURNING version",
                leader, now_s, plan_to_json(plan),
            )
            await c.execute("DELETE FROM shadow_prices")
            await c.executemany(
                "INSERT INTO shadow_prices (voucher_id, version, yuan_per_unit) VALUES ($1, $2, $3)",
                [(vid, version, price) for vid, price in sorted(plan.voucher_price.items())],
            )
            await c.execute("DELETE FROM plans WHERE version <= $1", version - _KEEP)
        return int(version)

    async def newest_version(self) -> int:
        return int(await self._pool.fetchval("SELECT COALESCE(MAX(version), 0) FROM plans"))

    async def newest(self, after: int = 0) -> tuple[int, Plan] | None:
        """``(version, plan)`` of the newest plan if it is newer than ``after``, else None."""
        row = await self._pool.fetchrow(
            "SELECT version, plan FROM plans WHERE version > $1 ORDER BY version DESC LIMIT 1", after)
        return None if row is None else (int(row["version"]), plan_from_json(row["plan"]))

    async def shadow_prices(self) -> dict[str, float]:
        """Voucher id -> yuan per unit, as the newest plan priced it."""
        rows = await self._pool.fetch("SELECT voucher_id, yuan_per_unit FROM shadow_prices")
        return {r["voucher_id"]: r["yuan_per_unit"] for r in rows}
