"""The PostgreSQL escrow (router/ledger/postgres/escrow.py): replicas hold and settle against
leased slices, and no interleaving, death, silence or restart overdraws a voucher or loses a row."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from suanli.config import Voucher
from suanli.router.errors import InsufficientBalanceError
from suanli.router.ledger.audit import verify
from suanli.router.ledger.postgres.audit import read_snapshot
from suanli.router.ledger.postgres.escrowed import EscrowLedger, open_escrowed
from suanli.router.ledger.postgres.ledger import PgLedger
from suanli.router.ledger.postgres.schema import pg_url
from suanli.router.ledger.types import HoldRequest, Settlement
from tests.pg import drop_schema, fresh_pg_url, requires_pg

pytestmark = [requires_pg, pytest.mark.timeout(120)]

AMOUNT = 1000.0
VOUCHER = Voucher(id="v", region="wuhan", kind="tokens", amount=AMOUNT)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def ask(request_id: str, units: float) -> HoldRequest:
    return HoldRequest(request_id, "wuhan", "m", "interactive", "east", "v", units)


def used(units: float) -> Settlement:
    return Settlement(prompt_tokens=1, completion_tokens=1, tokens=2, cost_yuan=0.001, cash_yuan=0.0,
                      voucher_units=units, voucher_yuan=0.001, latency_ms=1.0, ttft_ms=None)


@pytest.fixture
async def url():
    u = fresh_pg_url()
    yield u
    await drop_schema(u)


async def replica(url: str, clock: Clock, **options: object) -> EscrowLedger:
    return await open_escrowed(url, [VOUCHER], clock=clock, tick_s=None, grace_s=0.0, **options)


async def sql(url: str, query: str, *args: object) -> list[asyncpg.Record]:
    parsed = pg_url(url)
    conn = await asyncpg.connect(parsed.dsn, server_settings={"search_path": parsed.schema})
    try:
        return await conn.fetch(query, *args)
    finally:
        await conn.close()


async def leased_within_balance(url: str) -> None:
    """The invariant: live slices never hold more than the voucher's posted balance."""
    ((balance_q, held_q, out_q),) = await sql(
        url, "SELECT balance_q, held_q, (SELECT COALESCE(sum(GREATEST(leased_q - posted_q, 0)), 0)"
        " FROM leases WHERE state = 'live' AND voucher_id = 'v') FROM vouchers WHERE id = 'v'")
    assert 0 <= out_q <= held_q <= balance_q


async def test_slices_never_let_the_sum_exceed_the_balance(url: str) -> None:
    clock = Clock()
    replicas = [await replica(url, clock) for _ in range(3)]
    rng = random.Random(19)
    paid: list[float] = []

    async def one(i: int) -> None:
        led = replicas[i % 3]
        try:
            hold = await led.reserve(ask(f"r{i}", rng.choice((3.0, 7.5, 20.0))))
        except InsufficientBalanceError:
            return
        if i % 7 == 0:
            await led.void(hold.id)
            return
        await asyncio.sleep(rng.random() / 100)
        row = await led.settle(hold.id, used(hold.voucher_units * rng.choice((0.5, 1.0))))
        paid.append(row.voucher_units)

    for wave in range(4):
        await asyncio.gather(*(one(wave * 100 + i) for i in range(100)))
        await leased_within_balance(url)
        for led in replicas:
            await led.escrow.tick(idle_s=0.0 if wave == 2 else 60.0)
        await leased_within_balance(url)
    spent = sum(paid)
    # The ledger counts in integer micro-units; the floats read back may sum a hair over (a CI run
    # summed 1000.0000000000001), so the check is on the quanta.
    assert sum(round(units * 1e6) for units in paid) <= round(AMOUNT * 1e6)
    assert await replicas[0].balance("v") == pytest.approx(AMOUNT - spent, abs=1e-6)
    rows = await replicas[1].usage()
    assert len(rows) == len(paid) and sum(r.voucher_units for r in rows) == pytest.approx(spent, abs=1e-6)
    for led in replicas:
        await led.close()
    ((balance_q, held_q),) = await sql(url, "SELECT balance_q, held_q FROM vouchers")
    assert held_q == 0 and balance_q / 1e6 == pytest.approx(AMOUNT - spent, abs=1e-6)
    assert await sql(url, "SELECT id FROM leases WHERE state = 'live'") == []


async def test_a_dead_replicas_lease_expires_and_its_slice_returns(url: str) -> None:
    clock = Clock()
    doomed, survivor = await replica(url, clock), await replica(url, clock)
    held = await doomed.reserve(ask("in-flight", 400.0))
    settled = await doomed.reserve(ask("done", 100.0))
    await doomed.settle(settled.id, used(100.0))
    assert held.voucher_units == 400.0
    assert (await survivor.balances())["v"] <= AMOUNT - 500.0  # the doomed slice holds 400 + its free rest
    # kill -9: its sessions end, and with them the lock that proves it alive; nothing is returned.
    await sql(url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
              f"suanli {doomed.owner_id}")
    for _ in range(200):  # pg_terminate_backend only signals: wait until the sessions are gone
        if not await sql(url, "SELECT pid FROM pg_stat_activity WHERE application_name = $1",
                         f"suanli {doomed.owner_id}"):
            break
        await asyncio.sleep(0.05)
    clock.now += timedelta(seconds=1)
    await survivor.escrow.tick()
    hold = await survivor.reserve(ask("all-of-it", 900.0))
    assert hold.voucher_units == 900.0  # everything but the 100 the dead replica settled
    await survivor.settle(hold.id, used(900.0))
    assert await survivor.balance("v") == 0.0
    assert await survivor.verify_chain() is None
    await survivor.close()
    await asyncio.gather(doomed.close(), return_exceptions=True)


async def test_a_silent_replica_loses_its_slice_and_settles_on_a_new_one(url: str) -> None:
    """SIGSTOP past the lease TTL: its lease is returned; when it wakes, its settle leases anew."""
    clock = Clock()
    sleeper, peer = await replica(url, clock, lease_ttl_s=5.0), await replica(url, clock, lease_ttl_s=5.0)
    hold = await sleeper.reserve(ask("stopped", 50.0))
    clock.now += timedelta(seconds=10)  # the sleeper heartbeats nothing meanwhile
    await peer.pg.sweep()
    await peer.escrow.tick()
    assert await sql(url, "SELECT id FROM leases WHERE owner = $1 AND state = 'live'", sleeper.owner_id) == []
    other = await peer.reserve(ask("meanwhile", AMOUNT))
    assert other.voucher_units == AMOUNT  # the returned slice was the peer's to take
    await peer.void(other.id)
    await peer.escrow.tick(idle_s=0.0)  # ...and it gives it back unused
    row = await sleeper.settle(hold.id, used(50.0))
    assert row.voucher_units == 50.0
    assert await peer.balance("v") == AMOUNT - 50.0
    await leased_within_balance(url)
    for led in (sleeper, peer):
        await led.close()


async def test_a_nearly_empty_voucher_is_not_stranded_on_an_idle_replica(url: str) -> None:
    clock = Clock()
    idle, busy = await replica(url, clock), await replica(url, clock)
    first = await busy.reserve(ask("most", 900.0))
    await busy.settle(first.id, used(900.0))
    small = await idle.reserve(ask("one", 1.0))  # the idle replica leases a slice of the last 100
    await idle.settle(small.id, used(1.0))
    got = await busy.reserve(ask("rest", 99.0))
    assert got.voucher_units < 99.0  # short: part of the rest sits in the idle replica's slice
    await busy.void(got.id)
    await idle.escrow.tick()  # the short replica recalled the voucher's slices: the idle one returns its
    rest = await busy.reserve(ask("rest-again", 99.0))
    assert rest.voucher_units == 99.0
    await busy.settle(rest.id, used(99.0))
    assert await busy.balance("v") == 0.0
    for led in (idle, busy):
        await led.close()


async def test_restart_recovers_pending_holds_and_returns_the_dead_slices(url: str) -> None:
    clock = Clock()
    old = await replica(url, clock)
    await old.reserve(ask("escrowed", 300.0))  # in memory, inside its slice
    per_hold = await old.pg.reserve(ask("per-hold", 200.0))  # a pending hold row (the batch path)
    await sql(url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
              f"suanli {old.owner_id}")
    clock.now += timedelta(seconds=1)
    restarted = await PgLedger.open(url, [VOUCHER], clock=clock, sweep_s=None, grace_s=0.0)
    assert restarted.recovered_holds == 1
    assert (await restarted.balances())["v"] == AMOUNT
    assert await restarted.pending_holds() == 0
    with pytest.raises(Exception, match="voided"):
        await restarted.settle(per_hold.id, used(200.0))
    await restarted.close()
    await asyncio.gather(old.close(), return_exceptions=True)


async def test_audit_verifies_every_replica_chain_and_seals_them_in_a_root(url: str) -> None:
    clock = Clock()
    replicas = [await replica(url, clock) for _ in range(3)]
    for i in range(30):
        led = replicas[i % 3]
        hold = await led.reserve(ask(f"r{i}", 2.0))
        await led.settle(hold.id, used(2.0))
    per_hold = await replicas[0].pg.reserve(ask("main-chain", 1.0))  # the per-hold path's chain too
    await replicas[0].pg.settle(per_hold.id, used(1.0))
    report = verify(await read_snapshot(url))
    assert report.ok and report.rows == 31 and report.chains == 4 and len(report.root) == 64
    assert verify(await read_snapshot(url), anchor=(report.head_id, report.head_hash)).ok
    for led in replicas:
        await led.close()
    assert verify(await read_snapshot(url)).root == report.root  # closing changes no chain
    chain = f"r-{replicas[1].owner_id}"
    ((last,),) = await sql(url, "SELECT max(id) FROM usage WHERE chain = $1", chain)
    await sql(url, "UPDATE usage SET cost_yuan = cost_yuan * 2 WHERE id = $1", last - 1 if last > 1 else last)
    changed = verify(await read_snapshot(url))
    assert changed.problem == "changed" and chain[:8] in changed.message
    await sql(url, "UPDATE usage SET cost_yuan = cost_yuan / 2 WHERE id = $1", last - 1 if last > 1 else last)
    assert verify(await read_snapshot(url)).ok
    # The last row of one chain (and its hold) gone: the head its writer recorded says so.
    await sql(url, "DELETE FROM holds WHERE id = (SELECT hold_id FROM usage WHERE id = $1)", last)
    await sql(url, "DELETE FROM usage WHERE id = $1", last)
    deleted = verify(await read_snapshot(url))
    assert deleted.problem == "deleted" and deleted.row_id == last


async def test_a_recalled_slice_in_use_gives_back_its_free_part(url: str) -> None:
    """A central change (an adjust) or a short peer recalls a voucher: a busy replica keeps only
    what it holds and has spent, and the rest is free for the others and for a cut."""
    clock = Clock()
    busy, other = await replica(url, clock), await replica(url, clock)
    pending = await busy.reserve(ask("in-flight", 10.0))  # busy: never idle, its slice is larger
    ((leased,),) = await sql(url, "SELECT leased_q FROM leases WHERE owner = $1", busy.owner_id)
    assert leased > 10 * 10**6
    await sql(url, "UPDATE vouchers SET lease_epoch = lease_epoch + 1 WHERE id = 'v'")  # escrow_sql.RECALL
    await busy.escrow.tick()
    ((kept,),) = await sql(url, "SELECT leased_q FROM leases WHERE owner = $1", busy.owner_id)
    assert kept == 10 * 10**6
    rest = await other.reserve(ask("the-rest", AMOUNT))
    assert rest.voucher_units == AMOUNT - 10.0
    await busy.settle(pending.id, used(10.0))
    await leased_within_balance(url)
    for led in (busy, other):
        await led.close()
    assert await sql(url, "SELECT balance_q, held_q FROM vouchers") == [((AMOUNT - 10.0) * 10**6, 0)]
