"""Taking a lease: one short transaction that moves part of an account into a replica's slice.

The account row is locked (``SELECT ... FOR UPDATE``: under READ COMMITTED it waits for a
concurrent writer and then reads the newest version), what it has free is read, the grant
sized (``slices.lease_size``) and added to its ``held_q`` together with the lease row, so the
sum of live slices never exceeds the account. A slice that gets less than it needs bumps the
voucher's ``lease_epoch``: every other replica returns its idle slice of it at its next tick.
Lock order: the lease row, then the account row, as everywhere in ``escrow_sql.py``.
"""

from __future__ import annotations

import asyncpg

from suanli.router.errors import LedgerError
from suanli.router.ledger.postgres.slices import EscrowCounters, Slice, lease_size

__all__ = ["lease"]

_VOUCHER_FREE = "SELECT balance_q - held_q, lease_epoch FROM vouchers WHERE id = $1 FOR UPDATE"
_NEW_LEASE = (
    "INSERT INTO leases (id, owner, voucher_id, key_id, period, leased_q, epoch, opened)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
)


async def lease(pool: asyncpg.Pool, sl: Slice, need_q: int, *, owner_id: str, lease_id: str,
                now: float, counters: EscrowCounters | None = None) -> int:
    """Grow ``sl``'s lease by ``need_q`` or more (a new lease ``lease_id`` if it has none); the grant.

    A voucher slice may get less than ``need_q`` (the voucher is nearly spent); an unlimited
    key period gets nothing but its lease row.
    """
    want_q = sl.want_q(need_q)
    current, lost = sl.lease_id, False
    async with pool.acquire() as c, c.transaction():
        if current is not None:
            state = await c.fetchval("SELECT state FROM leases WHERE id = $1 FOR UPDATE", current)
            if state != "live":
                current, lost = None, True  # a peer returned it: this replica was silent past the TTL
        if sl.voucher_id is not None:
            row = await c.fetchrow(_VOUCHER_FREE, sl.voucher_id)
            if row is None:
                raise LedgerError(f"unknown voucher {sl.voucher_id!r}")
            free_q, epoch = row
            grant = lease_size(free_q, need_q, want_q)
            bump = 1 if grant < need_q else 0  # short: recall the other replicas' idle slices
            await c.execute(
                "UPDATE vouchers SET held_q = held_q + $2, lease_epoch = lease_epoch + $3 WHERE id = $1",
                sl.voucher_id, grant, bump)
            epoch += bump
        else:
            await c.execute("INSERT INTO key_spend (key_id, period) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                            sl.key_id, sl.period)
            grant, epoch = 0, 0
            if sl.limit_q is not None:
                used_q = await c.fetchval(
                    "SELECT spent_q + held_q FROM key_spend WHERE key_id = $1 AND period = $2 FOR UPDATE",
                    sl.key_id, sl.period)
                grant = lease_size(max(sl.limit_q - used_q, 0), need_q, want_q)
                await c.execute("UPDATE key_spend SET held_q = held_q + $3 WHERE key_id = $1 AND period = $2",
                                sl.key_id, sl.period, grant)
        if current is None:
            await c.execute(_NEW_LEASE, lease_id, owner_id, sl.voucher_id, sl.key_id, sl.period, grant, epoch,
                            now)
        else:
            await c.execute("UPDATE leases SET leased_q = leased_q + $2, epoch = $3 WHERE id = $1",
                            current, grant, epoch)
    if counters is not None:  # BEGIN, the lease row, the account (2-4), the lease, COMMIT
        counters.path_trips += (2 if current is not None or lost else 1) + (2 if sl.voucher_id else 4) + 2
    # Only now, after COMMIT: a rolled-back lease changed nothing.
    if lost:
        sl.lost()
    sl.lease_id = current or lease_id
    sl.leased_q += grant
    sl.epoch = epoch
    return grant
