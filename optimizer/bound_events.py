"""What the trace's outages and price spikes do to the bound's per-request minimum.

``optimizer.bound`` takes, per request, the least relaxed value over its columns (region,
slot, payment). A policy that learns an event only at its time cannot start a request at a
region while it is down, and pays a spike's factor on every start inside it; it can only go
elsewhere or at another time, which the minimum already weighs. So, per request and column,
over the starts the request may take in the column's slot (``[max(arrival, slot start),
min(latest, slot end)]``):

- every one of them inside an outage of the region: the column is not available;
- otherwise the cash of the column is multiplied by the least product of the spike factors
  (> 1) active at one of those starts: no start in the slot pays less.

A spike raises a column's cash exactly by its factor (cash, and the part of a discount
voucher left to pay, scale with the list cost; a covering ``tokens`` or ``credit`` voucher
leaves no cash), and its voucher draw at least as much: leaving the draw unscaled keeps the
value below the truth (prices >= 0). Price *cuts* are not here: the bound's config applies
them all day (``router.simulate.shocks``).

A voucher cut of ``A`` units at ``t`` takes only what is left then, so no row "balance - A"
holds. With ``x`` the units drawn by starts before ``t``, ``y`` those from ``t`` on, ``B`` the
most the voucher can hold before ``t`` (its amount and the top-ups before ``t``) and ``T`` the
top-ups from ``t`` on: ``y <= T + max(0, B - A - x)``, a region that is not convex; its convex hull
(``x`` in ``[0, B]``) gives the valid row ``y + x * K / B <= T + K``, ``K = max(0, B - A)``
(``cut_row``). A draw whose start may fall before ``t`` counts as one before it (the lower
weight: the row still holds).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Cut", "Window", "cut_row", "event_factors"]


@dataclass(frozen=True, slots=True)
class Window:
    """A known event over ``[from_s, until_s)`` (epoch seconds): a region down, or a price spike."""

    region: str
    from_s: float
    until_s: float
    factor: float | None = None  # None: the region is down; else > 1, on ``model`` (None: every model)
    model: str | None = None


@dataclass(frozen=True, slots=True)
class Cut:
    """A cut of ``amount`` units of a voucher (no package, no daily cap) at ``at_s``."""

    voucher: str
    at_s: float
    amount: float
    later: float = 0.0  # units topped up from ``at_s`` on (one at ``at_s`` may come after the cut)


def cut_row(cut: Cut, balance: float) -> tuple[float, float]:
    """The weight of a draw that may start before the cut, and the row's right-hand side.

    ``balance``: the most the voucher may hold over the day, every top-up added.
    """
    before = max(balance - cut.later, 0.0)
    left = max(before - cut.amount, 0.0)
    return (left / before if before > 0 else 0.0), cut.later + left


def event_factors(
    windows: Sequence[Window],
    model: str,
    places: Sequence[tuple[str, int]],
    edges: Sequence[float],
    arrivals: np.ndarray,
    latest: np.ndarray,
) -> np.ndarray | None:
    """Per request x (unserved, *places*): the factor on the column's cash, ``inf`` where it is down.

    ``places`` are the columns' (region, slot); ``arrivals``/``latest`` the requests' start
    windows. ``None`` when no window touches any column (every factor 1).
    """
    out = None
    for j, (region, slot) in enumerate(places, start=1):
        down = [w for w in windows if w.region == region and w.factor is None]
        spikes = [
            w for w in windows if w.region == region and w.factor is not None and w.model in (None, model)
        ]
        if not down and not spikes:
            continue
        lo = np.maximum(arrivals, edges[slot])
        hi = np.minimum(latest, edges[slot + 1])
        factor = _least_factor(spikes, lo, hi) if spikes else np.ones(lo.shape)
        if down:
            factor[_covered(down, lo, hi)] = math.inf
        if out is None:
            out = np.ones((arrivals.size, len(places) + 1))
        out[:, j] = factor
    return out


def _at(spikes: Sequence[Window], at: np.ndarray) -> np.ndarray:
    # the product of the factors active at each start in ``at``
    out = np.ones(at.shape)
    for w in spikes:
        out *= np.where((w.from_s <= at) & (at < w.until_s), w.factor, 1.0)
    return out


def _least_factor(spikes: Sequence[Window], lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    # The product is constant between the windows' ends and holds from each end on: its least
    # over [lo, hi] is at lo or at an end inside (lo, hi].
    out = _at(spikes, lo)
    for end in sorted({e for w in spikes for e in (w.from_s, w.until_s) if math.isfinite(e)}):
        there = float(_at(spikes, np.array([end]))[0])
        inside = (lo < end) & (end <= hi)
        out = np.where(inside, np.minimum(out, there), out)
    return out


def _covered(down: Sequence[Window], lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    # whether all of [lo, hi] lies inside one run of overlapping or touching outages
    runs: list[list[float]] = []
    for w in sorted(down, key=lambda w: w.from_s):
        if runs and w.from_s <= runs[-1][1]:
            runs[-1][1] = max(runs[-1][1], w.until_s)
        else:
            runs.append([w.from_s, w.until_s])
    out = np.zeros(lo.shape, dtype=bool)
    for start, end in runs:
        out |= (start <= lo) & (hi < end)
    return out
