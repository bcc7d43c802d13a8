"""Training jobs that may still come: how likely each is before each voucher expires.

A voucher only training may use is worth what the training jobs that arrive before it
expires save with it, and training jobs are few and large: the LP's shadow price, which
treats the forecast's expected tokens as certain and divisible, kept a 1.3 M-token voucher
from a job in hand for a second job the forecast half expected (random day 12: the job paid
12.58 yuan in cash and 900 k tokens expired unspent). Here the forecast's expected count
``mu`` of a kind of training job before a time becomes Poisson chances: the ``k``-th
prospect of a kind comes at all with ``P(N >= k)``, and in time for a voucher expiring at
``e`` with ``P(N(e) >= k)``. Each prospect has the kind's mean start window; its price
factor is the least one its window may reach, averaged over when it may arrive.

Its size is not the kind's mean but one of ``SPREAD`` times it, equally likely: the spread of
sizes is what a few sightings cannot tell, and what a voucher's leftover is worth hangs on it.
At the mean alone, 500 k tokens left of a training voucher were worth nothing to a 1.3 M-token
prospect (the rest paid at that region's list price is dearer than cash elsewhere), so a
1.7 M-token job in hand paid 12.58 yuan in cash to keep the voucher whole for it (random day
12); half to one and a half times the mean would fit there, and smaller jobs fit the leftover.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from suanli.config import Offer
from suanli.optimizer.forecast import Forecast
from suanli.optimizer.index import ConfigIndex, VoucherInfo
from suanli.optimizer.snapshot import Job

__all__ = ["SPREAD", "Prospect", "mean_factor", "prospects"]

# A prospect's size, as multiples of its kind's mean, equally likely: the midpoints of four
# quarters of [0, 2 x mean], a uniform spread (coefficient of variation 0.58) about the mean.
SPREAD = (0.25, 0.75, 1.25, 1.75)

_MIN_CHANCE = 0.1  # a prospect less likely than this is left out
_PER_KIND = 3  # prospects of one kind at most
_ARRIVALS = 24  # arrival times a prospect's price factor is averaged over
_STEP_S = 600.0  # grid of the least factor in a prospect's window


@dataclass(frozen=True, slots=True)
class Prospect:
    """A training job that may come: its shape and its chances (see the module docstring)."""

    job: Job  # arriving now (an index below 0), with the kind's mean size and window
    chance: float  # that it comes before the forecast's end
    by_voucher: Mapping[str, float]  # voucher id -> chance it comes before the voucher expires
    end_s: float  # the forecast's end: it arrives before then
    sizes: tuple[float, ...] = ()  # input tokens it may have, equally likely (``SPREAD`` x the mean)


def prospects(forecast: Forecast, vouchers: Sequence[VoucherInfo], *, now_s: float) -> list[Prospect]:
    """The likeliest training prospects of each kind the forecast knows, from ``now_s`` to its end."""
    end_s = forecast.end_s
    out: list[Prospect] = []
    if end_s <= now_s:
        return out
    for n, (kind, input_tokens, window_s) in enumerate(forecast.sizes("training")):
        mu = forecast.arrivals(kind, now_s, end_s, now_s)
        # arrivals expected before each voucher expires (or the end)
        until = {
            v.id: forecast.arrivals(kind, now_s, min(v.to_s, end_s), now_s)
            for v in vouchers
            if v.to_s > now_s
        }
        for k in range(1, _PER_KIND + 1):
            chance = _at_least(k, mu)
            if chance < _MIN_CHANCE:
                break
            job = Job(
                index=-(n * _PER_KIND + k),
                arrival_s=now_s,
                latest_s=now_s + window_s,
                model=kind[2],
                work_class="training",
                origin=kind[1],
                input_tokens=input_tokens,
                output_tokens=0.0,
            )
            by_voucher = {vid: _at_least(k, count) for vid, count in until.items()}
            sizes = tuple(input_tokens * f for f in SPREAD)
            out.append(Prospect(job, chance, by_voucher, end_s, sizes))
    return sorted(out, key=lambda p: (-p.chance, -p.job.index))


def mean_factor(index: ConfigIndex, offer: Offer, prospect: Prospect) -> float:
    """The least time-of-use factor a prospect's window reaches, averaged over its arrival."""
    job = prospect.job
    if offer.off_peak is None and not offer.bands:
        return 1.0
    begin, end = job.arrival_s, max(prospect.end_s, job.arrival_s + _STEP_S)
    window = max(job.latest_s - job.arrival_s, 0.0)
    cells = math.ceil((end - begin + window) / _STEP_S) + 1
    grid = [index.factor(offer, begin + n * _STEP_S) for n in range(cells)]
    span = int(window // _STEP_S) + 1
    total = 0.0
    for a in range(_ARRIVALS):
        first = int((end - begin) * (a + 0.5) / _ARRIVALS // _STEP_S)
        total += min(grid[first : first + span])
    return total / _ARRIVALS


def _at_least(k: int, mu: float) -> float:
    # P(N >= k) for N ~ Poisson(mu)
    if mu <= 0:
        return 0.0
    term, below = math.exp(-mu), 0.0
    for i in range(k):
        below += term
        term *= mu / (i + 1)
    return max(1.0 - below, 0.0)
