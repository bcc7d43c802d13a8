"""A replica's ledger on PostgreSQL with the escrow in front: the ``AsyncLedger`` port ``serve`` uses.

Holds and settles of the request path go to this replica's ``Escrow`` (in memory against
leased slices, usage rows group-committed); a fine-tuning job's long hold, and any hold made
on the per-hold path (by ``PgLedger`` itself, or before a restart), is settled or voided there. Every
other call is the ``PgLedger``'s: they share one pool, one owner, one schema.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from suanli.config import Voucher
from suanli.router.ledger.keys import YUAN_Q
from suanli.router.ledger.postgres.escrow import Escrow, EscrowCounters
from suanli.router.ledger.postgres.ledger import PgLedger
from suanli.router.ledger.postgres.schema import lock_space, pg_url
from suanli.router.ledger.types import Hold, HoldRequest, Settlement, UsageRow

__all__ = ["EscrowLedger", "open_escrowed"]

# A fine-tuning job holds its estimate for minutes or hours: a row of its own (the per-hold
# path) that every replica sees, that a restart finds, and that a slice need not stay out for.
_DURABLE_CLASSES = frozenset({"training"})


class EscrowLedger:
    """``PgLedger`` with reserve / settle / void through an ``Escrow``; see the module docstring."""

    def __init__(self, pg: PgLedger, escrow: Escrow) -> None:
        self.pg = pg
        self.escrow = escrow

    @property
    def recovered_holds(self) -> int:
        return self.pg.recovered_holds

    def __getattr__(self, name: str) -> Any:
        # Composition: everything the escrow does not change is the PgLedger's own call.
        return getattr(self.pg, name)

    async def reserve(self, req: HoldRequest) -> Hold:
        if req.work_class in _DURABLE_CLASSES:
            return await self.pg.reserve(req)
        return await self.escrow.reserve(req)

    async def settle(self, hold_id: str, s: Settlement) -> UsageRow:
        if self.escrow.owns(hold_id):
            return await self.escrow.settle(hold_id, s)
        return await self.pg.settle(hold_id, s)

    async def void(self, hold_id: str) -> None:
        if self.escrow.owns(hold_id):
            self.escrow.void(hold_id)
            return
        await self.pg.void(hold_id)

    async def void_stale(self, max_age_s: float) -> int:
        return self.escrow.void_stale(max_age_s) + await self.pg.void_stale(max_age_s)

    async def pending_holds(self) -> int:
        """Pending holds of every replica's per-hold path, and this replica's escrow holds."""
        return await self.pg.pending_holds() + self.escrow.pending

    async def key_spend(self, key_id: str, periods: Sequence[str]) -> dict[str, tuple[float, float]]:
        """Period -> (spent, held) yuan: the books, plus what this replica's pending holds keep
        (inside its slice, so the books count it neither spent nor held)."""
        found = await self.pg.key_spend(key_id, periods)
        for period, q in self.escrow.key_held(key_id).items():
            if period in periods and q:
                spent, held = found.get(period, (0.0, 0.0))
                found[period] = (spent, held + q / YUAN_Q)
        return found

    async def balances(self) -> dict[str, float]:
        """What no slice holds, plus what this replica's own slices have free: what it can hold now."""
        found = await self.pg.balances()
        free = self.escrow.free()
        if free:
            marked = {m.get("voucher_id") for m in (await self.pg.exhausted()).values()}
            for voucher_id, units in free.items():
                if voucher_id in found and voucher_id not in marked:
                    found[voucher_id] += units
        return found

    async def close(self) -> None:
        try:
            await self.escrow.close()
        finally:
            await self.pg.close()

    async def __aenter__(self) -> EscrowLedger:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def open_escrowed(url: str, vouchers: Sequence[Voucher], *, clock: Callable[[], datetime],
                        tick_s: float | None = 1.0, lease_ttl_s: float = 30.0,
                        **options: Any) -> EscrowLedger:
    """Open the PgLedger at ``url`` (``options`` are ``PgLedger.open``'s) and this replica's escrow.

    ``tick_s`` None: no background tick (tests call ``escrow.tick()``; the PgLedger's sweep
    then runs only if ``sweep_s`` is given in ``options``).
    """
    counters = EscrowCounters()
    if tick_s is None:
        options.setdefault("sweep_s", None)
    pg = await PgLedger.open(url, vouchers, clock=clock, on_query=counters.count, **options)
    escrow = Escrow(pg.pool, owner_id=pg.owner_id, owner_space=lock_space(pg_url(url).schema, "owner"),
                    clock=clock, counters=counters, lease_ttl_s=lease_ttl_s,
                    grace_s=options.get("grace_s", 10.0))
    try:
        await escrow.start(tick_s)
    except BaseException:
        await pg.close()
        raise
    return EscrowLedger(pg, escrow)
