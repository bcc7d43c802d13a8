"""Voucher and key-budget escrow: a replica holds and settles in memory, against slices it leased.

The per-hold path (``postgres/ledger.py``) costs each request a reserve and a settle
transaction on the one voucher row every replica draws on, and on the one chain tail: all
replicas queue on two rows. Here a replica leases a slice of each account it draws on (a
voucher's balance, a key's day and month budget) in one short transaction
(``escrow_sql.py``: the sum of live slices never exceeds the account), then:

- **reserve** takes from the slice in memory (no round trip); when the slice runs low it
  leases more (sized from the measured draw, ``slices.lease_size``), one lease in flight per
  slice; a refusal is the same InsufficientBalanceError / BudgetExceededError as before;
- **settle** applies the two-phase rules (``rules.debit``) in memory and queues the usage
  row; one statement writes a whole batch (the settled holds, the usage rows on this
  replica's own hash chain, the spend on its own lease rows): at most one round trip per
  flush, and a settle returns once its row is committed (group commit);
- a 1 s **tick** posts the slices' spend to the account rows, returns idle or recalled
  slices (a peer short of a voucher bumps its ``lease_epoch``), returns the slices of dead
  replicas and of replicas silent past ``lease_ttl_s``, and records this replica's counters.

A replica that dies leaves no lock and no pending hold row: its slices come back with its
leases. One that was stopped past the TTL finds its leases returned when it flushes:
nothing is written, it leases again and redoes the batch (what cannot be covered any more is
charged as cash, as a settle beyond its hold is), so no interleaving overdraws.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from itertools import count

import asyncpg

from suanli.router.errors import InsufficientBalanceError, LedgerError
from suanli.router.ledger import keys as key_rules
from suanli.router.ledger import usage
from suanli.router.ledger.chain import GENESIS
from suanli.router.ledger.postgres.batch import clamp, flush_rows
from suanli.router.ledger.postgres.escrow_sql import (
    FLUSH,
    KEY_BOOKS,
    POST_OWN,
    RETURN_DEAD,
    RETURN_IDS,
    SHRINK,
    TAKE_IDS,
)
from suanli.router.ledger.postgres.faults import TRANSIENT, unavailable
from suanli.router.ledger.postgres.leases import lease
from suanli.router.ledger.postgres.owners import dead_owners
from suanli.router.ledger.postgres.slices import EscrowCounters, QueuedSettle, Slice, SliceHold
from suanli.router.ledger.rules import YUAN_SCALE, budget_hold_q, debit, to_q
from suanli.router.ledger.types import Hold, HoldRequest, Settlement, UsageRow

__all__ = ["Escrow", "EscrowCounters"]  # EscrowCounters: slices.py's

log = logging.getLogger("router.ledger")

Clock = Callable[[], datetime]

_BATCH = 500  # rows per flush at most
_IDS = 256  # usage ids taken per round trip
_IDLE_S = 3.0  # a slice unused this long goes back
_POST_EVERY = 30  # ticks between posts of this replica's spend to the account rows
_SETTLED_KEPT = 20_000  # settled hold ids remembered, so a retried settle gets its row


class Escrow:
    """One replica's slices, holds and settle queue on a shared PostgreSQL ledger."""

    def __init__(self, pool: asyncpg.Pool, *, owner_id: str, owner_space: int, clock: Clock,
                 counters: EscrowCounters, lease_ttl_s: float = 30.0, grace_s: float = 10.0) -> None:
        self._pool = pool
        self.owner_id = owner_id
        self._space = owner_space
        self._clock = clock
        self.counters = counters
        self.lease_ttl_s = lease_ttl_s
        self._grace_s = grace_s
        self.chain_id = f"r-{owner_id}"
        self._tail = (0, GENESIS)  # (last usage id, last hash) of this replica's chain, as committed
        self._ids: list[int] = []
        self._seq = count(1)
        self._slices: dict[tuple[str | None, str | None, str | None], Slice] = {}
        self._holds: dict[str, SliceHold] = {}
        self._settled: dict[str, UsageRow] = {}
        self._queue: list[QueuedSettle] = []
        self._flusher: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._last_tick = 0.0
        self._ticks = 0

    @property
    def prefix(self) -> str:
        return f"{self.owner_id}-e"

    def owns(self, hold_id: str) -> bool:
        return hold_id.startswith(self.prefix)

    async def start(self, tick_s: float | None = 1.0) -> None:
        """Open this replica's chain; tick every ``tick_s`` (None: call ``tick()`` yourself)."""
        await self._pool.execute(
            "INSERT INTO chains (id, owner, opened, last_hash) VALUES ($1, $2, $3, $4)",
            self.chain_id, self.owner_id, self._clock().timestamp(), GENESIS)
        self._last_tick = asyncio.get_running_loop().time()
        if tick_s is not None:
            self._ticker = asyncio.create_task(self._tick_forever(tick_s))

    # -- holds -----------------------------------------------------------------------------------

    async def reserve(self, req: HoldRequest) -> Hold:
        """Hold the key's budget, then up to ``req.voucher_units`` of the voucher, from the slices."""
        self.counters.reserves += 1
        hold_id = f"{self.prefix}{next(self._seq)}"
        created = self._clock()
        key_parts: list[tuple[Slice, int]] = []
        try:
            if req.key_budget is not None:
                await self._hold_key(req, key_parts)
            voucher, held_q = None, 0
            if req.voucher_id is not None:
                voucher = await self._slice(req.voucher_id, None, None, None)
                want_q = to_q(req.voucher_units, voucher.scale)
                held_q = await self._take(voucher, want_q, partial=True)
                if held_q == 0 and want_q > 0:
                    raise InsufficientBalanceError(req.voucher_id, req.voucher_units, 0.0)
        except BaseException:
            for sl, q in key_parts:
                sl.held_q -= q
            raise
        self._holds[hold_id] = SliceHold(hold_id, req, created, voucher, held_q, key_parts)
        units = held_q / voucher.scale if voucher is not None else 0.0
        return Hold(id=hold_id, request_id=req.request_id, voucher_id=req.voucher_id, voucher_units=units,
                    created=created)

    async def _hold_key(self, req: HoldRequest, parts: list[tuple[Slice, int]]) -> None:
        budget = req.key_budget
        assert budget is not None
        amount_q = budget_hold_q(budget.amount_yuan)
        for period, limit, label in budget.limits():
            sl = await self._slice(None, budget.key_id, period, key_rules.yuan_q(limit))
            if sl.limit_q is None:
                parts.append((sl, 0))
                continue
            if await self._take(sl, amount_q, partial=False) < amount_q:
                self.counters.path_trips += 1
                used_q = await self._pool.fetchval(
                    f"SELECT spent_q + held_q FROM {KEY_BOOKS} WHERE key_id = $1 AND period = $2",
                    budget.key_id, period)
                raise key_rules.over_budget(budget, limit, label, int(used_q or 0))
            parts.append((sl, amount_q))

    async def _slice(self, voucher_id: str | None, key_id: str | None, period: str | None,
                     limit_q: int | None) -> Slice:
        account = (voucher_id, key_id, period)
        sl = self._slices.get(account)
        if sl is None:
            scale = 1
            if voucher_id is not None:
                self.counters.path_trips += 1
                scale = await self._pool.fetchval("SELECT scale FROM vouchers WHERE id = $1", voucher_id)
                if scale is None:
                    raise LedgerError(f"unknown voucher {voucher_id!r}")
            sl = self._slices.setdefault(account, Slice(voucher_id=voucher_id, key_id=key_id, period=period,
                                                        limit_q=limit_q, scale=scale))
        elif key_id is not None and sl.limit_q != limit_q and sl.idle:
            sl.limit_q = limit_q  # the key's budget changed: the next lease uses the new limit
        if sl.lease_id is None and not sl.bounded:
            await self._lease(sl, 0)  # an unlimited period only tallies: it needs its lease row
        return sl

    async def _take(self, sl: Slice, want_q: int, *, partial: bool) -> int:
        """Hold ``want_q`` of the slice (leasing more if short); what was held, all or (partial) part."""
        for _ in range(100):  # other holds may take what a lease brought: lease again while it helps
            if sl.free_q >= want_q:
                break
            need_q = want_q - max(sl.free_q, 0)
            granted = await self._lease(sl, need_q)
            if granted is not None and granted < need_q:
                break  # the account itself is short
        got = min(want_q, max(sl.free_q, 0)) if partial else (want_q if sl.free_q >= want_q else 0)
        sl.held_q += got
        sl.drawn_q += got
        sl.last_use = asyncio.get_running_loop().time()
        return got

    async def _lease(self, sl: Slice, need_q: int) -> int | None:
        """Lease ``need_q`` more (or what the account has), one lease per slice at a time.

        What was granted; None when another caller's lease was in flight (awaited instead).
        """
        if sl.leasing is not None:
            await asyncio.shield(sl.leasing)
            return None
        sl.leasing = asyncio.get_running_loop().create_future()
        try:
            self.counters.leases += 1
            return await lease(self._pool, sl, need_q, owner_id=self.owner_id, counters=self.counters,
                               lease_id=f"{self.prefix}L{next(self._seq)}", now=self._clock().timestamp())
        except TRANSIENT as exc:
            raise unavailable("lease", exc) from exc
        finally:
            sl.leasing.set_result(None)
            sl.leasing = None

    def void(self, hold_id: str) -> bool:
        """Release a pending hold to its slices; False if it is not pending here (settling: no change)."""
        h = self._holds.get(hold_id)
        if h is None or h.settling is not None:
            return False
        del self._holds[hold_id]
        self._release(h)
        return True

    def void_stale(self, max_age_s: float) -> int:
        now = self._clock().timestamp()
        stale = [h.id for h in self._holds.values()
                 if h.settling is None and h.created.timestamp() < now - max_age_s]
        for hold_id in stale:
            self.void(hold_id)
        return len(stale)

    def _release(self, h: SliceHold) -> None:
        if h.voucher is not None:
            h.voucher.held_q -= h.held_q
        for sl, q in h.keys:
            sl.held_q -= q

    @property
    def pending(self) -> int:
        return sum(1 for h in self._holds.values() if h.settling is None)

    def key_held(self, key_id: str) -> dict[str, int]:
        """Period -> nano-yuan this replica's pending holds keep of the key's budget."""
        held: dict[str, int] = {}
        for h in self._holds.values():
            if h.settling is None:
                for sl, q in h.keys:
                    if sl.key_id == key_id and sl.period is not None:
                        held[sl.period] = held.get(sl.period, 0) + q
        return held

    def free(self) -> dict[str, float]:
        """Voucher id -> units free in this replica's slices."""
        return {sl.voucher_id: max(sl.free_q, 0) / sl.scale for sl in self._slices.values()
                if sl.voucher_id is not None and sl.lease_id is not None}

    # -- settles ---------------------------------------------------------------------------------

    async def settle(self, hold_id: str, s: Settlement) -> UsageRow:
        """Debit the slices, queue the usage row, return it once its batch commits. Idempotent."""
        done = self._settled.get(hold_id)
        if done is not None:
            return done
        h = self._holds.get(hold_id)
        if h is None:
            raise LedgerError(f"unknown hold {hold_id!r} (or voided)")
        if h.settling is None:
            self.counters.settles += 1
            voucher = h.voucher
            scale = voucher.scale if voucher is not None else 1
            units_q, s = debit(hold_id, h.req.voucher_id, h.held_q, scale, s)
            cost_q = to_q(s.cost_yuan, YUAN_SCALE)
            self._release(h)
            if voucher is not None:
                voucher.used_q += units_q
                voucher.queued_q += units_q
            for sl, _ in h.keys:
                sl.used_q += cost_q
                sl.queued_q += cost_q
            future: asyncio.Future[UsageRow] = asyncio.get_running_loop().create_future()
            h.settling = QueuedSettle(h, s, units_q, cost_q, self._clock().timestamp(), future)
            self._queue.append(h.settling)
            if self._flusher is None or self._flusher.done():
                self._flusher = asyncio.create_task(self._flush_forever())
        return await asyncio.shield(h.settling.future)

    async def _flush_forever(self) -> None:
        delay = 0.05
        while self._queue:
            batch = self._queue[:_BATCH]
            try:
                await self._flush(batch)
                delay = 0.05
            except TRANSIENT as exc:
                self._fail(batch, unavailable("settle", exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
            except Exception as exc:  # noqa: BLE001 - kept queued: a settle is never dropped
                log.error("ledger: a settle batch failed, retried: %s", exc)
                self._fail(batch, LedgerError(f"settle batch failed: {exc}"))
                await asyncio.sleep(1.0)

    def _fail(self, batch: list[QueuedSettle], exc: Exception) -> None:
        """Tell the waiting callers; the rows stay queued and a retried settle waits again."""
        for item in batch:
            if not item.future.done():
                item.future.set_exception(exc)
                item.future.exception()  # retrieved: the caller may have gone
            item.future = asyncio.get_running_loop().create_future()

    async def _flush(self, batch: list[QueuedSettle]) -> None:
        self.counters.flushes += 1
        if len(self._ids) < len(batch):
            need = max(_IDS, len(batch))
            self.counters.path_trips += 1
            self._ids.extend(r[0] for r in await self._pool.fetch(TAKE_IDS, need))
        for item in batch:
            if item.usage_id is None:
                item.usage_id = self._ids.pop(0)
        batch.sort(key=lambda item: item.usage_id or 0)
        for _ in range(5):
            leases = await self._cover(batch)
            arrays, tail = flush_rows(batch, self._tail[1])
            now = self._clock().timestamp()
            self.counters.path_trips += 1
            live, written = await self._pool.fetchrow(FLUSH, self.owner_id, now, self.chain_id, leases,
                                                      *arrays)
            if live == len(leases):
                break
            # A peer returned a lease under this replica (it was silent past the TTL): nothing
            # was written; lease anew (or charge what no longer fits as cash) and redo the batch.
            self.counters.path_trips += 1
            self._check_leases(await self._pool.fetch(
                "SELECT id FROM leases WHERE owner = $1 AND state = 'live'", self.owner_id))
        else:
            raise LedgerError("the batch's leases kept being returned under it")
        self._tail = tail
        del self._queue[:len(batch)]
        for item in batch:
            h = item.hold
            for sl in self._slices_of(h):
                sl.queued_q -= item.units_q if sl is h.voucher else item.cost_q
            self._holds.pop(h.id, None)
            row = usage.usage_row(item.values)
            self._remember(h.id, row)
            if not item.future.done():
                item.future.set_result(row)
        if written < len(batch):
            log.warning("ledger: %d settles of a batch were already written (a retried flush)",
                        len(batch) - written)

    @staticmethod
    def _slices_of(h: SliceHold) -> list[Slice]:
        return ([h.voucher] if h.voucher is not None else []) + [sl for sl, _ in h.keys]

    async def _cover(self, batch: list[QueuedSettle]) -> list[str]:
        """Every slice the batch spends on has a live lease covering it; their ids."""
        ids: set[str] = set()
        for item in batch:
            for sl in self._slices_of(item.hold):
                if sl.lease_id is None or (sl.voucher_id is not None and sl.free_q < 0):
                    await self._lease(sl, max(-sl.free_q, 0))
                if sl.voucher_id is not None and sl.free_q < 0:
                    clamp(batch, sl)
                if sl.lease_id is not None:
                    ids.add(sl.lease_id)
        return sorted(ids)

    def _remember(self, hold_id: str, row: UsageRow) -> None:
        self._settled[hold_id] = row
        if len(self._settled) > _SETTLED_KEPT:
            for old in list(self._settled)[: _SETTLED_KEPT // 10]:
                del self._settled[old]

    def _check_leases(self, live_rows: list[asyncpg.Record]) -> None:
        """Forget the leases a peer returned under this replica (it was silent past the TTL)."""
        live = {r[0] for r in live_rows}
        for sl in self._slices.values():
            # A slice leasing right now finds out in its own transaction (and may hold a lease
            # newer than ``live_rows``).
            if sl.lease_id is not None and sl.lease_id not in live and sl.leasing is None:
                log.warning("ledger: lease %s was returned by a peer (this replica was silent); leasing anew",
                            sl.lease_id)
                sl.lost()

    # -- the tick --------------------------------------------------------------------------------

    async def _tick_forever(self, period_s: float) -> None:
        while True:
            await asyncio.sleep(period_s)
            try:
                await self.tick()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("ledger escrow tick failed: %s", exc)

    async def tick(self, *, idle_s: float = _IDLE_S) -> None:
        """Post spend, return idle/recalled slices and dead replicas' ones, record the counters."""
        loop_now = asyncio.get_running_loop().time()
        for sl in self._slices.values():
            sl.tick(loop_now - self._last_tick)
        self._last_tick = loop_now
        now = self._clock().timestamp()
        self._ticks += 1
        rows = await self._pool.fetch(
            "SELECT l.id, v.lease_epoch FROM leases l LEFT JOIN vouchers v ON v.id = l.voucher_id"
            " WHERE l.owner = $1 AND l.state = 'live'", self.owner_id)
        self._check_leases(rows)
        epochs = {r[0]: r[1] for r in rows}
        # Never a slice with a lease in flight: its grant would land on a lease returned or shrunk.
        back = [sl for sl in self._slices.values()
                if sl.lease_id is not None and sl.idle and sl.leasing is None and (
            loop_now - sl.last_use > idle_s
            or (sl.voucher_id is not None and epochs.get(sl.lease_id, sl.epoch) != sl.epoch))]
        for sl in self._slices.values():
            if sl not in back and sl.voucher_id is not None and sl.lease_id in epochs \
                    and epochs[sl.lease_id] != sl.epoch and sl.leasing is None:
                await self._shrink(sl, epochs[sl.lease_id])
        mine = {sl.lease_id for sl in self._slices.values()}
        # A lease no slice holds: its return was skipped (a flush had it locked) or half done.
        orphans = [lease_id for lease_id in epochs if lease_id not in mine]
        if back or orphans:
            await self.return_slices(back, now, also=orphans)
        if rows and self._ticks % _POST_EVERY == 0:
            # Readers add unposted spend back (VOUCHER_BOOKS), so posting is only to keep the
            # account rows near the truth for raw SQL: rarely, each post locks shared rows.
            await self._pool.fetch(POST_OWN, now, self.owner_id)
        dead = [o for o in await dead_owners(self._pool, self._space, now_s=now, silent_s=self.lease_ttl_s,
                                             grace_s=self._grace_s) if o != self.owner_id]
        if dead or self._ticks % 10 == 1:
            returned = await self._pool.fetch(RETURN_DEAD, now, dead)
            if returned:
                log.warning("ledger: returned %d leases of %d dead or silent replicas", len(returned),
                            len(dead))
        await self.record(now)

    async def _shrink(self, sl: Slice, epoch: int) -> None:
        """The voucher was recalled (a peer short of it, a central adjust): keep only what is in use."""
        keep = sl.used_q + sl.held_q
        if sl.lease_id is None or sl.leased_q <= keep:
            sl.epoch = epoch
            return
        sl.leasing = asyncio.get_running_loop().create_future()  # no lease meanwhile: leased_q is set here
        try:
            if await self._pool.fetch(SHRINK, sl.lease_id, keep):
                sl.leased_q = keep
            sl.epoch = epoch
        finally:
            sl.leasing.set_result(None)
            sl.leasing = None

    async def return_slices(self, slices: list[Slice], now: float, *, also: list[str] = ()) -> None:
        """Post and return these slices' leases (and the lease ids ``also``).

        The slices are emptied first: a hold taken meanwhile leases anew. A lease the return
        skipped (locked by a flush right then) is an orphan the next tick returns.
        """
        ids = [sl.lease_id for sl in slices if sl.lease_id is not None] + list(also)
        for sl in slices:
            sl.returned()
        await self._pool.fetch(RETURN_IDS, now, ids)

    async def record(self, now: float) -> None:
        c = self.counters
        await self._pool.execute(
            "INSERT INTO replica_stats (owner, at, round_trips, reserves, settles, leases, flushes,"
            " path_trips) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            " ON CONFLICT (owner) DO UPDATE SET at = excluded.at,"
            " round_trips = excluded.round_trips, reserves = excluded.reserves, settles = excluded.settles,"
            " leases = excluded.leases, flushes = excluded.flushes, path_trips = excluded.path_trips",
            self.owner_id, now, c.round_trips, c.reserves, c.settles, c.leases, c.flushes, c.path_trips)

    async def close(self) -> None:
        """Write what is queued, return every slice (pending holds go with them)."""
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
        for _ in range(50):
            if not self._queue:
                break
            if self._flusher is None or self._flusher.done():
                self._flusher = asyncio.create_task(self._flush_forever())
            await asyncio.wait([self._flusher], timeout=0.2)
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
        if self._queue:
            log.error("ledger: %d settles could not be written at close", len(self._queue))
        try:
            now = self._clock().timestamp()
            await self.record(now)
            await self.return_slices([sl for sl in self._slices.values() if sl.lease_id is not None], now)
        except TRANSIENT as exc:
            log.warning("ledger: could not return this replica's slices (a peer does): %s",
                        type(exc).__name__)
