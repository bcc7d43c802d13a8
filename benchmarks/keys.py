"""Micro-benchmark of client keys: microseconds per key check, and what a key budget adds to the ledger.

    .venv/bin/python benchmarks/keys.py [--n 20000] [--pg postgresql://postgres@127.0.0.1:5432/test]

Rows: ``KeyRing.authenticate`` with the master key, a virtual key found in the cache, a
virtual key looked up in SQLite (cache cold each time), a wrong key (always a lookup);
then ledger reserve+settle of one request without and with a day/month budget hold. With
``--pg`` (or SUANLI_TEST_PG_DSN set), the same on a PostgreSQL ledger in a throw-away schema:
``authenticate`` cached and cold, reserve+settle with and without a budget (sequential
round trips: latency, not throughput).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from suanli.config import load_catalog  # noqa: E402
from suanli.router.core.keys import KeyRing, new_secret, secret_sha256  # noqa: E402
from suanli.router.ledger.keys import KeyRow  # noqa: E402
from suanli.router.ledger.port import SqliteAsyncLedger  # noqa: E402
from suanli.router.ledger.sqlite.ledger import HoldRequest, Ledger, Settlement  # noqa: E402

MASTER = "sk-master-bench"


def _time_us(fn: Callable[[int], object], n: int) -> list[float]:
    samples = []
    for i in range(n):
        t0 = time.perf_counter_ns()
        fn(i)
        samples.append((time.perf_counter_ns() - t0) / 1000)
    return sorted(samples)


def _row(name: str, us: list[float]) -> str:
    p99 = us[min(len(us) - 1, int(len(us) * 0.99))]
    return f"| {name:<40} | {statistics.median(us):8.2f} | {p99:8.2f} | {statistics.fmean(us):8.2f} |"


def _settlement() -> Settlement:
    return Settlement(prompt_tokens=900, completion_tokens=300, tokens=1200, cost_yuan=0.0042,
                      cash_yuan=0.0042, voucher_units=0.0, voucher_yuan=0.0, latency_ms=420.0, ttft_ms=180.0)


def run(n: int, pg: str | None = None) -> None:
    config = load_catalog()
    clock = lambda: datetime.now(UTC)  # noqa: E731
    with tempfile.TemporaryDirectory() as tmp:
        ledger = Ledger.open(f"sqlite:///{tmp}/bench.db", [], clock=clock)
        secret = new_secret()
        ledger.create_key(KeyRow(id="key-bench", name="bench", created=0.0, revoked=None, expires=None,
                                 budget_yuan_per_day=1e9, budget_yuan_per_month=1e9, allowed_regions=None,
                                 allowed_zones=("east",), default_class=None, origin=None, rpm=None),
                          secret_sha256(secret))
        store = SqliteAsyncLedger(ledger)
        ring = KeyRing(config, master_key=MASTER, keys=lambda: store, clock=clock)
        policy = asyncio.run(ring.authenticate(secret))
        assert policy is not None  # noqa: S101 - the bench's own setup
        rows = asyncio.run(_sqlite_checks(ring, secret, n))
        s, tz = _settlement(), ZoneInfo(config.timezone)

        def request(i: int, budget: bool) -> None:
            hold = ledger.reserve(HoldRequest(
                request_id=f"r{i}", region="wuhan", model="deepseek-v3", work_class="interactive",
                origin="east", voucher_id=None, voucher_units=0.0, key_id="key-bench",
                key_budget=policy.budget_hold(0.005, clock(), tz) if budget else None))
            ledger.settle(hold.id, s)

        for name, budget in (("no key budget", False), ("day+month budget", True)):
            samples = _time_us(lambda i, budget=budget: request(i, budget), n // 4)
            rows.append(_row(f"ledger reserve+settle, {name}", samples))
        ledger.close()
    if pg:
        rows.extend(asyncio.run(run_pg(pg, n)))
    print("| operation                                |  p50 us  |  p99 us  |  mean us |")
    print("| ---------------------------------------- | -------- | -------- | -------- |")
    print("\n".join(rows))


async def _sqlite_checks(ring: KeyRing, secret: str, n: int) -> list[str]:
    """The key-check rows on SQLite (a lookup is awaited, but answered inline)."""

    async def cold(i: int) -> None:
        ring._cache.clear()
        await ring.authenticate(secret)

    async def wrong(i: int) -> None:
        try:
            await ring.authenticate(f"sk-suanli-wrong-{i}")
        except Exception:  # noqa: BLE001 - a 401 is the expected outcome
            pass

    master = await _time_us_async(lambda i: ring.authenticate(MASTER), n)
    cached = await _time_us_async(lambda i: ring.authenticate(secret), n)
    return [
        _row("authenticate: master key", master),
        _row("authenticate: virtual key, cached", cached),
        _row("authenticate: virtual key, SQLite lookup", await _time_us_async(cold, n // 4)),
        _row("authenticate: wrong key (401)", await _time_us_async(wrong, n // 4)),
    ]


async def _time_us_async(fn: Callable[[int], Awaitable[object]], n: int) -> list[float]:
    samples = []
    for i in range(n):
        t0 = time.perf_counter_ns()
        await fn(i)
        samples.append((time.perf_counter_ns() - t0) / 1000)
    return sorted(samples)


async def run_pg(dsn: str, n: int) -> list[str]:
    """The PostgreSQL rows, in a schema made and dropped here."""
    import asyncpg

    from suanli.router.ledger.postgres.ledger import PgLedger
    from suanli.router.ledger.postgres.schema import pg_url

    config = load_catalog()
    clock = lambda: datetime.now(UTC)  # noqa: E731
    url = f"{dsn}{'&' if '?' in dsn else '?'}schema=bench_keys_{secrets.token_hex(4)}"
    ledger = await PgLedger.open(url, [], clock=clock, sweep_s=None)
    try:
        secret = new_secret()
        row = KeyRow(id="key-bench", name="bench", created=0.0, revoked=None, expires=None,
                     budget_yuan_per_day=1e9, budget_yuan_per_month=1e9, allowed_regions=None,
                     allowed_zones=("east",), default_class=None, origin=None, rpm=None)
        await ledger.create_key(row, secret_sha256(secret))
        ring = KeyRing(config, master_key=MASTER, keys=lambda: ledger, clock=clock)
        policy = await ring.authenticate(secret)

        async def cold(i: int) -> None:
            ring._cache.clear()
            await ring.authenticate(secret)

        rows = [
            _row("PG authenticate: cached", await _time_us_async(lambda i: ring.authenticate(secret), n)),
            _row("PG authenticate: lookup", await _time_us_async(cold, n // 20)),
        ]
        s, tz = _settlement(), ZoneInfo(config.timezone)

        async def request(i: int, budget: bool) -> None:
            hold = await ledger.reserve(HoldRequest(
                request_id=f"r{i}", region="wuhan", model="deepseek-v3", work_class="interactive",
                origin="east", voucher_id=None, voucher_units=0.0, key_id="key-bench",
                key_budget=policy.budget_hold(0.005, clock(), tz) if budget else None))
            await ledger.settle(hold.id, s)

        for name, budget in (("no key budget", False), ("day+month budget", True)):
            samples = await _time_us_async(lambda i, budget=budget: request(i, budget), n // 20)
            rows.append(_row(f"PG reserve+settle, {name}", samples))
        return rows
    finally:
        await ledger.close()
        parsed = pg_url(url)
        conn = await asyncpg.connect(parsed.dsn)
        await conn.execute(f"DROP SCHEMA IF EXISTS {parsed.schema} CASCADE")
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--pg", default=os.environ.get("SUANLI_TEST_PG_DSN"),
                        help="also time a PostgreSQL ledger at this DSN")
    args = parser.parse_args()
    run(args.n, args.pg)


if __name__ == "__main__":
    main()
