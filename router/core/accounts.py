"""The Router's side of the two-phase ledger: hold before sending, settle what the upstream reported.

Mixed into ``Router`` (``router/core/router.py``). Holds and settles go through the group-commit
writer; ``_available`` mirrors each voucher's free balance so the chooser never waits on the
database. ``_settled`` runs once per hold, right after its commit, even if the caller left.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from suanli.config import Offer
from suanli.optimizer import Ask, Option, charge_reported
from suanli.providers import Usage
from suanli.router.core.results import Routing
from suanli.router.errors import InsufficientBalanceError
from suanli.router.ledger.sqlite.ledger import Hold, HoldRequest, Settlement

if TYPE_CHECKING:
    from suanli.router.core.router import RequestContext, Router

__all__ = ["AccountingMixin"]


class AccountingMixin:
    """Ledger holds and settlements for ``Router``."""

    async def _reserve(
        self: Router, request_id: str, option: Option, ask: Ask, ctx: RequestContext
    ) -> Hold | None:
        voucher = option.voucher if option.charge.voucher_units > 0 else None
        request = HoldRequest(
            request_id=request_id,
            region=option.region.id,
            model=ask.model,
            work_class=ask.work_class,
            origin=ask.origin,
            voucher_id=voucher.id if voucher else None,
            voucher_units=option.charge.voucher_units if voucher else 0.0,
            key_id=ctx.key_id,
            key_budget=(
                ctx.key.budget_hold(option.charge.cost_yuan, self.clock(), self._tz) if ctx.key else None
            ),
        )
        try:
            return await self._group.run(self._book.reserve, request, then=self._held, abandon=self._void)
        except InsufficientBalanceError:
            if voucher is not None:
                self._available[voucher.id] = 0.0
            return None

    def _held(self: Router, hold: Hold) -> None:
        if hold.voucher_id is not None:
            self._available[hold.voucher_id] = self._available.get(hold.voucher_id, 0.0) - hold.voucher_units

    def _void(self: Router, hold: Hold) -> None:
        self._book.void(hold.id)
        if hold.voucher_id is not None:
            self._available[hold.voucher_id] = self._available.get(hold.voucher_id, 0.0) + hold.voucher_units

    async def _settle(
        self: Router,
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
        if routing.settled:
            return
        prompt, completion = self._usage_or_estimate(usage, option.offer, ask)
        voucher = self._vouchers.get(hold.voucher_id) if hold.voucher_id else None
        cost = charge_reported(
            option.offer,
            prompt_tokens=prompt,
            completion_tokens=completion,
            work_class=ask.work_class,
            off_peak=option.off_peak,
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
        )

        def settled(_row: object) -> None:
            # Runs right after the commit even if the caller went away; once per hold.
            if not routing.settled:
                self._settled(hold, option, ask, usage, routing, cost, prompt, completion)
                self.metrics.settled(routing, latency_s=latency_s, ttft_s=ttft_s, status=status)

        await self._group.run(self._book.settle, hold.id, settlement, always=True, then=settled)

    def _settled(
        self: Router,
        hold: Hold,
        option: Option,
        ask: Ask,
        usage: Usage,
        routing: Routing,
        cost: Any,
        prompt: int,
        completion: int,
    ) -> None:
        if hold.voucher_id is not None:
            released = hold.voucher_units - cost.voucher_units
            self._available[hold.voucher_id] = self._available.get(hold.voucher_id, 0.0) + released
        routing.cash_yuan, routing.cost_yuan = cost.cash_yuan, cost.cost_yuan
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
        )
        if self._replica is not None:
            self._replica.served(ask, completion_tokens=completion, at=self.clock())

    @staticmethod
    def _usage_or_estimate(usage: Usage, offer: Offer, ask: Ask) -> tuple[int, int]:
        if usage.reported:
            return usage.prompt_tokens, usage.completion_tokens
        # No usage from the upstream: bill our own count rather than nothing.
        prompt = int(round(ask.input_tokens * offer.token_ratio + 0.5))
        return prompt, usage.completion_tokens
