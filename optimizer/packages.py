"""Packages and daily caps as the planner sees them: one plain voucher per instance.

A voucher with ``period`` is one voucher per local period, each holding ``amount``
(DESIGN.md, "Packages and caps"); the LP of ``optimizer.plan`` knows plain vouchers only, so
``expand_packages`` hands it one voucher per period instance inside the horizon, valid over
that instance alone: exactly the rule. A voucher with ``daily_cap`` becomes one voucher per
local day holding at most the cap: each day's draw is held to the cap exactly, but the
instances' sum is not held to the voucher's total, so the planner may count on more than is
left over several days (a relaxation: the hindsight bound stays a lower bound).

The plan's voucher prices and flows then name instances; ``fold_packages`` names them by
their voucher again, each voucher priced as its instance in force at a given time, for the
chooser and the schedulers, which know the config's vouchers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from suanli.config import Config, Voucher
from suanli.optimizer.index import index_for
from suanli.optimizer.payment import list_cost_yuan, request_tokens
from suanli.optimizer.snapshot import Job, Plan
from suanli.optimizer.tariff import period_edges, period_end, period_start

__all__ = ["expand_packages", "fold_packages", "owner_of", "per_instance", "renewals"]

_SEP = "@"  # instance id: "<voucher id>@<start, epoch seconds>"


def _instances(voucher: Voucher, start_s: float, end_s: float, tz: ZoneInfo) -> list[tuple[float, float]]:
    # ``[from, to)`` epoch seconds of each instance meeting ``[start_s, end_s)``
    lo = max(start_s, voucher.valid_from.timestamp() if voucher.valid_from else start_s)
    hi = min(end_s, voucher.expires.timestamp() if voucher.expires else end_s)
    if hi <= lo:
        return []
    cuts: set[float] = set()
    if voucher.period is not None:
        cuts.update(period_edges(voucher.period, lo, hi, tz))
    if voucher.daily_cap is not None:
        cuts.update(period_edges("day", lo, hi, tz))
    points = [lo, *sorted(cuts), hi]
    return list(zip(points[:-1], points[1:], strict=True))


def expand_packages(
    config: Config, start_s: float, end_s: float, balances: Mapping[str, float]
) -> tuple[Config, dict[str, float]]:
    """``config`` with each package and capped voucher split into its instances over the horizon.

    ``balances`` are what each voucher may pay now (its current instance's balance, under its
    cap); the instance holding ``start_s`` starts from that, later ones from ``amount`` (a
    capped voucher's: at most its cap). Returns the config and the balances by instance id;
    a config with no such voucher comes back as it is.
    """
    if not any(v.period is not None or v.daily_cap is not None for v in config.vouchers):
        return config, dict(balances)
    tz = ZoneInfo(config.timezone)
    vouchers: list[Voucher] = []
    out: dict[str, float] = {}
    for voucher in config.vouchers:
        if voucher.period is None and voucher.daily_cap is None:
            vouchers.append(voucher)
            if voucher.id in balances:
                out[voucher.id] = balances[voucher.id]
            continue
        fresh = voucher.amount if voucher.daily_cap is None else min(voucher.amount, voucher.daily_cap)
        for begin, end in _instances(voucher, start_s, end_s, tz):
            iid = f"{voucher.id}{_SEP}{begin:.0f}"
            # the instance in force now starts from what the voucher may pay now (never above its cap)
            now = balances.get(voucher.id, fresh) if voucher.daily_cap is None else min(
                balances.get(voucher.id, fresh), voucher.daily_cap)
            out[iid] = now if begin <= start_s else fresh
            vouchers.append(voucher.model_copy(update={
                "id": iid,
                "valid_from": datetime.fromtimestamp(begin, UTC),
                "expires": datetime.fromtimestamp(end, UTC),
                "period": None,
                "daily_cap": None,
                "amount": out[iid],
            }))
    return config.model_copy(update={"vouchers": tuple(vouchers)}), out


def owner_of(iid: str) -> str:
    """The voucher id of an instance id of ``expand_packages`` (any other id as it is)."""
    head, sep, tail = iid.rpartition(_SEP)
    return head if sep and tail.lstrip("-").isdigit() else iid


def _owner(iid: str, known: set[str]) -> str | None:
    head, sep, _ = iid.rpartition(_SEP)
    return head if sep and head in known else None


def fold_packages(plan: Plan, config: Config, at_s: float) -> Plan:
    """``plan`` (of ``expand_packages(config, ...)``) with instances named by their voucher.

    A voucher's price is its instance's in force at ``at_s`` (else its next one's); flows of
    every instance are kept, under the voucher's id.
    """
    split = {v.id for v in config.vouchers if v.period is not None or v.daily_cap is not None}
    if not split:
        return plan
    prices: dict[str, float] = {}
    chosen: dict[str, float] = {}  # voucher id -> start of the instance whose price it took
    for iid, price in plan.voucher_price.items():
        owner = _owner(iid, split)
        if owner is None:
            prices[iid] = price
            continue
        begin = float(iid.rpartition(_SEP)[2])
        have = chosen.get(owner)
        # the instance in force at at_s (the latest start <= at_s), else the earliest after it
        better = have is None or (begin <= at_s and (have > at_s or begin > have)) or (at_s < begin < have)
        if better:
            chosen[owner] = begin
            prices[owner] = price
    flows = tuple(
        dataclasses.replace(f, voucher=_owner(f.voucher, split) or f.voucher) if f.voucher else f
        for f in plan.flows
    )
    return dataclasses.replace(plan, voucher_price=prices, flows=flows)


def per_instance(
    config: Config,
    jobs: Sequence[Job],
    balances: Mapping[str, float],
    voucher_price: Mapping[str, float],
) -> tuple[Config, dict[str, float], dict[str, float], Callable[[str | None], str | None]]:
    """``expand_packages`` over ``jobs``' span for hindsight's training placer, and the way back.

    Returns the expanded config and balances, a price per instance and a function naming an
    instance by its voucher (a plain voucher, or None, as it is). A placer given these sees a
    package's later periods as the fresh balances they are: a job that may start tomorrow may
    be paid by tomorrow's. The price of a ``tokens`` instance is what a unit of it is worth to
    the other jobs (its voucher's price), but no more than the most yuan per token any job of
    another class that may draw it would pay: the LP's price of a package that training alone
    wants is training's own (it splits one job over every period), which would keep the other
    training jobs off its later periods.
    """
    start_s = min(job.arrival_s for job in jobs)
    end_s = max(job.latest_s for job in jobs) + 1.0
    planned, have = expand_packages(config, start_s, end_s, balances)
    known = {v.id for v in config.vouchers}

    def owner(iid: str | None) -> str | None:
        return None if iid is None else _owner(iid, known) or iid

    worth: dict[str, float] = {}  # tokens instance -> most yuan per token another class pays
    index = index_for(planned)
    for job in jobs:
        if job.work_class == "training":
            continue
        for cand in index.candidates(job.model, job.work_class, job.origin, "chat", prior_latency=True):
            tokens = request_tokens(cand.offer, job.input_tokens, job.output_tokens, job.work_class)
            if tokens <= 0:
                continue
            yuan = list_cost_yuan(cand.offer, job.input_tokens, job.output_tokens, job.work_class,
                                  factor=index.factor(cand.offer, job.arrival_s)) / tokens  # fmt: skip
            for info in cand.vouchers:
                if info.kind == "tokens" and info.from_s <= job.latest_s and job.arrival_s < info.to_s:
                    worth[info.id] = max(worth.get(info.id, 0.0), yuan)
    prices = {}
    for v in planned.vouchers:
        price = voucher_price.get(owner(v.id) or v.id, 0.0)
        prices[v.id] = min(price, worth.get(v.id, 0.0)) if v.kind == "tokens" else price
    return planned, have, prices, owner


def renewals(config: Config, at_s: float) -> dict[str, float]:
    """Voucher id -> epoch s of its next renewal after ``at_s``: a package's next local period,
    a capped voucher's next local midnight; only renewals before the voucher expires."""
    tz = ZoneInfo(config.timezone)
    at = datetime.fromtimestamp(at_s, UTC)
    out: dict[str, float] = {}
    for voucher in config.vouchers:
        edges = []
        if voucher.daily_cap is not None:
            edges.append(period_end("day", period_start("day", at, tz), tz).timestamp())
        if voucher.period is not None:
            edges.append(period_end(voucher.period, period_start(voucher.period, at, tz), tz).timestamp())
        if edges and (voucher.expires is None or min(edges) < voucher.expires.timestamp()):
            out[voucher.id] = min(edges)
    return out
