"""An independent checker of ``simulate --decisions`` files, written from DESIGN.md alone.

It shares no code with ``optimizer`` or ``router`` (only the config loader): it replays
the decisions in start order (ties: trace order), recomputes every charge from the
payment rules, and reports each rule a decision breaks.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from suanli.config import Config

__all__ = ["CheckResult", "check_decisions"]


@dataclass
class CheckResult:
    """What the checker found: violations (empty when all is well) and recomputed totals."""

    violations: list[str] = field(default_factory=list)
    cash_yuan: float = 0.0
    rejected: int = 0
    deadline_misses: int = 0
    served: int = 0
    voucher_spent: dict[str, float] = field(default_factory=dict)


def _in_window(window: str, local: datetime) -> bool:
    start, end = window.split("-")
    begin = int(start[:2]) * 60 + int(start[3:])
    stop = int(end[:2]) * 60 + int(end[3:])
    minute = local.hour * 60 + local.minute
    if begin == stop:
        return True
    if begin < stop:
        return begin <= minute < stop
    return minute >= begin or minute < stop


_DAYS = {"all": range(7), "weekdays": range(5), "weekends": (5, 6)}
_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _minutes(window: str) -> tuple[int, int]:
    start, end = window.split("-")
    return int(start[:2]) * 60 + int(start[3:]), int(end[:2]) * 60 + int(end[3:])


def _band_factor(offer, local: datetime) -> float:  # noqa: ANN001
    # the first band whose window, opened on one of its days, holds the start; else 1
    minute = local.hour * 60 + local.minute
    for band in offer.bands or ():
        days = _DAYS[band.days] if isinstance(band.days, str) else [_NAMES.index(d) for d in band.days]
        begin, end = _minutes(band.window)
        opened = local.date() if minute >= begin else local.date() - timedelta(days=1)
        inside = begin <= minute < end if begin < end else (minute >= begin or minute < end)
        if inside and opened.weekday() in days:
            return band.factor
    return 1.0


def _instance(voucher, local: datetime) -> str:  # noqa: ANN001
    # which balance of a voucher pays at ``local``: one per local period for a package
    day = local.date()
    if voucher.period == "day":
        return day.isoformat()
    if voucher.period == "week":
        return (day - timedelta(days=day.weekday())).isoformat()
    if voucher.period == "month":
        return day.isoformat()[:7]
    return ""


def check_decisions(config: Config, trace_lines: list[str], decision_lines: list[str]) -> CheckResult:
    """Check decisions (JSON lines) against the trace (JSON lines, header first)."""
    out = CheckResult()
    header = json.loads(trace_lines[0])
    trace_start = datetime.fromisoformat(header["start"])
    start_epoch = trace_start.timestamp()
    rows = [json.loads(line) for line in trace_lines[1:] if line.strip()]
    requests = [row for row in rows if "event" not in row]
    # trace events (DESIGN.md): outages and price factors by their windows; a voucher delta
    # applies at its t, before any request starting then
    events = [row for row in rows if "event" in row]
    down = [e for e in events if e["event"] == "region_down"]
    factors = [e for e in events if e["event"] == "price_factor"]
    deltas = sorted((e["t"], n) for n, e in enumerate(events) if e["event"] == "voucher_delta")
    decisions = [json.loads(line) for line in decision_lines if line.strip()]
    tz = ZoneInfo(config.timezone)
    regions = {r.id: r for r in config.regions}
    vouchers = {v.id: v for v in config.vouchers}
    # (voucher, its instance) -> units left; a package holds its amount afresh each period
    balance: dict[tuple[str, str], float] = {}
    paid_on: dict[tuple[str, object], float] = defaultdict(float)  # (voucher, local day) -> units
    last_served: dict[str, tuple[str, str, float]] = {}  # session -> (region, model, start)
    spent: dict[str, float] = defaultdict(float)
    if len(decisions) != len(requests):
        out.violations.append(f"{len(decisions)} decisions for {len(requests)} requests")
        return out
    started = []
    for n, (req, dec) in enumerate(zip(requests, decisions, strict=True)):
        if dec["i"] != n:
            out.violations.append(f"line {n}: i={dec['i']}, expected {n}")
        if dec["region"] is None:
            if req["class"] == "interactive":
                out.rejected += 1
            else:
                out.deadline_misses += 1
            if dec.get("cash_yuan", 0) != 0:
                out.violations.append(f"{n}: unserved request charged")
            continue
        started.append((start_epoch + dec["start"], n))
    # (region, minute) -> [tokens, requests]
    used: dict[tuple[str, int], list[float]] = defaultdict(lambda: [0.0, 0.0])
    slo = config.classes.interactive.latency_slo_ms
    for start_s, n in sorted(started):
        while deltas and start_epoch + deltas[0][0] <= start_s:
            delta = events[deltas.pop(0)[1]]
            v = vouchers.get(delta["voucher"])
            if v is not None:
                key = (v.id, _instance(v, datetime.fromtimestamp(start_epoch + delta["t"], tz)))
                balance[key] = max(balance.get(key, v.amount) + delta["amount"], 0.0)
        req, dec = requests[n], decisions[n]
        klass = req["class"]
        region = regions.get(dec["region"])
        if region is None:
            out.violations.append(f"{n}: unknown region {dec['region']}")
            continue
        offer = next((o for o in region.models if o.name == req["model"]), None)
        if offer is None:
            out.violations.append(f"{n}: {region.id} does not serve {req['model']}")
            continue
        rel = dec["start"]
        if klass == "interactive":
            if rel != req["t"]:
                out.violations.append(f"{n}: interactive starts at {rel}, not at t={req['t']}")
            if region.ttft_ms + region.rtt_ms.get(req["origin"], 0.0) > slo:
                out.violations.append(f"{n}: {region.id} breaks the latency SLO")
        else:
            deadline = req.get("deadline_s") or config.classes.deadline_s(klass)
            if not req["t"] <= rel <= req["t"] + deadline:
                out.violations.append(f"{n}: start {rel} outside [{req['t']}, {req['t'] + deadline}]")
        for e in down:
            if e["region"] == region.id and e["t"] <= rel < e.get("until", math.inf):
                out.violations.append(f"{n}: starts at {region.id} while it is down")
        if klass == "training" and "fine_tuning" not in region.capabilities:
            out.violations.append(f"{n}: training at {region.id} without fine_tuning")
        ratio = offer.token_ratio
        # a session's cache hit: its previous served request started here, same model, within the TTL
        session = req.get("session")
        before = last_served.get(session) if session is not None else None
        hit = before is not None and before[:2] == (region.id, req["model"]) and (
            0 <= start_s - before[2] <= offer.cache_ttl_s)
        if session is not None:
            last_served[session] = (region.id, req["model"], start_s)
        cached = req.get("cached", 0) if hit else 0
        if klass == "training":
            tokens = math.ceil(round(req["input"] * ratio, 6))
            cost = req["input"] * ratio * offer.price.train / 1e6
        else:
            tokens = math.ceil(round((req["input"] + req["output"]) * ratio, 6))
            cost = (
                (req["input"] - cached) * offer.price.input + cached * offer.price.cached_input
                + req["output"] * offer.price.output
            ) * ratio / 1e6
        when = datetime.fromtimestamp(start_s, tz)
        if offer.off_peak is not None and _in_window(offer.off_peak.window, when):
            cost *= 1 - offer.off_peak.discount
        cost *= _band_factor(offer, when)
        for e in factors:
            if (
                e["region"] == region.id
                and e.get("model", req["model"]) == req["model"]
                and e["t"] <= rel < e.get("until", math.inf)
            ):
                cost *= e["factor"]
        if klass != "training":
            cell = used[(region.id, math.floor(start_s / 60))]
            cell[0] += tokens
            cell[1] += 1
            if region.limits.tpm is not None and cell[0] > region.limits.tpm:
                out.violations.append(f"{n}: {region.id} over tpm in minute {math.floor(start_s / 60)}")
            if region.limits.rpm is not None and cell[1] > region.limits.rpm:
                out.violations.append(f"{n}: {region.id} over rpm in minute {math.floor(start_s / 60)}")
        covered = 0.0
        vid = dec["voucher"]
        if vid is not None:
            v = vouchers.get(vid)
            ok = (
                v is not None
                and v.region == region.id
                and (v.models is None or req["model"] in v.models)
                and (v.classes is None or klass in v.classes)
                and (v.valid_from is None or when >= v.valid_from)
                and (v.expires is None or when < v.expires)
            )
            if not ok:
                out.violations.append(f"{n}: voucher {vid} may not pay here")
            else:
                key = (vid, _instance(v, when))
                have = balance.get(key, float(v.amount))
                if v.daily_cap is not None:
                    have = max(min(have, v.daily_cap - paid_on[(vid, when.date())]), 0.0)
                if v.kind == "tokens":
                    units = min(have, tokens)
                    covered = cost * units / tokens if tokens else 0.0
                elif v.kind == "credit":
                    units = covered = min(have, cost)
                else:
                    units = covered = min(have, (v.rate or 0.0) * cost)
                balance[key] = balance.get(key, float(v.amount)) - units
                paid_on[(vid, when.date())] += units
                spent[vid] += units
        cash = max(cost - covered, 0.0)
        if abs(cash - dec["cash_yuan"]) > 1e-6:
            out.violations.append(f"{n}: cash {dec['cash_yuan']} but the rules give {cash}")
        out.cash_yuan += cash
        out.served += 1
    out.voucher_spent = dict(spent)
    return out
