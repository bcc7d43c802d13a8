"""Voucher rows of the PostgreSQL ledger: syncing them from the config, and reading their status.

The rules (the ledger's money state wins over the config) are ``ledger/vouchers.py``'s; here
``INSERT ... ON CONFLICT DO NOTHING`` makes replicas starting together create each voucher once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg

from suanli.config import Voucher
from suanli.router.ledger import vouchers as voucher_rules
from suanli.router.ledger.postgres.escrow_sql import VOUCHER_BOOKS
from suanli.router.ledger.rules import amount_q, scale_of
from suanli.router.ledger.types import VoucherStatus

__all__ = ["sync_vouchers", "voucher_statuses"]


async def sync_vouchers(conn: asyncpg.Connection, vouchers: Sequence[Voucher]) -> None:
    """Insert new vouchers at full balance; refresh the metadata of known ones (one transaction)."""
    async with conn.transaction():
        for v in vouchers:
            meta = voucher_rules.voucher_meta(v)
            scale = scale_of(v.kind)
            await conn.execute(
                "INSERT INTO vouchers (region, rate, models, classes, valid_from, expires, id, kind, scale,"
                " amount_q, balance_q) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)"
                " ON CONFLICT (id) DO NOTHING",
                *meta, v.id, v.kind, scale, amount_q(v.id, v.amount, scale),
            )
            known = await conn.fetchrow(
                "UPDATE vouchers SET region = $1, rate = $2, models = $3, classes = $4, valid_from = $5,"
                " expires = $6 WHERE id = $7 RETURNING kind, scale, amount_q",
                *meta, v.id,
            )
            voucher_rules.warn_if_config_differs(v, *known)


async def voucher_statuses(conn: asyncpg.Connection | asyncpg.Pool, *, now: datetime) -> list[VoucherStatus]:
    """Every voucher's status; burn is the units settled in ``(now - 1 h, now]``."""
    # voucher id -> units (x scale) settled in the last hour
    burn_q = {r[0]: int(r[1]) for r in await conn.fetch(
        "SELECT voucher_id, SUM(voucher_q) FROM usage"
        " WHERE time > $1 AND time <= $2 AND voucher_id IS NOT NULL GROUP BY voucher_id",
        *voucher_rules.burn_window(now),
    )}
    rows = await conn.fetch(f"SELECT {voucher_rules.STATUS_COLUMNS} FROM {VOUCHER_BOOKS} ORDER BY id")
    return [voucher_rules.voucher_status(tuple(row), burn_q) for row in rows]
