"""The hindsight policy's bookings ahead of the replay loop (see ``simulate_engine``).

With the whole trace known, interactive requests need not be decided one by one as they
arrive: ``optimizer.rounding`` assigns each clock minute's requests together, and they
are all booked before the loop starts, so the work that may wait is placed around them.
A few training jobs are placed together by ``optimizer.training``'s exact search. Booked
jobs are pushed on the engine's heap without executing: balances are still drawn in
start order as the loop's clock passes them.
"""

from __future__ import annotations

from typing import Protocol

from suanli.config import Config, Offer
from suanli.optimizer import CapacityBook, Job, Plan
from suanli.optimizer.affinity import Conversations
from suanli.optimizer.hindsight import hindsight_plan, minute_shares
from suanli.optimizer.packages import fold_packages, per_instance
from suanli.optimizer.rounding import round_interactive
from suanli.optimizer.training import place_training
from suanli.router.simulate.trace import Trace

__all__ = ["Bookings", "book_ahead"]


class Bookings(Protocol):
    """What hindsight needs of the replay engine (``router/simulate/engine.py``), which calls it."""

    config: Config
    trace: Trace
    book: CapacityBook
    balances: dict[str, float]  # voucher id -> units left
    reserved: dict[str, float]  # voucher id -> units booked jobs mean to draw
    plan: Plan | None

    def reject(self, job: Job) -> None: ...

    def book_job(
        self,
        job: Job,
        region: str,
        offer: Offer,
        voucher: str | None,
        rel_start: float,
        tokens: int,
        *,
        execute: bool = True,
    ) -> None: ...


def book_ahead(engine: Bookings) -> set[int]:
    """Book what hindsight decides before the loop; the indices of the jobs it decided.

    Every interactive request (those with no room anywhere are rejected), then the
    training jobs when they are few enough for ``place_training``'s exact search.
    """
    decided = _book_interactive(engine)
    trace = engine.trace
    available = {v: engine.balances[v] - engine.reserved[v] for v in engine.balances}
    assert engine.plan is not None
    # a package's later periods are fresh balances a job starting then may draw
    prices = _prices_for_training(engine)
    planned, have, prices, owner = per_instance(engine.config, trace.jobs, available, prices)
    training = place_training(planned, trace.jobs, balances=have, voucher_price=prices)
    for index, placed in (training or {}).items():
        job = trace.jobs[index]
        decided.add(index)
        if placed is None:
            engine.reject(job)
            continue
        # the trace's own offset where the job starts on arrival: epoch seconds minus the
        # start would round it and may put it before ``t``
        rel = trace.offsets_s[index]
        if placed.start_s > job.arrival_s:
            rel = max(placed.start_s - trace.start_s, rel)
        voucher = owner(placed.voucher)
        engine.book_job(job, placed.region, placed.offer, voucher, rel, placed.tokens, execute=False)
    return decided


def _prices_for_training(engine: Bookings) -> dict[str, float]:
    # What a voucher's unit is worth to the rest of the trace. The plan's own prices count
    # the training jobs too: where they are the voucher's marginal users its price is their
    # own saving, each job is indifferent between the voucher and cash, and the search
    # paid cash while the voucher expired unspent (random day 28: 17.34 yuan for a job a
    # 1.36 M-token voucher no other work wanted could pay). So the prices come from the
    # plan of the other jobs alone.
    assert engine.plan is not None
    trace = engine.trace
    others = [job for job in trace.jobs if job.work_class != "training"]
    if len(others) == len(trace.jobs):
        return dict(engine.plan.voucher_price)
    if not others:
        return {}  # nothing else wants a voucher
    raw = hindsight_plan(engine.config, others, by_minute=True)
    return dict(fold_packages(raw, engine.config, trace.start_s).voucher_price)


def _book_interactive(engine: Bookings) -> set[int]:
    assert engine.plan is not None
    trace = engine.trace
    placements = round_interactive(
        engine.config,
        trace.jobs,
        used=engine.book.used,
        voucher_price=engine.plan.voucher_price,
        balances=engine.balances,
        shares=minute_shares(engine.config, trace.jobs, engine.plan),
        conversations=Conversations(engine.config, trace.jobs, engine.plan.voucher_price),
    )
    for job, rel in zip(trace.jobs, trace.offsets_s, strict=True):
        if job.work_class != "interactive":
            continue
        placed = placements[job.index]
        if placed is None:
            engine.reject(job)
            continue
        engine.book_job(job, placed.region, placed.offer, placed.voucher, rel, placed.tokens, execute=False)
    return set(placements)
