"""Reconciliation: the platforms' own balances against what the ledger says should be left.

Per region with a ``balance:`` block and per unit kept apart (``cash_yuan``, ``granted_yuan``,
``tokens``), a *baseline* figure starts the count (the first figure read or typed, or one
recorded with ``--baseline`` after a top-up). What should be left is then

    expected(t) = baseline - spent(unit, baseline.at, t)

with ``spent`` the ledger's usage rows at the region: ``cash_yuan`` their cash, ``granted_yuan``
what yuan vouchers (credit, discount) paid, ``tokens`` the units token vouchers paid. The
drift is ``platform - expected``; it is flagged when ``|drift|`` exceeds both ``min_drift``
and ``drift_share x |expected|``. An API region is read every ``reconcile.interval_s``; a
``manual`` one is compared at the time of its newest typed figure. A failed query shows the
region as ``unknown`` (its figures None, never 0) and changes nothing else: no region is
disabled for it.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

import aiohttp

from suanli.config import Config, Region
from suanli.providers.balance import BalanceQueryError, PlatformBalance, query_balance
from suanli.router.ledger.figures import UNITS, Figure, RegionSpend
from suanli.router.ledger.port import AsyncLedger
from suanli.router.status.periodic import repeat

__all__ = ["Fetch", "Reconciler", "RegionCheck", "UnitCheck", "record_manual"]

log = logging.getLogger("suanli.reconcile")

Fetch = Callable[[aiohttp.ClientSession, Region, str | None], Awaitable[PlatformBalance]]


@dataclass(slots=True)
class UnitCheck:
    """One unit of one region: the platform's figure, the ledger's expectation, the drift."""

    unit: str
    platform: float | None  # None: unknown (the query failed), never 0 for it
    expected: float | None
    drift: float | None
    drift_share: float | None
    baseline: float | None
    baseline_at: str | None
    flagged: bool = False


@dataclass(slots=True)
class RegionCheck:
    """A region's latest reconciliation. ``state``: ok | drift | unknown | baseline | manual_only."""

    region: str
    source: str
    state: str
    checked_at: str | None
    error: str | None = None
    failures: int = 0  # failed queries in a row
    last_ok_at: str | None = None
    units: dict[str, UnitCheck] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def _iso(epoch_s: float | None) -> str | None:
    return None if epoch_s is None else datetime.fromtimestamp(epoch_s, UTC).isoformat()


async def record_manual(
    ledger: AsyncLedger, region: str, amounts: dict[str, float], *, at: float, baseline: bool, note: str = ""
) -> list[Figure]:
    """Record figures an operator typed (``suanli vouchers set-balance``), one per unit given.

    A unit with no baseline yet takes this figure as its baseline.
    """
    known = {f.unit for f in await ledger.figures() if f.region == region and f.baseline}
    rows = [
        Figure(secrets.token_hex(8), region, at, "manual", unit, float(amount), first, note)
        for unit, amount in amounts.items()
        for first in (baseline or unit not in known,)
    ]
    await ledger.record_figures(rows)
    return rows


class Reconciler:
    """Reads each region's platform balance, compares it with the ledger, keeps the latest checks."""

    def __init__(
        self,
        config: Config,
        ledger: Callable[[], AsyncLedger | None],
        *,
        base_url: Callable[[str], str | None],
        clock: Callable[[], datetime],
        fetch: Fetch = query_balance,
        on_check: Callable[[RegionCheck], None] | None = None,
        leads: Callable[[], bool] = lambda: True,
    ) -> None:
        self.config = config
        self._ledger = ledger
        self._base_url = base_url
        self._clock = clock
        self._fetch = fetch
        self._on_check = on_check
        self._leads = leads  # on a shared ledger only the leading replica reconciles in the background
        self.checks: dict[str, RegionCheck] = {}  # region id -> its latest check
        self._kinds = {v.id: v.kind for v in config.vouchers}
        self._task: asyncio.Task | None = None
        self._session: aiohttp.ClientSession | None = None

    def ledger(self) -> AsyncLedger:
        """The open ledger; RuntimeError before the Router started."""
        ledger = self._ledger()
        if ledger is None:
            raise RuntimeError("the ledger is not open")
        return ledger

    def now_s(self) -> float:
        return self._clock().timestamp()

    @property
    def regions(self) -> list[Region]:
        """Regions with a ``balance:`` block."""
        return [r for r in self.config.regions if r.balance is not None]

    def start(self) -> None:
        """Reconcile every ``reconcile.interval_s`` in the background (nothing to do: no task)."""
        if self.regions and self._task is None:
            self._task = asyncio.create_task(self._loop(), name="suanli-reconcile")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _loop(self) -> None:
        await repeat(self.run_once, every_s=lambda: self.config.reconcile.interval_s, leads=self._leads,
                     log=log, what="reconciliation pass")

    async def run_once(self) -> list[RegionCheck]:
        """One pass over every region with a ``balance:`` block; the checks, also kept in ``checks``."""
        ledger = self._ledger()
        if ledger is None:
            return []
        if self._session is None:
            self._session = aiohttp.ClientSession()
        figures = await ledger.figures()
        out = []
        for region in self.regions:
            check = await self._check(ledger, region, [f for f in figures if f.region == region.id])
            self.checks[region.id] = check
            out.append(check)
            if self._on_check is not None:
                self._on_check(check)
        return out

    async def _check(self, ledger: AsyncLedger, region: Region, figures: list[Figure]) -> RegionCheck:
        source = region.balance.api if region.balance is not None else "manual"
        now = self._clock().timestamp()
        previous = self.checks.get(region.id)
        baselines: dict[str, Figure] = {}
        for f in figures:  # oldest first: the newest baseline per unit wins
            if f.baseline:
                baselines[f.unit] = f
        if source == "manual":
            return await self._check_manual(ledger, region, figures, baselines, now)
        try:
            found = await self._fetch(self._session, region, self._base_url(region.id))  # type: ignore[arg-type]
        except BalanceQueryError as exc:
            failures = (previous.failures if previous else 0) + 1
            log.warning("balance of %s unknown: %s", region.id, exc.message)
            units = {u: UnitCheck(u, None, None, None, None, None, None) for u in UNITS}
            return RegionCheck(region.id, source, "unknown", _iso(now), exc.message, failures,
                               previous.last_ok_at if previous else None, units)
        fresh = [
            Figure(secrets.token_hex(8), region.id, now, "api", unit, amount, True, "first reading")
            for unit, amount in found.figures.items()
            if unit not in baselines
        ]
        if fresh:
            await ledger.record_figures(fresh)
            baselines.update({f.unit: f for f in fresh})
        units = {}
        for unit, amount in found.figures.items():
            units[unit] = await self._unit(ledger, region.id, unit, amount, baselines[unit], now)
        state = "drift" if any(u.flagged for u in units.values()) else ("baseline" if fresh else "ok")
        return RegionCheck(region.id, source, state, _iso(now), None, 0, _iso(now), units)

    async def _check_manual(
        self,
        ledger: AsyncLedger,
        region: Region,
        figures: list[Figure],
        baselines: dict[str, Figure],
        now: float,
    ) -> RegionCheck:
        units = {}
        for unit, base in baselines.items():
            readings = [f for f in figures if f.unit == unit and not f.baseline and f.at > base.at]
            if readings:
                latest = readings[-1]
                units[unit] = await self._unit(ledger, region.id, unit, latest.amount, base, latest.at)
            else:
                expected = await self._expected(ledger, region.id, unit, base, now)
                units[unit] = UnitCheck(unit, None, expected, None, None, base.amount, _iso(base.at))
        readings_at = [f.at for f in figures if not f.baseline]
        state = "drift" if any(u.flagged for u in units.values()) else ("ok" if readings_at else "baseline")
        if not baselines:
            state = "unknown"
        checked = _iso(max(readings_at)) if readings_at else None
        return RegionCheck(region.id, "manual", state, checked, None, 0, checked, units)

    async def _unit(
        self, ledger: AsyncLedger, region: str, unit: str, platform: float, base: Figure, at: float
    ) -> UnitCheck:
        expected = await self._expected(ledger, region, unit, base, at)
        drift = platform - expected
        settings = self.config.reconcile
        share = abs(drift) / abs(expected) if expected else None
        flagged = abs(drift) > settings.min_drift and abs(drift) > settings.drift_share * abs(expected)
        return UnitCheck(unit, platform, expected, drift, share, base.amount, _iso(base.at), flagged)

    async def _expected(self, ledger: AsyncLedger, region: str, unit: str, base: Figure, at: float) -> float:
        spend = await ledger.spend_between(region, base.at, at)
        return base.amount - self._spent(spend, unit)

    def _spent(self, spend: RegionSpend, unit: str) -> float:
        if unit == "cash_yuan":
            return spend.cash_yuan
        paid = (spend.vouchers or {}).items()
        if unit == "tokens":
            return sum(units for vid, (units, _) in paid if self._kinds.get(vid) == "tokens")
        return sum(yuan for vid, (_, yuan) in paid if self._kinds.get(vid) in ("credit", "discount"))

    def report(self) -> list[dict]:
        """The latest check of every region with a ``balance:`` block, JSON-ready (never-checked: unknown)."""
        out = []
        for region in self.regions:
            check = self.checks.get(region.id)
            if check is None:
                source = region.balance.api if region.balance is not None else "manual"
                check = RegionCheck(region.id, source, "unknown", None, "not checked yet")
            out.append(check.as_dict())
        return out
