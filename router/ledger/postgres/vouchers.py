"""Voucher rows of the PostgreSQL ledger: syncing them from the config, and reporting their status.

The same rules as ``ledger_vouchers`` (the ledger's money state wins over the config), with
``INSERT ... ON CONFLICT DO NOTHING`` so replicas starting together create each voucher once.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

import asyncpg

from suanli.config import Voucher
from suanli.router.ledger.types import VoucherStatus
from suanli.router.ledger.vouchers import MAX_UNITS_Q, scale_of

__all__ = ["sync_vouchers", "voucher_statuses"]

log = logging.getLogger("router.ledger")


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


def _listed(items: Sequence[str] | None) -> str | None:
    return None if items is None else json.dumps(list(items))


async def sync_vouchers(conn: asyncpg.Connection, vouchers: Sequence[Voucher]) -> None:
    """Insert new vouchers at full balance; refresh the metadata of known ones (one transaction)."""
    async with conn.transaction():
        for v in vouchers:
            meta = (v.region, v.rate, _listed(v.models), _listed(v.classes), _iso(v.valid_from),
                    _iso(v.expires))
            scale = scale_of(v.kind)
            amount_q = round(v.amount * scale)
            if amount_q > MAX_UNITS_Q:
                raise ValueError(f"voucher {v.id!r}: amount {v.amount:g} is too large for the ledger")
            await conn.execute(
                "INSERT INTO vouchers (region, rate, models, classes, valid_from, expires, id, kind, scale,"
                " amount_q, balance_q) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)"
                " ON CONFLICT (id) DO NOTHING",
                *meta, v.id, v.kind, scale, amount_q,
            )
            kind, known_scale, known_q = await conn.fetchrow(
                "UPDATE vouchers SET region = $1, rate = $2, models = $3, classes = $4, valid_from = $5,"
                " expires = $6 WHERE id = $7 RETURNING kind, scale, amount_q",
                *meta, v.id,
            )
            if kind != v.kind or round(v.amount * known_scale) != known_q:
                log.warning("ledger: voucher %s is %s %g in the ledger but %s %g in the config; the ledger "
                            "wins", v.id, kind, known_q / known_scale, v.kind, v.amount)


async def voucher_statuses(conn: asyncpg.Connection | asyncpg.Pool, *, now: datetime) -> list[VoucherStatus]:
    """Every voucher's status; burn is the units settled in ``(now - 1 h, now]``."""
    hour_ago = (now - timedelta(hours=1)).timestamp()
    # voucher id -> units (x scale) settled in the last hour
    burn_q = {r[0]: int(r[1]) for r in await conn.fetch(
        "SELECT voucher_id, SUM(voucher_q) FROM usage"
        " WHERE time > $1 AND time <= $2 AND voucher_id IS NOT NULL GROUP BY voucher_id",
        hour_ago, now.timestamp(),
    )}
    rows = await conn.fetch(
        "SELECT id, region, kind, scale, amount_q, balance_q, held_q, valid_from, expires"
        " FROM vouchers ORDER BY id"
    )
    return [
        VoucherStatus(
            id=vid, region=region, kind=kind, amount=amount_q / scale, balance=balance_q / scale,
            held=held_q / scale, available=(balance_q - held_q) / scale, spent=(amount_q - balance_q) / scale,
            valid_from=None if valid_from is None else datetime.fromisoformat(valid_from),
            expires=None if expires is None else datetime.fromisoformat(expires),
            burn_per_hour=burn_q.get(vid, 0) / scale,
        )
        for vid, region, kind, scale, amount_q, balance_q, held_q, valid_from, expires in rows
    ]
