"""Virtual keys and key budgets on the PostgreSQL ledger: the same tables and rules as ``ledger_keys``.

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

import math
from collections.abc import Sequence

import asyncpg

from suanli.router.errors import BudgetExceededError, LedgerError
from suanli.router.ledger.keys import _KEY_COLUMNS, YUAN_Q, KeyBudgetHold, KeyRow, _key_row, _listed, _q

__all__ = [
    "KEYS_MIGRATION_PG",
    "PgKeysMixin",
    "hold_key_budget_pg",
    "release_key_budget_pg",
    "release_resolved_pg",
    "settle_key_budget_pg",
]

KEYS_MIGRATION_PG: tuple[str, ...] = (
    """CREATE TABLE keys (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        secret_sha256 TEXT NOT NULL UNIQUE,
        created DOUBLE PRECISION NOT NULL,
        revoked DOUBLE PRECISION,
        expires DOUBLE PRECISION,
        budget_day_q BIGINT,
        budget_month_q BIGINT,
        allowed_regions TEXT,
        allowed_zones TEXT,
        default_class TEXT,
        origin TEXT,
        rpm INTEGER
    )""",
    """CREATE TABLE key_spend (
        key_id TEXT NOT NULL,
        period TEXT NOT NULL,
        spent_q BIGINT NOT NULL DEFAULT 0,
        held_q BIGINT NOT NULL DEFAULT 0 CHECK (held_q >= 0),
        PRIMARY KEY (key_id, period)
    )""",
    """CREATE TABLE key_holds (
        hold_id TEXT PRIMARY KEY,
        key_id TEXT NOT NULL,
        day TEXT NOT NULL,
        month TEXT NOT NULL,
        held_q BIGINT NOT NULL
    )""",
)

# $1 key, $2 period, $3 amount (nano-yuan), $4 limit (NULL: none). Returns a row only if held.
_HOLD_PERIOD = (
    "INSERT INTO key_spend (key_id, period, held_q) SELECT $1, $2, $3 WHERE $4::bigint IS NULL OR $3 <= $4"
    " ON CONFLICT (key_id, period) DO UPDATE SET held_q = key_spend.held_q + excluded.held_q"
    " WHERE $4::bigint IS NULL OR key_spend.spent_q + key_spend.held_q + excluded.held_q <= $4"
    " RETURNING 1"
)
_MARKS = ", ".join(f"${i}" for i in range(1, 14))
_POST_PERIOD = (
    "UPDATE key_spend SET held_q = held_q - $1, spent_q = spent_q + $2 WHERE key_id = $3 AND period = $4"
)


async def hold_key_budget_pg(c: asyncpg.Connection, hold_id: str, hold: KeyBudgetHold) -> None:
    """Inside the reserve transaction: hold on both periods, or BudgetExceededError (roll back)."""
    amount_q = max(math.ceil(hold.amount_yuan * YUAN_Q - 1e-6), 0)
    for period, limit, label in (
        (hold.day, hold.day_limit_yuan, "today"),
        (hold.month, hold.month_limit_yuan, "this month"),
    ):
        if await c.fetchval(_HOLD_PERIOD, hold.key_id, period, amount_q, _q(limit)) is None:
            used_q = await c.fetchval(
                "SELECT spent_q + held_q FROM key_spend WHERE key_id = $1 AND period = $2",
                hold.key_id, period,
            )
            raise BudgetExceededError(
                f"this key's budget of {limit:g} yuan {label} is spent: {(used_q or 0) / YUAN_Q:.6f} yuan"
                f" used or held, and this request may cost up to {hold.amount_yuan:.6f} yuan"
                " (lower max_tokens to ask for less)"
            )
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
    cost_q = max(round(cost_yuan * YUAN_Q), 0)
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


class PgKeysMixin:
    """Key rows of the PostgreSQL ledger, as PgLedger coroutines (PgLedger supplies the pool)."""

    def _live(self) -> asyncpg.Pool:
        raise NotImplementedError

    async def create_key(self, row: KeyRow, secret_sha256: str) -> None:
        """Store a new key; its secret only as ``secret_sha256``."""
        await self._live().execute(
            f"INSERT INTO keys ({_KEY_COLUMNS}, secret_sha256) VALUES ({_MARKS})",
            row.id, row.name, row.created, row.revoked, row.expires, _q(row.budget_yuan_per_day),
            _q(row.budget_yuan_per_month), _listed(row.allowed_regions), _listed(row.allowed_zones),
            row.default_class, row.origin, row.rpm, secret_sha256,
        )

    async def _one(self, where: str, value: str) -> KeyRow | None:
        row = await self._live().fetchrow(f"SELECT {_KEY_COLUMNS} FROM keys WHERE {where} = $1", value)
        return None if row is None else _key_row(tuple(row))

    async def key_by_secret(self, secret_sha256: str) -> KeyRow | None:
        """The key whose secret hashes to ``secret_sha256`` (revoked or not), or None."""
        return await self._one("secret_sha256", secret_sha256)

    async def key(self, key_id: str) -> KeyRow | None:
        return await self._one("id", key_id)

    async def keys(self) -> list[KeyRow]:
        """Every key, revoked ones included, oldest first."""
        rows = await self._live().fetch(f"SELECT {_KEY_COLUMNS} FROM keys ORDER BY created, id")
        return [_key_row(tuple(r)) for r in rows]

    async def revoke_key(self, key_id: str, at: float) -> KeyRow:
        """Mark a key revoked at ``at`` (epoch s); revoking twice keeps the first time."""
        row = await self._live().fetchrow(
            f"UPDATE keys SET revoked = COALESCE(revoked, $1) WHERE id = $2 RETURNING {_KEY_COLUMNS}",
            at, key_id,
        )
        if row is None:
            raise LedgerError(f"unknown key {key_id!r}")
        return _key_row(tuple(row))

    async def key_spend(self, key_id: str, periods: Sequence[str]) -> dict[str, tuple[float, float]]:
        """Period -> (spent yuan, held yuan) of one key."""
        rows = await self._live().fetch(
            "SELECT period, spent_q, held_q FROM key_spend WHERE key_id = $1 AND period = ANY($2::text[])",
            key_id, list(periods),
        )
        return {r[0]: (r[1] / YUAN_Q, r[2] / YUAN_Q) for r in rows}

    async def chain_orphans(self) -> tuple[int | None, int]:
        """(first usage row id no settled hold made, how many settled holds lack a usage row)."""
        pool = self._live()
        forged = await pool.fetchval(
            "SELECT MIN(u.id) FROM usage u LEFT JOIN holds h ON h.id = u.hold_id AND h.state = 'settled'"
            " WHERE h.id IS NULL"
        )
        missing = await pool.fetchval(
            "SELECT COUNT(*) FROM holds h LEFT JOIN usage u ON u.hold_id = h.id"
            " WHERE h.state = 'settled' AND u.id IS NULL"
        )
        return (None if forged is None else int(forged)), int(missing)

