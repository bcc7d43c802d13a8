"""Payment semantics of DESIGN.md: tokens counted, list cost, what a voucher pays.

Pure arithmetic shared by the live proxy, ``simulate`` and the planner, so all three
charge exactly alike.
"""

from __future__ import annotations

import math
from datetime import datetime, tzinfo
from typing import NamedTuple

from suanli.config import Offer, Voucher, WorkClass

__all__ = [
    "Charge",
    "charge",
    "charge_reported",
    "list_cost_yuan",
    "off_peak_active",
    "request_tokens",
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


def list_cost_yuan(
    offer: Offer, input_tokens: float, output_tokens: float, work_class: WorkClass, *, off_peak: bool
) -> float:
    """Yuan a request costs at the offer's price, before any voucher."""
    ratio = offer.token_ratio
    if work_class == "training":
        cost = input_tokens * ratio * offer.price.train / 1e6
    else:
        cost = (input_tokens * ratio * offer.price.input + output_tokens * ratio * offer.price.output) / 1e6
    if off_peak and offer.off_peak is not None:
        cost *= 1 - offer.off_peak.discount
    return cost


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
    off_peak: bool,
    voucher: Voucher | None = None,
    balance: float = 0.0,
) -> Charge:
    """The full charge of a request, given the voucher (if any) and its balance."""
    tokens = request_tokens(offer, input_tokens, output_tokens, work_class)
    cost = list_cost_yuan(offer, input_tokens, output_tokens, work_class, off_peak=off_peak)
    return _split(tokens, cost, voucher, balance)


def charge_reported(
    offer: Offer,
    *,
    prompt_tokens: int,
    completion_tokens: int,
    work_class: WorkClass,
    off_peak: bool,
    voucher: Voucher | None = None,
    balance: float = 0.0,
) -> Charge:
    """The charge of a served request from the usage the upstream reported.

    Reported counts are already in the serving model's tokens (the ratio is applied by
    the tokenizer itself), so the price applies to them directly.
    """
    model_input = float(prompt_tokens)
    model_output = 0.0 if work_class == "training" else float(completion_tokens)
    tokens = int(model_input + model_output)
    if work_class == "training":
        cost = model_input * offer.price.train / 1e6
    else:
        cost = (model_input * offer.price.input + model_output * offer.price.output) / 1e6
    if off_peak and offer.off_peak is not None:
        cost *= 1 - offer.off_peak.discount
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
