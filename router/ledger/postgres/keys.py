"""Virtual keys and key budgets on the PostgreSQL ledger: their SQL; the rules are ``ledger/keys.py``'s.

A budgeted request holds its cost bound on the key's day and month rows of ``key_spend``
inside the reserve transaction, before the voucher hold: each period is one
``INSERT ... ON CONFLICT DO UPDATE ... WHERE spent_q + held_q + amount <= limit RETURNING``.
Under READ COMMITTED a concurrent writer of the same row makes it wait, then re-checks the
WHERE on the newest committed version, so no interleaving of replicas passes a budget; a
refusal rolls the voucher hold back with it. Settle posts the spend in the settle
transaction; a void (or a sweep's bulk void) releases the key hold afterwards, which can
only keep too much held for a moment, never too little, and every sweep finishes what a
crash left half done.

Within one transaction row locks go holds -> key_holds -> key_spend (day before month) ->
vouchers -> chain_head (a void releases its key hold in a transaction of its own), so
replicas never deadlock.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from suanli.router.errors import LedgerError
from suanli.router.ledger import keys
from suanli.router.ledger.postgres.escrow_sql import KEY_BOOKS
from suanli.router.ledger.rules import YUAN_SCALE, budget_hold_q, to_q

__all__ = [
    "create_key",
    "hold_key_budget_pg",
    "key_spend",
    "keys_where",
    "release_key_budget_pg",
    "release_resolved_pg",
    "revoke_key",
    "settle_key_budget_pg",
]

# $1 key, $2 period, $3 amount (nano-yuan), $4 limit (NULL: none). Returns a row only if held.
_HOLD_PERIOD = (
    "INSERT INTO key_spend (key_id, period, held_q) SELECT $1, $2, $3 WHERE $4::bigint IS NULL OR $3 <= $4"
    " ON CONFLICT (key_id, period) DO UPDATE SET held_q = key_spend.held_q + excluded.held_q"
    " WHERE $4::bigint IS NULL OR key_spend.spent_q + key_spend.held_q + excluded.held_q <= $4"
    " RETURNING 1"
)
_MARKS = ", ".join(f"${i}" for i in range(1, 15))
_POST_PERIOD = (
    "UPDATE key_spend SET held_q = held_q - $1, spent_q = spent_q + $2 WHERE key_id = $3 AND period = $4"
)


async def hold_key_budget_pg(c: asyncpg.Connection, hold_id: str, hold: keys.KeyBudgetHold) -> None:
    """Inside the reserve transaction: hold on both periods, or BudgetExceededError (roll back)."""
    amount_q = budget_hold_q(hold.amount_yuan)
    for period, limit, label in hold.limits():
        if await c.fetchval(_HOLD_PERIOD, hold.key_id, period, amount_q, keys.yuan_q(limit)) is None:
            used_q = await c.fetchval(
                "SELECT spent_q + held_q FROM key_spend WHERE key_id = $1 AND period = $2",
                hold.key_id, period,
            )
            raise keys.over_budget(hold, limit, label, used_q or 0)
    await c.execute(
        "INSERT INTO key_holds (hold_id, key_id, day, month, held_q) VALUES ($1, $2, $3, $4, $5)",
        hold_id, hold.key_id, hold.day, hold.month, amount_q,
    )


async def settle_key_budget_pg(c: asyncpg.Connection, hold_id: str, cost_yuan: float) -> None:
    """Inside the settle transaction: post the real cost on both periods, release the hold."""
    row = await c.fetchrow("DELETE FROM key_holds WHERE hold_id = $1 RETURNING key_id, day, month, held_q",
                           hold_id)
    if row is None:
        return
    cost_q = to_q(cost_yuan, YUAN_SCALE)
    for period in sorted((row["day"], row["month"])):
        await c.execute(_POST_PERIOD, row["held_q"], cost_q, row["key_id"], period)


async def _release(c: asyncpg.Connection, rows: Sequence[asyncpg.Record]) -> None:
    per_period: dict[tuple[str, str], int] = {}
    for r in rows:
        for period in (r["day"], r["month"]):
            per_period[(r["key_id"], period)] = per_period.get((r["key_id"], period), 0) + r["held_q"]
    for (key_id, period), held_q in sorted(per_period.items()):
        await c.execute(_POST_PERIOD, held_q, 0, key_id, period)


async def release_key_budget_pg(pool: asyncpg.Pool, hold_id: str) -> None:
    """After a void: release what the hold kept of its key's budget (nothing if already done)."""
    async with pool.acquire() as c, c.transaction():
        rows = await c.fetch("DELETE FROM key_holds WHERE hold_id = $1 RETURNING key_id, day, month, held_q",
                             hold_id)
        await _release(c, rows)


async def release_resolved_pg(pool: asyncpg.Pool) -> None:
    """After a sweep: release the key holds whose ledger hold is no longer pending."""
    async with pool.acquire() as c, c.transaction():
        rows = await c.fetch(
            "DELETE FROM key_holds k USING holds h WHERE h.id = k.hold_id AND h.state <> 'pending'"
            " RETURNING k.key_id, k.day, k.month, k.held_q"
        )
        await _release(c, rows)


async def create_key(pool: asyncpg.Pool, row: keys.KeyRow, secret_sha256: str) -> None:
    """Store a new key; its secret only as ``secret_sha256``."""
    await pool.execute(f"INSERT INTO keys ({keys.KEY_COLUMNS}, secret_sha256) VALUES ({_MARKS})",
                       *keys.key_values(row, secret_sha256))


async def keys_where(pool: asyncpg.Pool, where: str = "", *args: object) -> list[keys.KeyRow]:
    """Keys matching ``where`` (SQL after WHERE; every key when empty), oldest first."""
    sql = f"SELECT {keys.KEY_COLUMNS} FROM keys {f'WHERE {where} ' if where else ''}ORDER BY created, id"
    return [keys.key_row(tuple(r)) for r in await pool.fetch(sql, *args)]


async def revoke_key(pool: asyncpg.Pool, key_id: str, at: float) -> keys.KeyRow:
    """Mark a key revoked at ``at`` (epoch s); revoking twice keeps the first time."""
    row = await pool.fetchrow(
        f"UPDATE keys SET revoked = COALESCE(revoked, $1) WHERE id = $2 RETURNING {keys.KEY_COLUMNS}",
        at, key_id,
    )
    if row is None:
        raise LedgerError(f"unknown key {key_id!r}")
    return keys.key_row(tuple(row))


async def key_spend(pool: asyncpg.Pool, key_id: str,
                    periods: Sequence[str]) -> dict[str, tuple[float, float]]:
    """Period -> (spent yuan, held yuan) of one key."""
    return keys.spend_of(await pool.fetch(
        f"SELECT period, spent_q, held_q FROM {KEY_BOOKS} WHERE key_id = $1 AND period = ANY($2::text[])",
        key_id, list(periods),
    ))
