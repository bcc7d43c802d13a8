"""The per-request chooser: eligible regions ranked by what they cost.

``rank(config, ask, state, now)`` is the interface the proxy and ``simulate`` call on the
request path: no I/O, no clock, no solver. The first option is the choice; the rest are
the fail-over order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from config import Capability, Config, Offer, Region, Voucher, WorkClass, Zone
from optimizer.payment import Charge, charge, off_peak_active, voucher_usable

__all__ = ["Ask", "Option", "State", "eligible", "rank"]


@dataclass(frozen=True, slots=True)
class Ask:
    """One request as the chooser sees it; token counts are reference tokens."""

    model: str
    work_class: WorkClass
    origin: Zone
    input_tokens: float
    output_tokens: float
    capability: Capability = "chat"
    pinned_region: str | None = None
    allowed_regions: frozenset[str] | None = None
    excluded: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class State:
    """What the chooser knows of the world right now."""

    balances: Mapping[str, float]  # voucher id -> remaining units (tokens or yuan)
    latency_ms: Mapping[str, float] = field(default_factory=dict)  # region id -> measured ttft + rtt
    blocked: frozenset[str] = frozenset()  # regions down, ejected or at their limits now


@dataclass(frozen=True, slots=True)
class Option:
    """One way to serve a request: where, with which voucher, at what cost."""

    region: Region
    offer: Offer
    voucher: Voucher | None
    off_peak: bool
    charge: Charge
    score: float


def eligible(config: Config, ask: Ask, state: State) -> list[tuple[Region, Offer]]:
    """Regions that offer the model, have the capability, meet the class's latency rule."""
    out: list[tuple[Region, Offer]] = []
    slo_ms = config.classes.interactive.latency_slo_ms
    for region in config.regions:
        if ask.pinned_region is not None and region.id != ask.pinned_region:
            continue
        if ask.allowed_regions is not None and region.id not in ask.allowed_regions:
            continue
        if region.id in ask.excluded or region.id in state.blocked:
            continue
        if ask.capability not in region.capabilities and not _implied(ask.capability, region):
            continue
        offer = region.offer(ask.model)
        if offer is None:
            continue
        if ask.work_class == "interactive":
            latency = state.latency_ms.get(region.id)
            if latency is None:
                latency = region.latency_ms(ask.origin)
            if latency > slo_ms:
                continue
        out.append((region, offer))
    return out


def _implied(capability: Capability, region: Region) -> bool:
    # A chat platform serves the legacy completions endpoint too.
    return capability == "completions" and "chat" in region.capabilities


def rank(config: Config, ask: Ask, state: State, now: datetime) -> list[Option]:
    """Eligible options, cheapest cash first (the ``greedy`` policy of DESIGN.md)."""
    tz = ZoneInfo(config.timezone)
    options: list[Option] = []
    for region, offer in eligible(config, ask, state):
        off_peak = off_peak_active(offer, now, tz)
        best: Option | None = None
        for voucher in (None, *_usable(config, region.id, ask, now)):
            balance = state.balances.get(voucher.id, 0.0) if voucher else 0.0
            if voucher is not None and balance <= 0:
                continue
            cost = charge(
                offer,
                input_tokens=ask.input_tokens,
                output_tokens=ask.output_tokens,
                work_class=ask.work_class,
                off_peak=off_peak,
                voucher=voucher,
                balance=balance,
            )
            option = Option(region, offer, voucher, off_peak, cost, cost.cash_yuan)
            if best is None or option.score < best.score:
                best = option
        if best is not None:
            options.append(best)
    options.sort(key=lambda o: (o.score, o.region.latency_ms(ask.origin)))
    return options


def _usable(config: Config, region_id: str, ask: Ask, now: datetime) -> list[Voucher]:
    return [
        v
        for v in config.vouchers
        if voucher_usable(v, region=region_id, model=ask.model, work_class=ask.work_class, at=now)
    ]
