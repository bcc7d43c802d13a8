"""Hindsight's placement of training jobs: an exact search when there are only a few.

Training jobs are few and large, and each is indivisible: where the LP sends 0.9 of one
job to a tokens voucher and the rest to an off-peak region, a replay must pick one. With
at most ``MAX_JOBS`` jobs every combination of (region, start, payment) is searched,
branch and bound; voucher balances are drawn in start order as the replay draws them.
Training uses no tpm/rpm, so the jobs interact only through the vouchers.

A job's starts worth trying are its arrival, the first minute of each off-peak window and
the start of each voucher's validity inside its window (price and payment are otherwise
constant in between, and earlier is never worse).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from suanli.config import Config
from suanli.optimizer.index import index_for
from suanli.optimizer.payment import list_cost_yuan, request_tokens, voucher_pays
from suanli.optimizer.snapshot import Job, Placement

__all__ = ["MAX_JOBS", "place_training"]

MAX_JOBS = 8
_MAX_LEAVES = 200_000  # combinations scored at most; the best so far stands after that


@dataclass(frozen=True, slots=True)
class _Option:
    placement: Placement
    cost: float  # list yuan
    floor: float  # least the option can cost (its voucher at full balance)


def place_training(
    config: Config,
    jobs: Sequence[Job],
    *,
    balances: Mapping[str, float],
    voucher_price: Mapping[str, float],
) -> dict[int, Placement | None] | None:
    """Job index -> placement (None: no region can train it) of the training jobs of ``jobs``.

    None when there are more than ``MAX_JOBS`` of them (the caller places them one by one).
    The objective is cash plus, for vouchers other classes may use too, their shadow price
    per unit drawn (a unit training takes is one the rest of the trace cannot).
    """
    training = [job for job in jobs if job.work_class == "training"]
    if len(training) > MAX_JOBS:
        return None
    if not training:
        return {}
    vouchers = {v.id: v for v in config.vouchers}
    shared = {
        vid: voucher_price.get(vid, 0.0)
        for vid, v in vouchers.items()
        if v.classes is None or set(v.classes) != {"training"}
    }
    options = [_options(config, job, balances) for job in training]
    order = sorted(range(len(training)), key=lambda n: len(options[n]))
    floors = [min((o.floor for o in options[n]), default=0.0) for n in order]
    rest = [sum(floors[k:]) for k in range(len(order) + 1)]
    best: list = [math.inf, None]
    leaves = [0]
    chosen: list[_Option | None] = [None] * len(training)

    def score() -> float:
        left = dict(balances)
        total = 0.0
        picked = [(o.placement.start_s, training[n].index, o) for n, o in enumerate(chosen) if o is not None]
        for _, _, option in sorted(picked, key=lambda item: item[:2]):
            placed = option.placement
            cash = option.cost
            if placed.voucher is not None:
                balance = left.get(placed.voucher, 0.0)
                voucher = vouchers[placed.voucher]
                units, covered = voucher_pays(voucher, balance, tokens=placed.tokens, cost_yuan=cash)
                left[placed.voucher] = balance - units
                cash = max(cash - covered, 0.0) + shared.get(placed.voucher, 0.0) * units
            total += cash
        return total

    def search(depth: int, floor_so_far: float) -> None:
        if leaves[0] >= _MAX_LEAVES or floor_so_far + rest[depth] >= best[0]:
            return
        if depth == len(order):
            leaves[0] += 1
            value = score()
            if value < best[0]:
                best[0], best[1] = value, list(chosen)
            return
        n = order[depth]
        if not options[n]:
            search(depth + 1, floor_so_far)
            return
        for option in options[n]:
            chosen[n] = option
            search(depth + 1, floor_so_far + option.floor)
        chosen[n] = None

    search(0, 0.0)
    picks = best[1] if best[1] is not None else [None] * len(training)
    return {job.index: (pick.placement if pick else None) for job, pick in zip(training, picks, strict=True)}


def _options(config: Config, job: Job, balances: Mapping[str, float]) -> list[_Option]:
    # every (region, start, payment) worth trying for ``job``, cheapest floor first
    index = index_for(config)
    out: dict[tuple[str, str | None, float], _Option] = {}
    first = math.ceil(job.arrival_s / 60.0)
    last = math.floor(job.latest_s / 60.0)
    for cand in index.candidates(job.model, "training", job.origin, "chat", prior_latency=True):
        starts = {job.arrival_s}
        if cand.timed:
            # the first minute of each cheaper time-of-use band
            was = index.factor(cand.offer, job.arrival_s)
            for minute in range(first, last + 1):
                now = index.factor(cand.offer, minute * 60.0)
                if now < was:
                    starts.add(minute * 60.0)
                was = now
        for info in cand.vouchers:
            if job.arrival_s < info.from_s <= job.latest_s:
                starts.add(info.from_s)
        tokens = request_tokens(cand.offer, job.input_tokens, 0.0, "training")
        for start in sorted(starts):
            off = index.factor(cand.offer, start)
            cost = list_cost_yuan(cand.offer, job.input_tokens, 0.0, "training", factor=off)
            payments: list[tuple[str | None, float]] = [(None, cost)]
            for info in cand.vouchers:
                balance = balances.get(info.id, 0.0)
                if balance > 0 and info.from_s <= start < info.to_s:
                    _, covered = voucher_pays(info.voucher, balance, tokens=tokens, cost_yuan=cost)
                    payments.append((info.id, max(cost - covered, 0.0)))
            for voucher, floor in payments:
                key = (cand.region_id, voucher, off)
                if key not in out:  # starts are in order: the earliest of a kind is kept
                    placement = Placement(cand.region_id, cand.offer, start, voucher, tokens)
                    out[key] = _Option(placement, cost, floor)
    return sorted(out.values(), key=lambda o: (o.floor, o.placement.start_s, o.placement.region))
