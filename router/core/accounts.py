"""Accounts: the Router's money, on the two-phase ledger: hold before sending, settle what was used.

The Router composes one ``Accounts``; the workloads (batches, fine-tuning jobs and their budget
holds) call the same public methods, so every request and job is held, settled and voided
the same way. Holds and settles go through the ledger handle's write path (group commit on
SQLite); ``available`` mirrors each voucher's free balance so the chooser never waits on the
database. A settlement's follow-up runs once per hold, right after its commit, even if the
caller left. On a ledger shared with other replicas, ``open`` also starts this replica's
duties (``router/core/replica.py``) and ``close`` stops them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from suanli.config import Config, Offer
from suanli.optimizer import Ask, Charge, Option, charge_reported
from suanli.providers import Usage
from suanli.router.core.metrics import MetricsBook
from suanli.router.core.packages import VoucherView
from suanli.router.core.planning import Replanner
from suanli.router.core.results import Routing
from suanli.router.errors import InsufficientBalanceError, LedgerError, NotFoundError
from suanli.router.ledger.adjust import Adjustment
from suanli.router.ledger.packages import base_id, ledger_vouchers
from suanli.router.ledger.port import LedgerHandle, open_handle
from suanli.router.ledger.types import IN_DOUBT_STATUS, Hold, HoldRequest, Settlement, VoucherStatus

if TYPE_CHECKING:
    from suanli.router.core.context import RequestContext
    from suanli.router.core.limits import RequestLimits
    from suanli.router.core.replica import Replica

__all__ = ["Accounts"]

log = logging.getLogger("suanli.accounts")


class Accounts:
    """Holds, settlements, voids and free balances; one per Router, shared with its workloads."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Callable[[], datetime],
        planning: Replanner,
        metrics: MetricsBook,
    ) -> None:
        self.config = config
        self.clock = clock
        self.planning = planning
        self.metrics = metrics
        self.available: dict[str, float] = {}  # voucher id -> units not yet held or spent
        self._promises: dict[str, tuple[str, float]] = {}  # booked work -> (voucher id, units)
        self._promised: dict[str, float] = {}  # voucher id -> units promised in all
        self.cash_exhausted: set[str] = set()  # regions whose prepaid cash the platform says is gone
        self._tz = ZoneInfo(config.timezone)
        self.view = VoucherView(config)  # packages (one ledger voucher per period) and daily caps
        self._ledger: LedgerHandle | None = None
        self._replica: Replica | None = None

    async def open(self, *, limits: RequestLimits | None = None) -> None:
        """Open the ledger; on a shared one, start this replica (taking 1/n of ``limits`` if given)."""
        now = self.clock()
        vouchers = ledger_vouchers(self.config, now) if self.view.active else self.config.vouchers
        ledger = await open_handle(self.config.ledger, vouchers, clock=self.clock)
        self._ledger = ledger
        self.available = ledger.available
        if any(v.daily_cap is not None for v in self.config.vouchers):
            today = await ledger.port.usage(since=now - timedelta(days=1))
            self.view.count_paid(((u.voucher_id, u.time, u.voucher_units) for u in today), now)
        if ledger.shared is not None:
            from suanli.router.core.replica import Replica

            shared = ledger.shared
            self._replica = await Replica.start(
                shared.ledger, self.config, self.available, self.planning, limits=limits, view=shared
            )
        marks = ledger.book.exhausted().values()
        self.cash_exhausted = {str(m["region"]) for m in marks if m["voucher_id"] is None}

    async def reconfigure(self, config: Config) -> None:
        """A config reload: vouchers new to the ledger start at their amount (known ones keep their
        money, ``ledger/vouchers.py``), then holds and settles follow ``config``. A hold already
        made settles on the voucher terms it was made with (``settle`` takes them from its option)."""
        view = VoucherView(config)
        view.keep_tallies(self.view)
        vouchers = ledger_vouchers(config, self.clock()) if view.active else config.vouchers
        await self.ledger.port.sync_vouchers(vouchers)
        if self.ledger.shared is not None:
            await self.ledger.shared.refresh()
        fresh = await self.ledger.port.balances()
        for voucher_id, units in fresh.items():
            self.available.setdefault(voucher_id, units)  # known vouchers: the mirror is already right
        self.config = config
        self.view = view

    async def close(self) -> None:
        if self._replica is not None:
            await self._replica.stop()
            self._replica = None
        if self._ledger is not None:
            await self._ledger.close()
            self._ledger = None

    @property
    def is_open(self) -> bool:
        return self._ledger is not None

    @property
    def ledger(self) -> LedgerHandle:
        """The open ledger; RuntimeError before ``open`` (the Router was not started)."""
        if self._ledger is None:
            raise RuntimeError(
                "the Router is not started: use `async with router:` or `await router.start()`"
            )
        return self._ledger

    @property
    def replica(self) -> Replica | None:
        """This process's replica duties on a shared (PostgreSQL) ledger; None on SQLite."""
        return self._replica

    def balances(self) -> dict[str, float]:
        """Voucher id -> balance not yet spent, held or promised to booked work."""
        return dict(self.free())

    def free(self) -> Mapping[str, float]:
        """What the chooser and the planner may count on: ``available`` less the units booked
        work means to draw when it runs (simulate's balances less its booked jobs' reserve),
        so a batch line planned on a voucher for tonight is not left paying cash because
        the day spent the voucher first."""
        base = self.view.free(self.available, self.clock()) if self.view.active else self.available
        if not self._promises:
            return base
        promised = self._promised
        return {v: units - promised.get(v, 0.0) for v, units in base.items()}

    def promise(self, key: str, voucher_id: str, units: float) -> None:
        """Speak for ``units`` of a voucher for booked work ``key`` (a batch line's request id)."""
        if units > 0 and key not in self._promises:
            self._promises[key] = (voucher_id, units)
            self._promised[voucher_id] = self._promised.get(voucher_id, 0.0) + units

    def release_promise(self, key: str) -> None:
        """The booked work runs now (or never): its units are free again, to it first."""
        found = self._promises.pop(key, None)
        if found is not None:
            voucher_id, units = found
            left = self._promised.get(voucher_id, 0.0) - units
            if left > 1e-9:
                self._promised[voucher_id] = left
            else:
                self._promised.pop(voucher_id, None)

    def release_promises(self, prefix: str) -> None:
        """Release every promise whose key starts with ``prefix`` (a batch that closed)."""
        for key in [k for k in self._promises if k.startswith(prefix)]:
            self.release_promise(key)

    def vouchers(self) -> list[VoucherStatus]:
        """Every voucher's balance, holds, spend, burn and validity."""
        return self.ledger.book.vouchers()

    async def reserve(self, request_id: str, option: Option, ask: Ask, ctx: RequestContext) -> Hold | None:
        """Hold ``option``'s voucher units and the key's budget; None when the voucher ran dry meanwhile.

        Raises BudgetExceededError when the key's budget cannot take the cost.
        """
        voucher = option.voucher if option.charge.voucher_units > 0 else None
        ledger_id = voucher.id if voucher else None
        if voucher is not None and self.view.active:
            now = self.clock()
            ledger_id = self.view.ledger_id(voucher, now)  # a package's current period
            # Taken before the first await: requests of this process never pass a cap together.
            if not self.view.take(request_id, voucher, option.charge.voucher_units, now):
                return None  # today's cap is spent: rank again, with what the cap leaves
        request = HoldRequest(
            request_id=request_id,
            region=option.region.id,
            model=ask.model,
            work_class=ask.work_class,
            origin=ask.origin,
            voucher_id=ledger_id,
            voucher_units=option.charge.voucher_units if voucher else 0.0,
            key_id=ctx.key_id,
            key_budget=(
                ctx.key.budget_hold(option.charge.cost_yuan, self.clock(), self._tz) if ctx.key else None
            ),
        )
        try:
            hold = await self.ledger.reserve(request, then=self._held, abandon=self.void)
        except InsufficientBalanceError:
            self.view.release(request_id)
            if ledger_id is not None:
                self.available[ledger_id] = 0.0
            return None
        except BaseException:
            self.view.release(request_id)
            raise
        self.view.rekey(request_id, hold.id)
        return hold

    def _held(self, hold: Hold) -> None:
        if hold.voucher_id is not None:
            self.available[hold.voucher_id] = self.available.get(hold.voucher_id, 0.0) - hold.voucher_units

    def void(self, hold: Hold) -> None:
        """Release a hold without waiting (a failed attempt; on PostgreSQL the write runs behind)."""
        self.ledger.book.void(hold.id)
        self._released(hold)

    async def release(self, hold: Hold) -> None:
        """Release a hold and wait until the ledger has (a cancelled job's answer follows it)."""
        await self.ledger.port.void(hold.id)
        self._released(hold)

    def _released(self, hold: Hold) -> None:
        self.view.release(hold.id)
        if hold.voucher_id is not None:
            self.available[hold.voucher_id] = self.available.get(hold.voucher_id, 0.0) + hold.voucher_units

    async def settle(
        self,
        hold: Hold,
        option: Option,
        ask: Ask,
        usage: Usage,
        routing: Routing,
        *,
        latency_s: float,
        ttft_s: float | None,
        status: int = 200,
    ) -> None:
        """Debit what the upstream reported (or our estimate) on ``hold``; fills ``routing``'s money.

        Once per hold: a second call for a settled ``routing`` does nothing.
        """
        if routing.settled:
            return
        prompt, completion = _usage_or_estimate(usage, option.offer, ask)
        hit, saved = _cache_hit(option, usage, prompt)  # the upstream's word decides (DESIGN.md)
        # A hold settles on the voucher terms it was made with, even if a reload changed them since.
        same = option.voucher is not None and hold.voucher_id is not None and (
            base_id(hold.voucher_id) == option.voucher.id)
        voucher = option.voucher if same else self.view.voucher(hold.voucher_id)
        cost = charge_reported(
            option.offer,
            prompt_tokens=prompt,
            completion_tokens=completion,
            work_class=ask.work_class,
            factor=option.factor,
            cached_tokens=hit,
            voucher=voucher,
            balance=hold.voucher_units,
        )
        settlement = Settlement(
            prompt_tokens=prompt,
            completion_tokens=completion,
            tokens=cost.tokens,
            cost_yuan=cost.cost_yuan,
            cash_yuan=cost.cash_yuan,
            voucher_units=cost.voucher_units,
            voucher_yuan=cost.voucher_yuan,
            latency_ms=latency_s * 1000,
            ttft_ms=ttft_s * 1000 if ttft_s is not None else None,
            attempts=routing.attempts,
            status=status,
            cached_tokens=hit,
            cache_saved_yuan=saved,
        )

        def settled(_row: object) -> None:
            # Runs right after the commit even if the caller went away; once per hold.
            if not routing.settled:
                self._settled(hold, option, ask, usage, routing, cost, prompt, completion, (hit, saved))
                self.metrics.settled(routing, latency_s=latency_s, ttft_s=ttft_s, status=status)

        await self.ledger.settle(hold.id, settlement, then=settled)

    async def settle_in_doubt(
        self, hold: Hold, option: Option, ask: Ask, routing: Routing, *, latency_s: float
    ) -> None:
        """Settle an attempt the upstream may have served without answering: at the hold's bound.

        The row (status ``IN_DOUBT_STATUS``) charges the input estimate and the whole output cap,
        so the key's budget and the voucher count what the upstream may bill; nothing is voided.
        """
        ratio = option.offer.token_ratio
        bound = Usage(completion_tokens=math.ceil(round(ask.output_tokens * ratio, 6)))  # unreported
        await self.settle(
            hold, option, ask, bound, routing, latency_s=latency_s, ttft_s=None, status=IN_DOUBT_STATUS
        )
        log.warning(
            "request %s at %s is in doubt: sent, never answered; charged at its hold (%.6f yuan)",
            routing.request_id,
            routing.region,
            routing.cost_yuan,
        )

    def _settled(
        self,
        hold: Hold,
        option: Option,
        ask: Ask,
        usage: Usage,
        routing: Routing,
        cost: Charge,
        prompt: int,
        completion: int,
        cache: tuple[int, float],
    ) -> None:
        self.view.release(hold.id, cost.voucher_units)
        if hold.voucher_id is not None:
            released = hold.voucher_units - cost.voucher_units
            self.available[hold.voucher_id] = self.available.get(hold.voucher_id, 0.0) + released
        routing.cash_yuan, routing.cost_yuan = cost.cash_yuan, cost.cost_yuan
        routing.cached_tokens, routing.cache_saved_yuan = cache
        discounted = option.off_peak or routing.cached_tokens > 0
        routing.list_yuan = _list_yuan(option, ask, prompt, completion) if discounted else cost.cost_yuan
        routing.voucher_yuan, routing.voucher_units = cost.voucher_yuan, cost.voucher_units
        routing.prompt_tokens, routing.completion_tokens = prompt, completion
        routing.settled = True
        self.planning.served(
            ask,
            region=option.region.id,
            prompt_tokens=prompt,
            completion_tokens=completion,
            reported=usage.reported,
            at=self.clock(),
            new_demand=not routing.booked,
        )
        if self._replica is not None:
            self._replica.served(ask, completion_tokens=completion, at=self.clock())

    async def adjust(self, voucher_id: str, amount: float, reason: str) -> Adjustment:
        """An operator's top-up (``amount`` > 0) or cut, on the ledger; the planner re-plans at once.

        NotFoundError for a voucher the ledger does not know. A top-up also clears an
        exhaustion mark (the platform has units again).
        """
        voucher = self.view.vouchers.get(voucher_id)
        if voucher is not None and voucher.period is not None:
            voucher_id = self.view.ledger_id(voucher, self.clock())  # a package: its current period's
        try:
            done = await self.ledger.port.adjust(voucher_id, amount, reason)
        except LedgerError as exc:
            if "unknown voucher" not in str(exc):
                raise
            raise NotFoundError(f"no voucher {voucher_id!r} in the ledger", param="id") from exc
        if self.ledger.shared is not None:
            await self.ledger.shared.refresh()  # the view answers the status API: show the new balance now
        marked = f"voucher:{voucher_id}" in self.ledger.book.exhausted()
        if done.applied > 0 and marked:
            self.clear_exhausted(voucher_id=voucher_id)
        elif not marked:
            self.available[voucher_id] = done.available
        log.warning("voucher %s adjusted by %g (asked %g): balance %g, held %g; %s", voucher_id, done.applied,
                    amount, done.balance, done.held, reason)
        self.planning.poke("voucher_adjust")
        return done

    def mark_exhausted(self, region: str, voucher_id: str | None, reason: str) -> None:
        """The platform says the prepaid balance is gone: stop drawing on it, on the ledger too."""
        book = self.ledger.book
        if voucher_id is not None:
            self.available[voucher_id] = 0.0
            book.mark_exhausted(voucher_id=voucher_id, reason=reason)
            log.warning("voucher %s at %s is exhausted upstream (%s)", voucher_id, region, reason)
        else:
            self.cash_exhausted.add(region)
            book.mark_exhausted(region=region, reason=reason)
            log.warning("prepaid cash at %s is exhausted upstream (%s)", region, reason)

    def clear_exhausted(self, *, voucher_id: str | None = None, region: str | None = None) -> None:
        """After a top-up: draw on that voucher or that region's cash again."""
        book = self.ledger.book
        book.clear_exhausted(voucher_id=voucher_id, region=region)
        if region is not None:
            self.cash_exhausted.discard(region)
        # In place: the chooser, the planner and (on PostgreSQL) the replica's view share this dict.
        fresh = book.balances()
        self.available.clear()
        self.available.update(fresh)


def _list_yuan(option: Option, ask: Ask, prompt: int, completion: int) -> float:
    # The same usage at list price: what the off-peak discount saved shows in the answer.
    return charge_reported(
        option.offer,
        prompt_tokens=prompt,
        completion_tokens=completion,
        work_class=ask.work_class,
        off_peak=False,
    ).cost_yuan


def _usage_or_estimate(usage: Usage, offer: Offer, ask: Ask) -> tuple[int, int]:
    if usage.reported:
        return usage.prompt_tokens, usage.completion_tokens
    # No usage from the upstream: bill our own count rather than nothing.
    prompt = int(round(ask.input_tokens * offer.token_ratio + 0.5))
    return prompt, usage.completion_tokens


def _cache_hit(option: Option, usage: Usage, prompt: int) -> tuple[int, float]:
    """The prompt-cache hit the upstream reported (at most the prompt) and what it saved against
    the full input price, at the request's pricing factor."""
    hit = min(max(usage.cached_tokens, 0), prompt) if usage.reported else 0
    if not hit:
        return 0, 0.0
    cut = option.offer.price.input - option.offer.price.cached_input
    return hit, hit * cut / 1e6 * option.factor
