"""Packages on the ledger: a voucher with ``period`` is one ledger voucher per local period.

DESIGN.md: a package "behaves as one voucher per local period (day; week from Monday;
month from the 1st; each from 00:00 local) intersected with [valid_from, expires), each
holding amount; what is left at a period's end is lost". So the ledger keeps exactly that:
``{id}@{YYYY-MM-DD}`` (the period's first local day) for each period from the one before now
to ``HORIZON_DAYS`` ahead, each an ordinary voucher valid for its period alone. Holds and
settles need nothing new (an instance's balance never goes below zero, whatever the
concurrency, on SQLite and PostgreSQL alike), a new period starts paying at local midnight
without a restart, and an ended instance's balance is what its period lost. Instances
beyond the horizon are added at the next start.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from suanli.config import Config, Voucher
from suanli.config.schema import Period
from suanli.optimizer import package_window, period_end, period_start

__all__ = ["HORIZON_DAYS", "base_id", "instance_id", "is_instance", "ledger_vouchers"]

HORIZON_DAYS = 400  # periods kept ahead on the ledger (a process running longer picks more up when restarted)


def instance_id(voucher: Voucher, at: datetime, tz: ZoneInfo) -> str:
    """The ledger id of the package instance that pays at ``at`` (the voucher's own id without a period)."""
    if voucher.period is None:
        return voucher.id
    return f"{voucher.id}@{period_start(voucher.period, at, tz).date().isoformat()}"


def is_instance(ledger_id: str) -> bool:
    return "@" in ledger_id


def base_id(ledger_id: str) -> str:
    """The config voucher id of a ledger voucher id (an instance's package)."""
    return ledger_id.split("@", 1)[0]


def _instances(voucher: Voucher, period: Period, now: datetime, tz: ZoneInfo) -> Iterator[Voucher]:
    first = period_start(period, now, tz)
    first = period_start(period, first - timedelta(seconds=1), tz)  # the period before: its loss is reported
    if voucher.valid_from is not None:
        first = max(first, period_start(period, voucher.valid_from, tz))
    last = now + timedelta(days=HORIZON_DAYS)
    if voucher.expires is not None:
        last = min(last, voucher.expires)
    start = first
    while start < last:
        lo, hi = package_window(voucher, start, tz)
        if hi > lo:
            yield voucher.model_copy(update={
                "id": instance_id(voucher, start, tz),
                "valid_from": datetime.fromtimestamp(lo, tz),
                "expires": datetime.fromtimestamp(hi, tz),
                "period": None,
            })
        start = period_end(period, start, tz)


def ledger_vouchers(config: Config, now: datetime) -> list[Voucher]:
    """The vouchers the ledger keeps for ``config`` at ``now``: packages as their period instances."""
    tz = ZoneInfo(config.timezone)
    out: list[Voucher] = []
    for voucher in config.vouchers:
        if voucher.period is None:
            out.append(voucher)
        else:
            out.extend(_instances(voucher, voucher.period, now, tz))
    return out
