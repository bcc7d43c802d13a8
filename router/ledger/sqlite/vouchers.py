"""Voucher rows of the SQLite ledger: syncing them from the config, and reading their status.

The rules (the ledger's money state wins over the config) are ``ledger/vouchers.py``'s; here
is their SQL, run inside the caller's transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime

from suanli.config import Voucher
from suanli.router.ledger import vouchers as voucher_rules
from suanli.router.ledger.adjust import ADJUSTMENT_CLASS
from suanli.router.ledger.rules import amount_q, scale_of
from suanli.router.ledger.types import VoucherStatus

__all__ = ["sync_vouchers", "voucher_statuses"]


def sync_vouchers(c: sqlite3.Connection, vouchers: Sequence[Voucher]) -> None:
    """Insert new vouchers at full balance; refresh the metadata of known ones."""
    for v in vouchers:
        meta = voucher_rules.voucher_meta(v)
        known = c.execute("SELECT kind, scale, amount_q FROM vouchers WHERE id = ?", (v.id,)).fetchone()
        if known is None:
            scale = scale_of(v.kind)
            q = amount_q(v.id, v.amount, scale)
            c.execute(
                "INSERT INTO vouchers (region, rate, models, classes, valid_from, expires, id, kind, scale,"
                " amount_q, balance_q) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*meta, v.id, v.kind, scale, q, q),
            )
            continue
        voucher_rules.warn_if_config_differs(v, *known)
        c.execute(
            "UPDATE vouchers SET region = ?, rate = ?, models = ?, classes = ?, valid_from = ?, expires = ?"
            " WHERE id = ?",
            (*meta, v.id),
        )


def voucher_statuses(conn: sqlite3.Connection, *, now: datetime) -> list[VoucherStatus]:
    """Every voucher's status; burn is the units settled in ``(now - 1 h, now]``."""
    # voucher id -> units (x scale) settled in the last hour
    burn_q = dict(
        conn.execute(
            "SELECT voucher_id, SUM(voucher_q) FROM usage"
            " WHERE time > ? AND time <= ? AND voucher_id IS NOT NULL"
            f" AND work_class <> '{ADJUSTMENT_CLASS}' GROUP BY voucher_id",
            voucher_rules.burn_window(now),
        ).fetchall()
    )
    rows = conn.execute(f"SELECT {voucher_rules.STATUS_COLUMNS} FROM vouchers ORDER BY id").fetchall()
    return [voucher_rules.voucher_status(row, burn_q) for row in rows]
