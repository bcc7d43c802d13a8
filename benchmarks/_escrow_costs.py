"""What the escrow costs PostgreSQL, measured in-process: one lease, one flush of n usage rows.

Used by benchmarks/replicas.py for its capacity model. Each figure is the median wall time of
the statement(s) seen from the client over loopback, so it bounds from above the server time
the primary spends on them (on a busy machine, by a lot).
"""

from __future__ import annotations

import asyncio
import secrets
import statistics
import time
from datetime import UTC, datetime

import asyncpg

from suanli.config import Voucher
from suanli.router.ledger.postgres.escrowed import open_escrowed
from suanli.router.ledger.postgres.leases import lease
from suanli.router.ledger.postgres.slices import Slice
from suanli.router.ledger.types import HoldRequest, Settlement

__all__ = ["measure_costs"]

BATCHES = (1, 8, 32, 128)


def _settlement() -> Settlement:
    return Settlement(prompt_tokens=20, completion_tokens=16, tokens=36, cost_yuan=0.0001, cash_yuan=0.0,
                      voucher_units=36.0, voucher_yuan=0.0001, latency_ms=5.0, ttft_ms=None)


async def _costs(url: str) -> tuple[float, dict[int, float]]:
    voucher = Voucher(id="v", region="wuhan", kind="tokens", amount=10**12)
    led = await open_escrowed(url, [voucher], clock=lambda: datetime.now(UTC), tick_s=None)
    try:
        sl = Slice(voucher_id="v", scale=10**6)
        lease_ms = []
        for i in range(40):
            started = time.perf_counter()
            await lease(led.pg.pool, sl, 10**6, owner_id=led.owner_id, lease_id=f"{led.owner_id}-bench{i}",
                        now=time.time())
            lease_ms.append((time.perf_counter() - started) * 1000)
        flush_ms: dict[int, float] = {}
        for n in BATCHES:
            runs = []
            for round_ in range(12):
                asks = [HoldRequest(f"b{n}-{round_}-{i}", "wuhan", "m", "interactive", "east", "v", 36.0)
                        for i in range(n)]
                holds = [await led.reserve(a) for a in asks]
                started = time.perf_counter()
                await asyncio.gather(*(led.settle(h.id, _settlement()) for h in holds))  # one batch
                runs.append((time.perf_counter() - started) * 1000)
            flush_ms[n] = statistics.median(runs[2:])
        return statistics.median(lease_ms[5:]), flush_ms
    finally:
        await led.close()


def measure_costs(dsn: str) -> tuple[float, dict[int, float]]:
    """(ms per lease, batch size -> ms per flush) on a fresh schema of ``dsn``, dropped afterwards."""
    schema = f"r19cost_{secrets.token_hex(4)}"
    sep = "&" if "?" in dsn else "?"

    async def run() -> tuple[float, dict[int, float]]:
        try:
            return await _costs(f"{dsn}{sep}schema={schema}")
        finally:
            conn = await asyncpg.connect(dsn)
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            await conn.close()

    return asyncio.run(run())
