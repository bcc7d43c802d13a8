"""Slot edges of the planning horizon: where prices, vouchers or the hour change.

A slot is a half-open interval ``[edges[k], edges[k + 1])`` of epoch seconds. Edges fall
on every off-peak window and time-of-use band edge (local time), every voucher validity
edge, every local period start of a package (day, Monday, the 1st) and local midnight for a
voucher with a daily cap, and every clock hour, and no slot is longer than ``max_slot_s``:
inside one slot each offer's price, each voucher's validity and each package's period are
constant, which is what lets the LP treat a slot as one unit.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from suanli.config import Config
from suanli.optimizer.tariff import period_edges

__all__ = ["local_minute", "slot_edges", "slot_index"]

_HOUR_S = 3600.0


def local_minute(epoch_s: float, tz: ZoneInfo) -> int:
    """Minute of the local day (0..1439) at ``epoch_s``."""
    moment = datetime.fromtimestamp(epoch_s, UTC).astimezone(tz)
    return moment.hour * 60 + moment.minute


def _window_edges(config: Config) -> set[int]:
    # minute-of-day of every off-peak window edge of every offer
    out: set[int] = set()
    for region in config.regions:
        for offer in region.models:
            if offer.off_peak is not None:
                begin, end = offer.off_peak.minutes()
                out.update({begin % 1440, end % 1440})
            for band in offer.bands or ():
                begin, end = band.minutes()
                out.update({begin % 1440, end % 1440})
    return out


def _local_day_edges(start_s: float, end_s: float, minutes: set[int], tz: ZoneInfo) -> list[float]:
    if not minutes:
        return []
    out: list[float] = []
    day = datetime.fromtimestamp(start_s, UTC).astimezone(tz).date() - timedelta(days=1)
    while True:
        midnight = datetime(day.year, day.month, day.day, tzinfo=tz)
        if midnight.timestamp() > end_s:
            return out
        for minute in minutes:
            # Build from the wall clock, not midnight + offset, so a DST day stays right.
            wall = datetime(day.year, day.month, day.day, minute // 60, minute % 60, tzinfo=tz)
            edge = wall.timestamp()
            if start_s < edge < end_s:
                out.append(edge)
        day += timedelta(days=1)


def slot_edges(
    config: Config, start_s: float, end_s: float, *, max_slot_s: float | None = None
) -> tuple[float, ...]:
    """Sorted slot edges covering ``[start_s, end_s]`` (epoch seconds), both ends included."""
    if end_s <= start_s:
        return (start_s, start_s + 60.0)
    tz = ZoneInfo(config.timezone)
    limit = min(max_slot_s or config.planner.max_slot_s, _HOUR_S)
    edges = {start_s, end_s}
    edges.update(_local_day_edges(start_s, end_s, _window_edges(config), tz))
    for voucher in config.vouchers:
        for moment in (voucher.valid_from, voucher.expires):
            if moment is not None and start_s < moment.timestamp() < end_s:
                edges.add(moment.timestamp())
        periods = {voucher.period} - {None} | ({"day"} if voucher.daily_cap is not None else set())
        for period in periods:
            edges.update(period_edges(period, start_s, end_s, tz))  # type: ignore[arg-type]
    hour = math.floor(start_s / _HOUR_S + 1) * _HOUR_S
    while hour < end_s:
        edges.add(hour)
        hour += _HOUR_S
    ordered = sorted(edges)
    out = [ordered[0]]
    for edge in ordered[1:]:
        gap = edge - out[-1]
        if gap < 1e-6:
            continue
        pieces = math.ceil(gap / limit - 1e-9)
        base = out[-1]
        out.extend(base + k * gap / pieces for k in range(1, pieces))
        out.append(edge)
    return tuple(out)


def slot_index(edges: Sequence[float], epoch_s: float) -> int:
    """Index of the slot holding ``epoch_s``, clamped to the first and last slot."""
    k = bisect_right(edges, epoch_s) - 1
    return min(max(k, 0), len(edges) - 2)
