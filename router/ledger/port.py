"""One async face over both ledger backends, so the Router awaits the same calls on either.

``open_ledger`` picks the backend from ``ledger.url``: ``sqlite:///...`` (the embedded
default, synchronous underneath: each call is tens of microseconds and never yields) or
``postgresql://...`` (several replicas, ``ledger_pg``). The SQLite adapter's coroutines do
the call inline, so awaiting them costs one coroutine frame and never a thread hop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Protocol

from suanli.config import Voucher
from suanli.config.schema import LedgerSettings
from suanli.router.ledger.sqlite.ledger import Ledger
from suanli.router.ledger.types import Hold, HoldRequest, Settlement, UsageRow, VoucherStatus

__all__ = ["AsyncLedger", "SqliteAsyncLedger", "open_ledger", "read_vouchers"]

Clock = Callable[[], datetime]


class AsyncLedger(Protocol):
    """What the Router (and the ledger tests) call, on either backend."""

    recovered_holds: int

    async def reserve(self, req: HoldRequest) -> Hold: ...
    async def settle(self, hold_id: str, s: Settlement) -> UsageRow: ...
    async def void(self, hold_id: str) -> None: ...
    async def void_stale(self, max_age_s: float) -> int: ...
    async def balance(self, voucher_id: str) -> float: ...
    async def balances(self) -> dict[str, float]: ...
    async def vouchers(self) -> list[VoucherStatus]: ...
    async def pending_holds(self) -> int: ...
    async def usage(
        self, *, since: datetime | None = None, until: datetime | None = None
    ) -> list[UsageRow]: ...
    async def totals(self) -> dict[str, float]: ...
    async def verify_chain(self) -> int | None: ...
    async def mark_exhausted(
        self, *, voucher_id: str | None = None, region: str | None = None, reason: str = ""
    ) -> None: ...
    async def clear_exhausted(self, *, voucher_id: str | None = None, region: str | None = None) -> None: ...
    async def exhausted(self) -> dict[str, dict[str, object]]: ...
    async def close(self) -> None: ...


class SqliteAsyncLedger:
    """The SQLite ``Ledger`` behind the async face; ``sync`` is the ledger itself."""

    def __init__(self, ledger: Ledger) -> None:
        self.sync = ledger
        self.recovered_holds = ledger.recovered_holds

    async def reserve(self, req: HoldRequest) -> Hold:
        return self.sync.reserve(req)

    async def settle(self, hold_id: str, s: Settlement) -> UsageRow:
        return self.sync.settle(hold_id, s)

    async def void(self, hold_id: str) -> None:
        self.sync.void(hold_id)

    async def void_stale(self, max_age_s: float) -> int:
        return self.sync.void_stale(max_age_s)

    async def balance(self, voucher_id: str) -> float:
        return self.sync.balance(voucher_id)

    async def balances(self) -> dict[str, float]:
        return self.sync.balances()

    async def vouchers(self) -> list[VoucherStatus]:
        return self.sync.vouchers()

    async def pending_holds(self) -> int:
        return self.sync.pending_holds()

    async def usage(self, *, since: datetime | None = None, until: datetime | None = None) -> list[UsageRow]:
        return self.sync.usage(since=since, until=until)

    async def totals(self) -> dict[str, float]:
        return self.sync.totals()

    async def verify_chain(self) -> int | None:
        return self.sync.verify_chain()

    async def mark_exhausted(
        self, *, voucher_id: str | None = None, region: str | None = None, reason: str = ""
    ) -> None:
        self.sync.mark_exhausted(voucher_id=voucher_id, region=region, reason=reason)

    async def clear_exhausted(self, *, voucher_id: str | None = None, region: str | None = None) -> None:
        self.sync.clear_exhausted(voucher_id=voucher_id, region=region)

    async def exhausted(self) -> dict[str, dict[str, object]]:
        return self.sync.exhausted()

    async def close(self) -> None:
        self.sync.close()

    async def __aenter__(self) -> SqliteAsyncLedger:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def open_ledger(settings: LedgerSettings, vouchers: Sequence[Voucher], *, clock: Clock,
                      sweep_s: float | None = 1.0) -> AsyncLedger:
    """Open the ledger ``settings.url`` names, migrated and with the config's vouchers synced."""
    from suanli.router.ledger.sqlite.schema import is_pg_url

    if is_pg_url(settings.url):
        from suanli.router.ledger.postgres.ledger import PgLedger

        return await PgLedger.open(
            settings.url, vouchers, clock=clock, hold_timeout_s=settings.hold_timeout_s, sweep_s=sweep_s
        )
    return SqliteAsyncLedger(Ledger.open(settings.url, vouchers, clock=clock))


def read_vouchers(settings: LedgerSettings, vouchers: Sequence[Voucher]) -> list[VoucherStatus]:
    """Every voucher's status, from code that is not async (the CLI); either backend."""
    import asyncio
    from datetime import UTC

    async def read() -> list[VoucherStatus]:
        ledger = await open_ledger(settings, vouchers, clock=lambda: datetime.now(UTC), sweep_s=None)
        try:
            return await ledger.vouchers()
        finally:
            await ledger.close()

    return asyncio.run(read())
