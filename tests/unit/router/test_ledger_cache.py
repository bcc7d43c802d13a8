"""Prompt-cache figures on the ledger: a settle keeps the upstream's cached tokens and what they
saved beside its usage row (not in the hash chain), on SQLite, PostgreSQL and the replicas'
escrow, and every reader `suanli report` uses gives them back."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from suanli.config import Voucher
from suanli.config.schema import LedgerSettings
from suanli.router.ledger.audit import verify
from suanli.router.ledger.port import open_ledger
from suanli.router.ledger.postgres.audit import read_snapshot
from suanli.router.ledger.postgres.escrowed import open_escrowed
from suanli.router.ledger.sqlite.ledger import open_readonly
from suanli.router.ledger.types import HoldRequest, Settlement
from suanli.router.ops.cache_report import cache_figures
from tests.pg import drop_schema, fresh_pg_url, requires_pg

VOUCHER = Voucher(id="v", region="shanghai", kind="tokens", amount=10_000)
NOW = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


def _served(cached: int, saved: float) -> Settlement:
    return Settlement(prompt_tokens=1000, completion_tokens=50, tokens=1050, cost_yuan=0.002, cash_yuan=0.0,
                      voucher_units=1050, voucher_yuan=0.002, latency_ms=80.0, ttft_ms=None,
                      cached_tokens=cached, cache_saved_yuan=saved)


async def _settle_three(led) -> None:
    for i, (cached, saved) in enumerate([(0, 0.0), (900, 0.00162), (640, 0.001152)]):
        hold = await led.reserve(HoldRequest(f"r{i}", "shanghai", "deepseek-flash", "interactive", "east",
                                             "v", 1050))
        await led.settle(hold.id, _served(cached, saved))


def _check(rows) -> None:
    assert [r.cached_tokens for r in rows] == [0, 900, 640]
    assert [r.cache_saved_yuan for r in rows] == pytest.approx([0.0, 0.00162, 0.001152])
    figures = cache_figures(rows)
    (shanghai,) = figures["regions"]
    assert shanghai["region"] == "shanghai" and shanghai["requests"] == 3 and shanghai["hits"] == 2
    assert shanghai["cached_share"] == pytest.approx(1540 / 3000, abs=1e-4)
    assert figures["total"]["saved_yuan"] == pytest.approx(0.002772)


async def test_sqlite_keeps_cached_tokens_beside_the_chain(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/ledger.db"
    led = await open_ledger(LedgerSettings(url=url), [VOUCHER], clock=lambda: NOW, sweep_s=None)
    await _settle_three(led)
    _check(await led.usage())
    await led.close()
    reader = open_readonly(url)  # what `suanli report` reads
    _check(reader.usage())
    report = verify(reader)  # the chain is DESIGN's: the cache columns are not hashed
    assert report.problem is None and report.rows == 3
    reader.close()


@requires_pg
async def test_postgresql_keeps_cached_tokens_beside_the_chain() -> None:
    url = fresh_pg_url()
    try:
        led = await open_ledger(LedgerSettings(url=url), [VOUCHER], clock=lambda: NOW, sweep_s=None)
        await _settle_three(led)
        _check(await led.usage())
        await led.close()
        snapshot = await read_snapshot(url)  # what `suanli report` and the audit read
        _check(snapshot.usage())
        report = verify(snapshot)
        assert report.problem is None and report.rows == 3
    finally:
        await drop_schema(url)


@requires_pg
async def test_replicas_escrow_batches_keep_cached_tokens() -> None:
    url = fresh_pg_url()
    try:
        led = await open_escrowed(url, [VOUCHER], clock=lambda: NOW, tick_s=None, grace_s=0.0)
        await _settle_three(led)
        _check(await led.usage())
        await led.close()
        snapshot = await read_snapshot(url)
        _check(snapshot.usage())
        report = verify(snapshot)
        assert report.problem is None and report.rows == 3
    finally:
        await drop_schema(url)
