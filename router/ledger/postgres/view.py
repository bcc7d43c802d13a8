"""A replica's synchronous view of the shared PostgreSQL ledger, for code that does not await.

The Router's health and failover code calls the ledger without awaiting: to void a hold
after a failed attempt (even while being cancelled), to mark a prepaid balance exhausted,
to read balances and the voucher report. On PostgreSQL those calls would block the event
loop, so this view answers reads from what the replica refreshed (every second) and turns
writes into tasks it keeps track of. Both writes are safe to run late: a void is
idempotent and released again by the sweep if it never lands; an exhaustion mark is a hint.
``drain()`` awaits what is still in flight (at stop).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, MutableMapping
from typing import Any

from suanli.router.ledger.exhausted import account_of
from suanli.router.ledger.postgres.ledger import PgLedger
from suanli.router.ledger.types import VoucherStatus

__all__ = ["SharedLedgerView"]

log = logging.getLogger("router.ledger")


class SharedLedgerView:
    """Cached reads and background writes over a PgLedger; see the module docstring."""

    def __init__(self, ledger: PgLedger, available: MutableMapping[str, float]) -> None:
        self.ledger = ledger
        self.available = available  # voucher id -> units free; the Router's own dict
        self.statuses: list[VoucherStatus] = []
        self.marks: dict[str, dict[str, object]] = {}  # account -> region, voucher_id, since, reason
        self._tasks: set[asyncio.Task[None]] = set()
        # The request path's writes, awaited (through postgres/writes.py): the ledger's own.
        self.reserve = ledger.reserve
        self.settle = ledger.settle

    async def refresh(self) -> None:
        self.available.update(await self.ledger.balances())
        self.statuses = await self.ledger.vouchers()
        self.marks = await self.ledger.exhausted()

    def void(self, hold_id: str) -> None:
        self._spawn(self.ledger.void(hold_id), f"void {hold_id}")

    def balances(self) -> dict[str, float]:
        return dict(self.available)

    def vouchers(self) -> list[VoucherStatus]:
        return list(self.statuses)

    def exhausted(self) -> dict[str, dict[str, object]]:
        return dict(self.marks)

    def mark_exhausted(self, *, voucher_id: str | None = None, region: str | None = None,
                       reason: str = "") -> None:
        since = self.ledger.now().timestamp()
        self.marks[account_of(voucher_id=voucher_id, region=region)] = {
            "region": region, "voucher_id": voucher_id, "since": since, "reason": reason}
        if voucher_id is not None:
            self.available[voucher_id] = 0.0
        self._spawn(self.ledger.mark_exhausted(voucher_id=voucher_id, region=region, reason=reason), "mark")

    def clear_exhausted(self, *, voucher_id: str | None = None, region: str | None = None) -> None:
        self.marks.pop(account_of(voucher_id=voucher_id, region=region), None)
        self._spawn(self.ledger.clear_exhausted(voucher_id=voucher_id, region=region), "clear")

    def _spawn(self, write: Coroutine[Any, Any, None], what: str) -> None:
        task = asyncio.get_running_loop().create_task(write)
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._done(t, what))

    def _done(self, task: asyncio.Task[None], what: str) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("ledger: %s failed (the sweep resolves it): %s", what, task.exception())

    async def drain(self) -> None:
        """Wait for the writes still in flight."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
