"""What the escrow costs PostgreSQL, measured in-process: one lease, one flush of n usage rows.

Used by benchmarks/replicas.py for its capacity model. Each figure is the server CPU its
sessions spent (``_pg_cpu``: /proc of a local server), per lease and per flush of n rows,
and the client's median wall time for comparison.
"""

from __future__ import annotations

import asyncio
import secrets
import statistics
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
from _pg_cpu import backend_cpu, cpu_delta_ms

from suanli.config import Voucher
from suanli.router.ledger.postgres.escrowed import EscrowLedger, open_escrowed
from suanli.router.ledger.postgres.leases import lease
from suanli.router.ledger.postgres.slices import Slice
from suanli.router.ledger.types import HoldRequest, Settlement

__all__ = ["Costs", "measure_costs"]

BATCHES = (1, 32, 128)
LEASES = 200
ROWS = 2000  # per batch size


@dataclass(frozen=True)
class Costs:
    lease_cpu_ms: float | None
    lease_wall_ms: float
    flush_cpu_ms: dict[int, float | None]  # batch size -> server CPU per flush
    flush_wall_ms: dict[int, float]


def _settlement() -> Settlement:
    return Settlement(prompt_tokens=20, completion_tokens=16, tokens=36, cost_yuan=0.0001, cash_yuan=0.0,
                      voucher_units=36.0, voucher_yuan=0.0001, latency_ms=5.0, ttft_ms=None)


async def _cpu(led: EscrowLedger, probe: asyncpg.Connection) -> dict[int, float] | None:
    return await backend_cpu(probe, [f"suanli {led.owner_id}"])


async def _costs(url: str, dsn: str) -> Costs:
    voucher = Voucher(id="v", region="wuhan", kind="tokens", amount=10**12)
    led = await open_escrowed(url, [voucher], clock=lambda: datetime.now(UTC), tick_s=None)
    probe = await asyncpg.connect(dsn)
    try:
        sl = Slice(voucher_id="v", scale=10**6)
        walls = []
        before = await _cpu(led, probe)
        for i in range(LEASES):
            started = time.perf_counter()
            await lease(led.pg.pool, sl, 10**6, owner_id=led.owner_id, lease_id=f"{led.owner_id}-bench{i}",
                        now=time.time())
            walls.append((time.perf_counter() - started) * 1000)
        spent = cpu_delta_ms(before, await _cpu(led, probe))
        lease_cpu = None if spent is None else spent / LEASES
        flush_cpu: dict[int, float | None] = {}
        flush_wall: dict[int, float] = {}
        for n in BATCHES:
            runs = []
            rounds = max(ROWS // n, 10)
            before = await _cpu(led, probe)
            for round_ in range(rounds):
                asks = [HoldRequest(f"b{n}-{round_}-{i}", "wuhan", "m", "interactive", "east", "v", 36.0)
                        for i in range(n)]
                holds = [await led.reserve(a) for a in asks]
                started = time.perf_counter()
                await asyncio.gather(*(led.settle(h.id, _settlement()) for h in holds))  # one batch
                runs.append((time.perf_counter() - started) * 1000)
            spent = cpu_delta_ms(before, await _cpu(led, probe))
            flush_cpu[n] = None if spent is None else spent / rounds
            flush_wall[n] = statistics.median(runs)
        return Costs(lease_cpu, statistics.median(walls), flush_cpu, flush_wall)
    finally:
        await probe.close()
        await led.close()


def measure_costs(dsn: str) -> Costs:
    """The escrow's costs on a fresh schema of ``dsn``, dropped afterwards."""
    schema = f"r19cost_{secrets.token_hex(4)}"
    sep = "&" if "?" in dsn else "?"

    async def run() -> Costs:
        try:
            return await _costs(f"{dsn}{sep}schema={schema}", dsn)
        finally:
            conn = await asyncpg.connect(dsn)
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            await conn.close()

    return asyncio.run(run())
