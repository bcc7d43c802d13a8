"""The voucher ledger on both backends: two-phase holds, exact balances, concurrency, recovery.

Every behaviour test runs on SQLite and on PostgreSQL (a fresh schema per test; skipped with
a reason when SUANLI_TEST_PG_DSN is not set), through the async face the Router uses.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from suanli.config import Voucher
from suanli.config.schema import LedgerSettings
from suanli.router.errors import InsufficientBalanceError, LedgerError, RouterError
from suanli.router.ledger.port import AsyncLedger, open_ledger
from suanli.router.ledger.sqlite.ledger import HoldRequest, Ledger, Settlement, open_readonly
from tests.pg import drop_schema, drop_schema_sync, fresh_pg_url, pg_dsn

ROOT = Path(__file__).resolve().parents[3]
START = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
BACKENDS = ["sqlite", "postgresql"]
class FakeClock:
    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def tokens_voucher(amount: float = 1000, vid: str = "wuhan-tokens") -> Voucher:
    return Voucher(id=vid, region="wuhan", kind="tokens", amount=amount,
                   expires=datetime(2027, 1, 1, tzinfo=UTC))


def credit_voucher(amount: float = 10.0, vid: str = "qingyang-credit") -> Voucher:
    return Voucher(id=vid, region="qingyang", kind="credit", amount=amount)


def ask(voucher_id: str | None, units: float, request_id: str = "req") -> HoldRequest:
    return HoldRequest(request_id=request_id, region="wuhan", model="deepseek-v3", work_class="interactive",
                       origin="east", voucher_id=voucher_id, voucher_units=units, key_id="k1")


def used(units: float, *, cost_yuan: float = 0.01, voucher_yuan: float | None = None) -> Settlement:
    voucher_yuan = cost_yuan if voucher_yuan is None else voucher_yuan
    return Settlement(prompt_tokens=100, completion_tokens=50, tokens=150, cost_yuan=cost_yuan,
                      cash_yuan=cost_yuan - voucher_yuan, voucher_units=units, voucher_yuan=voucher_yuan,
                      latency_ms=120.0, ttft_ms=40.0)


class Store:
    """Where one test's ledgers live: a SQLite file, or a fresh PostgreSQL schema."""

    def __init__(self, kind: str, url: str) -> None:
        self.kind = kind
        self.url = url

    async def open(self, vouchers: list[Voucher], clock: FakeClock, *, hold_timeout_s: float = 300.0,
                   ) -> AsyncLedger:
        settings = LedgerSettings(url=self.url, hold_timeout_s=hold_timeout_s)
        return await open_ledger(settings, vouchers, clock=clock, sweep_s=None)

    async def tamper(self, sql: str) -> None:
        """Edit the stored rows behind the ledger's back."""
        if self.kind == "sqlite":
            conn = sqlite3.connect(self.url.removeprefix("sqlite:///"))
            conn.execute(sql)
            conn.commit()
            conn.close()
            return
        import asyncpg

        from suanli.router.ledger.postgres.schema import pg_url

        parsed = pg_url(self.url)
        conn = await asyncpg.connect(parsed.dsn, server_settings={"search_path": parsed.schema})
        await conn.execute(sql)
        await conn.close()


def _store(kind: str, tmp_path: Path) -> Store:
    if kind == "sqlite":
        return Store(kind, f"sqlite:///{tmp_path}/ledger-{os.urandom(3).hex()}.db")
    return Store(kind, fresh_pg_url())


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path):
    s = _store(request.param, tmp_path)
    yield s
    if s.kind == "postgresql":
        await drop_schema(s.url)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def ledger(store: Store, clock: FakeClock):
    led = await store.open([tokens_voucher(), credit_voucher()], clock)
    yield led
    await led.close()


async def test_reserve_holds_units_and_settle_debits_real_usage(ledger: AsyncLedger) -> None:
    hold = await ledger.reserve(ask("wuhan-tokens", 300))
    assert hold.voucher_units == 300
    assert (await ledger.balances())["wuhan-tokens"] == 700
    assert await ledger.balance("wuhan-tokens") == 1000
    assert await ledger.pending_holds() == 1
    row = await ledger.settle(hold.id, used(120))
    assert row.voucher_units == 120 and row.voucher_id == "wuhan-tokens" and row.key_id == "k1"
    assert await ledger.balance("wuhan-tokens") == 880
    assert (await ledger.balances())["wuhan-tokens"] == 880
    assert await ledger.pending_holds() == 0
    assert await ledger.usage() == [row]


async def test_void_releases_the_whole_hold(ledger: AsyncLedger) -> None:
    hold = await ledger.reserve(ask("wuhan-tokens", 300))
    await ledger.void(hold.id)
    assert (await ledger.balances())["wuhan-tokens"] == 1000
    assert await ledger.pending_holds() == 0
    assert await ledger.usage() == []


async def test_hold_is_partial_when_balance_is_short(ledger: AsyncLedger) -> None:
    first = await ledger.reserve(ask("wuhan-tokens", 900))
    second = await ledger.reserve(ask("wuhan-tokens", 500))
    assert (first.voucher_units, second.voucher_units) == (900, 100)
    assert (await ledger.balances())["wuhan-tokens"] == 0


async def test_reserve_on_an_empty_voucher_raises_insufficient_balance(ledger: AsyncLedger) -> None:
    await ledger.reserve(ask("wuhan-tokens", 1000))
    with pytest.raises(InsufficientBalanceError) as info:
        await ledger.reserve(ask("wuhan-tokens", 1))
    assert isinstance(info.value, RouterError)
    assert (info.value.voucher_id, info.value.wanted, info.value.available) == ("wuhan-tokens", 1, 0)
    assert await ledger.pending_holds() == 1


async def test_cash_only_hold_is_recorded_and_settled(ledger: AsyncLedger) -> None:
    hold = await ledger.reserve(ask(None, 0))
    assert hold.voucher_id is None and hold.voucher_units == 0
    assert await ledger.pending_holds() == 1
    row = await ledger.settle(hold.id, used(0, cost_yuan=0.02, voucher_yuan=0.0))
    assert row.cash_yuan == 0.02 and row.voucher_id is None
    assert await ledger.totals() == {"requests": 1, "cash_yuan": 0.02, "voucher_yuan": 0.0, "cost_yuan": 0.02,
                                     "tokens": 150}


async def test_settle_is_idempotent(ledger: AsyncLedger, clock: FakeClock) -> None:
    hold = await ledger.reserve(ask("wuhan-tokens", 300))
    row = await ledger.settle(hold.id, used(100))
    clock.advance(5)
    again = await ledger.settle(hold.id, used(250))
    assert again == row
    assert await ledger.balance("wuhan-tokens") == 900
    assert len(await ledger.usage()) == 1


async def test_concurrent_settles_and_voids_of_one_hold_post_it_once(ledger: AsyncLedger) -> None:
    hold = await ledger.reserve(ask("wuhan-tokens", 300))
    calls = [ledger.settle(hold.id, used(100)) for _ in range(5)] + [ledger.void(hold.id) for _ in range(5)]
    random.Random(3).shuffle(calls)
    results = await asyncio.gather(*calls, return_exceptions=True)
    rows = await ledger.usage()
    # Either a settle won (one row, 100 spent) or a void did (no row, nothing spent); never both.
    assert len(rows) <= 1
    assert await ledger.balance("wuhan-tokens") == 1000 - 100 * len(rows)
    assert (await ledger.balances())["wuhan-tokens"] == 1000 - 100 * len(rows)
    assert all(isinstance(r, LedgerError) for r in results if isinstance(r, Exception))


async def test_void_is_idempotent_and_leaves_a_settled_hold_alone(ledger: AsyncLedger) -> None:
    voided = await ledger.reserve(ask("wuhan-tokens", 300))
    await ledger.void(voided.id)
    await ledger.void(voided.id)
    settled = await ledger.reserve(ask("wuhan-tokens", 300))
    await ledger.settle(settled.id, used(100))
    await ledger.void(settled.id)
    assert await ledger.balance("wuhan-tokens") == 900
    assert (await ledger.balances())["wuhan-tokens"] == 900


async def test_settling_a_voided_or_unknown_hold_raises(ledger: AsyncLedger) -> None:
    hold = await ledger.reserve(ask("wuhan-tokens", 300))
    await ledger.void(hold.id)
    with pytest.raises(LedgerError, match="voided"):
        await ledger.settle(hold.id, used(10))
    with pytest.raises(LedgerError, match="unknown hold"):
        await ledger.settle("nope", used(10))
    with pytest.raises(LedgerError, match="unknown voucher"):
        await ledger.reserve(ask("nope", 10))


async def test_settling_more_than_held_is_clamped_and_the_excess_paid_in_cash(ledger: AsyncLedger) -> None:
    hold = await ledger.reserve(ask("wuhan-tokens", 100))
    row = await ledger.settle(hold.id, used(400, cost_yuan=0.04))
    assert row.voucher_units == 100
    assert row.voucher_yuan == pytest.approx(0.01) and row.cash_yuan == pytest.approx(0.03)
    assert await ledger.balance("wuhan-tokens") == 900


async def test_balance_is_exactly_amount_minus_settled_units(store: Store) -> None:
    rng = random.Random(7)
    led = await store.open([credit_voucher(123.456789)], FakeClock())
    for i in range(300):
        hold = await led.reserve(ask("qingyang-credit", 0.05, f"r{i}"))
        units = rng.uniform(0, hold.voucher_units)
        await led.settle(hold.id, used(units, cost_yuan=units))
    spent = sum(r.voucher_units for r in await led.usage())
    assert abs(await led.balance("qingyang-credit") - (123.456789 - spent)) < 1e-9
    (status,) = await led.vouchers()
    assert abs(status.spent - spent) < 1e-9
    await led.close()


_OPS = st.lists(
    st.tuples(st.sampled_from(["reserve", "settle", "void", "settle_again"]),
              st.sampled_from(["wuhan-tokens", "qingyang-credit", None]),
              st.floats(min_value=0, max_value=400, allow_nan=False),
              st.floats(min_value=0, max_value=1.2, allow_nan=False),
              st.integers(min_value=0, max_value=50)),
    max_size=60,
)


async def _interleave(store: Store, ops: list) -> None:
    amounts = {"wuhan-tokens": 1000.0, "qingyang-credit": 10.0}
    led = await store.open([tokens_voucher(), credit_voucher()], FakeClock())
    pending: list = []
    settled: list = []
    for op, voucher_id, units, share, pick in ops:
        if op == "reserve":
            try:
                pending.append(await led.reserve(ask(voucher_id, units)))
            except InsufficientBalanceError:
                assert voucher_id is not None and (await led.balances())[voucher_id] <= 0
        elif op in ("settle", "void") and pending:
            hold = pending.pop(pick % len(pending))
            if op == "void":
                await led.void(hold.id)
            else:
                await led.settle(hold.id, used(hold.voucher_units * share))
                settled.append(hold.id)
        elif op == "settle_again" and settled:
            await led.settle(settled[pick % len(settled)], used(units))
        await _check_invariants(led, amounts, pending)
    await led.close()


@pytest.mark.parametrize("kind", BACKENDS)
def test_balance_never_negative_under_random_interleavings(kind: str, tmp_path: Path) -> None:
    if kind == "postgresql" and pg_dsn() is None:
        pytest.skip("PostgreSQL tests need SUANLI_TEST_PG_DSN")

    # Fewer examples on PostgreSQL: each opens a fresh schema (tens of ms).
    @settings(max_examples=60 if kind == "sqlite" else 15, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(ops=_OPS)
    def run(ops: list) -> None:
        s = _store(kind, tmp_path)
        try:
            asyncio.run(_interleave(s, ops))
        finally:
            if kind == "postgresql":
                drop_schema_sync(s.url)

    run()


async def _check_invariants(led: AsyncLedger, amounts: dict[str, float], pending: list) -> None:
    rows = await led.usage()
    for status in await led.vouchers():
        held = sum(h.voucher_units for h in pending if h.voucher_id == status.id)
        spent = sum(r.voucher_units for r in rows if r.voucher_id == status.id)
        assert status.balance >= 0 and status.available >= 0
        assert status.held == pytest.approx(held, abs=1e-9)
        assert status.balance == pytest.approx(amounts[status.id] - spent, abs=1e-9)
    assert await led.pending_holds() == len(pending)


async def test_two_ledgers_on_one_store_never_overdraw_together(store: Store) -> None:
    voucher = tokens_voucher(amount=50)
    ledgers = [await store.open([voucher], FakeClock()) for _ in range(2)]
    paid: list[float] = []

    async def worker(led: AsyncLedger, n: int) -> None:
        for i in range(n):
            try:
                hold = await led.reserve(ask("wuhan-tokens", 1, f"r{i}"))
            except InsufficientBalanceError:
                continue
            await led.settle(hold.id, used(hold.voucher_units))
            paid.append(hold.voucher_units)

    await asyncio.gather(*(worker(led, 60) for led in ledgers for _ in range(2)))
    assert sum(paid) == 50
    assert await ledgers[0].balance("wuhan-tokens") == 0
    assert sum(r.voucher_units for r in await ledgers[1].usage()) == 50
    assert await ledgers[0].verify_chain() is None
    for led in ledgers:
        await led.close()


async def test_restart_voids_pending_holds_and_restores_balance(store: Store) -> None:
    led = await store.open([tokens_voucher()], FakeClock())
    await led.reserve(ask("wuhan-tokens", 300))
    await led.reserve(ask(None, 0))
    settled = await led.reserve(ask("wuhan-tokens", 300))
    await led.settle(settled.id, used(200))
    await led.close()
    again = await store.open([tokens_voucher()], FakeClock())
    assert await again.pending_holds() == 0
    assert await again.balances() == {"wuhan-tokens": 800}
    assert len(await again.usage()) == 1
    await again.close()


async def test_opening_the_same_store_never_voids_a_live_ledgers_holds(store: Store) -> None:
    server = await store.open([tokens_voucher()], FakeClock())
    hold = await server.reserve(ask("wuhan-tokens", 300))
    second = await store.open([], FakeClock())
    assert second.recovered_holds == 0
    assert await second.pending_holds() == 1
    assert [v.held for v in await second.vouchers()] == [300]
    await second.close()
    await server.settle(hold.id, used(300))
    assert await server.balance("wuhan-tokens") == 700
    await server.close()


async def test_reopening_keeps_the_ledgers_balance_and_takes_new_metadata(store: Store) -> None:
    led = await store.open([tokens_voucher()], FakeClock())
    await led.settle((await led.reserve(ask("wuhan-tokens", 100))).id, used(100))
    await led.close()
    later = datetime(2027, 6, 1, tzinfo=UTC)
    changed = Voucher(id="wuhan-tokens", region="wuhan", kind="tokens", amount=5000, expires=later)
    led = await store.open([changed, credit_voucher()], FakeClock())
    status = {v.id: v for v in await led.vouchers()}
    assert status["wuhan-tokens"].balance == 900 and status["wuhan-tokens"].amount == 1000
    assert status["wuhan-tokens"].expires == later
    assert status["qingyang-credit"].balance == 10.0
    await led.close()


_KILLED = """
import asyncio, sys
from datetime import UTC, datetime
sys.path.insert(0, {root!r})
from suanli.config import Voucher
from suanli.config.schema import LedgerSettings
from suanli.router.ledger.sqlite.ledger import HoldRequest, Settlement
from suanli.router.ledger.port import open_ledger

async def main():
    v = Voucher(id="v", region="wuhan", kind="tokens", amount=1e9)
    led = await open_ledger(LedgerSettings(url={url!r}), [v], clock=lambda: datetime.now(UTC), sweep_s=None)
    s = Settlement(10, 5, 15, 0.001, 0.0, 15.0, 0.001, 50.0, None)
    for i in range(100000):
        hold = await led.reserve(HoldRequest(f"r{{i}}", "wuhan", "m", "batch", "east", "v", 20.0))
        await led.settle(hold.id, s)
        print(hold.id, flush=True)
        await led.reserve(HoldRequest(f"p{{i}}", "wuhan", "m", "batch", "east", "v", 20.0))

asyncio.run(main())
"""


async def test_kill_9_after_settles_loses_no_usage_row(store: Store) -> None:
    script = textwrap.dedent(_KILLED.format(root=str(ROOT), url=store.url))
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", script, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    # a settle returned (so the client was answered) for each of these holds
    acknowledged = [(await proc.stdout.readline()).decode().strip() for _ in range(100)]
    os.kill(proc.pid, signal.SIGKILL)
    await proc.wait()
    # A minute later: on PostgreSQL a replica whose session is gone is presumed reconnecting for
    # ledger.liveness_grace_s (10 s) after its last heartbeat.
    led = await store.open([], FakeClock(datetime.now(UTC) + timedelta(minutes=1)))
    for _ in range(50):  # the server notices the killed session within milliseconds
        if await led.pending_holds() == 0:
            break
        await asyncio.sleep(0.05)
        if hasattr(led, "sweep"):
            await led.sweep()
    rows = await led.usage()
    assert {r.hold_id for r in rows} >= set(acknowledged)
    assert await led.pending_holds() == 0
    assert (await led.balances())["v"] == await led.balance("v") == 1e9 - sum(r.voucher_units for r in rows)
    assert await led.verify_chain() is None
    await led.close()


async def test_usage_rows_are_hash_chained(store: Store, clock: FakeClock) -> None:
    led = await store.open([tokens_voucher()], clock)
    for i in range(5):
        await led.settle((await led.reserve(ask("wuhan-tokens", 10, f"r{i}"))).id, used(10))
        clock.advance(60)
    assert await led.verify_chain() is None
    await store.tamper("UPDATE usage SET cash_yuan = 1.0 WHERE id = 3")
    assert await led.verify_chain() == 3
    await led.close()


async def test_usage_window_totals_and_burn_per_hour(ledger: AsyncLedger, clock: FakeClock) -> None:
    for i in range(4):
        await ledger.settle((await ledger.reserve(ask("wuhan-tokens", 100, f"r{i}"))).id, used(100))
        clock.advance(1800)
    # settles at +0, +30, +60 and +90 minutes; now is +120, so the last hour is (+60, +120]
    window = await ledger.usage(since=START + timedelta(minutes=30), until=START + timedelta(hours=1))
    assert [r.time for r in window] == [START + timedelta(minutes=30)]
    (tokens,) = [v for v in await ledger.vouchers() if v.id == "wuhan-tokens"]
    assert tokens.burn_per_hour == 100 and tokens.spent == 400 and tokens.kind == "tokens"
    totals = await ledger.totals()
    assert totals["requests"] == 4 and totals["tokens"] == 600


def test_sqlite_reader_sees_holds_and_refuses_writes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/ledger.db"
    with Ledger.open(url, [tokens_voucher()], clock=FakeClock()) as server:
        server.reserve(ask("wuhan-tokens", 300))
        reader = open_readonly(url)
        assert reader.pending_holds() == 1
        assert [v.held for v in reader.vouchers()] == [300]
        with pytest.raises(LedgerError, match="read-only"):
            reader.reserve(ask("wuhan-tokens", 1))
        reader.close()


def test_sqlite_open_creates_missing_parent_directories(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/data/deeper/ledger.db"
    with Ledger.open(url, [tokens_voucher()], clock=FakeClock()) as led:
        assert led.balance("wuhan-tokens") == 1000
    assert (tmp_path / "data" / "deeper" / "ledger.db").exists()


@pytest.mark.parametrize("url", ["mysql://x", "suanli.db", "sqlite://relative.db", "sqlite:///x.db?journal=off"])
async def test_unsupported_ledger_url_raises_value_error(url: str) -> None:
    with pytest.raises(ValueError, match="ledger url"):
        await open_ledger(LedgerSettings(url=url), [], clock=FakeClock())


def test_sqlite_ledger_names_the_unsupported_scheme() -> None:
    with pytest.raises(ValueError, match="'postgresql'"):
        Ledger.open("postgresql://u@h/db", [], clock=FakeClock())


def test_a_sqlite_ledger_never_imports_the_postgresql_driver(tmp_path: Path) -> None:
    code = textwrap.dedent(f"""
        import asyncio, sys
        from datetime import UTC, datetime
        from suanli.config.schema import LedgerSettings
        from suanli.router.ledger.port import open_ledger
        import suanli.router.http.app

        async def main():
            settings = LedgerSettings(url="sqlite:///{tmp_path}/ledger.db")
            led = await open_ledger(settings, [], clock=lambda: datetime.now(UTC))
            await led.close()

        asyncio.run(main())
        assert "asyncpg" not in sys.modules
    """)
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
