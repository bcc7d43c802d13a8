"""What a replay hands back: one ``Decision`` per trace request, and the ``Replay`` around them;
and what it keeps on the way: a ``Booked`` job, waiting for its start."""

from __future__ import annotations

from dataclasses import dataclass, field

from suanli.config import Offer, Voucher
from suanli.optimizer import Job, charge

__all__ = ["Booked", "Decision", "Replay"]


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
    wall_s: float = 0.0  # when measured (``replay_branches``): the replay's wall seconds, a branch's own part


@dataclass(frozen=True, slots=True)
class Booked:
    """A job the engine booked to start at ``rel_start`` (seconds after the trace start)."""

    job: Job
    region: str
    offer: Offer
    voucher: str | None
    rel_start: float
    tokens: int = 0

    def held(self, voucher: Voucher | None, factor: float) -> float:
        """Units this job would draw from ``voucher`` at its start (price ``factor``), with a full balance."""
        if voucher is None:
            return 0.0
        job = self.job
        full = charge(
            self.offer,
            input_tokens=job.input_tokens,
            output_tokens=job.output_tokens,
            work_class=job.work_class,
            factor=factor,
            voucher=voucher,
            balance=float("inf"),
        )
        return full.voucher_units
