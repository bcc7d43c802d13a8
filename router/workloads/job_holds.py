"""A fine-tuning job's cost held against its virtual key's budget, from create to finish.

A job is charged when it ends, hours after it was accepted, so a key's budget could not
stop it in time. At create time the job's estimated cost (``price.train`` x its training
tokens at the placed region and start: the estimate placement used) is held through the
Router's accounts (the two-phase ledger hold) with the key's day and month budget, exactly as a request's
upper bound is: a create that does not fit is refused with 429 ``budget_exceeded`` and
holds nothing; the end settles the real cost on that same hold (one usage row); a cancel or
a failure voids it. The hold also keeps the placed voucher's units for the job meanwhile.

Ledger holds belong to the process that took them (a restart's recovery voids them), so
they are kept in memory; on start-up the jobs still to run take theirs again.
"""

from __future__ import annotations

from datetime import UTC, datetime

from suanli.optimizer import Ask, Option, State, rank
from suanli.providers import Usage
from suanli.router.core.context import RequestContext
from suanli.router.core.keys import KeyPolicy
from suanli.router.core.results import Routing
from suanli.router.core.router import Router
from suanli.router.errors import UpstreamFailedError
from suanli.router.ledger.types import Hold

__all__ = ["JobHolds"]


class JobHolds:
    """The pending ledger hold of each budgeted job this process follows."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self._held: dict[str, tuple[Hold, Option, Ask]] = {}

    def holding(self, job_id: str) -> bool:
        return job_id in self._held

    async def hold(
        self,
        job_id: str,
        *,
        model: str,
        origin: str,
        region: str,
        start_s: float,
        reference_tokens: float,
        key: KeyPolicy | None,
    ) -> None:
        """Hold the job's estimated cost on its key's budget; BudgetExceededError when it does not fit."""
        if key is None or (key.budget_yuan_per_day is None and key.budget_yuan_per_month is None):
            return  # nothing to enforce: the job is charged when it ends, as any other
        router = self.router
        ask = Ask(model, "training", origin, reference_tokens, 0.0, pinned_region=region)  # type: ignore[arg-type]
        ctx = RequestContext(
            work_class="training", origin=origin, request_id=job_id, key_id=key.key_id, key=key
        )
        started = datetime.fromtimestamp(start_s, UTC)
        for _ in range(3):
            options = rank(router.config, ask, State(balances=router.balances()), started)
            if not options:
                break
            hold = await router.accounts.reserve(job_id, options[0], ask, ctx)
            if hold is not None:
                self._held[job_id] = (hold, options[0], ask)
                return
            # the placed voucher ran dry meanwhile: rank again
        raise UpstreamFailedError(f"region {region} no longer offers fine-tuning of {model!r}")

    async def settle(self, job_id: str, trained_tokens: int, *, latency_s: float) -> Routing | None:
        """Charge the trained tokens on the job's hold; None when it holds nothing here."""
        held = self._held.get(job_id)
        if held is None:
            return None
        hold, option, ask = held
        routing = Routing(
            request_id=job_id,
            region=option.region.id,
            model=ask.model,
            work_class="training",
            origin=ask.origin,
            voucher=hold.voucher_id,
            cash_yuan=option.charge.cash_yuan,
            cost_yuan=option.charge.cost_yuan,
        )
        usage = Usage(trained_tokens, 0, reported=True)
        await self.router.accounts.settle(hold, option, ask, usage, routing, latency_s=latency_s, ttft_s=None)
        del self._held[job_id]
        return routing

    async def release(self, job_id: str) -> None:
        """Void the job's hold (cancelled or failed): its key's budget and voucher are free again."""
        held = self._held.pop(job_id, None)
        if held is None:
            return
        # Awaited (a failed attempt's void only queues it on PostgreSQL): the cancel's answer
        # comes after the budget is free.
        await self.router.accounts.release(held[0])
