"""The bound's voucher prices where packages meet whole training jobs.

``optimizer.bound`` evaluates the Lagrangian at the LP's prices. Every price vector >= 0
gives a valid lower bound, so the best of several is one too. The LP's price can be far
from the Lagrangian's best where a package comes in periods and a fine-tuning job is large:
the LP splits one job over every period's instance and prices each at that job's yuan per
token, while a request takes one voucher, so only one instance is worth that much to it and
the others are worth what the *next* job would pay (a cheaper model's training price).

``best_voucher_prices`` tries, per voucher with instances that training jobs may draw, every
instance at each of those jobs' yuan per unit below the LP's price (the Lagrangian's
breakpoints there) and keeps whichever gives the highest bound. Alike vouchers (one region,
kind, rate and restrictions: clones of one offer) meet the same split: each set of them is
also tried at a share of its LP prices (``_ALIKE_SHARES``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from suanli.config import Config
from suanli.optimizer.index import index_for
from suanli.optimizer.packages import owner_of
from suanli.optimizer.payment import list_cost_yuan, request_tokens
from suanli.optimizer.snapshot import Job, Plan

__all__ = ["best_voucher_prices"]

_MAX_TRIES = 24  # bound evaluations at most (each is one pass over the jobs)
# Alike vouchers (clones of one offer) are one row each, and the LP splits a whole request
# over several of them, so each is priced as if a request could draw them all: 26 credits of
# 0.82 yuan priced at 1 yuan per yuan take 21 yuan off the bound, where six fine-tuning jobs
# can use one each. Their price is also tried at these shares of the LP's.
_ALIKE_SHARES = (0.0, 0.5)


def best_voucher_prices(
    config: Config, jobs: Sequence[Job], found: Plan, evaluate: Callable[[Plan], float]
) -> float:
    """The highest ``evaluate(plan)`` over ``found`` and ``found`` with other voucher prices.

    ``config`` is the expanded config (``packages.expand_packages``) whose voucher instances
    ``found`` prices; ``evaluate`` the Lagrangian bound at a plan's prices.
    """
    best = evaluate(found)
    prices = dict(found.voucher_price)
    tries = 0
    for owner, steps in _breakpoints(config, jobs, prices).items():
        instances = [v for v in prices if owner_of(v) == owner]
        for step in steps:
            if tries >= _MAX_TRIES:
                return best
            tries += 1
            trial = dict(prices)
            trial.update(dict.fromkeys(instances, step))
            value = evaluate(dataclasses.replace(found, voucher_price=trial))
            if value > best:
                best, prices = value, trial
    for members in _alike(config, prices):
        for share in _ALIKE_SHARES:
            if tries >= _MAX_TRIES:
                return best
            tries += 1
            trial = dict(prices)
            trial.update({v: found.voucher_price[v] * share for v in members})
            value = evaluate(dataclasses.replace(found, voucher_price=trial))
            if value > best:
                best, prices = value, trial
    return best


def _alike(config: Config, prices: dict[str, float]) -> list[list[str]]:
    # sets of two or more priced vouchers of one region, kind, rate and restrictions
    sets: dict[tuple, list[str]] = {}
    for v in config.vouchers:
        if prices.get(v.id, 0.0) > 0:
            key = (v.region, v.kind, v.rate, v.models, v.classes, v.period, v.daily_cap)
            sets.setdefault(key, []).append(v.id)
    return [members for members in sets.values() if len(members) > 1]


def _breakpoints(config: Config, jobs: Sequence[Job], prices: dict[str, float]) -> dict[str, list[float]]:
    # voucher (by owner) -> the training jobs' yuan per unit below its instances' LP price,
    # for tokens vouchers of more than one instance that training may draw
    index = index_for(config)
    counts: dict[str, int] = {}
    for v in config.vouchers:
        counts[owner_of(v.id)] = counts.get(owner_of(v.id), 0) + 1
    out: dict[str, set[float]] = {}
    for job in jobs:
        if job.work_class != "training":
            continue
        for cand in index.candidates(job.model, "training", job.origin, "chat", prior_latency=True):
            tokens = request_tokens(cand.offer, job.input_tokens, 0.0, "training")
            for info in cand.vouchers:
                owner = owner_of(info.id)
                lam = prices.get(info.id, 0.0)
                if info.kind != "tokens" or counts[owner] < 2 or lam <= 0 or tokens <= 0:
                    continue
                if not (info.from_s <= job.latest_s and job.arrival_s < info.to_s):
                    continue
                per_unit = list_cost_yuan(cand.offer, job.input_tokens, 0.0, "training",
                                          factor=index.factor(cand.offer, info.from_s)) / tokens  # fmt: skip
                if per_unit < lam:
                    out.setdefault(owner, set()).add(per_unit)
    return {owner: sorted(steps, reverse=True) for owner, steps in sorted(out.items())}
