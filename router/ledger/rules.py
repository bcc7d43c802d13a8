"""The ledger's money rules, once for both drivers: fixed point, what a hold takes, what a settle posts.

Money and quota are integers of ``scale`` steps per unit: micro-tokens for a ``tokens``
voucher, nano-yuan for a ``credit`` or ``discount`` one (and for key budgets). Integer steps
make ``balance == amount - sum(settled units)`` exact and ``balance >= 0`` a hard fact. The
SQLite and PostgreSQL drivers keep only their SQL and their transactions; every number they
store or hand back is computed here, so both hold the very same integers.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable

from suanli.router.errors import LedgerError
from suanli.router.ledger.types import Settlement

__all__ = [
    "MAX_UNITS_Q",
    "TOKEN_SCALE",
    "YUAN_SCALE",
    "amount_q",
    "available",
    "budget_hold_q",
    "clamped",
    "debit",
    "hold_q",
    "not_pending",
    "scale_of",
    "to_q",
]

log = logging.getLogger("router.ledger")

TOKEN_SCALE = 10**6  # steps per token: micro-tokens
YUAN_SCALE = 10**9  # steps per yuan: nano-yuan
MAX_UNITS_Q = 2**63 - 1  # SQLite's INTEGER and PostgreSQL's BIGINT


def scale_of(kind: str) -> int:
    """Integer steps per unit: micro-tokens for token quotas, nano-yuan for yuan vouchers."""
    return TOKEN_SCALE if kind == "tokens" else YUAN_SCALE


def to_q(units: float, scale: int) -> int:
    """``units`` in steps of ``1/scale``, clamped at zero: a negative amount moves nothing."""
    return max(round(units * scale), 0)


def amount_q(voucher_id: str, amount: float, scale: int) -> int:
    """A new voucher's amount in steps; ValueError when the ledger's integers cannot hold it."""
    q = round(amount * scale)
    if q > MAX_UNITS_Q:
        raise ValueError(f"voucher {voucher_id!r}: amount {amount:g} is too large for the ledger")
    return q


def hold_q(available_q: int, units: float, scale: int) -> int:
    """What a hold takes of a voucher: the units asked, or what is available if less."""
    return min(available_q, to_q(units, scale))


def budget_hold_q(amount_yuan: float) -> int:
    """A key-budget hold in nano-yuan: the ceiling, so n holds never fit in less than n costs."""
    return max(math.ceil(amount_yuan * YUAN_SCALE - 1e-6), 0)


def clamped(s: Settlement, units: float) -> Settlement:
    """``s`` with only ``units`` paid by the voucher; the rest of its yuan share becomes cash."""
    share = units / s.voucher_units if s.voucher_units > 0 else 0.0
    voucher_yuan = s.voucher_yuan * share
    return Settlement(
        prompt_tokens=s.prompt_tokens,
        completion_tokens=s.completion_tokens,
        tokens=s.tokens,
        cost_yuan=s.cost_yuan,
        cash_yuan=s.cash_yuan + s.voucher_yuan - voucher_yuan,
        voucher_units=units,
        voucher_yuan=voucher_yuan,
        latency_ms=s.latency_ms,
        ttft_ms=s.ttft_ms,
        attempts=s.attempts,
        status=s.status,
        cached_tokens=s.cached_tokens,
        cache_saved_yuan=s.cache_saved_yuan,
    )


def debit(
    hold_id: str, voucher_id: str | None, held_q: int, scale: int, s: Settlement
) -> tuple[int, Settlement]:
    """What settling a pending hold posts: ``(units debited in steps, the settlement as charged)``.

    The whole hold is released; the debit is the settled units, never more than was held
    (the router must not settle more: the balance could go negative), so any excess, and
    any units settled on a cash-only hold, are charged as cash and logged.
    """
    if voucher_id is None:
        if s.voucher_units > 0:
            log.error("ledger: hold %s has no voucher but settles %g units; charged as cash",
                      hold_id, s.voucher_units)
            s = clamped(s, 0.0)
        return 0, s
    units_q = to_q(s.voucher_units, scale)
    if units_q > held_q:
        log.error("ledger: hold %s settles %g units of %s but held %g; clamped, excess charged as cash",
                  hold_id, s.voucher_units, voucher_id, held_q / scale)
        return held_q, clamped(s, held_q / scale)
    return units_q, s


def not_pending(hold_id: str, state: str | None) -> None:
    """A settle found the hold no longer pending: fine if settled (its row stands), else LedgerError."""
    if state is None:
        raise LedgerError(f"unknown hold {hold_id!r}")
    if state != "settled":
        raise LedgerError(f"hold {hold_id!r} is {state}, it cannot be settled")


def available(rows: Iterable[tuple[str, int, int, object]]) -> dict[str, float]:
    """Voucher id -> available units, from ``(id, balance_q - held_q, scale, marked exhausted)``.

    A voucher a platform reported exhausted is worth nothing, whatever its balance says.
    """
    return {voucher_id: 0.0 if gone else q / scale for voucher_id, q, scale, gone in rows}
