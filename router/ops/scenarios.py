"""The what-if scenarios: the default set, a scenario file, and a programme's voucher.

A scenario file (YAML or JSON) holds ``scenarios:``, a list of entries, each with a ``name``
and any of: ``events`` (DESIGN.md event lines, taken as they are), ``vouchers`` (config
vouchers added), ``programme`` (the voucher a programme of ``programmes.yaml`` would give),
and the shorthands the default set is built from:

- ``voucher_cut: {share: 0.5, at_h: 0, vouchers: [ids]}``: each voucher (default: all)
  loses ``share`` of its balance at ``at_h`` hours after the trace start;
- ``region_down: {region: busiest | ID, hours: 6, at_h: null}``: the region is out for
  ``hours`` (``at_h`` null: the window where it served the most requests);
- ``price_spike: {zone: east | region: ID, factor: 2, windows: ["09:00-12:00", ...]}``: list
  prices times ``factor`` in those local windows, every day of the trace (default: DeepSeek's
  peak hours, 09:00-12:00 and 14:00-18:00, facts.md section 5);
- ``bonus: {share_of_month: 0.1 | amount_yuan: N, region: ID}``: a credit voucher of that
  many yuan at the region (default: where the team pays the most cash).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from suanli.config import Config, Voucher
from suanli.config.programmes import Programme, Programmes
from suanli.router.ops.whatif import Scenario

__all__ = ["PEAK_WINDOWS", "Traffic", "default_scenarios", "load_scenarios", "programme_voucher"]

_LONGEST_WAIT_S = 2 * 86400.0  # a bonus stays valid this long past the period (its deferred work)
PEAK_WINDOWS = ("09:00-12:00", "14:00-18:00")  # DeepSeek's peaks, Beijing time (facts.md section 5)


@dataclass(frozen=True, slots=True)
class Traffic:
    """What the scenarios are sized on: the exported trace's span, where and when it went."""

    start: datetime
    span_s: float
    offsets_s: Sequence[float]  # request -> t
    regions: Sequence[str]  # request -> where the ledger served it
    cash: Sequence[float]  # request -> cash the ledger recorded
    last_month_cash_yuan: float  # the team's cash over the 30 days before the trace ends


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class VoucherCut(_Strict):
    share: float = Field(gt=0, le=1)
    at_h: float = Field(default=0.0, ge=0)
    vouchers: tuple[str, ...] | None = None


class RegionDown(_Strict):
    region: str = "busiest"
    hours: float = Field(gt=0)
    at_h: float | None = Field(default=None, ge=0)


class PriceSpike(_Strict):
    zone: Literal["east", "west"] | None = None
    region: str | None = None
    factor: float = Field(ge=0)
    windows: tuple[str, ...] = PEAK_WINDOWS


class Bonus(_Strict):
    share_of_month: float | None = Field(default=None, gt=0)
    amount_yuan: float | None = Field(default=None, ge=0)
    region: str | None = None


class ScenarioSpec(_Strict):
    name: str = Field(min_length=1)
    note: str = ""
    events: tuple[dict, ...] = ()
    vouchers: tuple[Voucher, ...] = ()
    programme: str | None = None
    voucher_cut: VoucherCut | None = None
    region_down: RegionDown | None = None
    price_spike: PriceSpike | None = None
    bonus: Bonus | None = None


class ScenarioFile(_Strict):
    scenarios: tuple[ScenarioSpec, ...] = Field(min_length=1)


def default_scenarios(config: Config, traffic: Traffic) -> list[Scenario]:
    """Voucher halved; the busiest region out for 6 h; east prices x2 at peak; a 10% bonus."""
    specs = [
        ScenarioSpec(name="voucher halved", voucher_cut=VoucherCut(share=0.5)),
        ScenarioSpec(name="busiest region out 6 h", region_down=RegionDown(hours=6)),
        ScenarioSpec(name="east prices x2 at peak", price_spike=PriceSpike(zone="east", factor=2.0)),
        ScenarioSpec(name="bonus 10% of last month", bonus=Bonus(share_of_month=0.1)),
    ]
    return [build(spec, config, traffic) for spec in specs]


def load_scenarios(
    path: str | Path, config: Config, traffic: Traffic, programmes: Programmes | None = None
) -> list[Scenario]:
    """The scenarios of the file at ``path``; ValueError names what is wrong."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        spec = ScenarioFile.model_validate(data)
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: {exc}") from exc
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"{path}: {problems}") from exc
    return [build(s, config, traffic, programmes) for s in spec.scenarios]


def build(
    spec: ScenarioSpec, config: Config, traffic: Traffic, programmes: Programmes | None = None
) -> Scenario:
    """One scenario from its spec: its events and vouchers, sized on ``traffic``."""
    events: list[dict] = [dict(e) for e in spec.events]
    vouchers: list[Voucher] = list(spec.vouchers)
    notes = [spec.note] if spec.note else []
    if spec.voucher_cut is not None:
        events += _cut(spec.voucher_cut, config)
        notes.append(
            f"{spec.voucher_cut.share:.0%} of each voucher's balance gone at +{spec.voucher_cut.at_h:g} h"
        )
    if spec.region_down is not None:
        event = _down(spec.region_down, config, traffic)
        events.append(event)
        notes.append(f"{event['region']} down {event['t'] / 3600:.1f}-{event['until'] / 3600:.1f} h")
    if spec.price_spike is not None:
        events += _spike(spec.price_spike, config, traffic)
        where = spec.price_spike.region or spec.price_spike.zone or "every region"
        notes.append(f"{where} x{spec.price_spike.factor:g} in {', '.join(spec.price_spike.windows)}")
    if spec.bonus is not None:
        voucher = _bonus(spec.bonus, spec.name, traffic)
        vouchers.append(voucher)
        notes.append(f"credit of {voucher.amount:,.2f} yuan at {voucher.region}")
    if spec.programme is not None:
        if programmes is None:
            raise ValueError(f"scenario {spec.name!r}: no programmes catalog to take {spec.programme!r} from")
        voucher = programme_voucher(
            programmes.get(spec.programme),
            config,
            traffic.start,
            traffic.start + timedelta(seconds=traffic.span_s),
        )
        vouchers.append(voucher)
        notes.append(f"{spec.programme}: {voucher.kind} at {voucher.region}")
    return Scenario(name=spec.name, note="; ".join(notes), events=tuple(events), vouchers=tuple(vouchers))


def _cut(cut: VoucherCut, config: Config) -> list[dict]:
    known = {v.id: v for v in config.vouchers}
    ids = cut.vouchers if cut.vouchers is not None else tuple(known)
    for voucher_id in ids:
        if voucher_id not in known:
            raise ValueError(f"voucher_cut: unknown voucher {voucher_id!r}")
    t = cut.at_h * 3600.0
    return [
        {"t": t, "event": "voucher_delta", "voucher": v, "amount": -cut.share * known[v].amount}
        for v in ids
        if known[v].amount > 0
    ]


def busiest_region(traffic: Traffic) -> str | None:
    """The region that served the most requests."""
    counts = Counter(traffic.regions)
    return min(counts, key=lambda r: (-counts[r], r)) if counts else None


def _down(down: RegionDown, config: Config, traffic: Traffic) -> dict:
    region = busiest_region(traffic) if down.region == "busiest" else down.region
    if region is None or config.region(region) is None:
        region = region or config.regions[0].id
        if config.region(region) is None:
            raise ValueError(f"region_down: unknown region {region!r}")
    length = down.hours * 3600.0
    if down.at_h is not None:
        start = down.at_h * 3600.0
    else:
        # the hour-aligned window in which the region served the most requests
        theirs = sorted(t for t, r in zip(traffic.offsets_s, traffic.regions, strict=True) if r == region)
        best, start = -1, 0.0
        for hour in range(max(1, int(traffic.span_s // 3600) + 1)):
            lo = hour * 3600.0
            n = sum(1 for t in theirs if lo <= t < lo + length)
            if n > best:
                best, start = n, lo
    return {"t": start, "event": "region_down", "region": region, "until": start + length}


def _spike(spike: PriceSpike, config: Config, traffic: Traffic) -> list[dict]:
    if spike.region is not None:
        if config.region(spike.region) is None:
            raise ValueError(f"price_spike: unknown region {spike.region!r}")
        regions = [spike.region]
    else:
        regions = [r.id for r in config.regions if spike.zone is None or r.zone == spike.zone]
    tz = ZoneInfo(config.timezone)
    start = traffic.start.astimezone(tz)
    start_s = start.timestamp()
    end_s = start_s + traffic.span_s
    day = start.replace(hour=0, minute=0, second=0, microsecond=0)
    events = []
    while day.timestamp() < end_s:
        for window in spike.windows:
            lo, hi = (_at(day, part) for part in window.split("-"))
            if hi <= lo:
                hi += timedelta(days=1)
            a, b = max(lo.timestamp(), start_s), min(hi.timestamp(), end_s)
            if b > a:
                events += [
                    {
                        "t": a - start_s,
                        "event": "price_factor",
                        "region": region,
                        "factor": spike.factor,
                        "until": b - start_s,
                    }
                    for region in regions
                ]
        day = (day + timedelta(days=1, hours=2)).replace(hour=0)  # a DST-proof next local day
    return events


def _at(day: datetime, hhmm: str) -> datetime:
    hours, _, minutes = hhmm.strip().partition(":")
    return day.replace(hour=int(hours), minute=int(minutes or 0))


def _bonus(bonus: Bonus, name: str, traffic: Traffic) -> Voucher:
    if bonus.amount_yuan is not None:
        amount = bonus.amount_yuan
    else:
        amount = (bonus.share_of_month or 0.0) * traffic.last_month_cash_yuan
    region = bonus.region
    if region is None:
        spend: Counter = Counter()
        for r, cash in zip(traffic.regions, traffic.cash, strict=True):
            spend[r] += cash
        region = min(spend, key=lambda r: (-spend[r], r)) if spend else None
        if region is None:
            raise ValueError("bonus: no traffic to place it by; give its region")
    return Voucher(
        id=f"whatif-{_slug(name)}",
        region=region,
        kind="credit",
        amount=round(amount, 6),
        valid_from=traffic.start,
        # the period's deferred work may run after it: the bonus is still valid then
        expires=traffic.start + timedelta(seconds=max(traffic.span_s, 1.0) + _LONGEST_WAIT_S),
    )


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-") or "bonus"


def programme_voucher(
    programme: Programme, config: Config, valid_from: datetime, expires: datetime
) -> Voucher:
    """The voucher ``programme`` would give, at its region: its rate of the bill up to its cap.

    A programme without a region in ``config`` cannot pay for this traffic: ValueError.
    """
    if programme.region is None or config.region(programme.region) is None:
        raise ValueError(f"programme {programme.id!r} pays at {programme.city}, a region this config lacks")
    gives = programme.gives
    cap = gives.cap_yuan.value if gives.cap_yuan is not None else 1e12  # no published cap: unbounded
    if gives.kind == "discount":
        rate = gives.rate.value if gives.rate is not None else 0.0
        return Voucher(
            id=f"programme-{programme.id}",
            region=programme.region,
            kind="discount",
            amount=cap,
            rate=rate,
            valid_from=valid_from,
            expires=expires,
        )
    return Voucher(
        id=f"programme-{programme.id}",
        region=programme.region,
        kind=gives.kind,
        amount=cap,
        valid_from=valid_from,
        expires=expires,
    )
