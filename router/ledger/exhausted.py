"""Prepaid balances a platform reported exhausted (HTTP 402 or its quota error): the rows' rules.

One row per account: ``voucher:<id>`` for a voucher, ``cash:<region>`` for a region's
prepaid cash. The voucher's own balance is left as the ledger computed it (the usage
rows still sum to it exactly); an exhausted voucher is simply no longer available.
Each driver keeps the SQL (``exhausted`` table, ``tables.exhausted_table``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["MARK_COLUMNS", "account_of", "mark_values", "marks_of"]

MARK_COLUMNS = "account, region, voucher_id, since, reason"  # in ``mark_values`` order
_REASON_CHARS = 500  # a platform's error text, kept short


def account_of(*, voucher_id: str | None = None, region: str | None = None) -> str:
    if (voucher_id is None) == (region is None):
        raise ValueError("name exactly one of voucher_id or region")
    return f"voucher:{voucher_id}" if voucher_id is not None else f"cash:{region}"


def mark_values(*, voucher_id: str | None, region: str | None, since: float, reason: str) -> tuple[Any, ...]:
    """A mark as stored, in ``MARK_COLUMNS`` order."""
    return account_of(voucher_id=voucher_id, region=region), region, voucher_id, since, reason[:_REASON_CHARS]


def marks_of(rows: Iterable[Sequence[Any]]) -> dict[str, dict[str, object]]:
    """Account -> {"region", "voucher_id", "since" (epoch s), "reason"}, from ``MARK_COLUMNS`` rows."""
    return {r[0]: {"region": r[1], "voucher_id": r[2], "since": r[3], "reason": r[4]} for r in rows}
