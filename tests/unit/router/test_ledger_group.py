"""Group commit: concurrent holds and settles share commits, stay exact, and fail one by one."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from pathlib import Path

import pytest

from suanli.router.errors import InsufficientBalanceError
from suanli.router.ledger.sqlite.group import MAX_BATCH, GroupCommit
from suanli.router.ledger.sqlite.ledger import Ledger, Settlement
from tests.unit.router.test_ledger import FakeClock, ask, tokens_voucher

pytestmark = pytest.mark.timeout(30)


def _settlement(units: float) -> Settlement:
    return Settlement(prompt_tokens=10, completion_tokens=int(units) - 10, tokens=int(units), cost_yuan=0.01,
                      cash_yuan=0.0, voucher_units=units, voucher_yuan=0.01, latency_ms=5.0, ttft_ms=None)


def _open(tmp_path: Path, amount: float) -> Ledger:
    return Ledger.open(f"sqlite:///{tmp_path / 'ledger.db'}", [tokens_voucher(amount)], clock=FakeClock())


async def test_concurrent_requests_share_commits_and_stay_exact(tmp_path: Path):
    ledger = _open(tmp_path, 100_000)
    group = GroupCommit(ledger)

    async def request(n: int) -> None:
        hold = await group.run(ledger.reserve, ask("wuhan-tokens", 100, f"req-{n}"))
        await asyncio.sleep(0)
        await group.run(ledger.settle, hold.id, _settlement(40 + n % 7), always=True)

    await asyncio.gather(*(request(n) for n in range(64)))
    assert group.writes == 128
    assert group.commits < group.writes // 4  # writes of one loop turn went out together
    assert group.commits >= group.writes // MAX_BATCH  # but never more than MAX_BATCH in one
    spent = sum(40 + n % 7 for n in range(64))
    ledger.close()
    reopened = _open(tmp_path, 100_000)
    assert reopened.balance("wuhan-tokens") == pytest.approx(100_000 - spent)
    assert reopened.pending_holds() == 0
    assert len(reopened.usage()) == 64
    assert reopened.verify_chain() is None
    reopened.close()


async def test_a_failing_write_fails_alone(tmp_path: Path):
    ledger = _open(tmp_path, 150)
    group = GroupCommit(ledger)
    first, second = await asyncio.gather(
        group.run(ledger.reserve, ask("wuhan-tokens", 150, "a")),
        group.run(ledger.reserve, ask("wuhan-tokens", 150, "b")),
        return_exceptions=True,
    )
    assert first.voucher_units == 150
    assert isinstance(second, InsufficientBalanceError)
    assert group.commits == 1
    ledger.close()
    reopened = _open(tmp_path, 150)
    # the first hold was committed (then voided on reopen: its owner is gone), the second never was
    assert reopened.recovered_holds == 1
    reopened.close()


async def test_then_runs_after_commit_and_cancelled_holds_are_skipped_or_released(tmp_path: Path):
    ledger = _open(tmp_path, 1000)
    group = GroupCommit(ledger)
    seen: list[str] = []
    released: list[str] = []

    # cancelled while queued: the hold is never written
    queued = asyncio.ensure_future(group.run(ledger.reserve, ask("wuhan-tokens", 100, "gone")))
    await asyncio.sleep(0)
    queued.cancel()
    # a settle queued by a caller that goes away still runs, and its follow-up too
    hold = await group.run(ledger.reserve, ask("wuhan-tokens", 100, "kept"), then=lambda h: seen.append(h.id))
    settle = asyncio.ensure_future(
        group.run(ledger.settle, hold.id, _settlement(60), always=True, then=lambda _: seen.append("settled"))
    )
    await asyncio.sleep(0)
    settle.cancel()
    # cancelled after its hold committed: abandon() releases it
    late = asyncio.ensure_future(
        group.run(ledger.reserve, ask("wuhan-tokens", 100, "late"), abandon=lambda h: released.append(h.id))
    )
    for _ in range(3):
        await asyncio.sleep(0)
        if group.writes == 3:
            break
    late.cancel()
    with pytest.raises(asyncio.CancelledError):
        await late
    for pending in (queued, settle):
        with pytest.raises(asyncio.CancelledError):
            await pending
    assert seen == [hold.id, "settled"]
    assert len(released) == 1
    assert [row.request_id for row in ledger.usage()] == ["kept"]
    assert ledger.balance("wuhan-tokens") == pytest.approx(940)
    assert ledger.pending_holds() == 1  # "late", until the router voids it through abandon()
    ledger.close()


async def test_a_write_failing_after_its_first_change_is_replayed_alone(tmp_path: Path):
    ledger = _open(tmp_path, 1000)
    group = GroupCommit(ledger)
    holds = [ledger.reserve(ask("wuhan-tokens", 100, f"r{n}")) for n in range(3)]
    broken = dataclasses.replace(_settlement(50), prompt_tokens=None)  # the usage row's INSERT refuses it
    results = await asyncio.gather(
        group.run(ledger.settle, holds[0].id, _settlement(50), always=True),
        group.run(ledger.settle, holds[1].id, broken, always=True),  # fails after settling the hold
        group.run(ledger.settle, holds[2].id, _settlement(50), always=True),
        group.run(ledger.reserve, ask("wuhan-tokens", 100, "new")),
        return_exceptions=True,
    )
    assert isinstance(results[1], sqlite3.IntegrityError)
    assert [r.request_id for r in (results[0], results[2])] == ["r0", "r2"]
    assert results[3].voucher_units == 100
    assert group.writes == 4 and group.commits == 4  # one group, rolled back and replayed write by write
    ledger.close()
    reopened = _open(tmp_path, 1000)
    assert [r.request_id for r in reopened.usage()] == ["r0", "r2"]
    assert reopened.verify_chain() is None
    # r1's hold stayed pending (voided on reopen with "new"): nothing of its half-write survived
    assert reopened.recovered_holds == 2
    assert reopened.balance("wuhan-tokens") == pytest.approx(900)
    reopened.close()
