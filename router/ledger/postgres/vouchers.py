"""Voucher rows of the PostgreSQL ledger: syncing them from the config, and reading their status.

The rules (the ledger's money state wins over the config) are ``ledger/vouchers.py``'s; here
``INSERT ... ON CONFLICT DO NOTHING`` makes replicas starting together create each voucher once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg

from suanli.config import Voucher
from suanli.router.errors import LedgerError
from suanli.router.ledger import adjust, usage
from suanli.router.ledger import vouchers as voucher_rules
from suanli.router.ledger.adjust import ADJUSTMENT_CLASS
from suanli.router.ledger.chain import row_hash
from suanli.router.ledger.postgres.escrow_sql import RECALL, VOUCHER_BOOKS
from suanli.router.ledger.postgres.sql import APPEND_USAGE, LOCK_CHAIN, NEXT_USAGE_ID
from suanli.router.ledger.rules import amount_q, scale_of, to_q
from suanli.router.ledger.types import VoucherStatus

__all__ = ["adjust_voucher", "sync_vouchers", "voucher_statuses"]


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
        " WHERE time > $1 AND time <= $2 AND voucher_id IS NOT NULL"
        f" AND work_class <> '{ADJUSTMENT_CLASS}' GROUP BY voucher_id",
        *voucher_rules.burn_window(now),
    )}
    rows = await conn.fetch(f"SELECT {voucher_rules.STATUS_COLUMNS} FROM {VOUCHER_BOOKS} ORDER BY id")
    return [voucher_rules.voucher_status(tuple(row), burn_q) for row in rows]


async def adjust_voucher(pool: asyncpg.Pool, *, owner: str, voucher_id: str, amount: float, reason: str,
                         now: float) -> adjust.Adjustment:
    """Top up (``amount`` > 0) or cut a voucher (``ledger/adjust.py``), in one transaction.

    The voucher row is locked first (``FOR UPDATE``): a concurrent RESERVE waits and then
    re-checks what is free, so a cut and holds never together take more than the balance.
    Locks in the driver's order: vouchers, then the chain head. LedgerError for an unknown voucher.
    """
    async with pool.acquire() as c, c.transaction():
        row = await c.fetchrow("SELECT id, kind, scale, balance_q, held_q, region FROM vouchers"
                               " WHERE id = $1 FOR UPDATE", voucher_id)
        if row is None:
            raise LedgerError(f"unknown voucher {voucher_id!r}")
        vid, kind, scale, balance_q, held_q, region = tuple(row)
        delta_q = to_q(abs(amount), scale) * (1 if amount >= 0 else -1)
        moved_q = adjust.applied_q(balance_q, held_q, delta_q)
        after = await c.fetchrow(
            "UPDATE vouchers SET balance_q = balance_q + $1, amount_q = amount_q + $1 WHERE id = $2"
            " RETURNING id, kind, scale, balance_q, held_q", moved_q, vid)
        if moved_q > delta_q:
            # A cut larger than what is free: replicas' escrow slices hold the rest; recall them so
            # the next cut finds their unused part back (postgres/escrow.py).
            await c.execute(RECALL, vid)
        adj_id = adjust.adjustment_id()
        request = (adj_id, *adjust.adjustment_request(region))
        await c.execute(
            "INSERT INTO holds (id, owner, request_id, key_id, region, model, work_class, origin, voucher_id,"
            " scale, held_q, held_units, created, state, resolved)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 0, 0, $11, 'settled', $11)",
            adj_id, owner, *request, vid, scale, now)
        prev_hash = await c.fetchval(LOCK_CHAIN)
        usage_id = await c.fetchval(NEXT_USAGE_ID)  # after the lock: ids follow the chain's order
        taken = -moved_q / scale  # the row's units are what the voucher paid: a top-up is negative
        values = usage.usage_values(usage_id, adj_id, now=now, request=request, voucher_id=vid,
                                    s=adjust.adjustment_settlement(taken), voucher_units=taken)
        hash_ = row_hash(prev_hash, values)
        await c.execute(APPEND_USAGE, *values, prev_hash, hash_, -moved_q)
        await c.execute("INSERT INTO voucher_adjustments (hold_id, voucher_id, requested, applied, reason,"
                        " time) VALUES ($1, $2, $3, $4, $5, $6)",
                        adj_id, vid, amount, moved_q / scale, reason, now)
    return adjust.as_adjustment(tuple(after), requested=amount, moved_q=moved_q, reason=reason,
                                usage_id=usage_id, time=now)
