"""The usage row both drivers append and read: its values in chain order, and how it reads back.

A settle appends one row whose first 21 columns are hashed (``chain.HASHED_COLUMNS``);
``usage_values`` builds them from the hold and the settlement, the same way on either
driver, so both chains hash the very same bytes. Reads select ``USAGE_COLUMNS`` (the hashed
columns, then ``prev_hash`` and ``hash``) and turn each row into a ``UsageRow``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from suanli.router.ledger.chain import first_broken
from suanli.router.ledger.types import Settlement, UsageRow

__all__ = [
    "CACHE_COLUMNS",
    "CHAIN_ORPHANS",
    "USAGE_COLUMNS",
    "cache_values",
    "chain_entry",
    "first_broken_row",
    "orphans",
    "time_bounds",
    "totals_of",
    "usage_row",
    "usage_values",
]

USAGE_COLUMNS = (
    "id, hold_id, request_id, time, key_id, region, model, work_class, origin, voucher_id, "
    "prompt_tokens, completion_tokens, tokens, cost_yuan, cash_yuan, voucher_units, voucher_yuan, "
    "latency_ms, ttft_ms, attempts, status, prev_hash, hash"
)
# Beside the chain, not in it: a settle writes them, `usage` reads them after USAGE_COLUMNS.
CACHE_COLUMNS = "cached_tokens, cache_saved_yuan"

# The audit's cross-check of the chain against the holds (plain SQL, the same on both drivers):
# the first usage row that no settled hold made, and how many settled holds lack their row.
CHAIN_ORPHANS = (
    "SELECT (SELECT MIN(u.id) FROM usage u LEFT JOIN holds h ON h.id = u.hold_id AND h.state = 'settled'"
    " WHERE h.id IS NULL),"
    " (SELECT COUNT(*) FROM holds h LEFT JOIN usage u ON u.hold_id = h.id"
    " WHERE h.state = 'settled' AND u.id IS NULL)"
)


def usage_values(
    usage_id: int,
    hold_id: str,
    *,
    now: float,
    request: Sequence[Any],
    voucher_id: str | None,
    s: Settlement,
    voucher_units: float,
) -> tuple[Any, ...]:
    """The hashed columns of the row a settle appends, in chain order.

    ``request`` is the hold's ``(request_id, key_id, region, model, work_class, origin)``;
    ``voucher_units`` is what was debited (the settlement's units after the clamp).
    """
    request_id, key_id, region, model, work_class, origin = request
    return (
        usage_id,
        hold_id,
        request_id,
        now,
        key_id,
        region,
        model,
        work_class,
        origin,
        voucher_id,
        s.prompt_tokens,
        s.completion_tokens,
        s.tokens,
        s.cost_yuan,
        s.cash_yuan,
        voucher_units,
        s.voucher_yuan,
        s.latency_ms,
        s.ttft_ms,
        s.attempts,
        s.status,
    )


def cache_values(s: Settlement) -> tuple[int, float]:
    """A settlement's ``CACHE_COLUMNS`` values."""
    return s.cached_tokens, s.cache_saved_yuan


def usage_row(r: Sequence[Any]) -> UsageRow:
    """A usage row read in ``USAGE_COLUMNS`` order (the hash columns last), ``CACHE_COLUMNS`` after
    them where they were selected."""
    return UsageRow(
        id=r[0],
        hold_id=r[1],
        request_id=r[2],
        time=datetime.fromtimestamp(r[3], UTC),
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
        cached_tokens=int(r[23] or 0) if len(r) > 24 else 0,
        cache_saved_yuan=float(r[24] or 0.0) if len(r) > 24 else 0.0,
    )


def chain_entry(r: Sequence[Any]) -> tuple[int, Sequence[Any], str, str]:
    """A row read in ``USAGE_COLUMNS`` order as ``(id, hashed values, prev_hash, hash)``."""
    return r[0], r[:21], r[21], r[22]


def first_broken_row(rows: Iterable[Sequence[Any]]) -> int | None:
    """Id of the first row (read in ``USAGE_COLUMNS`` order, by id) whose chain is broken, or None."""
    return first_broken(chain_entry(r) for r in rows)


def time_bounds(since: datetime | None, until: datetime | None) -> tuple[float, float]:
    """``[since, until)`` as epoch seconds; an open end is infinite."""
    lo = float("-inf") if since is None else since.timestamp()
    hi = float("inf") if until is None else until.timestamp()
    return lo, hi


def totals_of(row: Sequence[Any]) -> dict[str, float]:
    """``(count, cash, voucher yuan, cost, tokens)`` sums as the ledger's totals."""
    return {
        "requests": row[0],
        "cash_yuan": row[1],
        "voucher_yuan": row[2],
        "cost_yuan": row[3],
        "tokens": int(row[4]),
    }


def orphans(row: Sequence[Any]) -> tuple[int | None, int]:
    """The ``CHAIN_ORPHANS`` row: (first forged row id or None, settled holds without a row)."""
    forged, missing = row
    return (None if forged is None else int(forged)), int(missing)
