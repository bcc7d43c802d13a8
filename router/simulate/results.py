"""What a replay hands back: one ``Decision`` per trace request, and the ``Replay`` around them."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Decision", "Replay"]


@dataclass(frozen=True, slots=True)
class Decision:
    """One line of ``--decisions``: where and when trace line ``i`` started, who paid."""

    i: int
    region: str | None
    start: float | None  # seconds after the trace start
    voucher: str | None
    cash_yuan: float
    tokens: int = 0
    voucher_units: float = 0.0


@dataclass(slots=True)
class Replay:
    """The outcome of one replay, with timing figures for the benchmark."""

    policy: str
    decisions: list[Decision]
    rejected: int
    deadline_misses: int
    slo_violations: int
    decision_ns: list[int]
    plan_s: list[float] = field(default_factory=list)
    bound_cash_yuan: float | None = None
    balances: dict[str, float] = field(default_factory=dict)  # voucher id -> units left at the end
