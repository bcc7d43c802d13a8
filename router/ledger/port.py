"""The ledger as the rest of suanli sees it: one async port, and one handle on an open ledger.

``open_ledger`` picks the backend from ``ledger.url``: ``sqlite:///...`` (the embedded
default, synchronous underneath: each call is tens of microseconds and never yields) or
``postgresql://...`` (several replicas sharing one set of balances). Either way the caller
gets an ``AsyncLedger``: the SQLite adapter's coroutines do the call inline, so awaiting them
costs one coroutine frame and never a thread hop.

``open_handle`` is what the Router opens: a ``LedgerHandle`` bundling, for the backend the
URL names, the async port, the book for calls that must not wait, the request path's write
path (group commit on SQLite, shielded round trips on PostgreSQL), the blocking face for
worker threads and, on a shared ledger, the view a replica keeps fresh. Only this module
looks at which backend it is.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from suanli.config import Voucher
from suanli.config.schema import LedgerSettings
from suanli.router.errors import LedgerError, LedgerUnavailableError
from suanli.router.ledger.adjust import Adjustment
from suanli.router.ledger.figures import Figure, RegionSpend
from suanli.router.ledger.keys import KeyRow
from suanli.router.ledger.sqlite.group import GroupCommit
from suanli.router.ledger.sqlite.ledger import Ledger, open_readonly
from suanli.router.ledger.types import Hold, HoldRequest, Settlement, UsageRow, VoucherStatus

if TYPE_CHECKING:
    from suanli.router.ledger.postgres.view import SharedLedgerView

__all__ = [
    "AsyncLedger",
    "AuditSource",
    "BlockingLedger",
    "Book",
    "LedgerHandle",
    "SqliteAsyncLedger",
    "open_handle",
    "open_ledger",
    "read_audit_source",
    "read_vouchers",
]

Clock = Callable[[], datetime]

log = logging.getLogger("suanli.router.ledger")


class AsyncLedger(Protocol):
    """What the Router (and the ledger tests) call, on either backend."""

    recovered_holds: int

    async def reserve(self, req: HoldRequest) -> Hold: ...
    async def settle(self, hold_id: str, s: Settlement) -> UsageRow: ...
    async def void(self, hold_id: str) -> None: ...
    async def void_stale(self, max_age_s: float) -> int: ...
    async def adjust(self, voucher_id: str, amount: float, reason: str) -> Adjustment: ...
    async def sync_vouchers(self, vouchers: Sequence[Voucher]) -> None: ...
    async def balance(self, voucher_id: str) -> float: ...
    async def balances(self) -> dict[str, float]: ...
    async def vouchers(self) -> list[VoucherStatus]: ...
    async def pending_holds(self) -> int: ...
    async def usage(
        self, *, since: datetime | None = None, until: datetime | None = None
    ) -> list[UsageRow]: ...
    async def totals(self) -> dict[str, float]: ...
    async def usage_of_request(self, request_id: str) -> UsageRow | None: ...
    async def record_figures(self, rows: Sequence[Figure]) -> None: ...
    async def figures(self) -> list[Figure]: ...
    async def spend_between(self, region: str, since: float, until: float) -> RegionSpend: ...
    async def verify_chain(self) -> int | None: ...
    async def mark_exhausted(
        self, *, voucher_id: str | None = None, region: str | None = None, reason: str = ""
    ) -> None: ...
    async def clear_exhausted(self, *, voucher_id: str | None = None, region: str | None = None) -> None: ...
    async def exhausted(self) -> dict[str, dict[str, object]]: ...
    # Virtual keys (the admin API, the key check on a cache miss, a batch's stored policy).
    async def create_key(self, row: KeyRow, secret_sha256: str) -> None: ...
    async def key_by_secret(self, secret_sha256: str) -> KeyRow | None: ...
    async def key(self, key_id: str) -> KeyRow | None: ...
    async def keys(self) -> list[KeyRow]: ...
    async def revoke_key(self, key_id: str, at: float) -> KeyRow: ...
    async def key_spend(self, key_id: str, periods: Sequence[str]) -> dict[str, tuple[float, float]]: ...
    async def close(self) -> None: ...


class Book(Protocol):
    """The ledger calls the Router makes on the event loop without awaiting.

    SQLite answers them inline; on PostgreSQL a replica's view answers reads from what it last
    refreshed and runs writes (a void, an exhaustion mark) in the background.
    """

    def void(self, hold_id: str) -> None: ...
    def balances(self) -> dict[str, float]: ...
    def vouchers(self) -> list[VoucherStatus]: ...
    def exhausted(self) -> dict[str, dict[str, object]]: ...
    def mark_exhausted(
        self, *, voucher_id: str | None = None, region: str | None = None, reason: str = ""
    ) -> None: ...
    def clear_exhausted(self, *, voucher_id: str | None = None, region: str | None = None) -> None: ...


class BlockingLedger(Protocol):
    """Blocking reads for worker threads (the status feed) and scripts: never on the event loop."""

    def usage(self, *, since: datetime | None = None, until: datetime | None = None) -> list[UsageRow]: ...
    def vouchers(self) -> list[VoucherStatus]: ...
    def balances(self) -> dict[str, float]: ...
    def balance(self, voucher_id: str) -> float: ...
    def pending_holds(self) -> int: ...
    def totals(self) -> dict[str, float]: ...
    def exhausted(self) -> dict[str, dict[str, object]]: ...
    def keys(self) -> list[KeyRow]: ...


class AuditSource(Protocol):
    """What the usage export reads: the chain, its orphans, the keys, the usage rows and the vouchers."""

    def chain_rows(self) -> Iterator[tuple[int, tuple[Any, ...], str, str]]: ...
    def chain_orphans(self) -> tuple[int | None, int]: ...
    def keys(self) -> list[KeyRow]: ...
    def usage(self, *, since: datetime | None = None, until: datetime | None = None) -> list[UsageRow]: ...
    def vouchers(self) -> list[VoucherStatus]: ...


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

    async def adjust(self, voucher_id: str, amount: float, reason: str) -> Adjustment:
        return self.sync.adjust(voucher_id, amount, reason)

    async def sync_vouchers(self, vouchers: Sequence[Voucher]) -> None:
        self.sync.sync_vouchers(vouchers)

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

    async def usage_of_request(self, request_id: str) -> UsageRow | None:
        return self.sync.usage_of_request(request_id)

    async def record_figures(self, rows: Sequence[Figure]) -> None:
        self.sync.record_figures(rows)

    async def figures(self) -> list[Figure]:
        return self.sync.figures()

    async def spend_between(self, region: str, since: float, until: float) -> RegionSpend:
        return self.sync.spend_between(region, since, until)

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

    async def create_key(self, row: KeyRow, secret_sha256: str) -> None:
        self.sync.create_key(row, secret_sha256)

    async def key_by_secret(self, secret_sha256: str) -> KeyRow | None:
        return self.sync.key_by_secret(secret_sha256)

    async def key(self, key_id: str) -> KeyRow | None:
        return self.sync.key(key_id)

    async def keys(self) -> list[KeyRow]:
        return self.sync.keys()

    async def revoke_key(self, key_id: str, at: float) -> KeyRow:
        return self.sync.revoke_key(key_id, at)

    async def key_spend(self, key_id: str, periods: Sequence[str]) -> dict[str, tuple[float, float]]:
        return self.sync.key_spend(key_id, periods)

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

        options = _pg_options(settings)
        return await PgLedger.open(settings.url, vouchers, clock=clock, sweep_s=sweep_s, **options)
    return SqliteAsyncLedger(Ledger.open(settings.url, vouchers, clock=clock))


def _pg_options(settings: LedgerSettings) -> dict[str, Any]:
    """The PostgreSQL driver's options from ``ledger:`` (timeouts, liveness grace)."""
    from suanli.router.ledger.postgres.schema import SessionLimits

    limits = SessionLimits(lock_timeout_s=settings.lock_timeout_s,
                           idle_in_transaction_s=settings.idle_in_transaction_timeout_s)
    return {"hold_timeout_s": settings.hold_timeout_s, "grace_s": settings.liveness_grace_s, "limits": limits}


def read_vouchers(settings: LedgerSettings, vouchers: Sequence[Voucher]) -> list[VoucherStatus]:
    """Every voucher's status, from code that is not async (the CLI); either backend."""
    from datetime import UTC

    async def read() -> list[VoucherStatus]:
        ledger = await open_ledger(settings, vouchers, clock=lambda: datetime.now(UTC), sweep_s=None)
        try:
            return await ledger.vouchers()
        finally:
            await ledger.close()

    return asyncio.run(read())


@contextmanager
def read_audit_source(url: str) -> Iterator[AuditSource]:
    """What the audit CLI and ``suanli report`` read, from code that is not async: the SQLite
    ledger opened read-only, or one snapshot of a PostgreSQL one. LedgerError if it cannot be read."""
    from suanli.router.ledger.sqlite.schema import is_pg_url

    if not is_pg_url(url):
        with open_readonly(url) as ledger:
            yield ledger
        return
    import asyncpg

    from suanli.router.ledger.postgres.audit import read_snapshot

    try:
        snapshot = asyncio.run(read_snapshot(url))
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        raise LedgerError(f"cannot read the PostgreSQL ledger: {exc}") from exc
    yield snapshot


# The request path's writes: GroupCommit.run (SQLite, a sync write) or AsyncWrites.run
# (PostgreSQL, an async one), called as run(write, *args, always=, then=, abandon=).
_RunWrite = Callable[..., Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class LedgerHandle:
    """One open ledger, whichever the backend: everything the Router needs of it.

    ``reserve`` and ``settle`` go through the write path; ``shared`` is the view a replica
    refreshes on a ledger shared with other replicas (None on SQLite): the Router runs its
    replica duties on it.
    """

    port: AsyncLedger  # awaited for anything: keys, usage, a void the caller waits for
    book: Book  # answers on the event loop without waiting
    blocking: BlockingLedger  # for worker threads and scripts, never on the loop
    available: dict[str, float]  # voucher id -> units not yet held or spent (the chooser reads it)
    write_path: _RunWrite  # GroupCommit.run or AsyncWrites.run
    writes: tuple[Callable[..., Any], Callable[..., Any]]  # the backend's own reserve and settle
    # The usage chain to export: the SQLite ledger, or one consistent PostgreSQL snapshot.
    audit_source: Callable[[], Awaitable[AuditSource]]
    shared: SharedLedgerView | None = None
    settle_retry_s: float = 10.0  # how long a settle the ledger cannot take now is retried

    def reserve(
        self, req: HoldRequest, *, then: Callable[[Hold], None], abandon: Callable[[Hold], None]
    ) -> Awaitable[Hold]:
        """Hold through the write path; ``then`` follows the commit, ``abandon`` a caller gone meanwhile."""
        return self.write_path(self.writes[0], req, then=then, abandon=abandon)

    def settle(self, hold_id: str, s: Settlement, *, then: Callable[[UsageRow], None]) -> Awaitable[UsageRow]:
        """Settle through the write path, even if the caller is cancelled (the upstream did the work).

        While the ledger cannot write (LedgerUnavailableError: a lost database, a lock wait, a
        full disk past the room kept back) the settle is retried, with backoff, for up to
        ``settle_retry_s``: a settle is idempotent, and the caller holds the answer until it
        commits. Past that the error reaches the caller (503) and the hold stays pending.
        """
        task = asyncio.ensure_future(self._settle_retrying(hold_id, s, then))
        task.add_done_callback(_consume)  # the caller may have gone: never "exception never retrieved"
        return asyncio.shield(task)

    async def _settle_retrying(
        self, hold_id: str, s: Settlement, then: Callable[[UsageRow], None]
    ) -> UsageRow:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.settle_retry_s
        delay = 0.05
        while True:
            try:
                return await self.write_path(self.writes[1], hold_id, s, always=True, then=then)
            except LedgerUnavailableError as exc:
                if loop.time() + delay > give_up:
                    log.error("ledger: settle of %s failed for %.0f s, left pending: %s", hold_id,
                              self.settle_retry_s, exc.message)
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def close(self) -> None:
        await self.port.close()


def _consume(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


async def open_handle(settings: LedgerSettings, vouchers: Sequence[Voucher], *, clock: Clock) -> LedgerHandle:
    """Open the ledger ``settings.url`` names (as ``open_ledger`` does) with what the Router needs of it."""
    from suanli.router.ledger.sqlite.schema import is_pg_url

    if is_pg_url(settings.url):
        return await _shared_handle(settings, vouchers, clock=clock)
    ledger = Ledger.open(settings.url, vouchers, clock=clock)

    async def whole_ledger() -> AuditSource:
        return ledger

    return LedgerHandle(
        port=SqliteAsyncLedger(ledger),
        book=ledger,
        blocking=ledger,
        available=ledger.balances(),
        write_path=GroupCommit(ledger).run,
        writes=(ledger.reserve, ledger.settle),
        audit_source=whole_ledger,
        settle_retry_s=settings.settle_retry_s,
    )


async def _shared_handle(
    settings: LedgerSettings, vouchers: Sequence[Voucher], *, clock: Clock
) -> LedgerHandle:
    """PostgreSQL, shared with other replicas: the book is a view the Router's replica refreshes."""
    from suanli.router.ledger.postgres.audit import snapshot_of
    from suanli.router.ledger.postgres.escrowed import open_escrowed
    from suanli.router.ledger.postgres.sync import ThreadLedger
    from suanli.router.ledger.postgres.view import SharedLedgerView
    from suanli.router.ledger.postgres.writes import AsyncWrites

    ledger = await open_escrowed(settings.url, vouchers, clock=clock, **_pg_options(settings))
    pg = ledger.pg
    available = await ledger.balances()

    async def snapshot() -> AuditSource:
        async with pg.pool.acquire() as conn:
            return await snapshot_of(conn)

    view = SharedLedgerView(ledger, available)  # type: ignore[arg-type]  # the PgLedger's calls, escrowed
    return LedgerHandle(
        port=ledger,
        book=view,
        blocking=ThreadLedger(pg, asyncio.get_running_loop()),
        available=available,
        write_path=AsyncWrites().run,
        writes=(ledger.reserve, ledger.settle),
        audit_source=snapshot,
        shared=view,
        settle_retry_s=settings.settle_retry_s,
    )
