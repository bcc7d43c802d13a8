"""Charging a finished fine-tuning job's trained tokens on the ledger, with or without its budget hold."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from suanli.optimizer import Ask, State, rank
from suanli.providers import Usage
from suanli.router.core.context import RequestContext
from suanli.router.core.keys import KeyPolicy, load_policy
from suanli.router.core.results import Routing
from suanli.router.core.router import Router
from suanli.router.errors import BudgetExceededError, UpstreamFailedError
from suanli.router.workloads.job_holds import JobHolds

__all__ = ["charge_job", "key_policy"]

log = logging.getLogger("suanli.fine_tuning")


async def charge_job(router: Router, holds: JobHolds, row: dict, trained_tokens: int) -> Routing:
    """Settle the trained tokens on the ledger at the job's region and start time."""
    latency_s = max(router.clock().timestamp() - row["start_s"], 0.0)
    routing = await holds.settle(row["id"], trained_tokens, latency_s=latency_s)
    if routing is not None:
        return routing
    # No hold here (no budget, or a restart could not take it again): the key's budget,
    # if any, still counts the cost when it fits; spend is a fact either way.
    key = await key_policy(router, row["key_id"])
    region = router.config.region(row["region"])
    offer = region.offer(row["model"]) if region else None
    ratio = offer.token_ratio if offer else 1.0
    ask = Ask(
        row["model"], "training", row["origin"], trained_tokens / ratio, 0.0, pinned_region=row["region"]
    )
    started = datetime.fromtimestamp(row["start_s"], UTC)
    for _ in range(3):
        ctx = RequestContext(
            work_class="training",
            origin=row["origin"],
            request_id=row["id"],
            key_id=row["key_id"],
            key=key,
        )
        options = rank(router.config, ask, State(balances=router.balances()), started)
        if not options:
            break
        option = options[0]
        # The Router's own two-phase hold and settlement, so vouchers and the usage chain stay exact.
        try:
            hold = await router.accounts.reserve(row["id"], option, ask, ctx)
        except BudgetExceededError:
            key = None
            continue
        if hold is None:
            continue  # the voucher ran dry meanwhile: rank again
        routing = Routing(
            request_id=row["id"],
            region=option.region.id,
            model=row["model"],
            work_class="training",
            origin=row["origin"],
            voucher=hold.voucher_id,
            cash_yuan=option.charge.cash_yuan,
            cost_yuan=option.charge.cost_yuan,
        )
        await router.accounts.settle(
            hold,
            option,
            ask,
            Usage(trained_tokens, 0, reported=True),
            routing,
            latency_s=latency_s,
            ttft_s=None,
        )
        return routing
    raise UpstreamFailedError(f"region {row['region']} no longer offers fine-tuning of {row['model']!r}")


async def key_policy(router: Router, key_id: str | None) -> KeyPolicy | None:
    """The job's stored key policy, or None when it cannot be read (the charge goes on without it)."""
    try:
        return await load_policy(router.accounts.ledger.port, router.config, key_id)
    except Exception as exc:  # noqa: BLE001 - spend is a fact: charge it even without the key's budget
        log.warning("fine-tuning job of key %s: its policy could not be read: %s", key_id, exc)
        return None
