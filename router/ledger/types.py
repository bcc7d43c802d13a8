"""The ledger's records: what a hold asks for and gets, what a settlement reports, what is kept."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

__all__ = [
    "IN_DOUBT_STATUS",
    "Hold",
    "HoldRequest",
    "KeyBudgetHold",
    "Settlement",
    "UsageRow",
    "VoucherStatus",
]

# The status of a usage row *in doubt*: the upstream got the request and never answered (a
# timeout after sending), so it may have generated and billed it. Such a row is charged at its
# hold (the upper bound), so budgets and vouchers count it; ``report`` and ``audit`` list them.
IN_DOUBT_STATUS = 504


@dataclass(frozen=True, slots=True)
class KeyBudgetHold:
    """What a request of a budgeted key asks the ledger to hold, beside its voucher hold."""

    key_id: str
    day: str  # "day:2026-12-01", local to the config's timezone
    month: str  # "month:2026-12"
    amount_yuan: float  # the upper bound of the request's cost
    day_limit_yuan: float | None
    month_limit_yuan: float | None

    def limits(self) -> tuple[tuple[str, float | None, str], ...]:
        """``(period, limit in yuan or None, how a refusal names it)``, the day first."""
        return (self.day, self.day_limit_yuan, "today"), (self.month, self.month_limit_yuan, "this month")


@dataclass(frozen=True, slots=True)
class HoldRequest:
    """A request's ask before it is sent: hold up to ``voucher_units`` of ``voucher_id``.

    ``voucher_id`` None is a cash-only hold: nothing is held, but the hold is recorded so a
    crash can be resolved and the spend reported.
    """

    request_id: str
    region: str
    model: str
    work_class: str
    origin: str
    voucher_id: str | None
    voucher_units: float
    key_id: str | None = None
    key_budget: KeyBudgetHold | None = None  # also hold this much of the key's day and month budget


@dataclass(frozen=True, slots=True)
class Hold:
    """A pending hold; ``voucher_units`` is what was actually held (may be less than asked)."""

    id: str
    request_id: str
    voucher_id: str | None
    voucher_units: float
    created: datetime


@dataclass(frozen=True, slots=True)
class Settlement:
    """The real usage of a served request, as the router computed it from the upstream's report."""

    prompt_tokens: int
    completion_tokens: int
    tokens: int
    cost_yuan: float
    cash_yuan: float
    voucher_units: float
    voucher_yuan: float
    latency_ms: float
    ttft_ms: float | None
    attempts: int = 1
    status: int = 200  # IN_DOUBT_STATUS: in doubt, charged at the hold
    # The upstream's usage.prompt_tokens_details.cached_tokens and what they saved against the
    # full input price (kept beside the row for `report`; not part of the hash chain).
    cached_tokens: int = 0
    cache_saved_yuan: float = 0.0


@dataclass(frozen=True, slots=True)
class UsageRow:
    """One settled request. ``id`` is its place in the hash chain (1, 2, ...); ``time`` is the
    settle time in UTC; ``hash`` chains it to the row before (see ``chain``)."""

    id: int
    request_id: str
    time: datetime
    key_id: str | None
    region: str
    model: str
    work_class: str
    origin: str
    voucher_id: str | None
    prompt_tokens: int
    completion_tokens: int
    tokens: int
    cost_yuan: float
    cash_yuan: float
    voucher_units: float
    voucher_yuan: float
    latency_ms: float
    ttft_ms: float | None
    attempts: int
    status: int
    hold_id: str = ""
    hash: str = ""
    cached_tokens: int = 0  # read only where asked for (``usage``): 0 elsewhere
    cache_saved_yuan: float = 0.0


@dataclass(frozen=True, slots=True)
class VoucherStatus:
    """A voucher as the ledger knows it. Units are tokens (``tokens``) or yuan (credit, discount).

    ``balance`` is posted (amount minus settled spend); ``available`` also subtracts pending
    holds; ``burn_per_hour`` is the units settled over the last hour of clock time.
    """

    id: str
    region: str
    kind: str
    amount: float
    balance: float
    held: float
    available: float
    spent: float
    valid_from: datetime | None
    expires: datetime | None
    burn_per_hour: float
