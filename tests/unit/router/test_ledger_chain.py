"""The SQLite ledger's usage hash chain under the in-memory shortcuts of its hot path.

The ledger keeps the chain's last hash in memory (re-read when another connection commits)
and the vouchers' scales; these tests interleave writers so a stale cache would break the chain.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from router.errors import LedgerError
from router.ledger import Ledger
from tests.unit.router.test_ledger import FakeClock, ask, credit_voucher, tokens_voucher, used


def test_two_ledgers_settling_in_turn_keep_one_unbroken_chain(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/ledger.db"
    clock = FakeClock()
    first = Ledger.open(url, [tokens_voucher()], clock=clock)
    second = Ledger.open(url, [tokens_voucher()], clock=clock)
    rows = []
    for i in range(6):
        led = (first, second)[i % 2]
        rows.append(led.settle(led.reserve(ask("wuhan-tokens", 10, f"r{i}")).id, used(10)))
        clock.advance(1)
    assert [r.id for r in rows] == [1, 2, 3, 4, 5, 6]
    assert first.verify_chain() is None and second.verify_chain() is None
    assert first.balance("wuhan-tokens") == second.balance("wuhan-tokens") == 940
    first.close()
    second.close()


def test_a_settle_that_fails_leaves_the_chain_head_where_it_was(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/ledger.db"
    with Ledger.open(url, [tokens_voucher(), credit_voucher()], clock=FakeClock()) as led:
        led.settle(led.reserve(ask("wuhan-tokens", 10, "a")).id, used(10))
        hold = led.reserve(ask("qingyang-credit", 1, "b"))
        with pytest.raises(LedgerError):
            with led.group():
                led.settle(hold.id, used(1))
                raise LedgerError("the group fails after the settle was written")
        # The rolled-back row must not be the parent of the next one.
        led.settle(hold.id, used(1))
        led.settle(led.reserve(ask("wuhan-tokens", 10, "c")).id, used(10))
        assert led.verify_chain() is None
        assert [r.request_id for r in led.usage()] == ["a", "b", "c"]


def test_hold_ids_sort_in_creation_order(tmp_path: Path) -> None:
    with Ledger.open(f"sqlite:///{tmp_path}/ledger.db", [tokens_voucher()], clock=FakeClock()) as led:
        ids = [led.reserve(ask("wuhan-tokens", 1, f"r{i}")).id for i in range(12)]
    assert ids == sorted(ids) and len(set(ids)) == 12
