"""The PostgreSQL ledger for synchronous code in worker threads (``Router.ledger`` on PostgreSQL).

Readers written for the SQLite ledger call it synchronously, off the event loop (the status
feed replays usage rows in ``asyncio.to_thread``). Here each call runs the PgLedger's
coroutine on the loop that owns its pool and waits for it, from the calling thread. A call
from the event loop's own thread would wait for itself: it raises instead, naming the fix.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

from suanli.router.errors import LedgerError
from suanli.router.ledger.keys import KeyRow
from suanli.router.ledger.postgres.ledger import PgLedger
from suanli.router.ledger.types import UsageRow, VoucherStatus

__all__ = ["ThreadLedger"]

T = TypeVar("T")

_TIMEOUT_S = 60.0


class ThreadLedger:
    """Blocking calls onto a PgLedger's loop; ``pg`` is the PgLedger itself (await it on the loop)."""

    def __init__(self, ledger: PgLedger, loop: asyncio.AbstractEventLoop) -> None:
        self.pg = ledger
        self._loop = loop

    def _wait(self, call: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            raise LedgerError("the PostgreSQL ledger's blocking calls are for worker threads: await router"
                              ".ledger.pg instead, or run the call in asyncio.to_thread")
        coro = call(*args, **kwargs)
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(_TIMEOUT_S)  # type: ignore[arg-type]

    def usage(self, *, since: datetime | None = None, until: datetime | None = None) -> list[UsageRow]:
        return self._wait(self.pg.usage, since=since, until=until)

    def vouchers(self) -> list[VoucherStatus]:
        return self._wait(self.pg.vouchers)

    def balances(self) -> dict[str, float]:
        return self._wait(self.pg.balances)

    def balance(self, voucher_id: str) -> float:
        return self._wait(self.pg.balance, voucher_id)

    def pending_holds(self) -> int:
        return self._wait(self.pg.pending_holds)

    def totals(self) -> dict[str, float]:
        return self._wait(self.pg.totals)

    def verify_chain(self) -> int | None:
        return self._wait(self.pg.verify_chain)

    # Virtual keys, for worker threads (the event loop awaits ``pg``'s coroutines: router.keys).
    def key_by_secret(self, secret_sha256: str) -> KeyRow | None:
        return self._wait(self.pg.key_by_secret, secret_sha256)

    def key(self, key_id: str) -> KeyRow | None:
        return self._wait(self.pg.key, key_id)

    def keys(self) -> list[KeyRow]:
        return self._wait(self.pg.keys)

    def key_spend(self, key_id: str, periods: list[str]) -> dict[str, tuple[float, float]]:
        return self._wait(self.pg.key_spend, key_id, periods)

    def exhausted(self) -> dict[str, dict[str, object]]:
        return self._wait(self.pg.exhausted)

