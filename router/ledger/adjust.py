"""Operator adjustments of a voucher (a top-up or a cut), the rules both drivers share.

An adjustment is money moving on the ledger, so it is recorded like usage: one settled hold
and one usage row in the hash chain (``work_class`` ``ADJUSTMENT_CLASS``, no tokens, no
cost; ``voucher_units`` the units it took, negative for a top-up), plus a row of
``voucher_adjustments`` keeping the reason and what was asked. ``suanli audit verify``
checks its row like any other.

A top-up raises the balance (and the voucher's ``amount``, so ``spent`` stays what requests
drew). A cut takes what is free, flooring the *available* balance at 0: units held by
requests in flight stay theirs (they were promised before the cut, and their settle must
post), so a cut larger than what is free takes all that is free and reports the rest as
``held``. The check and the change are one transaction against concurrent holds, on either
driver, so no interleaving overspends.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from suanli.router.ledger.rules import MAX_UNITS_Q
from suanli.router.ledger.tables import create_table
from suanli.router.ledger.types import Settlement

__all__ = [
    "ADJUSTMENT_CLASS",
    "Adjustment",
    "adjustment_id",
    "adjustment_settlement",
    "adjustments_table",
    "applied_q",
]

ADJUSTMENT_CLASS = "adjustment"  # the usage row's work_class: not a request, an operator's act


@dataclass(frozen=True, slots=True)
class Adjustment:
    """What an adjustment did: ``applied`` units (positive: a top-up), the balance after it."""

    voucher_id: str
    kind: str
    requested: float  # units asked: positive a top-up, negative a cut
    applied: float  # units moved (a cut may move less: see the module docstring)
    balance: float  # posted balance after it
    held: float  # units held by requests in flight (a cut cannot take them)
    available: float  # balance - held
    reason: str
    usage_id: int  # its row in the hash chain
    time: float  # epoch s

    def as_dict(self) -> dict[str, object]:
        return {
            "voucher": self.voucher_id, "kind": self.kind, "requested": self.requested,
            "applied": self.applied, "balance": self.balance, "held": self.held,
            "available": self.available, "reason": self.reason, "usage_id": self.usage_id,
        }


def adjustment_id() -> str:
    """A fresh id for an adjustment's hold and request (``adj-`` and 24 hex digits)."""
    return f"adj-{secrets.token_hex(12)}"


def applied_q(balance_q: int, held_q: int, delta_q: int) -> int:
    """Steps an adjustment of ``delta_q`` moves: a cut at most what is free, a top-up within the integers."""
    if delta_q < 0:
        return -min(-delta_q, max(balance_q - held_q, 0))
    return min(delta_q, MAX_UNITS_Q - balance_q)


def adjustment_settlement(units: float) -> Settlement:
    """The usage row's settlement: no tokens, no cost; ``units`` taken (negative: given)."""
    return Settlement(prompt_tokens=0, completion_tokens=0, tokens=0, cost_yuan=0.0, cash_yuan=0.0,
                      voucher_units=units, voucher_yuan=0.0, latency_ms=0.0, ttft_ms=None, attempts=0,
                      status=200)


def adjustment_request(region: str) -> tuple[Any, ...]:
    """The row's request columns (request_id filled by the caller): key, region, model, class, origin."""
    return None, region, "", ADJUSTMENT_CLASS, ""


def adjustments_table(real: str) -> str:
    """One row per adjustment: what was asked, what moved, and why (the chain holds the money)."""
    return create_table("voucher_adjustments", (
        "hold_id TEXT PRIMARY KEY",
        "voucher_id TEXT NOT NULL",
        f"requested {real} NOT NULL",
        f"applied {real} NOT NULL",
        "reason TEXT NOT NULL",
        f"time {real} NOT NULL",
    ))


def as_adjustment(voucher: Sequence[Any], *, requested: float, moved_q: int, reason: str, usage_id: int,
                  time: float) -> Adjustment:
    """The answer, from the voucher row after the change: ``(id, kind, scale, balance_q, held_q)``."""
    vid, kind, scale, balance_q, held_q = voucher
    return Adjustment(voucher_id=vid, kind=kind, requested=requested, applied=moved_q / scale,
                      balance=balance_q / scale, held=held_q / scale, available=(balance_q - held_q) / scale,
                      reason=reason, usage_id=usage_id, time=time)
