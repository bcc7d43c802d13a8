"""Read-only queries of the SQLite ledger: balances, marks, usage rows, keys, the chain.

Plain functions over ``read`` (runs one SELECT, returns its rows: the ``Ledger``'s, under its
lock); every query is one plain SELECT, which in autocommit mode reads one consistent WAL
snapshot. How rows become values is the shared modules' (``rules``, ``usage``, ``keys``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any

from suanli.router.errors import LedgerError
from suanli.router.ledger import usage
from suanli.router.ledger.chain import HASHED_COLUMNS
from suanli.router.ledger.exhausted import MARK_COLUMNS, marks_of
from suanli.router.ledger.rules import available
from suanli.router.ledger.types import UsageRow

__all__ = [
    "Read",
    "balance",
    "balances",
    "chain_orphans",
    "chain_rows",
    "exhausted",
    "pending_holds",
    "totals",
    "usage_between",
    "verify_chain",
]

# Runs one SELECT and returns its rows.
Read = Callable[[str, Sequence[object]], list[tuple[Any, ...]]]


def balance(read: Read, voucher_id: str) -> float:
    """Posted balance of a voucher: amount minus settled spend (pending holds not subtracted)."""
    row = read("SELECT balance_q, scale FROM vouchers WHERE id = ?", (voucher_id,))
    if not row:
        raise LedgerError(f"unknown voucher {voucher_id!r}")
    return row[0][0] / row[0][1]


def balances(read: Read) -> dict[str, float]:
    """Voucher id -> available units (balance minus pending holds; 0 once marked exhausted)."""
    return available(read(
        "SELECT id, balance_q - held_q, scale, id IN (SELECT voucher_id FROM exhausted"
        " WHERE voucher_id IS NOT NULL) FROM vouchers", ()
    ))


def exhausted(read: Read) -> dict[str, dict[str, object]]:
    """``voucher:<id>`` / ``cash:<region>`` -> region, voucher_id, since (epoch s), reason."""
    return marks_of(read(f"SELECT {MARK_COLUMNS} FROM exhausted ORDER BY account", ()))


def pending_holds(read: Read) -> int:
    """How many holds are pending, across every process on this file."""
    return int(read("SELECT COUNT(*) FROM holds WHERE state = 'pending'", ())[0][0])


def usage_between(read: Read, since: datetime | None, until: datetime | None) -> list[UsageRow]:
    """Usage rows settled in ``[since, until)``, in chain order."""
    # A ledger file no suanli with the cache columns has opened yet reads as no hits.
    known = read("SELECT 1 FROM pragma_table_info('usage') WHERE name = 'cached_tokens'", ())
    cache = usage.CACHE_COLUMNS if known else "0, 0.0"
    sql = f"SELECT {usage.USAGE_COLUMNS}, {cache} FROM usage WHERE time >= ? AND time < ? ORDER BY id"
    return [usage.usage_row(r) for r in read(sql, usage.time_bounds(since, until))]


def totals(read: Read) -> dict[str, float]:
    """Sums over every usage row: requests, cash_yuan, voucher_yuan, cost_yuan, tokens."""
    (row,) = read(
        "SELECT COUNT(*), TOTAL(cash_yuan), TOTAL(voucher_yuan), TOTAL(cost_yuan), TOTAL(tokens)"
        " FROM usage",
        (),
    )
    return usage.totals_of(row)


def verify_chain(read: Read) -> int | None:
    """Id of the first usage row whose hash chain is broken, or None if all verify."""
    return usage.first_broken_row(read(f"SELECT {usage.USAGE_COLUMNS} FROM usage ORDER BY id", ()))


def chain_orphans(read: Read) -> tuple[int | None, int]:
    """(first usage row id no settled hold made, how many settled holds lack a usage row)."""
    return usage.orphans(read(usage.CHAIN_ORPHANS, ())[0])


def chain_rows(read: Read, batch: int) -> Iterator[tuple[int, tuple[Any, ...], str, str]]:
    """Every usage row as ``(id, HASHED_COLUMNS values, prev_hash, hash)``, in id order, in batches."""
    columns = ", ".join(HASHED_COLUMNS)
    last = -1
    while True:
        sql = f"SELECT {columns}, prev_hash, hash FROM usage WHERE id > ? ORDER BY id LIMIT ?"
        rows = read(sql, (last, batch))
        for r in rows:
            yield r[0], tuple(r[:-2]), r[-2], r[-1]
        if len(rows) < batch:
            return
        last = rows[-1][0]
