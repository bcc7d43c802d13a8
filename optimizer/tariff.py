"""Time-of-use bands, the prompt-cache rule, package periods and daily caps (DESIGN.md).

The rules of "Payment semantics" that depend on *when* a request starts, pure functions of
the offer, the voucher, the instant and the time zone, for the live ledger, ``simulate``
and the planner alike (``payment`` re-exports them):

- ``price_factor``/``factor_at``: the offer's off-peak or band factor for a start;
- ``cache_hit``: whether a session's follow-up pays ``price.cached_input``;
- ``period_start``/``period_end``/``package_window``/``period_edges``: the local day, week
  (from Monday) or month (from the 1st) a package's balance belongs to;
- ``local_day``/``capped_balance``: what a voucher with ``daily_cap`` may still pay today.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, tzinfo

from suanli.config import Offer, Period, Voucher

__all__ = [
    "cache_hit",
    "capped_balance",
    "factor_at",
    "local_day",
    "package_window",
    "period_edges",
    "period_end",
    "period_start",
    "price_factor",
    "time_of_use",
]

_INF = float("inf")


_ALL_DAYS = frozenset(range(7))
# offer id -> (the offer, its time-of-use rules): compiled once per offer for the request path
_RULES: dict[int, tuple[Offer, tuple[tuple[frozenset[int], int, int, float], ...]]] = {}


def time_of_use(offer: Offer) -> tuple[tuple[frozenset[int], int, int, float], ...]:
    """The offer's time-of-use rules, ``(opening weekdays, begin minute, end minute, factor)``.

    ``off_peak`` is one rule on every day with ``factor = 1 - discount``; ``bands`` one rule
    each, in order. Empty: the price never changes with the time.
    """
    found = _RULES.get(id(offer))
    if found is not None and found[0] is offer:
        return found[1]
    if offer.off_peak is not None:
        begin, end = offer.off_peak.minutes()
        rules = ((_ALL_DAYS, begin, end, 1 - offer.off_peak.discount),)
    else:
        rules = tuple((b.weekdays(), *b.minutes(), b.factor) for b in offer.bands or ())
    if len(_RULES) > 4096:
        _RULES.clear()
    _RULES[id(offer)] = (offer, rules)
    return rules


def factor_at(offer: Offer, weekday: int, minute: int) -> float:
    """The price factor of a start on local ``weekday`` (0 = Monday) at local ``minute`` (0..1439).

    The first rule (``time_of_use``) whose window, opened on one of its days, holds the start;
    a window crossing midnight belongs to the day it opens (``22:00-06:00`` on ``fri`` holds
    Saturday 03:00, not Friday 03:00) and one with equal ends lasts 24 hours. None: 1.
    """
    for days, begin, end, factor in time_of_use(offer):
        if begin < end:
            if begin <= minute < end and weekday in days:
                return factor
        elif (minute >= begin and weekday in days) or (minute < end and (weekday - 1) % 7 in days):
            return factor
    return 1.0


def price_factor(offer: Offer, start: datetime, tz: tzinfo) -> float:
    """The time-of-use factor for a request starting at ``start`` (aware), local time in ``tz``."""
    if offer.off_peak is None and not offer.bands:
        return 1.0
    local = start.astimezone(tz)
    return factor_at(offer, local.weekday(), local.hour * 60 + local.minute)


def cache_hit(
    offer: Offer, *, region: str, model: str, start_s: float, previous: tuple[str, str, float] | None
) -> bool:
    """Whether a session's request pays its ``cached`` input at ``price.cached_input``.

    ``previous`` is ``(region, model, start epoch s)`` of the session's previous *served*
    request (start order, ties trace order), None for its first. A hit needs the same region
    and model, started at most ``offer.cache_ttl_s`` before this one (the edge included).
    """
    if previous is None:
        return False
    was_region, was_model, was_start = previous
    return was_region == region and was_model == model and 0.0 <= start_s - was_start <= offer.cache_ttl_s


def local_day(at: datetime, tz: tzinfo) -> date:
    """The local date of ``at``: the day a daily cap counts a request starting then in."""
    return at.astimezone(tz).date()


def _midnight(day: date, tz: tzinfo) -> datetime:
    # built from the wall clock, so a day of a daylight-saving change starts at its real midnight
    return datetime(day.year, day.month, day.day, tzinfo=tz)


def period_start(period: Period, at: datetime, tz: tzinfo) -> datetime:
    """Local 00:00 of the day, the Monday or the 1st of the month holding ``at``."""
    day = local_day(at, tz)
    if period == "week":
        day -= timedelta(days=day.weekday())
    elif period == "month":
        day = day.replace(day=1)
    return _midnight(day, tz)


def period_end(period: Period, start: datetime, tz: tzinfo) -> datetime:
    """The start of the period after the one starting at ``start`` (a ``period_start``)."""
    day = start.astimezone(tz).date()
    if period == "day":
        day += timedelta(days=1)
    elif period == "week":
        day += timedelta(days=7)
    else:
        day = date(day.year + day.month // 12, day.month % 12 + 1, 1)
    return _midnight(day, tz)


def package_window(voucher: Voucher, at: datetime, tz: tzinfo) -> tuple[float, float]:
    """``[from, to)`` epoch seconds of the voucher instance that pays at ``at``.

    Without ``period`` that is the validity; with one, the local period holding ``at``
    intersected with ``[valid_from, expires)``: each such instance holds ``amount`` afresh.
    """
    lo = voucher.valid_from.timestamp() if voucher.valid_from else -_INF
    hi = voucher.expires.timestamp() if voucher.expires else _INF
    if voucher.period is None:
        return lo, hi
    begin = period_start(voucher.period, at, tz)
    end = period_end(voucher.period, begin, tz)
    return max(lo, begin.timestamp()), min(hi, end.timestamp())


def period_edges(period: Period, start_s: float, end_s: float, tz: tzinfo) -> list[float]:
    """Epoch seconds of every local period start strictly inside ``(start_s, end_s)``."""
    out: list[float] = []
    edge = period_end(period, period_start(period, datetime.fromtimestamp(start_s, UTC), tz), tz)
    while edge.timestamp() < end_s:
        if edge.timestamp() > start_s:
            out.append(edge.timestamp())
        edge = period_end(period, edge, tz)
    return out


def capped_balance(voucher: Voucher, balance: float, paid_today: float) -> float:
    """What ``voucher`` may pay now: ``balance``, or less under its ``daily_cap``.

    ``paid_today`` is the units it already paid this local day (of each request's start);
    ``voucher_pays`` with this balance pays ``min(what it would pay, cap - paid today)``.
    """
    if voucher.daily_cap is None:
        return balance
    return max(min(balance, voucher.daily_cap - paid_today), 0.0)
