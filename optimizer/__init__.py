"""Pure decision code: payment rules, the per-request chooser, the planner. No I/O."""

from __future__ import annotations

from optimizer.choose import Ask, Option, State, eligible, rank
from optimizer.payment import (
    Charge,
    charge,
    charge_reported,
    list_cost_yuan,
    off_peak_active,
    request_tokens,
    voucher_pays,
    voucher_usable,
)

__all__ = [
    "Ask",
    "Charge",
    "Option",
    "State",
    "charge",
    "charge_reported",
    "eligible",
    "list_cost_yuan",
    "off_peak_active",
    "rank",
    "request_tokens",
    "voucher_pays",
    "voucher_usable",
]
