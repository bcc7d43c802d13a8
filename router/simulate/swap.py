"""Placing a training job together with the training jobs booked but not yet started.

A training job is booked when it arrives and may start hours later; the voucher it means
to use is spoken for from then on, and a later job that would save more with it used to
pay cash. ``Trainer.reassign``: when a training job arrives, it and the training jobs
booked but not started are placed together again by ``optimizer.training``'s exact search
(``assign_training``), against what the training jobs that may still come would save with
the vouchers only training may use (``optimizer.prospects``). A job on a voucher starts as
late as that costs nothing (``hold_start``): until it starts, a job arriving later may
still get the voucher, and the first one moves to what it would have paid otherwise
(random day 12: a 900 k-token job took a training voucher at once, and the 1.7 M-token
job behind it paid 12.58 yuan in cash where the voucher would have covered it whole).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from suanli.config import Config, Offer
from suanli.optimizer import Forecast, Job, Placement, index_for
from suanli.optimizer.prospects import prospects
from suanli.optimizer.training import assign_training, hold_start

__all__ = ["Holder", "Moves", "Trainer"]


class Holder(Protocol):
    """A booked job as the engine keeps it (``engine._Booked``)."""

    job: Job
    region: str
    offer: Offer
    voucher: str | None
    rel_start: float


@dataclass(slots=True)
class Moves:
    """What the engine does: take ``unbook`` off its book, then book ``book`` in order."""

    unbook: list[Holder] = field(default_factory=list)
    book: list[tuple[Job, Placement]] = field(default_factory=list)  # moved holders first, the new job last


@dataclass(frozen=True, slots=True)
class Trainer:
    """What ``reassign`` reads of the engine: its view of the config, forecast and book."""

    config: Config
    forecast: Forecast
    held: Callable[[Holder], float]  # units a booked job means to draw from its voucher
    start_of: Callable[[Holder], float]  # a booked job's start, epoch s
    down: Callable[[str, float], bool]  # whether a region is known to be down at a time

    def reassign(
        self,
        job: Job,
        now_s: float,
        holders: list[Holder],
        available: Mapping[str, float],
        prices: Mapping[str, float],
    ) -> Moves | None:
        """Training ``job`` and the booked ``holders`` placed together; None: place it alone.

        ``available``: voucher id -> units free now; ``prices``: the plan's voucher prices.
        Packages and capped vouchers, whose balance depends on the start, stay out of the
        search, and so do the jobs booked on them.
        """
        vouchers = {v.id: v for v in self.config.vouchers}
        plain = {vid for vid, v in vouchers.items() if v.period is None and v.daily_cap is None}
        movable = [h for h in holders if h.voucher is None or h.voucher in plain]
        balances = {vid: available.get(vid, 0.0) for vid in plain}
        for h in movable:
            if h.voucher is not None:
                balances[h.voucher] += self.held(h)  # may be more than the voucher holds
        balances = {vid: max(units, 0.0) for vid, units in balances.items()}
        infos = index_for(self.config).vouchers
        kept = [infos[vid] for vid in sorted(plain) if set(vouchers[vid].classes or ()) == {"training"}]
        ahead = prospects(self.forecast, kept, now_s=now_s)
        jobs = [h.job for h in movable] + [job]
        placed = assign_training(
            self.config, jobs, now_s=now_s, balances=balances, voucher_price=prices, prospects=ahead
        )
        if placed is None or placed.get(job.index) is None:
            return None
        moves = Moves()
        for h in movable:
            p = placed[h.job.index]
            if p is None:
                return None
            p = hold_start(self.config, h.job, p, until_s=self.forecast.end_s)
            if (p.region, p.voucher, p.start_s) != (h.region, h.voucher, self.start_of(h)):
                moves.unbook.append(h)
                moves.book.append((h.job, p))
        mine = hold_start(self.config, job, placed[job.index], until_s=self.forecast.end_s)  # type: ignore[arg-type]
        moves.book.append((job, mine))
        if any(self.down(p.region, max(p.start_s, now_s)) for _, p in moves.book):
            return None
        return moves
