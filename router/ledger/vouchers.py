"""Voucher rows of the ledger: syncing them from the config, and reporting their status."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Sequence
from datetime import datetime, timedelta

from suanli.config import Voucher
from suanli.router.ledger.types import VoucherStatus

__all__ = ["MAX_UNITS_Q", "scale_of", "sync_vouchers", "voucher_statuses"]

log = logging.getLogger("router.ledger")

MAX_UNITS_Q = 2**63 - 1  # SQLite INTEGER


def scale_of(kind: str) -> int:
    """Integer steps per unit: micro-tokens for token quotas, nano-yuan for yuan vouchers."""
    return 10**6 if kind == "tokens" else 10**9


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


def _listed(items: Sequence[str] | None) -> str | None:
    return None if items is None else json.dumps(list(items))


def sync_vouchers(c: sqlite3.Connection, vouchers: Sequence[Voucher]) -> None:
    """Insert new vouchers at full balance; refresh the metadata of known ones.

    The money state of a known voucher (kind, amount, balance) is the ledger's: a config that
    disagrees is logged, not applied, so editing the YAML can neither refill nor drain it.
    """
    for v in vouchers:
        meta = (v.region, v.rate, _listed(v.models), _listed(v.classes), _iso(v.valid_from), _iso(v.expires))
        known = c.execute("SELECT kind, scale, amount_q FROM vouchers WHERE id = ?", (v.id,)).fetchone()
        if known is None:
            scale = scale_of(v.kind)
            amount_q = round(v.amount * scale)
            if amount_q > MAX_UNITS_Q:
                raise ValueError(f"voucher {v.id!r}: amount {v.amount:g} is too large for the ledger")
            c.execute(
                "INSERT INTO vouchers (region, rate, models, classes, valid_from, expires, id, kind, scale,"
                " amount_q, balance_q) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*meta, v.id, v.kind, scale, amount_q, amount_q),
            )
            continue
        kind, scale, amount_q = known
        if kind != v.kind or round(v.amount * scale) != amount_q:
            log.warning(
                "ledger: voucher %s is %s %g in the ledger but %s %g in the config; the ledger wins",
                v.id,
                kind,
                amount_q / scale,
                v.kind,
                v.amount,
            )
        c.execute(
            "UPDATE vouchers SET region = ?, rate = ?, models = ?, classes = ?, valid_from = ?, expires = ?"
            " WHERE id = ?",
            (*meta, v.id),
        )


def voucher_statuses(conn: sqlite3.Connection, *, now: datetime) -> list[VoucherStatus]:
    """Every voucher's status; burn is the units settled in ``(now - 1 h, now]``."""
    hour_ago = (now - timedelta(hours=1)).timestamp()
    # voucher id -> units (x scale) settled in the last hour
    burn_q = dict(
        conn.execute(
            "SELECT voucher_id, SUM(voucher_q) FROM usage"
            " WHERE time > ? AND time <= ? AND voucher_id IS NOT NULL GROUP BY voucher_id",
            (hour_ago, now.timestamp()),
        ).fetchall()
    )
    rows = conn.execute(
        "SELECT id, region, kind, scale, amount_q, balance_q, held_q, valid_from, expires"
        " FROM vouchers ORDER BY id"
    ).fetchall()
    return [
        VoucherStatus(
            id=vid,
            region=region,
            kind=kind,
            amount=amount_q / scale,
            balance=balance_q / scale,
            held=held_q / scale,
            available=(balance_q - held_q) / scale,
            spent=(amount_q - balance_q) / scale,
            valid_from=None if valid_from is None else datetime.fromisoformat(valid_from),
            expires=None if expires is None else datetime.fromisoformat(expires),
            burn_per_hour=burn_q.get(vid, 0) / scale,
        )
        for vid, region, kind, scale, amount_q, balance_q, held_q, valid_from, expires in rows
    ]
