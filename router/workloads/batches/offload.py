"""Which lines of a batch go to a platform's own batch API instead of being run here.

A region with ``batch_api`` runs a whole file of requests within ``window_h`` hours at
``price_factor`` x its list price. A line may go there when our batch's completion window
is at least as long and the region offers its model (and the key may use the region). Each
line is chosen by cost like any other option: the platform batch's price against what the
deferral scheduler's slot would pay in cash (its time-of-use price less what its voucher
covers); the cheaper wins, a tie stays here. A line the scheduler found no room for goes to
the cheapest platform batch that can take it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from suanli.config import Config, Region
from suanli.optimizer import charge, list_cost_yuan, price_factor
from suanli.router.workloads.batches.plan import LineAsk, Slot

__all__ = ["batch_price_yuan", "offload_lines"]

_TIE = 1e-9  # yuan: a line as cheap here as at the platform stays here (its answer comes sooner)


def batch_price_yuan(region: Region, model: str, input_tokens: float, output_tokens: float) -> float | None:
    """What the platform's batch API charges for one line, or None when it cannot take it."""
    api = region.batch_api
    offer = region.offer(model)
    if api is None or offer is None:
        return None
    return list_cost_yuan(offer, input_tokens, output_tokens, "batch", factor=1.0) * api.price_factor


def _slot_cash_yuan(config: Config, ask: LineAsk, slot: Slot, tz: ZoneInfo) -> float | None:
    region = config.region(slot.region) if slot.region else None
    offer = region.offer(ask.model) if region is not None else None
    if offer is None:
        return None
    vouchers = {v.id: v for v in config.vouchers}
    voucher = vouchers.get(slot.voucher) if slot.voucher else None
    paid = charge(
        offer,
        input_tokens=ask.input_tokens,
        output_tokens=ask.output_tokens,
        work_class="batch",
        factor=price_factor(offer, datetime.fromtimestamp(slot.start_s, UTC), tz),
        voucher=voucher,
        balance=slot.voucher_units,
    )
    return paid.cash_yuan


def offload_lines(
    config: Config,
    asks: Sequence[LineAsk],
    slots: Mapping[int, Slot],
    *,
    window_s: float,
    allowed: frozenset[str] | None,
) -> dict[int, str]:
    """Line key -> the region whose batch API should run it (lines to run here are absent)."""
    platforms = [
        r
        for r in config.regions
        if r.batch_api is not None
        and window_s >= r.batch_api.window_h * 3600.0
        and (allowed is None or r.id in allowed)
    ]
    if not platforms:
        return {}
    tz = ZoneInfo(config.timezone)
    out: dict[int, str] = {}
    for ask in asks:
        best: tuple[float, str] | None = None
        for region in platforms:
            price = batch_price_yuan(region, ask.model, ask.input_tokens, ask.output_tokens)
            if price is not None and (best is None or price < best[0]):
                best = (price, region.id)
        if best is None:
            continue
        slot = slots.get(ask.key)
        here = _slot_cash_yuan(config, ask, slot, tz) if slot is not None else None
        if here is None or best[0] < here - _TIE:
            out[ask.key] = best[1]
    return out
