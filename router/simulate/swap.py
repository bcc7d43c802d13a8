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
from suanli.optimizer.packages import expand_packages, owner_of
from suanli.optimizer.prospects import prospects
from suanli.optimizer.training import assign_training, hold_start, training_only

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
        Packages and capped vouchers are searched as one plain voucher per instance
        (``expand_packages``): the one in force now holds what is free of it, a later one
        its fresh amount.
        """
        jobs = [h.job for h in holders] + [job]
        config, balances = expand_packages(self.config, now_s, max(j.latest_s for j in jobs) + 1.0, available)
        infos = index_for(config).vouchers
        for h in holders:
            if h.voucher is not None:
                at = self.start_of(h)
                # what it would draw is free again; a later instance was counted fresh, without it
                iid = next(
                    (i for i, v in infos.items() if owner_of(i) == h.voucher and v.from_s <= at < v.to_s),
                    None,
                )
                if iid in balances and (iid == h.voucher or infos[iid].from_s <= now_s):
                    balances[iid] += self.held(h)  # type: ignore[index]  # may be more than it holds
        balances = {iid: max(units, 0.0) for iid, units in balances.items()}
        training = training_only(self.config)
        kept = [info for iid, info in sorted(infos.items()) if owner_of(iid) in training]
        ahead = prospects(self.forecast, kept, now_s=now_s)
        priced = {iid: prices.get(owner_of(iid), 0.0) for iid in infos}
        placed = assign_training(
            config, jobs, now_s=now_s, balances=balances, voucher_price=priced, prospects=ahead
        )
        if placed is None or placed.get(job.index) is None or None in placed.values():
            return None
        moves = Moves()
        for h in holders:
            p = self._named(config, h.job, placed[h.job.index], training)  # type: ignore[arg-type]
            if (p.region, p.voucher, p.start_s) != (h.region, h.voucher, self.start_of(h)):
                moves.unbook.append(h)
                moves.book.append((h.job, p))
        moves.book.append((job, self._named(config, job, placed[job.index], training)))  # type: ignore[arg-type]
        if any(self.down(p.region, max(p.start_s, now_s)) for _, p in moves.book):
            return None
        return moves

    def _named(self, config: Config, job: Job, placed: Placement, training: frozenset[str]) -> Placement:
        # Named by its voucher; on a voucher only training may use, held as late as costs
        # nothing within its instance. Other classes draw a shared voucher meanwhile, in
        # their start order: a job held past their starts got less of it than it booked.
        owner = owner_of(placed.voucher) if placed.voucher else None
        if owner in training:
            placed = hold_start(config, job, placed, until_s=self.forecast.end_s)
        return Placement(placed.region, placed.offer, placed.start_s, owner, placed.tokens)
