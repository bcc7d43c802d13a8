"""Read-only queries of the SQLite ledger: balances, voucher statuses, usage rows, the chain check.

Mixed into ``Ledger`` (``router/ledger/sqlite/ledger.py``); every query is one plain SELECT, which in
autocommit mode reads one consistent WAL snapshot. ``usage_row`` is shared with the
PostgreSQL backend, whose usage table has the same columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from suanli.router.errors import LedgerError
from suanli.router.ledger.chain import first_broken
from suanli.router.ledger.exhausted import exhausted as exhausted_marks
from suanli.router.ledger.types import UsageRow, VoucherStatus
from suanli.router.ledger.vouchers import voucher_statuses

if TYPE_CHECKING:
    from suanli.router.ledger.sqlite.ledger import Ledger

__all__ = ["USAGE_COLUMNS", "LedgerReadsMixin", "usage_row"]

USAGE_COLUMNS = (
    "id, hold_id, request_id, time, key_id, region, model, work_class, origin, voucher_id, "
    "prompt_tokens, completion_tokens, tokens, cost_yuan, cash_yuan, voucher_units, voucher_yuan, "
    "latency_ms, ttft_ms, attempts, status, prev_hash, hash"
)


def _utc(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, UTC)


def usage_row(r: Sequence[Any]) -> UsageRow:
    """A usage row read in ``USAGE_COLUMNS`` order (the hash columns last)."""
    return UsageRow(
        id=r[0],
        hold_id=r[1],
        request_id=r[2],
        time=_utc(r[3]),
        key_id=r[4],
        region=r[5],
        model=r[6],
        work_class=r[7],
        origin=r[8],
        voucher_id=r[9],
        prompt_tokens=r[10],
        completion_tokens=r[11],
        tokens=r[12],
        cost_yuan=r[13],
        cash_yuan=r[14],
        voucher_units=r[15],
        voucher_yuan=r[16],
        latency_ms=r[17],
        ttft_ms=r[18],
        attempts=r[19],
        status=r[20],
        hash=r[22],
    )



class LedgerReadsMixin:
    """Queries that never write, for ``Ledger``."""

    def balance(self: Ledger, voucher_id: str) -> float:
        """Posted balance of a voucher: amount minus settled spend (pending holds not subtracted)."""
        row = self._read("SELECT balance_q, scale FROM vouchers WHERE id = ?", (voucher_id,))
        if not row:
            raise LedgerError(f"unknown voucher {voucher_id!r}")
        return row[0][0] / row[0][1]

    def balances(self: Ledger) -> dict[str, float]:
        """Voucher id -> available units (balance minus pending holds; 0 once marked exhausted)."""
        rows = self._read(
            "SELECT id, balance_q - held_q, scale, id IN (SELECT voucher_id FROM exhausted"
            " WHERE voucher_id IS NOT NULL) FROM vouchers"
        )
        return {voucher_id: 0.0 if gone else q / scale for voucher_id, q, scale, gone in rows}

    def exhausted(self: Ledger) -> dict[str, dict[str, object]]:
        """``voucher:<id>`` / ``cash:<region>`` -> region, voucher_id, since (epoch s), reason."""
        with self._lock:
            return exhausted_marks(self._connection())

    def vouchers(self: Ledger) -> list[VoucherStatus]:
        """Every voucher in the ledger (config or not) with balance, holds, spend and burn."""
        with self._lock:
            return voucher_statuses(self._connection(), now=self._clock())

    def pending_holds(self: Ledger) -> int:
        """How many holds are pending, across every process on this file."""
        return int(self._read("SELECT COUNT(*) FROM holds WHERE state = 'pending'")[0][0])

    def usage(
        self: Ledger, *, since: datetime | None = None, until: datetime | None = None
    ) -> list[UsageRow]:
        """Usage rows settled in ``[since, until)``, in chain order."""
        lo = float("-inf") if since is None else since.timestamp()
        hi = float("inf") if until is None else until.timestamp()
        sql = f"SELECT {USAGE_COLUMNS} FROM usage WHERE time >= ? AND time < ? ORDER BY id"
        rows = self._read(sql, (lo, hi))
        return [usage_row(r) for r in rows]

    def totals(self: Ledger) -> dict[str, float]:
        """Sums over every usage row: requests, cash_yuan, voucher_yuan, cost_yuan, tokens."""
        (row,) = self._read(
            "SELECT COUNT(*), TOTAL(cash_yuan), TOTAL(voucher_yuan), TOTAL(cost_yuan), TOTAL(tokens)"
            " FROM usage"
        )
        return {
            "requests": row[0],
            "cash_yuan": row[1],
            "voucher_yuan": row[2],
            "cost_yuan": row[3],
            "tokens": int(row[4]),
        }

    def verify_chain(self: Ledger) -> int | None:
        """Id of the first usage row whose hash chain is broken, or None if all verify."""
        rows = self._read(f"SELECT {USAGE_COLUMNS} FROM usage ORDER BY id")
        return first_broken((r[0], r[:21], r[21], r[22]) for r in rows)
