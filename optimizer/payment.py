"""Payment semantics of DESIGN.md: tokens counted, list cost, what a voucher pays.

Pure arithmetic shared by the live proxy, ``simulate`` and the planner, so all three
charge exactly alike. The time-of-use factor, the prompt-cache rule and the package
periods and daily caps live in ``tariff`` beside it and are re-exported here.
"""

from __future__ import annotations

import math
from datetime import datetime, tzinfo
from typing import NamedTuple

from suanli.config import Offer, Voucher, WorkClass
from suanli.optimizer.tariff import (
    cache_hit,
    capped_balance,
    factor_at,
    local_day,
    package_window,
    period_edges,
    period_end,
    period_start,
    price_factor,
    time_of_use,
)

__all__ = [
    "Charge",
    "cache_hit",
    "capped_balance",
    "charge",
    "charge_reported",
    "factor_at",
    "list_cost_yuan",
    "local_day",
    "off_peak_active",
    "package_window",
    "period_edges",
    "period_end",
    "period_start",
    "price_factor",
    "request_tokens",
    "time_of_use",
    "voucher_pays",
    "voucher_usable",
]


def request_tokens(offer: Offer, input_tokens: float, output_tokens: float, work_class: WorkClass) -> int:
    """Tokens of ``offer``'s model that a request counts: ceil of reference tokens x ratio."""
    reference = input_tokens if work_class == "training" else input_tokens + output_tokens
    # Round before the ceiling so that 1000 x 1.3 counts 1300, not 1301.
    return math.ceil(round(reference * offer.token_ratio, 6))


def off_peak_active(offer: Offer, start: datetime, tz: tzinfo) -> bool:
    """Whether a request starting at ``start`` gets the offer's off-peak discount."""
    if offer.off_peak is None:
        return False
    local = start.astimezone(tz)
    minute = local.hour * 60 + local.minute
    begin, end = offer.off_peak.minutes()
    if begin == end:
        return True
    if begin < end:
        return begin <= minute < end
    return minute >= begin or minute < end


def _factor(offer: Offer, off_peak: bool, factor: float | None) -> float:
    # ``factor`` (``price_factor`` at the start) wins; ``off_peak`` is the older callers' flag
    if factor is not None:
        return factor
    if off_peak and offer.off_peak is not None:
        return 1 - offer.off_peak.discount
    return 1.0


def list_cost_yuan(
    offer: Offer,
    input_tokens: float,
    output_tokens: float,
    work_class: WorkClass,
    *,
    off_peak: bool = False,
    factor: float | None = None,
    cached: float = 0.0,
) -> float:
    """Yuan a request costs at the offer's price, before any voucher.

    ``factor`` is the time-of-use factor at the start (``price_factor``; an event's factor
    multiplied in); ``cached`` the reference input tokens billed at ``price.cached_input``
    (a cache hit's, ``cache_hit``; 0 otherwise).
    """
    ratio = offer.token_ratio
    price = offer.price
    if work_class == "training":
        cost = input_tokens * ratio * price.train / 1e6
    elif cached > 0:
        fresh = input_tokens - cached
        hit = cached * ratio * price.cached_input
        cost = (fresh * ratio * price.input + hit + output_tokens * ratio * price.output) / 1e6
    else:
        cost = (input_tokens * ratio * price.input + output_tokens * ratio * price.output) / 1e6
    scale = _factor(offer, off_peak, factor)
    return cost * scale if scale != 1.0 else cost


def voucher_usable(voucher: Voucher, *, region: str, model: str, work_class: WorkClass, at: datetime) -> bool:
    """Whether ``voucher`` may pay for this request at all (balance aside)."""
    if voucher.region != region:
        return False
    if voucher.models is not None and model not in voucher.models:
        return False
    if voucher.classes is not None and work_class not in voucher.classes:
        return False
    if voucher.valid_from is not None and at < voucher.valid_from:
        return False
    return voucher.expires is None or at < voucher.expires


def voucher_pays(voucher: Voucher, balance: float, *, tokens: int, cost_yuan: float) -> tuple[float, float]:
    """``(units drawn from the balance, yuan of the cost covered)`` for one request."""
    if balance <= 0 or cost_yuan <= 0 and voucher.kind != "tokens":
        return 0.0, 0.0
    if voucher.kind == "tokens":
        units = float(min(balance, tokens))
        return units, (cost_yuan * units / tokens) if tokens else 0.0
    if voucher.kind == "credit":
        paid = min(balance, cost_yuan)
        return paid, paid
    paid = min(balance, (voucher.rate or 0.0) * cost_yuan)
    return paid, paid


class Charge(NamedTuple):
    """What one request costs and who pays: ``cash_yuan`` + voucher yuan = ``cost_yuan``.

    Immutable; a named tuple rather than a frozen dataclass because the chooser builds one
    per candidate on the request path, and a named tuple costs a fifth as much to build.
    """

    tokens: int
    cost_yuan: float
    voucher_units: float
    voucher_yuan: float
    cash_yuan: float


def charge(
    offer: Offer,
    *,
    input_tokens: float,
    output_tokens: float,
    work_class: WorkClass,
    off_peak: bool = False,
    factor: float | None = None,
    cached: float = 0.0,
    voucher: Voucher | None = None,
    balance: float = 0.0,
) -> Charge:
    """The full charge of a request, given the voucher (if any) and its balance.

    ``balance`` is what the voucher may pay now: for a package, its current period's
    balance; under a daily cap, ``capped_balance``.
    """
    tokens = request_tokens(offer, input_tokens, output_tokens, work_class)
    cost = list_cost_yuan(
        offer, input_tokens, output_tokens, work_class, off_peak=off_peak, factor=factor, cached=cached
    )
    return _split(tokens, cost, voucher, balance)


def charge_reported(
    offer: Offer,
    *,
    prompt_tokens: int,
    completion_tokens: int,
    work_class: WorkClass,
    off_peak: bool = False,
    factor: float | None = None,
    cached_tokens: int = 0,
    voucher: Voucher | None = None,
    balance: float = 0.0,
) -> Charge:
    """The charge of a served request from the usage the upstream reported.

    Reported counts are already in the serving model's tokens (the ratio is applied by
    the tokenizer itself), so the price applies to them directly. ``cached_tokens`` (the
    upstream's ``usage.prompt_tokens_details.cached_tokens``, at most the prompt) pay
    ``price.cached_input``; ``factor`` as in ``list_cost_yuan``.
    """
    model_input = float(prompt_tokens)
    model_output = 0.0 if work_class == "training" else float(completion_tokens)
    tokens = int(model_input + model_output)
    price = offer.price
    if work_class == "training":
        cost = model_input * price.train / 1e6
    else:
        hit = float(min(max(cached_tokens, 0), prompt_tokens))
        fresh = model_input - hit
        cost = (fresh * price.input + hit * price.cached_input + model_output * price.output) / 1e6
    scale = _factor(offer, off_peak, factor)
    if scale != 1.0:
        cost *= scale
    return _split(tokens, cost, voucher, balance)


def _split(tokens: int, cost: float, voucher: Voucher | None, balance: float) -> Charge:
    # What the voucher covers of a request's cost; the rest is cash.
    units, covered = (
        (0.0, 0.0) if voucher is None else voucher_pays(voucher, balance, tokens=tokens, cost_yuan=cost)
    )
    return Charge(
        tokens=tokens,
        cost_yuan=cost,
        voucher_units=units,
        voucher_yuan=covered,
        cash_yuan=max(cost - covered, 0.0),
    )
