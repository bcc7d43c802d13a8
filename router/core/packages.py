"""The live face of packages and daily caps: config voucher ids over ledger ids, and what a cap leaves today.

The chooser, the planner and the workloads speak of config vouchers; the ledger keeps a
package as one voucher per period (``router/ledger/packages.py``). ``VoucherView`` maps one
to the other at the Router's clock: the free balance of a package is its current instance's,
a hold draws on the current instance, and a settle finds the config voucher back.

A voucher with ``daily_cap`` pays at most that many units in one local day (of each request's
start). ``reserve`` takes the units of a hold against the day's cap before the ledger is
asked, synchronously, so concurrent requests of this process never pass the cap together; a
settle turns the held units into paid ones (what was settled), a void gives them back. The
day's paid units are read from the ledger's usage when the Router starts. (Across replicas of
one PostgreSQL ledger each replica counts its own requests: the cap then holds per replica.)
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from zoneinfo import ZoneInfo

from suanli.config import Config, Voucher
from suanli.optimizer import local_day
from suanli.router.ledger.packages import base_id, instance_id

__all__ = ["VoucherView"]


class VoucherView:
    """Config voucher ids over ledger ids, and the daily caps' tallies; one per Accounts."""

    def __init__(self, config: Config) -> None:
        self.tz = ZoneInfo(config.timezone)
        self.vouchers = {v.id: v for v in config.vouchers}
        self.active = any(v.period is not None or v.daily_cap is not None for v in config.vouchers)
        self._paid: dict[tuple[str, date], float] = defaultdict(float)  # (voucher, local day) -> units paid
        self._held: dict[tuple[str, date], float] = defaultdict(float)  # (voucher, local day) -> units held
        self._holds: dict[str, tuple[str, date, float]] = {}  # hold id -> (voucher, day, units taken)

    def voucher(self, ledger_id: str | None) -> Voucher | None:
        """The config voucher of a ledger voucher id."""
        return self.vouchers.get(base_id(ledger_id)) if ledger_id else None

    def ledger_id(self, voucher: Voucher, at: datetime) -> str:
        """The ledger voucher that pays for ``voucher`` at ``at``."""
        return instance_id(voucher, at, self.tz)

    def cap_left(self, voucher: Voucher, at: datetime) -> float:
        """Units ``voucher`` may still pay today under its ``daily_cap`` (inf without one)."""
        if voucher.daily_cap is None:
            return float("inf")
        day = local_day(at, self.tz)
        left = voucher.daily_cap - self._paid[(voucher.id, day)] - self._held[(voucher.id, day)]
        return max(left, 0.0)

    def free(self, available: Mapping[str, float], at: datetime) -> dict[str, float]:
        """Config voucher id -> units it may pay now: its current instance's, within today's cap."""
        out: dict[str, float] = {}
        for vid, voucher in self.vouchers.items():
            units = available.get(self.ledger_id(voucher, at), 0.0)
            out[vid] = min(units, self.cap_left(voucher, at))
        return out

    def take(self, hold_id_key: str, voucher: Voucher, units: float, at: datetime) -> bool:
        """Take ``units`` of today's cap for a hold about to be asked of the ledger; False: over the cap."""
        if voucher.daily_cap is None or units <= 0:
            return True
        if units > self.cap_left(voucher, at) + 1e-9:
            return False
        day = local_day(at, self.tz)
        self._held[(voucher.id, day)] += units
        self._holds[hold_id_key] = (voucher.id, day, units)
        return True

    def rekey(self, old: str, new: str) -> None:
        """The hold asked as ``old`` (its request id) is ``new`` on the ledger."""
        found = self._holds.pop(old, None)
        if found is not None:
            self._holds[new] = found

    def release(self, hold_id: str, paid: float = 0.0) -> None:
        """A hold settled (``paid`` units) or voided: its units leave the day's held tally."""
        found = self._holds.pop(hold_id, None)
        if found is None:
            return
        voucher_id, day, units = found
        self._held[(voucher_id, day)] = max(self._held[(voucher_id, day)] - units, 0.0)
        self._paid[(voucher_id, day)] += paid

    def keep_tallies(self, old: VoucherView) -> None:
        """A config reload: the caps' tallies so far carry over to the view of the new config."""
        self._paid, self._held, self._holds = old._paid, old._held, old._holds

    def count_paid(self, rows: Iterable[tuple[str | None, datetime, float]], at: datetime) -> None:
        """Add today's settled ``(ledger voucher id, start, units)`` rows (read when the Router starts)."""
        today = local_day(at, self.tz)
        for ledger_id, when, units in rows:
            voucher = self.voucher(ledger_id)
            if voucher is not None and voucher.daily_cap is not None and local_day(when, self.tz) == today:
                self._paid[(voucher.id, today)] += units
