"""Prepaid balances a platform reported exhausted (HTTP 402 or its quota error).

One row per account: ``voucher:<id>`` for a voucher, ``cash:<region>`` for a region's
prepaid cash. The voucher's own balance is left as the ledger computed it (the usage
rows still sum to it exactly); an exhausted voucher is simply no longer available.
"""

from __future__ import annotations

import sqlite3

__all__ = ["account_of", "clear", "exhausted", "mark"]


def account_of(*, voucher_id: str | None = None, region: str | None = None) -> str:
    if (voucher_id is None) == (region is None):
        raise ValueError("name exactly one of voucher_id or region")
    return f"voucher:{voucher_id}" if voucher_id is not None else f"cash:{region}"


def mark(
    c: sqlite3.Connection, *, voucher_id: str | None, region: str | None, since: float, reason: str
) -> None:
    c.execute(
        "INSERT INTO exhausted (account, region, voucher_id, since, reason) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT(account) DO UPDATE SET since = excluded.since, reason = excluded.reason",
        (account_of(voucher_id=voucher_id, region=region), region, voucher_id, since, reason[:500]),
    )


def clear(c: sqlite3.Connection, *, voucher_id: str | None, region: str | None) -> None:
    c.execute("DELETE FROM exhausted WHERE account = ?", (account_of(voucher_id=voucher_id, region=region),))


def exhausted(c: sqlite3.Connection) -> dict[str, dict[str, object]]:
    """Account -> {"region", "voucher_id", "since" (epoch s), "reason"}."""
    rows = c.execute("SELECT account, region, voucher_id, since, reason FROM exhausted ORDER BY account")
    return {a: {"region": r, "voucher_id": v, "since": t, "reason": why} for a, r, v, t, why in rows}
