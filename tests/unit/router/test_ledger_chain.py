"""The SQLite ledger's usage hash chain under the in-memory shortcuts of its hot path.

The ledger keeps the chain's last hash in memory (re-read when another connection commits)
and the vouchers' scales; these tests interleave writers so a stale cache would break the chain.
Hashes are computed with orjson: they must stay byte for byte those of the documented json form.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from suanli.router.errors import LedgerError
from suanli.router.ledger.chain import GENESIS, canonical_json, row_hash
from suanli.router.ledger.sqlite.ledger import Ledger
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


_REFERENCE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def _reference_hash(prev_hash: str, values: list[object]) -> str:
    """The chain's hash as documented (and as every row written so far was hashed)."""
    return hashlib.sha256(f"{prev_hash}\n{_REFERENCE(values)}".encode()).hexdigest()


TRICKY = [
    "ascii",
    "",
    "汉字 中文 ünïcödé",
    "emoji 😀 and \u2028\u2029 separators, \ufeff bom",
    'quote " backslash \\ slash /',
    "controls \x00\x01\x1f\x7f\t\n\r\b\f",
    0,
    -1,
    2**63 - 1,
    -(2**63),
    2**70,  # beyond orjson's integers
    True,
    False,
    None,
    0.0,
    -0.0,
    0.1,
    1e-4,
    math.nextafter(1e-4, 0.0),
    1e-05,
    1.5e-7,
    123456.789,
    1e15,
    math.nextafter(1e16, 0.0),
    1e16,
    1e22,
    1.7976931348623157e308,
    5e-324,
    float("nan"),
    float("inf"),
    -float("inf"),
    [1, [2.5, "x"], {"k": 1e-9}],
    {"nested": {"list": [None, 3.0]}},
]


@pytest.mark.parametrize("value", TRICKY, ids=repr)
def test_canonical_json_is_the_json_modules_bytes(value: object) -> None:
    values = ["before", value, 1.25]
    assert canonical_json(values) == _REFERENCE(values).encode()


@given(st.lists(st.one_of(st.floats(), st.integers(), st.text(), st.none(), st.booleans()), max_size=25))
def test_canonical_json_matches_json_for_any_scalars(values: list[object]) -> None:
    assert canonical_json(values) == _REFERENCE(values).encode()


def test_row_hash_is_the_documented_hash() -> None:
    row = [7, "h-000000000007", "req-ü😀", 1764576000.123456, None, "wuhan", "deepseek-v3", "interactive",
           "east", "wuhan-tokens", 100, 50, 150, 1.2e-05, 0, 150.0, 1.2e-05, 12.5, 3.25, 1, "ok"]
    expected = list(row)
    expected[14] = 0.0  # REAL columns hash as floats
    assert row_hash(GENESIS, row) == _reference_hash(GENESIS, expected)
    assert row_hash("ab" * 32, row) != row_hash(GENESIS, row)
