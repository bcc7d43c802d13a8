"""The voucher ledger on PostgreSQL, shared by several router replicas (async, asyncpg).

The same two-phase contract as the SQLite ``Ledger`` (reserve / settle / void, hash-chained
usage rows, the same fixed-point numbers), with every method a coroutine. What makes it
safe across replicas (statements and their reasoning: ``postgres/sql.py``); every number and
usage row is ``rules``' and ``usage``'s, shared with the SQLite driver:

- a hold is one conditional ``UPDATE vouchers ... WHERE balance_q > held_q RETURNING`` under
  READ COMMITTED, so no interleaving of replicas holds more than a voucher has;
- settle claims the hold (pending -> settled) before posting, so a retried or concurrent
  settle or void finds nothing to do: both are idempotent;
- each instance is an owner whose liveness the server vouches for (``postgres/owners.py``);
  a background sweep in every replica voids the holds of dead owners, and of owners silent
  for ``hold_timeout_s``; it also reopens this owner's session if the server ended it;
- a lost connection, a lock wait past ``lock_timeout`` or a session ended for idling in a
  transaction (``postgres/faults.py``) becomes ``LedgerUnavailableError`` (503 with
  Retry-After), never a 500: a reserve whose outcome is unknown is voided (now or by the next
  sweep) and tried once more; a settle, idempotent, is retried by the caller
  (``LedgerHandle.settle``).

Virtual keys' SQL is ``postgres/keys.py``'s: plain functions these methods call.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Sequence
from datetime import datetime
from itertools import count

import asyncpg

from suanli.config import Voucher
from suanli.router.errors import InsufficientBalanceError, LedgerError
from suanli.router.ledger import usage
from suanli.router.ledger.adjust import Adjustment
from suanli.router.ledger.chain import row_hash
from suanli.router.ledger.exhausted import MARK_COLUMNS, account_of, mark_values, marks_of
from suanli.router.ledger.figures import FIGURE_COLUMNS, SPEND_SQL, Figure, RegionSpend, figure_of, spend_of
from suanli.router.ledger.keys import KeyRow
from suanli.router.ledger.postgres import keys as key_sql
from suanli.router.ledger.postgres.chains import first_broken_of_chains
from suanli.router.ledger.postgres.escrow_sql import RETURN_DEAD, VOUCHER_BOOKS
from suanli.router.ledger.postgres.faults import TRANSIENT, unavailable
from suanli.router.ledger.postgres.owners import OwnerLock, dead_owners
from suanli.router.ledger.postgres.schema import SessionLimits, connect, create_pool, migrate, pg_url
from suanli.router.ledger.postgres.sql import (
    APPEND_SETTLED,
    CLAIM_HOLD,
    DEBIT_VOUCHER,
    DROP_DEAD_OWNERS,
    HOLD_STATE,
    INSERT_CASH_HOLD,
    LOCK_CHAIN,
    NEXT_USAGE_ID,
    RESERVE,
    VOID_ONE,
    VOID_OWNERS,
    VOID_STALE,
)
from suanli.router.ledger.postgres.vouchers import adjust_voucher, sync_vouchers, voucher_statuses
from suanli.router.ledger.rules import available, debit, not_pending, to_q
from suanli.router.ledger.types import Hold, HoldRequest, Settlement, UsageRow, VoucherStatus

__all__ = ["PgLedger"]

log = logging.getLogger("router.ledger")

Clock = Callable[[], datetime]


class PgLedger:
    """Voucher balances, pending holds and usage rows in one PostgreSQL schema."""

    def __init__(self, pool: asyncpg.Pool, owner: OwnerLock, *, clock: Clock, hold_timeout_s: float,
                 grace_s: float = 10.0) -> None:
        self._pool = pool
        self._owner = owner
        self._clock = clock
        self._hold_timeout_s = hold_timeout_s
        self._grace_s = grace_s  # a peer whose liveness lock is gone is dead only after this silence
        self._orphans: set[str] = set()  # hold ids whose reserve or void failed midway: voided by the sweep
        self._seq = count(1)
        self._scales: dict[str, int] = {}  # voucher id -> scale: fixed when the voucher row is created
        self._sweeper: asyncio.Task[None] | None = None
        self._closed = False
        self.recovered_holds = 0  # pending holds of dead owners voided when this instance opened

    url = ""  # the ledger URL it was opened with

    @property
    def owner_id(self) -> str:
        return self._owner.id

    @property
    def owner_reconnects(self) -> int:
        """How many times this instance reopened its liveness session after losing it."""
        return self._owner.reconnects

    @property
    def pool(self) -> asyncpg.Pool:
        """The connection pool, for neighbours in the same schema (the plan board, the replica)."""
        return self._live()

    def now(self) -> datetime:
        return self._clock()

    @classmethod
    async def open(cls, url: str, vouchers: Sequence[Voucher], *, clock: Clock, hold_timeout_s: float = 300.0,
                   sweep_s: float | None = 1.0, pool_size: int = 10, grace_s: float = 10.0,
                   limits: SessionLimits | None = None,
                   on_query: Callable[[object], None] | None = None) -> PgLedger:
        """Open (creating and migrating) the ledger at ``url``, register this owner, sweep once.

        ``sweep_s`` is the period of the background heartbeat and sweep (None: none; call
        ``sweep()`` yourself). Vouchers new to the ledger start at their amount; known ones
        keep their balance. ``grace_s``: how long a peer whose session is gone may still be
        reconnecting (its holds are kept meanwhile); ``limits`` bound every session's lock waits.
        """
        parsed = pg_url(url)
        owner_id = secrets.token_hex(6)
        name = f"suanli {owner_id}"  # every session of this replica, in pg_stat_activity
        session = await connect(parsed, limits, name=name)
        try:
            await migrate(session, parsed.schema)
            await sync_vouchers(session, vouchers)
            owner = OwnerLock(session, parsed.schema, reconnect=lambda: connect(parsed, limits, name=name),
                              owner_id=owner_id)
            await owner.register(clock().timestamp())
            pool = await create_pool(parsed, max_size=pool_size, limits=limits, name=name, on_query=on_query)
        except BaseException:
            await session.close()
            raise
        ledger = cls(pool, owner, clock=clock, hold_timeout_s=hold_timeout_s, grace_s=grace_s)
        ledger.url = url
        ledger.recovered_holds = await ledger.sweep()
        if sweep_s is not None:
            ledger._sweeper = asyncio.create_task(ledger._sweep_forever(sweep_s))
        return ledger

    async def close(self) -> None:
        """Stop sweeping and release this owner; holds still pending are voided by a peer's sweep."""
        if self._closed:
            return
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        try:
            now = self._clock().timestamp()
            if self._owner.session.is_closed():
                await self._owner.heartbeat(now)  # reopen it, so the release below is this owner's
            await self._owner.release(now)
            # This instance can settle nothing any more: release what it still holds now.
            await self._pool.fetchval(VOID_OWNERS, now, [self._owner.id])
            await key_sql.release_resolved_pg(self._pool)
            await self._pool.execute(DROP_DEAD_OWNERS, [self._owner.id])
        except TRANSIENT as exc:
            # The database is gone: a peer's sweep (or the next start) resolves what is left.
            log.warning("ledger: could not release this owner at close: %s", type(exc).__name__)
        finally:
            await self._owner.session.close()
            await self._pool.close()

    async def __aenter__(self) -> PgLedger:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _live(self) -> asyncpg.Pool:
        if self._closed:
            raise LedgerError("the ledger is closed")
        return self._pool

    async def reserve(self, req: HoldRequest) -> Hold:
        """Hold ``min(available, req.voucher_units)`` of the voucher in one statement.

        With a key budget, the budget hold follows in the same transaction (ledger_pg_keys).
        """
        for attempt in (1, 2):
            hold_id = f"{self._owner.id}-{next(self._seq)}"
            try:
                return await self._reserve_once(hold_id, req)
            except TRANSIENT as exc:
                # Committed or not, we cannot tell: void it (now, or at the next sweep) and try once more.
                await self._void_orphan(hold_id)
                if attempt == 2:
                    raise unavailable("reserve", exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def _reserve_once(self, hold_id: str, req: HoldRequest) -> Hold:
        if req.key_budget is None:
            return await self._reserve_on(self._live(), hold_id, req)
        if req.voucher_id is not None:
            await self._scale(req.voucher_id)  # cached: no second pool connection inside the transaction
        async with self._live().acquire() as c, c.transaction():
            # The key's rows first, the voucher's last: its lock, the most shared, is held shortest.
            await key_sql.hold_key_budget_pg(c, hold_id, req.key_budget)
            return await self._reserve_on(c, hold_id, req)

    async def _void_orphan(self, hold_id: str) -> None:
        self._orphans.add(hold_id)
        try:
            await self._void_orphans()
        except TRANSIENT as exc:
            log.warning("ledger: could not void hold %s yet (the sweep retries): %s", hold_id,
                        type(exc).__name__)

    async def _void_orphans(self) -> None:
        for hold_id in list(self._orphans):
            now = self._clock().timestamp()
            if await self._pool.fetchval(VOID_ONE, now, hold_id):
                await key_sql.release_key_budget_pg(self._pool, hold_id)
            self._orphans.discard(hold_id)  # voided now, or never committed, or settled meanwhile

    async def _reserve_on(self, pool: asyncpg.Pool | asyncpg.Connection, hold_id: str,
                          req: HoldRequest) -> Hold:
        created = self._clock()
        base = (hold_id, self._owner.id, req.request_id, req.key_id, req.region, req.model, req.work_class,
                req.origin)
        if req.voucher_id is None:
            await pool.execute(INSERT_CASH_HOLD, *base, created.timestamp())
            return Hold(id=hold_id, request_id=req.request_id, voucher_id=None, voucher_units=0.0,
                        created=created)
        scale = await self._scale(req.voucher_id)
        want_q = to_q(req.voucher_units, scale)
        row = await pool.fetchrow(RESERVE, *base, req.voucher_id, want_q, created.timestamp())
        if row is None:
            available = await pool.fetchval(
                "SELECT (balance_q - held_q)::float8 / scale FROM vouchers WHERE id = $1", req.voucher_id)
            raise InsufficientBalanceError(req.voucher_id, req.voucher_units, available or 0.0)
        return Hold(id=hold_id, request_id=req.request_id, voucher_id=req.voucher_id,
                    voucher_units=row["held_q"] / row["scale"], created=created)

    async def _scale(self, voucher_id: str) -> int:
        scale = self._scales.get(voucher_id)
        if scale is None:
            scale = await self._live().fetchval("SELECT scale FROM vouchers WHERE id = $1", voucher_id)
            if scale is None:
                raise LedgerError(f"unknown voucher {voucher_id!r}")
            self._scales[voucher_id] = scale
        return scale

    async def settle(self, hold_id: str, s: Settlement) -> UsageRow:
        """Debit ``s.voucher_units``, release the rest of the hold, append the usage row.

        Idempotent: a settled hold returns its existing row. A voided or unknown hold raises
        LedgerError. Units beyond the hold are clamped (the excess moved to cash), logged.
        """
        try:
            return await self._settle_once(hold_id, s)
        except TRANSIENT as exc:
            # Rolled back, or committed before the connection went: a retry finds out (idempotent).
            raise unavailable("settle", exc) from exc

    async def _settle_once(self, hold_id: str, s: Settlement) -> UsageRow:
        now = self._clock().timestamp()
        async with self._live().acquire() as c, c.transaction():
            hold = await c.fetchrow(CLAIM_HOLD, now, hold_id)
            if hold is None:
                state = await c.fetchval(HOLD_STATE, hold_id)
                not_pending(hold_id, state)
                row = await c.fetchrow(f"SELECT {usage.USAGE_COLUMNS} FROM usage WHERE hold_id = $1", hold_id)
                return usage.usage_row(tuple(row))
            # key_spend before vouchers, as in reserve
            await key_sql.settle_key_budget_pg(c, hold_id, s.cost_yuan)
            voucher_id, scale, held_q = hold["voucher_id"], hold["scale"], hold["held_q"]
            units_q, s = debit(hold_id, voucher_id, held_q, scale, s)
            if voucher_id is not None:
                await c.execute(DEBIT_VOUCHER, units_q, held_q, voucher_id)
            prev_hash = await c.fetchval(LOCK_CHAIN)
            usage_id = await c.fetchval(NEXT_USAGE_ID)  # after the lock: ids follow the chain's order
            values = usage.usage_values(usage_id, hold_id, now=now, request=tuple(hold)[:6],
                                        voucher_id=voucher_id, s=s, voucher_units=units_q / scale)
            hash_ = row_hash(prev_hash, values)
            await c.execute(APPEND_SETTLED, *values, prev_hash, hash_, units_q, *usage.cache_values(s))
        return usage.usage_row((*values, prev_hash, hash_))

    async def adjust(self, voucher_id: str, amount: float, reason: str) -> Adjustment:
        """Top up (``amount`` > 0) or cut a voucher, recorded in the chain (``postgres/vouchers.py``).

        Not retried: a connection lost at COMMIT leaves it unknown (503); the chain tells.
        """
        try:
            return await adjust_voucher(self._live(), owner=self._owner.id, voucher_id=voucher_id,
                                        amount=amount, reason=reason, now=self._clock().timestamp())
        except TRANSIENT as exc:
            raise unavailable("adjust", exc) from exc

    async def sync_vouchers(self, vouchers: Sequence[Voucher]) -> None:
        """Vouchers new to the ledger start at their amount; known ones take only metadata (a reload)."""
        async with self._live().acquire() as c:
            await sync_vouchers(c, vouchers)

    async def void(self, hold_id: str) -> None:
        """Release a pending hold entirely. Idempotent; voiding a settled hold changes nothing."""
        pool = self._live()
        try:
            if await pool.fetchval(VOID_ONE, self._clock().timestamp(), hold_id) == 0:
                if await pool.fetchval(HOLD_STATE, hold_id) is None:
                    raise LedgerError(f"unknown hold {hold_id!r}")
            else:
                await key_sql.release_key_budget_pg(pool, hold_id)
        except TRANSIENT as exc:
            self._orphans.add(hold_id)  # this owner is alive, so no peer voids it: the sweep retries
            raise unavailable("void", exc) from exc

    async def void_stale(self, max_age_s: float) -> int:
        """Void pending holds older than ``max_age_s`` of clock time (any owner); how many."""
        now = self._clock().timestamp()
        voided = await self._live().fetchval(VOID_STALE, now, now - max_age_s)
        await key_sql.release_resolved_pg(self._live())
        if voided:
            log.warning("ledger: voided %d holds pending for over %g s", voided, max_age_s)
        return int(voided)

    async def sweep(self) -> int:
        """Heartbeat this owner, void the holds of dead or silent owners, forget them; how many voided."""
        pool = self._live()
        now = self._clock().timestamp()
        await self._owner.heartbeat(now)
        if self._orphans:
            await self._void_orphans()
        dead = await dead_owners(pool, self._owner.space, now_s=now, silent_s=self._hold_timeout_s,
                                 grace_s=self._grace_s)
        if not dead:
            return 0
        voided = int(await pool.fetchval(VOID_OWNERS, now, dead))
        await key_sql.release_resolved_pg(pool)  # the key budgets those holds kept
        await pool.fetch(RETURN_DEAD, now, dead)  # and their escrow slices (postgres/escrow.py)
        await pool.execute(DROP_DEAD_OWNERS, dead)
        if voided:
            log.warning("ledger: voided %d pending holds of %d dead replicas", voided, len(dead))
        return voided

    async def _sweep_forever(self, period_s: float) -> None:
        while True:
            await asyncio.sleep(period_s)
            try:
                await self.sweep()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                # A restarting database or a lost connection: the heartbeat reconnects next period.
                log.warning("ledger sweep failed: %s", exc)

    async def live_owners(self) -> int:
        """How many ledger instances (replicas) are alive now, this one included."""
        dead = await dead_owners(self._live(), self._owner.space, now_s=self._clock().timestamp(),
                                 silent_s=self._hold_timeout_s, grace_s=self._grace_s)
        total = await self._live().fetchval("SELECT count(*) FROM owners")
        return max(int(total) - len(dead), 1)

    async def balance(self, voucher_id: str) -> float:
        """Posted balance of a voucher: amount minus settled spend (pending holds not subtracted)."""
        value = await self._live().fetchval(
            f"SELECT balance_q::float8 / scale FROM {VOUCHER_BOOKS} WHERE id = $1", voucher_id)
        if value is None:
            raise LedgerError(f"unknown voucher {voucher_id!r}")
        return value

    async def balances(self) -> dict[str, float]:
        """Voucher id -> available units (balance minus every replica's holds; 0 once exhausted)."""
        return available(await self._live().fetch(
            "SELECT id, balance_q - held_q, scale, id IN (SELECT voucher_id FROM exhausted"
            " WHERE voucher_id IS NOT NULL) FROM vouchers"
        ))

    async def mark_exhausted(self, *, voucher_id: str | None = None, region: str | None = None,
                             reason: str = "") -> None:
        """Record that a platform reported this voucher (or this region's cash) exhausted."""
        await self._live().execute(
            f"INSERT INTO exhausted ({MARK_COLUMNS}) VALUES ($1, $2, $3, $4, $5)"
            " ON CONFLICT (account) DO UPDATE SET since = excluded.since, reason = excluded.reason",
            *mark_values(voucher_id=voucher_id, region=region, since=self._clock().timestamp(),
                         reason=reason),
        )

    async def clear_exhausted(self, *, voucher_id: str | None = None, region: str | None = None) -> None:
        """Forget an exhaustion mark (after a top-up)."""
        await self._live().execute(
            "DELETE FROM exhausted WHERE account = $1", account_of(voucher_id=voucher_id, region=region))

    async def exhausted(self) -> dict[str, dict[str, object]]:
        """``voucher:<id>`` / ``cash:<region>`` -> region, voucher_id, since (epoch s), reason."""
        return marks_of(await self._live().fetch(f"SELECT {MARK_COLUMNS} FROM exhausted ORDER BY account"))

    async def vouchers(self) -> list[VoucherStatus]:
        """Every voucher in the ledger with balance, holds, spend and burn."""
        return await voucher_statuses(self._live(), now=self._clock())

    async def pending_holds(self) -> int:
        """How many holds are pending, across every replica."""
        return int(await self._live().fetchval("SELECT COUNT(*) FROM holds WHERE state = 'pending'"))

    async def usage(self, *, since: datetime | None = None, until: datetime | None = None) -> list[UsageRow]:
        """Usage rows settled in ``[since, until)``, in chain order."""
        rows = await self._live().fetch(
            f"SELECT {usage.USAGE_COLUMNS}, {usage.CACHE_COLUMNS} FROM usage WHERE time >= $1 AND time < $2"
            " ORDER BY id",
            *usage.time_bounds(since, until))
        return [usage.usage_row(tuple(r)) for r in rows]

    async def usage_of_request(self, request_id: str) -> UsageRow | None:
        """The newest usage row of one request id, or None."""
        row = await self._live().fetchrow(
            f"SELECT {usage.USAGE_COLUMNS} FROM usage WHERE request_id = $1 ORDER BY id DESC LIMIT 1",
            request_id)
        return None if row is None else usage.usage_row(tuple(row))

    async def record_figures(self, rows: Sequence[Figure]) -> None:
        """Append platform balance figures (a baseline, a manual reading)."""
        await self._live().executemany(
            f"INSERT INTO platform_figures ({FIGURE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            [(f.id, f.region, f.at, f.source, f.unit, f.amount, int(f.baseline), f.note) for f in rows])

    async def figures(self) -> list[Figure]:
        """Every recorded figure, oldest first."""
        rows = await self._live().fetch(f"SELECT {FIGURE_COLUMNS} FROM platform_figures ORDER BY at, id")
        return [figure_of(tuple(r)) for r in rows]

    async def spend_between(self, region: str, since: float, until: float) -> RegionSpend:
        """What usage rows at ``region`` settled in ``(since, until]`` (epoch s) paid, by payer."""
        rows = await self._live().fetch(SPEND_SQL.format(p1="$1", p2="$2", p3="$3"), region, since, until)
        return spend_of([tuple(r) for r in rows])

    async def totals(self) -> dict[str, float]:
        """Sums over every usage row: requests, cash_yuan, voucher_yuan, cost_yuan, tokens."""
        row = await self._live().fetchrow(
            "SELECT COUNT(*), COALESCE(SUM(cash_yuan), 0), COALESCE(SUM(voucher_yuan), 0),"
            " COALESCE(SUM(cost_yuan), 0), COALESCE(SUM(tokens), 0) FROM usage"
        )
        return usage.totals_of(row)

    async def verify_chain(self) -> int | None:
        """Id of the first usage row whose hash chain is broken, or None if all verify."""
        rows = await self._live().fetch(f"SELECT {usage.USAGE_COLUMNS}, chain FROM usage ORDER BY chain, id")
        return first_broken_of_chains([tuple(r) for r in rows])

    async def chain_orphans(self) -> tuple[int | None, int]:
        """(first usage row id no settled hold made, how many settled holds lack a usage row)."""
        return usage.orphans(await self._live().fetchrow(usage.CHAIN_ORPHANS))

    # Virtual keys: postgres/keys.py's SQL.
    async def create_key(self, row: KeyRow, secret_sha256: str) -> None:
        """Store a new key; its secret only as ``secret_sha256``."""
        await key_sql.create_key(self._live(), row, secret_sha256)

    async def key_by_secret(self, secret_sha256: str) -> KeyRow | None:
        """The key whose secret hashes to ``secret_sha256`` (revoked or not), or None."""
        return next(iter(await key_sql.keys_where(self._live(), "secret_sha256 = $1", secret_sha256)), None)

    async def key(self, key_id: str) -> KeyRow | None:
        return next(iter(await key_sql.keys_where(self._live(), "id = $1", key_id)), None)

    async def keys(self) -> list[KeyRow]:
        """Every key, revoked ones included, oldest first."""
        return await key_sql.keys_where(self._live())

    async def revoke_key(self, key_id: str, at: float) -> KeyRow:
        """Mark a key revoked at ``at`` (epoch s); revoking twice keeps the first time."""
        return await key_sql.revoke_key(self._live(), key_id, at)

    async def key_spend(self, key_id: str, periods: Sequence[str]) -> dict[str, tuple[float, float]]:
        """Period -> (spent yuan, held yuan) of one key."""
        return await key_sql.key_spend(self._live(), key_id, periods)

