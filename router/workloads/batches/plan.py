"""Where and when each line of a batch (or a fine-tuning job) starts: the optimizer's deferral scheduler.

Every line becomes an ``optimizer.Job`` that may start from now until a little before the
completion window closes. The planner LP prices the window's slots over the known demand
(the batch itself), then ``Deferrer`` gives every job the (region, slot, payment) of least
score with room left in the shared ``CapacityBook``, so the lines land in cheap regions
and cheap hours without exceeding any region's per-minute ``tpm``/``rpm``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from suanli.config import Config, WorkClass, Zone
from suanli.optimizer import (
    CapacityBook,
    Deferrer,
    InfeasibleError,
    Job,
    Placement,
    Plan,
    Snapshot,
    charge,
    known_demand,
    minute_of,
    plan,
    price_factor,
    slot_edges,
)

__all__ = ["LineAsk", "Slot", "latest_start_s", "place_jobs"]

log = logging.getLogger("suanli.batch")


@dataclass(frozen=True, slots=True)
class LineAsk:
    """One deferrable request to place: reference tokens and its start window (epoch seconds)."""

    key: int
    model: str
    input_tokens: float
    output_tokens: float
    earliest_s: float
    latest_s: float


@dataclass(frozen=True, slots=True)
class Slot:
    """A placed line: the region it should run at, when, and the model tokens it books."""

    region: str | None  # None: no region had room in the window; it runs as soon as it can
    start_s: float
    tokens: int
    voucher: str | None
    voucher_units: float = 0.0  # what it means to draw on ``voucher`` (promised until it runs)


def latest_start_s(start_s: float, window_s: float) -> float:
    """The last start that still leaves time to run before the window closes."""
    return start_s + window_s - max(60.0, 0.02 * window_s)


def place_jobs(
    config: Config,
    asks: Sequence[LineAsk],
    *,
    work_class: WorkClass,
    origin: Zone,
    now_s: float,
    book: CapacityBook,
    balances: Mapping[str, float],
    live_plan: Plan | None = None,
) -> dict[int, Slot]:
    """Place every ask; books each placement in ``book`` (the caller's, shared by all batches).

    With ``live_plan`` (the re-planner's, over the forecast of *all* traffic) the lines are
    priced by it, as ``simulate`` prices deferred work: a voucher or an east minute that the
    forecast keeps for interactive work is dear for a batch line. Without one (the first
    minute of a process, or a key confined to some regions) the batch's own lines are planned.
    """
    if not asks:
        return {}
    jobs = [
        Job(
            index=n,
            arrival_s=max(a.earliest_s, now_s),
            latest_s=max(a.latest_s, now_s),
            model=a.model,
            work_class=work_class,
            origin=origin,
            input_tokens=a.input_tokens,
            output_tokens=a.output_tokens,
        )
        for n, a in enumerate(asks)
    ]
    end_s = max(j.latest_s for j in jobs) + 1.0
    deferrer = Deferrer(config)
    available = {k: max(v, 0.0) for k, v in balances.items()}
    if live_plan is not None and live_plan.end_s > now_s:
        deferrer.set_plan(live_plan, available=available)
    else:
        _plan_alone(deferrer, config, jobs, now_s, end_s, book, available)
    tz = ZoneInfo(config.timezone)
    vouchers = {v.id: v for v in config.vouchers}
    out: dict[int, Slot] = {}
    for job, ask in zip(jobs, asks, strict=True):
        placed = deferrer.place(job, now_s, book, available)
        if placed is None:
            out[ask.key] = Slot(None, job.arrival_s, 0, None)
            continue
        start_s = max(placed.start_s, now_s)
        if work_class != "training":
            book.add(placed.region, minute_of(start_s), placed.tokens)
        units = _draw(available, placed, job, start_s, tz, vouchers)
        out[ask.key] = Slot(placed.region, start_s, placed.tokens, placed.voucher, units)
    return out


def _draw(
    available: dict[str, float], placed: Placement, job: Job, start_s: float, tz: ZoneInfo, vouchers: Mapping
) -> float:
    # Units the placed job means to draw are spoken for when the next job is placed.
    voucher = vouchers.get(placed.voucher) if placed.voucher else None
    if voucher is None:
        return 0.0
    paid = charge(
        placed.offer,
        input_tokens=job.input_tokens,
        output_tokens=job.output_tokens,
        work_class=job.work_class,
        factor=price_factor(placed.offer, datetime.fromtimestamp(start_s, UTC), tz),
        voucher=voucher,
        balance=available.get(voucher.id, 0.0),
    )
    available[voucher.id] = max(available.get(voucher.id, 0.0) - paid.voucher_units, 0.0)
    return paid.voucher_units


def _plan_alone(
    deferrer: Deferrer,
    config: Config,
    jobs: list[Job],
    now_s: float,
    end_s: float,
    book: CapacityBook,
    available: Mapping[str, float],
) -> None:
    """Price the lines by an LP over the batch's own lines (no other demand is known)."""
    try:
        edges = slot_edges(config, now_s, end_s)
        snapshot = Snapshot(
            config=config,
            now_s=now_s,
            horizon_s=end_s - now_s,
            balances=dict(available),
            demand=known_demand(jobs, edges),
            booked=book.committed_from(minute_of(now_s)),
        )
        deferrer.set_plan(plan(snapshot, demand_scenarios=()))  # the batch's lines are known
    except InfeasibleError as exc:
        # Without prices the deferrer still finds the earliest cheap minute with room.
        log.warning("batch planner found no plan (%s); placing by list price", exc)
